package jobstore

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/kvbatch"
)

// Summary is the part of job that listings filter and sort by: what the
// owner index entry's value holds, so that a listing that must filter or
// sort all of an owner's jobs reads only the entries, and then in full
// only the jobs of the page it answers. It holds the identity, scope and
// request of the job (id, client id, owner, dialect, organization, kind,
// parent, name, format, records scope, recipients, full_export), its
// state, the records exported and the creation and update times; never
// files, parts, errors or traces. It shares job's nested messages.
func Summary(job *exportv1.Job) *exportv1.Job {
	sum := &exportv1.Job{
		Id: job.GetId(), ClientId: job.GetClientId(), OwnerId: job.GetOwnerId(), Dialect: job.GetDialect(),
		OrganizationId: job.GetOrganizationId(), Kind: job.GetKind(), ParentId: job.GetParentId(), Name: job.GetName(),
		Format: job.GetFormat(), Records: job.GetRecords(), NotifyEmails: job.GetNotifyEmails(), FullExport: job.GetFullExport(),
		State: job.GetState(), CreatedAt: job.GetCreatedAt(), UpdatedAt: job.GetUpdatedAt(),
	}
	if p := job.GetProgress(); p.GetRecords() != 0 {
		sum.Progress = &exportv1.Progress{Records: p.GetRecords()}
	}
	return sum
}

// A summary value is the job record's revision it was taken from, as a
// uvarint, then the summary's protobuf. An owner entry is created empty,
// before its job, and gets its first summary only once the job is
// written, so an entry with a summary always names a job that exists
// (jobs are never deleted); an empty one is a hint like any other.

func encodeSummary(job *exportv1.Job, rev uint64) ([]byte, error) {
	data, err := proto.Marshal(Summary(job))
	if err != nil {
		return nil, err
	}
	return append(binary.AppendUvarint(nil, rev), data...), nil
}

func decodeSummary(value []byte) (*exportv1.Job, uint64, bool) {
	rev, n := binary.Uvarint(value)
	if n <= 0 {
		return nil, 0, false
	}
	job := &exportv1.Job{}
	if proto.Unmarshal(value[n:], job) != nil {
		return nil, 0, false
	}
	return job, rev, true
}

// writeSummary puts job's summary, taken at the job's revision rev, into
// its owner and organization entries and its owner's summary block
// (blocks.go, revision-checked) unless they hold one of a later
// revision: two appliers of one job's consecutive events may finish in
// either order, and the later job must win. An entry that is missing (a
// job indexed by a replica of the previous layout has no organization
// entry) is created, with its markers (the owner entry's). A failure
// leaves the previous summary, which the job's next change replaces; it
// is not reported, since the job itself is written.
//
// An existing entry is overwritten with a plain put, not a
// revision-checked update: the server stores a message's headers with
// it, and the expected-sequence header of an update made every listing
// pay for building and parsing headers on each of an owner's thousand
// entries, about half its cost on the server (docs/BENCHMARKS.md, "One
// owner's Rebilly list"). What the check guarded, an older summary put
// after a newer one, is repaired instead: after its puts the writer reads
// the job's revision, and when the job has moved on to another summary
// meanwhile it writes that one. The last put of all is followed by such a
// read, so the entries end with the summary of the job's last revision.
func (s *Store) writeSummary(ctx context.Context, job *exportv1.Job, rev uint64) {
	for range maxAttempts {
		value, err := encodeSummary(job, rev)
		if err != nil {
			return
		}
		s.putSummary(ctx, ownKey(job, hashToken), ownMarkers(job), value, rev)
		if k := orgKey(job, hashToken); k != "" {
			s.putSummary(ctx, k, nil, value, rev)
		}
		s.writeBlock(ctx, job, rev, value)
		e, err := s.kv.Get(ctx, job.GetId())
		if err != nil || e.Revision() <= rev {
			return
		}
		next := &exportv1.Job{}
		if proto.Unmarshal(e.Value(), next) != nil || proto.Equal(Summary(next), Summary(job)) {
			return
		}
		job, rev = next, e.Revision()
	}
}

