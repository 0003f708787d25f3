// Package jobstore is the gateway's projection of export jobs: one
// exportv1.Job per job id in the KV bucket bus.BucketJobs.
//
// The HTTP handlers create jobs; status events from every service move
// them forward through Apply. Every write after the first is a
// read-modify-write guarded by the entry's revision, so any number of
// gateway replicas and redelivered events may apply concurrently and the
// outcome is the same as applying them one by one: states only move
// forward, progress only grows and a terminal job keeps its outcome.
package jobstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
)

// Errors.
var (
	// ErrNotFound is returned when no job has the id. Apply returns it
	// (wrapped, not permanent) for an event that arrives before its job:
	// the projection retries and catches up.
	ErrNotFound = errors.New("jobstore: job not found")
	// ErrExists is returned by Create when the id is taken.
	ErrExists = errors.New("jobstore: job already exists")
)

// maxAttempts bounds the read-modify-write retries of one Apply. Conflicts
// only happen between appliers of the same job at the same moment, so a
// handful of retries is plenty; after that the caller's own retry (the
// message redelivery) takes over.
const maxAttempts = 32

// idPattern is what job ids may look like: the KV key alphabet minus '.'
// and '/', so that an id is also a single subject token.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_=-]{1,128}$`)

// ValidID reports whether id can name a job.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Store reads and writes jobs. It is safe for concurrent use.
type Store struct {
	js         jetstream.JetStream
	kv         jetstream.KeyValue
	retention  time.Duration
	onTerminal func(context.Context, *exportv1.Job)
}

// Option configures a Store.
type Option func(*Store)

// WithRetention sets how long a completed job's files are kept: applying
// ExportCompleted sets the job's expires_at to the event's occurred_at plus
// d, so every replica computes the same instant. The archiver's sweeper
// reads the same setting (DATAPORT_RETENTION) and deletes the files then.
// Zero leaves expires_at unset.
func WithRetention(d time.Duration) Option {
	return func(s *Store) { s.retention = d }
}

// WithOnTerminal calls fn with the job as stored each time Apply moves a
// job into a terminal state. The revision check makes that move happen
// once per job, so fn runs once per job, unless the process stops between
// the write and the call: fn's effects must tolerate being lost (package
// quota repairs a lost slot release). fn runs on the applier's goroutine
// and should be quick.
func WithOnTerminal(fn func(ctx context.Context, job *exportv1.Job)) Option {
	return func(s *Store) { s.onTerminal = fn }
}

// New returns a Store over the jobs bucket kv; js is the JetStream context
// the bucket lives in (listing reads the bucket's stream).
func New(js jetstream.JetStream, kv jetstream.KeyValue, opts ...Option) *Store {
	s := &Store{js: js, kv: kv}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Open looks up the jobs bucket (declared by bus.EnsureTopology) and
// returns a Store over it.
func Open(ctx context.Context, js jetstream.JetStream, opts ...Option) (*Store, error) {
	kv, err := js.KeyValue(ctx, bus.BucketJobs)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bus.BucketJobs, err)
	}
	return New(js, kv, opts...), nil
}

// Create stores a new job; it fails with ErrExists if the id is taken.
func (s *Store) Create(ctx context.Context, job *exportv1.Job) error {
	if !ValidID(job.GetId()) {
		return fmt.Errorf("create job: invalid id %q", job.GetId())
	}
	data, err := proto.Marshal(job)
	if err != nil {
		return fmt.Errorf("marshal job %s: %w", job.GetId(), err)
	}
	if _, err := s.kv.Create(ctx, job.GetId(), data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("create job %s: %w", job.GetId(), ErrExists)
		}
		return fmt.Errorf("create job %s: %w", job.GetId(), err)
	}
	return nil
}

// Get returns the job, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*exportv1.Job, error) {
	job, _, err := s.get(ctx, id)
	return job, err
}

func (s *Store) get(ctx context.Context, id string) (*exportv1.Job, uint64, error) {
	if !ValidID(id) {
		return nil, 0, fmt.Errorf("job %q: %w", id, ErrNotFound)
	}
	e, err := s.kv.Get(ctx, id)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, 0, fmt.Errorf("job %s: %w", id, ErrNotFound)
		}
		return nil, 0, fmt.Errorf("get job %s: %w", id, err)
	}
	job := &exportv1.Job{}
	if err := proto.Unmarshal(e.Value(), job); err != nil {
		return nil, 0, fmt.Errorf("decode job %s: %w", id, err)
	}
	return job, e.Revision(), nil
}

// List returns ownerID's jobs, newest first. It reads the whole bucket,
// which is fine while jobs expire and an owner index is not needed yet.
func (s *Store) List(ctx context.Context, ownerID string) ([]*exportv1.Job, error) {
	return s.Select(ctx, func(j *exportv1.Job) bool { return j.GetOwnerId() == ownerID })
}

