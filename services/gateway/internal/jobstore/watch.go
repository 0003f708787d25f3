package jobstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
)

// Change is a job as one write of the projection left it.
type Change struct {
	Job *exportv1.Job
	// Revision is the write's position in the jobs bucket (the sequence
	// of its stream): it grows with every write of any job, so one number
	// is a position in the changes of any set of jobs. A Change that
	// reports a job the feed learned of late carries the feed's current
	// position instead of the job's own, older revision (see FollowOwner).
	Revision uint64
}

// GetRevision returns the job and the revision of its current record, or
// ErrNotFound.
func (s *Store) GetRevision(ctx context.Context, id string) (*exportv1.Job, uint64, error) {
	return s.get(ctx, id)
}

// Feed delivers changes of jobs as the projection writes them, pushed by
// a watch of the jobs bucket (an ordered consumer filtered to the jobs'
// keys), never by polling. Changes come in revision order, each revision
// at most once. A Feed is owned by the goroutine that reads it; Stop
// releases it.
type Feed struct {
	out    chan Change
	cancel context.CancelFunc
	done   chan struct{}
}

// Changes is the feed's channel. It is closed when the feed stops: by
// Stop, by the context of Follow or FollowOwner ending, or by the watch
// failing for good (the caller resumes from the last Revision it got).
func (f *Feed) Changes() <-chan Change { return f.out }

// Stop ends the feed and waits for its goroutine.
func (f *Feed) Stop() {
	f.cancel()
	<-f.done
}

// Follow feeds the changes of the job id. With after zero the first
// change is the job's current record (if it has one); otherwise only
// writes after revision after are delivered, so a client that saw after
// resumes without a gap or a repeat. The bucket keeps one record per job,
// so writes between after and the current one are folded into it: a
// record is the whole job, and nothing it held is lost.
func (s *Store) Follow(ctx context.Context, id string, after uint64) (*Feed, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("follow job %q: %w", id, ErrNotFound)
	}
	return s.follow(ctx, []string{id}, after, "", false)
}

// FollowOwner feeds the changes of ownerID's jobs, including jobs created
// after the call, learned of from the index's entries (act.<owner>.…),
// which are written before their job. With after zero it starts with the
// current record of each unfinished job; otherwise with every write of
// any of the owner's jobs (read from the owner's index entries) after
// revision after. Nothing outside the owner's index entries is read.
//
// Entries are hints (see index.go): a change may name a job of another
// owner, and the caller must check the owner.
//
// A job whose first write the feed had already passed when its index
// entry arrived (another of the owner's jobs changed in between) is
// delivered at once with the feed's current position as its Revision,
// so positions never go back.
func (s *Store) FollowOwner(ctx context.Context, ownerID string, after uint64) (*Feed, error) {
	if ownerID == "" {
		return nil, errors.New("follow jobs: no owner")
	}
	var (
		entries []entry
		err     error
	)
	if after == 0 {
		entries, err = s.listEntries(ctx, famActive+"."+hashToken(ownerID)+".>", false)
	} else {
		filter, ferr := Scope{Owner: ownerID}.filter()
		if ferr != nil {
			return nil, ferr
		}
		entries, err = s.listEntries(ctx, filter, true)
	}
	if err != nil {
		return nil, fmt.Errorf("follow jobs of %s: %w", ownerID, err)
	}
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		ids = append(ids, e.id)
	}
	return s.follow(ctx, ids, after, famActive+"."+hashToken(ownerID)+".>", after == 0)
}

