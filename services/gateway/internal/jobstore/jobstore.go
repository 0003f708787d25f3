// Package jobstore is the gateway's projection of export jobs: one
// exportv1.Job per job id in the KV bucket bus.BucketJobs.
//
// The projection has one write path: Store.Apply folds a status event into
// its job with the pure reducer (step, in state.go) and writes the result
// with a revision check. Nothing else writes the bucket. Creating a job is
// applying its ExportRequested, which carries the whole job (Store.Create
// is Apply that also says whether this call created the job); the gateway
// applies it before publishing it, so a poll right after the create finds
// the job, and the copy the projection consumer gets back from the stream
// finds the record it created and changes nothing. The
// gateway's own later events (a cancel, a failure) go through Emit, which
// publishes them and applies them at once for read-your-writes; their
// copies from the stream are no-ops the same way, since the reducer only
// moves a job forward.
//
// Every write is a read-modify-write guarded by the entry's revision (a
// create expects no entry), so any number of gateway replicas and
// redelivered events may apply concurrently and the outcome is the same
// as applying them one by one: states only move forward, progress only
// grows and a terminal job keeps its outcome.
//
// Listings never read the whole bucket: the same write path keeps an
// index in bus.BucketJobIndex (one key per job and listing, see index.go)
// that List, Find, Summaries, Latest, Unfinished and UnfinishedBefore
// read, so a listing costs what the jobs it names cost.
package jobstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/kvbatch"
)

// Errors.
var (
	// ErrNotFound is returned when no job has the id. Apply returns it
	// (wrapped, not permanent) for an event that arrives before its job:
	// the projection retries and catches up.
	ErrNotFound = errors.New("jobstore: job not found")
	// ErrExists is returned by Create when the id is taken, and by Apply
	// for an ExportRequested whose id names a job another request created.
	ErrExists = errors.New("jobstore: job already exists")
)

// maxAttempts bounds the read-modify-write retries of one Apply. Conflicts
// only happen between appliers of the same job at the same moment, so a
// handful of retries is plenty; after that the caller's own retry (the
// message redelivery) takes over.
const maxAttempts = 32

// ValidID reports whether id can name a job: 1 to 128 of the KV key
// alphabet minus '.' and '/' ([A-Za-z0-9_=-]), so that an id is also a
// single subject token. Checked on every poll, so by hand: the regular
// expression it replaced was a visible share of a poll's CPU profile.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '=', c == '-':
		default:
			return false
		}
	}
	return true
}

// Store reads and writes jobs. It is safe for concurrent use.
type Store struct {
	js         jetstream.JetStream
	kv         jetstream.KeyValue
	jobs       *kvbatch.Keys
	index      jetstream.KeyValue
	now        func() time.Time
	streamMu   sync.Mutex
	stream     jetstream.Stream
	retention  time.Duration
	onTerminal func(context.Context, *exportv1.Job)
	onChange   func(ctx context.Context, before, after *exportv1.Job)
	// busy holds the owner minutes (their filters) found to hold more
	// entries than a page reads of them (see minuteEntries).
	busyMu sync.Mutex
	busy   map[string]struct{}
	// listings holds a token per Find and EachSummary under way.
	listings chan struct{}
	// noBlocks makes the store write what the previous version wrote,
	// no summary blocks: for tests of a rolling upgrade (export_test.go).
	noBlocks bool
}

// Option configures a Store.
type Option func(*Store)

// WithRetention sets how long an ended job's files are kept: applying
// ExportCompleted, ExportFailed or ExportCanceled sets the job's
// expires_at to the event's occurred_at plus d, so every replica computes
// the same instant, and a failed or canceled job's partial results say
// until when they stay. The archiver's sweeper deletes the files at
// expires_at. Zero leaves expires_at unset.
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

// WithClock sets the clock that decides when an index entry naming a
// missing job is stale; the default is time.Now.
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

// WithOnChange calls fn after every write Apply makes, with the job as it
// was (nil for a create) and as stored now; the gateway's metrics count
// transitions there. Like WithOnTerminal's, it runs once per change of a
// job, on the applier's goroutine, and must be quick and tolerate a lost
// call.
func WithOnChange(fn func(ctx context.Context, before, after *exportv1.Job)) Option {
	return func(s *Store) { s.onChange = fn }
}