func (s *Store) putSummary(ctx context.Context, key string, markers []string, value []byte, rev uint64) {
	// Twice: an entry another writer created between the read and the
	// create is then read and overwritten like any other.
	for range 2 {
		e, err := s.index.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			for _, m := range markers {
				if _, err := s.index.Put(ctx, m, nil); err != nil {
					return
				}
			}
			if _, err = s.index.Create(ctx, key, value); !errors.Is(err, jetstream.ErrKeyExists) {
				return
			}
		case err != nil:
			return
		default:
			if _, have, ok := decodeSummary(e.Value()); !ok || have < rev {
				_, _ = s.index.Put(ctx, key, value)
			}
			return
		}
	}
}

// Summaries returns the summaries (see Summary) of sc's jobs that keep
// accepts (nil: all), newest first. It is EachSummary collected and
// sorted; a listing that needs only a page of them should stream them
// with EachSummary instead of holding them all.
func (s *Store) Summaries(ctx context.Context, sc Scope, keep func(*exportv1.Job) bool) ([]*exportv1.Job, error) {
	var out []*exportv1.Job
	err := s.EachSummary(ctx, sc, func(sum *exportv1.Job) error {
		if keep == nil || keep(sum) {
			out = append(out, sum)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(out, NewestFirst)
	return out, nil
}

// NewestFirst is the order of every listing of jobs: created_at
// descending (as the index keys carry it), then id descending.
func NewestFirst(a, b *exportv1.Job) int {
	if c := cmp.Compare(stamp(b), stamp(a)); c != 0 {
		return c
	}
	return cmp.Compare(b.GetId(), a.GetId())
}

// EachLazySummary calls fn with the summary (see Summary, LazySummary)
// of each of sc's jobs, once each, in no particular order, and stops at
// fn's first error. For a scope of one owner it reads the owner's summary
// blocks (blocks.go) when they hold every one of the owner's jobs; else,
// and for a scope of one organization and dialect (every owner's: an
// administrator's view), it reads only the scope's index entries, and
// the jobs only of entries that have no summary yet (a create in flight,
// or one that died), and puts the owner's summaries it read into the
// blocks that lack them; a summary may lag its job by the moment between
// their writes. Other scopes read their jobs in full. An owner's listing
// holds the owner's blocks (or, reading the entries, the summaries to
// merge into them): bounded by the owner's jobs. An organization's holds
// at most a batch of entries at a time, never the scope's: its hundred
// thousand summaries stream through fn.
func (s *Store) EachLazySummary(ctx context.Context, sc Scope, fn func(*LazySummary) error) error {
	release, err := s.enterListing(ctx)
	if err != nil {
		return err
	}
	defer release()
	if sc.orgWide() {
		return s.eachOrgSummary(ctx, sc, fn)
	}
	if sc.Owner == "" || sc.Parent != "" {
		page, err := s.find(ctx, Query{Scope: sc})
		if err != nil {
			return err
		}
		for _, j := range page.Jobs {
			if err := fn(LazyOf(Summary(j))); err != nil {
				return err
			}
		}
		return nil
	}
	blocks, err := s.readBlocks(ctx, sc.Owner)
	if err != nil {
		return err
	}
	if blocks.complete {
		return s.eachBlockSummary(ctx, blocks, sc, fn)
	}
	repair := &blockRepair{b: blocks}
	add := func(entries []entry, values map[string][]byte) error {
		sums, err := s.summaries(ctx, entries, values)
		if err != nil {
			return err
		}
		for _, e := range entries {
			repair.add(e, values[e.key])
		}
		for _, sum := range sums {
			if sum != nil && sc.matches(sum) {
				if err := fn(LazyOf(sum)); err != nil {
					return err
				}
			}
		}
		return nil
	}
	// All of them at once when they fit one direct get (one round trip
	// instead of one per bucket), else bucket by bucket.
	values, err := kvbatch.Matching(ctx, s.js, s.index, sc.ownFilter("*", "*"))
	switch {
	case errors.Is(err, kvbatch.ErrTooMany):
		_, err = s.walkOwn(ctx, sc, nil, func() int { return 0 }, nil, false, func(entries []entry, values map[string][]byte, _ bool) (bool, error) {
			return false, add(entries, values)
		})
	case err != nil:
		return fmt.Errorf("list index: %w", err)
	default:
		err = add(parseEntries(slices.Collect(maps.Keys(values)), true), values)
	}
	if err == nil {
		repair.apply(ctx, s)
	}
	return err
}

// eachOrgSummary is EachSummary for an organization-wide scope: one
// direct get when its entries are few, else streamed from the index's
// stream by an ordered consumer filtered to them (the last message of
// each key, a batch at a time), whose cost is that of the entries: a
// direct get of a thousand literal keys costs the server a look-up of
// each, and a hundred of them took longer than reading every job.
// Entries without a summary are read from their jobs a batch at a time.
func (s *Store) eachOrgSummary(ctx context.Context, sc Scope, fn func(*LazySummary) error) error {
	filter := sc.orgFilter()
	var missing []entry
	flush := func() error {
		if len(missing) == 0 {
			return nil
		}
		jobs, err := s.fetch(ctx, missing)
		missing = missing[:0]
		if err != nil {
			return fmt.Errorf("list jobs: %w", err)
		}
		for _, j := range jobs {
			if j != nil && sc.matches(j) {
				if err := fn(LazyOf(Summary(j))); err != nil {
					return err
				}
			}
		}
		return nil
	}
	one := func(key string, value []byte) error {
		e, ok := parseEntry(key, true)
		if !ok {
			return nil
		}
		sum, _, ok := decodeSummary(value)
		if !ok || sum.GetId() != e.id {
			if missing = append(missing, e); len(missing) == missingBatch {
				return flush()
			}
			return nil
		}
		if !sc.matches(sum) {
			return nil
		}
		return fn(LazyOf(sum))
	}
	m, err := kvbatch.Matching(ctx, s.js, s.index, filter)
	switch {
	case err == nil:
		for k, v := range m {
			if err := one(k, v); err != nil {
				return err
			}
		}
		return flush()
	case !errors.Is(err, kvbatch.ErrTooMany):
		return fmt.Errorf("list index %s: %w", filter, err)
	}
	prefix := "$KV." + s.index.Bucket() + "."
	err = s.scanStream(ctx, "KV_"+s.index.Bucket(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{prefix + filter}},
		func(msg jetstream.Msg, _ uint64) error {
			return one(strings.TrimPrefix(msg.Subject(), prefix), msg.Data())
		})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return fmt.Errorf("list index %s: %w", filter, err)
	}
	return nil
}

// missingBatch is how many entries without a summary EachSummary holds
// before it reads their jobs.
const missingBatch = 1000

// summaries are the summaries of entries, in their order, from values
// (entry key to value) or, for an entry without one, from its job (nil
// for an entry whose job does not hold it).
func (s *Store) summaries(ctx context.Context, entries []entry, values map[string][]byte) ([]*exportv1.Job, error) {
	sums := make([]*exportv1.Job, len(entries))
	var missing []entry
	var at []int
	for i, e := range entries {
		if sum, _, ok := decodeSummary(values[e.key]); ok && sum.GetId() == e.id {
			sums[i] = sum
			continue
		}
		missing, at = append(missing, e), append(at, i)
	}
	if len(missing) > 0 {
		jobs, err := s.fetch(ctx, missing)
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		for k, j := range jobs {
			if j != nil {
				sums[at[k]] = Summary(j)
			}
		}
	}
	return sums, nil
}

// GetMany returns the jobs of ids that exist, by id, with one request per
// thousand ids.
func (s *Store) GetMany(ctx context.Context, ids []string) (map[string]*exportv1.Job, error) {
	valid := slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return !ValidID(id) })
	values, err := kvbatch.Get(ctx, s.js, s.kv, valid)
	if err != nil {
		return nil, fmt.Errorf("get jobs: %w", err)
	}
	out := make(map[string]*exportv1.Job, len(values))
	for id, data := range values {
		job := &exportv1.Job{}
		if err := proto.Unmarshal(data, job); err != nil {
			return nil, fmt.Errorf("decode job %s: %w", id, err)
		}
		out[id] = job
	}
	return out, nil
}