// Select returns every job keep accepts, newest first. It reads the whole
// bucket once; keep sees each job exactly once and may gather its own
// counts on the way (Rocket.Chat's pendingOperationsBeforeMyRequest).
//
// The watcher's "initial values done" marker alone is not trusted: when a
// key is updated while the watch starts, its older entry is removed
// (history 1) and the marker can come before the newer entry, so a job
// being written at that moment would be missing from the list (a quota
// count or a "pending operation" lookup would then be wrong). So the keys
// are read first from the bucket's stream, and the watch ends only once
// it has had the marker and seen every one of them.
func (s *Store) Select(ctx context.Context, keep func(*exportv1.Job) bool) ([]*exportv1.Job, error) {
	prefix := "$KV." + s.kv.Bucket() + "."
	stream, err := s.js.Stream(ctx, "KV_"+s.kv.Bucket())
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(prefix+">"))
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	missing := make(map[string]bool, len(info.State.Subjects))
	for subject := range info.State.Subjects {
		missing[strings.TrimPrefix(subject, prefix)] = true
	}
	if len(missing) == 0 {
		return nil, nil
	}
	w, err := s.kv.WatchAll(ctx)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer func() { _ = w.Stop() }()
	byKey := map[string]*exportv1.Job{}
	for marker := false; !marker || len(missing) > 0; {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("list jobs: %w", ctx.Err())
		case e = <-w.Updates():
		}
		if e == nil {
			marker = true
			continue
		}
		delete(missing, e.Key())
		if e.Operation() != jetstream.KeyValuePut {
			delete(byKey, e.Key())
			continue
		}
		job := &exportv1.Job{}
		if err := proto.Unmarshal(e.Value(), job); err != nil {
			return nil, fmt.Errorf("decode job %s: %w", e.Key(), err)
		}
		byKey[e.Key()] = job
	}
	var jobs []*exportv1.Job
	for _, job := range byKey {
		if keep(job) {
			jobs = append(jobs, job)
		}
	}
	slices.SortFunc(jobs, func(a, b *exportv1.Job) int {
		if c := b.GetCreatedAt().AsTime().Compare(a.GetCreatedAt().AsTime()); c != 0 {
			return c
		}
		return cmp.Compare(b.GetId(), a.GetId())
	})
	return jobs, nil
}

// Event is a status event: every exportv1 status message has a job id and
// an occurrence time.
type Event interface {
	proto.Message
	GetJobId() string
}

// Apply folds one status event into its job and returns the job as stored
// afterwards. It is idempotent: applying an event twice, or an event that
// the job has already moved past, changes nothing.
//
// ExportRequested carries the whole job and creates it if it is missing,
// which repairs a create the HTTP handler lost. Any other event for a job
// that does not exist yet fails with ErrNotFound so the caller retries
// later. Malformed events fail with a bus.Permanent error.
func (s *Store) Apply(ctx context.Context, ev Event) (*exportv1.Job, error) {
	id := ev.GetJobId()
	if !ValidID(id) {
		return nil, bus.Permanent(fmt.Errorf("%T: invalid job id %q", ev, id))
	}
	if req, ok := ev.(*exportv1.ExportRequested); ok {
		if req.GetJob() == nil || req.GetJob().GetId() != id {
			return nil, bus.Permanent(fmt.Errorf("ExportRequested for %s carries job %q", id, req.GetJob().GetId()))
		}
	}
	for attempt := 1; ; attempt++ {
		job, rev, err := s.get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			req, ok := ev.(*exportv1.ExportRequested)
			if !ok {
				return nil, fmt.Errorf("apply %T: %w", ev, err)
			}
			err := s.Create(ctx, req.GetJob())
			if errors.Is(err, ErrExists) {
				continue // created meanwhile; apply to what is there
			}
			if err != nil {
				return nil, err
			}
			return req.GetJob(), nil
		}
		if err != nil {
			return nil, err
		}
		next := proto.CloneOf(job)
		changed, err := reduce(next, ev, s.retention)
		if err != nil {
			return nil, err
		}
		if !changed {
			return job, nil
		}
		data, err := proto.Marshal(next)
		if err != nil {
			return nil, fmt.Errorf("marshal job %s: %w", id, err)
		}
		_, err = s.kv.Update(ctx, id, data, rev)
		if err == nil {
			if s.onTerminal != nil && !Terminal(job.GetState()) && Terminal(next.GetState()) {
				s.onTerminal(ctx, next)
			}
			return next, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) || attempt >= maxAttempts {
			return nil, fmt.Errorf("apply %T to job %s: %w", ev, id, err)
		}
		// Someone else wrote the job between our read and write. Back off
		// a little, with jitter, so two appliers do not collide again.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("apply %T to job %s: %w", ev, id, ctx.Err())
		case <-time.After(time.Duration(rand.Int64N(int64(attempt) * int64(time.Millisecond)))):
		}
	}
}