// WithConcurrentListings bounds the Find and EachSummary calls under way
// at once to n (default DefaultConcurrentListings); the others wait for a
// slot, or for their context. What a listing holds (its index entries'
// messages, the jobs or summaries it decodes, a page's selection) is
// most of what a gateway holds during a burst of lists: with a hundred
// lists in flight on a machine that gave them no core, it held them all
// at once, and the gateway's RSS followed. Lists are NATS round trips
// and decoding, so a few at a time keep the cores and the server as busy
// as a hundred do.
func WithConcurrentListings(n int) Option {
	return func(s *Store) { s.listings = make(chan struct{}, max(n, 1)) }
}

// DefaultConcurrentListings is how many listings a Store runs at once
// unless WithConcurrentListings says otherwise.
const DefaultConcurrentListings = 8

// New returns a Store over the jobs bucket kv and its index bucket index
// (see index.go); js is the JetStream context they live in (the one-time
// index build reads the jobs bucket's stream).
func New(js jetstream.JetStream, kv, index jetstream.KeyValue, opts ...Option) *Store {
	s := &Store{js: js, kv: kv, jobs: kvbatch.NewKeys(js, kv), index: index, now: time.Now, listings: make(chan struct{}, DefaultConcurrentListings)}
	for _, o := range opts {
		o(s)
	}
	return s
}

// enterListing waits for a listing's slot (see WithConcurrentListings);
// release gives it back. Listings never nest, so a listing holds one
// slot at most.
func (s *Store) enterListing(ctx context.Context) (release func(), err error) {
	select {
	case s.listings <- struct{}{}:
		return func() { <-s.listings }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("list jobs: %w", ctx.Err())
	}
}

// Open looks up the jobs bucket and its index (declared by
// bus.EnsureTopology) and returns a Store over them.
func Open(ctx context.Context, js jetstream.JetStream, opts ...Option) (*Store, error) {
	kv, err := js.KeyValue(ctx, bus.BucketJobs)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bus.BucketJobs, err)
	}
	index, err := js.KeyValue(ctx, bus.BucketJobIndex)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bus.BucketJobIndex, err)
	}
	return New(js, kv, index, opts...), nil
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
	// One direct get, read as kv.Get reads it (see kvbatch.Keys): every
	// poll is one.
	data, rev, err := s.jobs.Last(ctx, id)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, 0, fmt.Errorf("job %s: %w", id, ErrNotFound)
		}
		return nil, 0, fmt.Errorf("get job %s: %w", id, err)
	}
	job := &exportv1.Job{}
	if err := proto.Unmarshal(data, job); err != nil {
		return nil, 0, fmt.Errorf("decode job %s: %w", id, err)
	}
	return job, rev, nil
}

// Event is a status event: every exportv1 status message has a job id and
// an occurrence time.
type Event interface {
	proto.Message
	GetJobId() string
}

// Apply folds one status event into its job and returns the job as stored
// afterwards. It is the only way the projection is written. It is
// idempotent: applying an event twice, or an event that the job has
// already moved past, changes nothing and writes nothing.
//
// ExportRequested carries the whole job and creates it if it is missing;
// applied again, it finds its job and changes nothing, whatever the job
// went through since. For an id that another request's job already holds
// it fails with ErrExists and leaves that job alone. Any other event for a
// job that does not exist yet fails with ErrNotFound so the caller retries
// later. Malformed events fail with a bus.Permanent error.
func (s *Store) Apply(ctx context.Context, ev Event) (*exportv1.Job, error) {
	job, _, err := s.apply(ctx, ev)
	return job, err
}

// Create applies req, the ExportRequested of a new job, as Apply does, and
// fails with ErrExists unless this call is what created the job: a job
// already there, even one equal to req's, belongs to another create of the
// same id (a client repeating its own id gets a conflict, not a second
// run of its tasks). It is no second way to write a job; the copy of req
// that comes back from the stream goes through Apply and changes nothing.
//
// A job without a trace id gets the trace and span of ctx's span, the
// request that creates it, written into req so that the event published next
// carries it too: the trace id shown with a job finds every service's
// spans for it.
func (s *Store) Create(ctx context.Context, req *exportv1.ExportRequested) (*exportv1.Job, error) {
	if j := req.GetJob(); j != nil && j.GetTraceId() == "" {
		if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
			j.TraceId = sc.TraceID().String()
			if sc.HasSpanID() {
				j.SpanId = sc.SpanID().String()
			}
		}
	}
	job, created, err := s.apply(ctx, req)
	if err == nil && !created {
		err = fmt.Errorf("create job %s: %w", req.GetJobId(), ErrExists)
	}
	return job, err
}