// follow starts a feed over ids; a non-empty created is the index filter
// whose new entries add jobs to it. skipEnded leaves out jobs that had
// ended before the feed began (a purged act entry is listed until its
// marker expires).
func (s *Store) follow(ctx context.Context, ids []string, after uint64, created string, skipEnded bool) (*Feed, error) {
	ctx, cancel := context.WithCancel(ctx)
	stream, err := s.js.Stream(ctx, "KV_"+s.kv.Bucket())
	if err == nil {
		var info *jetstream.StreamInfo
		if info, err = stream.Info(ctx); err == nil {
			f := &feeder{
				s: s, ctx: ctx, known: map[string]bool{}, last: after, base: info.State.LastSeq, skipEnded: skipEnded,
				Feed: &Feed{out: make(chan Change), cancel: cancel, done: make(chan struct{})},
			}
			for _, id := range ids {
				f.add(id)
			}
			if err = f.start(after); err == nil && created != "" {
				f.index, err = s.index.Watch(ctx, created, jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
			}
			if err == nil {
				go f.run()
				return f.Feed, nil
			}
			f.stopWatch()
		}
	}
	cancel()
	return nil, fmt.Errorf("follow jobs: %w", err)
}

// feeder is a Feed's goroutine state, touched only by that goroutine
// once run starts.
type feeder struct {
	*Feed
	s     *Store
	ctx   context.Context
	keys  []string
	known map[string]bool
	// fresh are keys added since the watch last (re)started.
	fresh []string
	// last is the highest revision delivered; base the bucket's last
	// revision before the first watch began: every record at or below it
	// that the first watch was to deliver has been delivered once that
	// watch reports its initial values done.
	last, base uint64
	// skipEnded drops records at or below base of jobs that had ended.
	skipEnded bool
	w         jetstream.KeyWatcher
	// initDone is whether w has delivered its initial values; a restart
	// waits for it so that no initial value is skipped.
	initDone bool
	// grown is whether keys were added that w does not watch yet.
	grown bool
	index jetstream.KeyWatcher
}

func (f *feeder) add(id string) bool {
	if !ValidID(id) || f.known[id] {
		return false
	}
	f.known[id] = true
	f.keys = append(f.keys, id)
	return true
}

// start (re)creates the watch over every key, from revision from+1
// (from zero: each key's current record).
func (f *feeder) start(from uint64) error {
	f.stopWatch()
	f.grown, f.fresh = false, nil
	if len(f.keys) == 0 {
		// An empty filter would watch every job.
		f.initDone = true
		return nil
	}
	opts := []jetstream.WatchOpt{jetstream.IgnoreDeletes()}
	if from > 0 {
		opts = append(opts, jetstream.ResumeFromRevision(from+1))
	}
	w, err := f.s.kv.WatchFiltered(f.ctx, append([]string(nil), f.keys...), opts...)
	if err != nil {
		return err
	}
	f.w, f.initDone = w, false
	return nil
}

func (f *feeder) stopWatch() {
	if f.w != nil {
		_ = f.w.Stop()
		f.w = nil
	}
}

func (f *feeder) run() {
	defer close(f.done)
	defer close(f.out)
	defer f.stopWatch()
	defer func() {
		if f.index != nil {
			_ = f.index.Stop()
		}
	}()
	var indexUpdates <-chan jetstream.KeyValueEntry
	if f.index != nil {
		indexUpdates = f.index.Updates()
	}
	for {
		var updates <-chan jetstream.KeyValueEntry
		if f.w != nil {
			updates = f.w.Updates()
		}
		select {
		case <-f.ctx.Done():
			return
		case e, ok := <-indexUpdates:
			if !ok {
				return
			}
			if e == nil {
				continue
			}
			key := e.Key()
			if f.add(key[strings.LastIndexByte(key, '.')+1:]) {
				f.fresh = append(f.fresh, f.keys[len(f.keys)-1])
				f.grown = true
			}
		case e, ok := <-updates:
			if !ok {
				return
			}
			if e == nil {
				f.initDone = true
			} else if e.Revision() > f.last {
				f.last = e.Revision()
				if !f.send(e.Value(), e.Revision(), f.skipEnded && e.Revision() <= f.base) {
					return
				}
			}
		}
		if f.grown && f.initDone && !f.restart() {
			return
		}
	}
}

// restart watches the grown key set from the current position, after
// delivering the fresh keys whose current record the new watch would
// skip.
func (f *feeder) restart() bool {
	from := max(f.last, f.base)
	fresh := f.fresh
	if err := f.start(from); err != nil {
		return false
	}
	for _, id := range fresh {
		entry, err := f.s.kv.Get(f.ctx, id)
		if err != nil || entry.Revision() > from {
			continue // missing yet, or the new watch delivers it
		}
		f.last = max(f.last, from)
		if !f.send(entry.Value(), f.last, false) {
			return false
		}
	}
	return true
}

func (f *feeder) send(data []byte, rev uint64, unlessEnded bool) bool {
	job := &exportv1.Job{}
	if err := proto.Unmarshal(data, job); err != nil {
		return true // not a record this version can show; the next write may be
	}
	if unlessEnded && Terminal(job.GetState()) {
		return true
	}
	select {
	case f.out <- Change{Job: job, Revision: rev}:
		return true
	case <-f.ctx.Done():
		return false
	}
}