// apply is Apply, also reporting whether it wrote the job.
func (s *Store) apply(ctx context.Context, ev Event) (*exportv1.Job, bool, error) {
	if err := check(ev); err != nil {
		return nil, false, err
	}
	id := ev.GetJobId()
	for attempt := 1; ; attempt++ {
		job, rev, err := s.get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			job, rev, err = nil, 0, nil
		}
		if err != nil {
			return nil, false, err
		}
		next, changed, err := step(job, ev, s.retention)
		if err != nil {
			return nil, false, err
		}
		if !changed {
			if _, replay := ev.(*exportv1.ExportRequested); replay {
				// A job created before the index existed, or by a
				// gateway that predates it, is indexed when its request
				// comes back from the stream.
				if err := s.ensureIndexed(ctx, job, rev); err != nil {
					return nil, false, err
				}
			}
			return job, false, nil
		}
		data, err := proto.Marshal(next)
		if err != nil {
			return nil, false, fmt.Errorf("marshal job %s: %w", id, err)
		}
		if job == nil {
			// Index first: a job that exists is always listed, and an
			// entry whose job never gets written is ignored by reads.
			count, ierr := s.writeIndex(ctx, next)
			if ierr != nil {
				return nil, false, ierr
			}
			if rev, err = s.kv.Create(ctx, id, data); err != nil && count != nil {
				s.uncount(ctx, next, count)
			}
		} else {
			rev, err = s.kv.Update(ctx, id, data, rev)
		}
		if err == nil {
			if job == nil || !proto.Equal(Summary(job), Summary(next)) {
				s.writeSummary(ctx, next, rev)
			}
			if !Terminal(job.GetState()) && Terminal(next.GetState()) {
				if job != nil {
					s.unindexFinished(ctx, next)
				}
				if s.onTerminal != nil {
					s.onTerminal(ctx, next)
				}
			}
			if s.onChange != nil {
				s.onChange(ctx, job, next)
			}
			return next, true, nil
		}
		conflict := errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
		if !conflict || attempt >= maxAttempts {
			return nil, false, fmt.Errorf("apply %T to job %s: %w", ev, id, err)
		}
		// Someone else wrote the job between our read and write. Back off
		// a little, with jitter, so two appliers do not collide again.
		select {
		case <-ctx.Done():
			return nil, false, fmt.Errorf("apply %T to job %s: %w", ev, id, ctx.Err())
		case <-time.After(time.Duration(rand.Int64N(int64(attempt) * int64(time.Millisecond)))):
		}
	}
}

// Publisher publishes status events; bus.Publisher is one.
type Publisher interface {
	PublishStatus(ctx context.Context, ev bus.Event, jobID, discriminator string, m proto.Message) error
}

// Emit publishes ev, an event the gateway itself decides (a cancel, a
// failure), for the other services and then applies it here, so that the
// caller's answer already shows it. The projection consumer applies the
// copy it gets back from the stream through the same Apply, which then
// changes nothing: ev changes its job once. If publishing fails nothing is
// applied and the job is as it was. Emit suits events that happen once
// per job: their dedup id is the job id and the event kind.
func (s *Store) Emit(ctx context.Context, pub Publisher, ev Event) (*exportv1.Job, error) {
	if err := check(ev); err != nil {
		return nil, err
	}
	kind, ok := kindOf(ev)
	if !ok {
		return nil, fmt.Errorf("emit %T: not a status event", ev)
	}
	if err := pub.PublishStatus(ctx, kind, ev.GetJobId(), "", ev); err != nil {
		return nil, fmt.Errorf("publish %s of job %s: %w", kind, ev.GetJobId(), err)
	}
	return s.Apply(ctx, ev)
}
