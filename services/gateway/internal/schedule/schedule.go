// Package schedule runs recurring exports. A schedule is a template job
// with a Recurrence (RFC 5545 RRULE, start, next occurrence) kept in the KV
// bucket bus.BucketSchedules under its id. Every gateway replica runs a
// Scheduler; each tick fires the occurrences that are due:
//
//  1. claim the occurrence with kv.Create("<id>.<unix>") whose value is the
//     run's job id (<id>-<unix>); only one replica's Create succeeds, but a
//     replica that finds the claim already there goes on too,
//  2. make sure the run job exists (RunFunc is idempotent: the run id is a
//     function of the occurrence, and creating an existing job is a no-op),
//     which repairs a replica that crashed between claim and submit,
//  3. move the schedule's next occurrence on with a revision-checked update.
//
// So an occurrence produces exactly one job however many replicas race,
// and none is lost across restarts: next only moves after its run exists.
package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/teambition/rrule-go"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
)

// Errors.
var (
	ErrNotFound = errors.New("schedule: not found")
	ErrExists   = errors.New("schedule: already exists")
	// ErrInvalidRule wraps every RRULE problem; the message says which.
	ErrInvalidRule = errors.New("invalid RRULE")
)

// Parse checks an RRULE (with or without the "RRULE:" prefix) and returns
// it anchored at start. Sub-minute frequencies are refused: every
// occurrence is a whole export.
func Parse(instruction string, start time.Time) (*rrule.RRule, error) {
	s := strings.TrimSpace(instruction)
	s = strings.TrimPrefix(s, "RRULE:")
	if s == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidRule)
	}
	if strings.ContainsAny(s, "\r\n") || strings.Contains(strings.ToUpper(s), "DTSTART") {
		return nil, fmt.Errorf("%w: give a single RRULE; the start goes in recurring.start", ErrInvalidRule)
	}
	opt, err := rrule.StrToROption(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRule, err)
	}
	if !strings.Contains(strings.ToUpper(s), "FREQ=") {
		return nil, fmt.Errorf("%w: FREQ is required", ErrInvalidRule)
	}
	if opt.Freq == rrule.SECONDLY {
		return nil, fmt.Errorf("%w: FREQ=SECONDLY is not allowed; the shortest period is MINUTELY", ErrInvalidRule)
	}
	opt.Dtstart = start.UTC().Truncate(time.Second)
	r, err := rrule.NewRRule(*opt)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRule, err)
	}
	return r, nil
}

// Next returns the first occurrence of rec after t (at t too when
// inclusive), or nil when the rule has no more.
func Next(rec *exportv1.Recurrence, t time.Time, inclusive bool) (*timestamppb.Timestamp, error) {
	r, err := Parse(rec.GetInstruction(), rec.GetStart().AsTime())
	if err != nil {
		return nil, err
	}
	n := r.After(t.UTC(), inclusive)
	if n.IsZero() {
		return nil, nil
	}
	return timestamppb.New(n), nil
}

// RunID is the job id of a schedule's run at occurrence.
func RunID(scheduleID string, occurrence time.Time) string {
	return scheduleID + "-" + strconv.FormatInt(occurrence.Unix(), 10)
}

func claimKey(scheduleID string, occurrence time.Time) string {
	return scheduleID + "." + strconv.FormatInt(occurrence.Unix(), 10)
}

// hiddenKey marks a one-off export deleted through a dialect: the job
// record stays (the projection owns it) but listings skip it.
func hiddenKey(id string) string { return id + ".deleted" }

// Store reads and writes schedules. It is safe for concurrent use.
type Store struct {
	kv jetstream.KeyValue
}

// NewStore returns a Store over the schedules bucket.
func NewStore(kv jetstream.KeyValue) *Store { return &Store{kv: kv} }

// Create stores a new schedule; ErrExists if the id is taken.
func (s *Store) Create(ctx context.Context, job *exportv1.Job) error {
	data, err := proto.Marshal(job)
	if err != nil {
		return fmt.Errorf("marshal schedule: %w", err)
	}
	if _, err := s.kv.Create(ctx, job.GetId(), data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return ErrExists
		}
		return fmt.Errorf("create schedule %s: %w", job.GetId(), err)
	}
	return nil
}

// Get returns a schedule and its revision, or ErrNotFound.
func (s *Store) Get(ctx context.Context, id string) (*exportv1.Job, uint64, error) {
	if id == "" || strings.ContainsAny(id, ".*> ") {
		return nil, 0, ErrNotFound
	}
	e, err := s.kv.Get(ctx, id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrInvalidKey):
		return nil, 0, ErrNotFound
	case err != nil:
		return nil, 0, fmt.Errorf("get schedule %s: %w", id, err)
	}
	job := &exportv1.Job{}
	if err := proto.Unmarshal(e.Value(), job); err != nil {
		return nil, 0, fmt.Errorf("decode schedule %s: %w", id, err)
	}
	return job, e.Revision(), nil
}

// Update replaces a schedule if its revision is still rev.
func (s *Store) Update(ctx context.Context, job *exportv1.Job, rev uint64) (uint64, error) {
	data, err := proto.Marshal(job)
	if err != nil {
		return 0, fmt.Errorf("marshal schedule: %w", err)
	}
	n, err := s.kv.Update(ctx, job.GetId(), data, rev)
	if err != nil {
		return 0, fmt.Errorf("update schedule %s: %w", job.GetId(), err)
	}
	return n, nil
}

// Delete removes a schedule and its claims; runs already created stay.
func (s *Store) Delete(ctx context.Context, id string) error {
	if err := s.kv.Purge(ctx, id); err != nil {
		return fmt.Errorf("delete schedule %s: %w", id, err)
	}
	keys, err := s.kv.ListKeysFiltered(ctx, id+".*")
	if err != nil {
		return nil // the schedule is gone; stale claims are harmless
	}
	for k := range keys.Keys() {
		if k != hiddenKey(id) {
			_ = s.kv.Purge(ctx, k)
		}
	}
	return nil
}

// List returns every schedule.
func (s *Store) List(ctx context.Context) ([]*exportv1.Job, error) {
	var out []*exportv1.Job
	err := s.scan(ctx, "*", func(e jetstream.KeyValueEntry) error {
		job := &exportv1.Job{}
		if err := proto.Unmarshal(e.Value(), job); err != nil {
			return fmt.Errorf("decode schedule %s: %w", e.Key(), err)
		}
		out = append(out, job)
		return nil
	})
	return out, err
}

// Hide marks a job as deleted for listings.
func (s *Store) Hide(ctx context.Context, id string) error {
	if _, err := s.kv.Put(ctx, hiddenKey(id), []byte{1}); err != nil {
		return fmt.Errorf("hide %s: %w", id, err)
	}
	return nil
}

// Hidden returns the ids marked with Hide.
func (s *Store) Hidden(ctx context.Context) (map[string]bool, error) {
	out := map[string]bool{}
	err := s.scan(ctx, "*.deleted", func(e jetstream.KeyValueEntry) error {
		out[strings.TrimSuffix(e.Key(), ".deleted")] = true
		return nil
	})
	return out, err
}

func (s *Store) scan(ctx context.Context, pattern string, fn func(jetstream.KeyValueEntry) error) error {
	w, err := s.kv.Watch(ctx, pattern, jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("scan schedules: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("scan schedules: %w", ctx.Err())
		case e := <-w.Updates():
			if e == nil {
				return nil
			}
			if err := fn(e); err != nil {
				return err
			}
		}
	}
}

// RunFunc creates the run job runID of schedule sched for occurrence. It
// must be idempotent: when the job exists already it returns nil.
type RunFunc func(ctx context.Context, sched *exportv1.Job, occurrence time.Time, runID string) error

// Options tune a Scheduler.
type Options struct {
	// Interval between ticks; 0 means 5 seconds.
	Interval time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxCatchUp bounds the occurrences one schedule fires in one tick, so a
	// long outage is caught up over several ticks; 0 means 100.
	MaxCatchUp int
	Logger     *slog.Logger
}

// Scheduler fires due occurrences. Any number may run against one bucket.
type Scheduler struct {
	store *Store
	run   RunFunc
	opts  Options
}

// New returns a Scheduler.
func New(store *Store, run RunFunc, opts Options) *Scheduler {
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.MaxCatchUp <= 0 {
		opts.MaxCatchUp = 100
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Scheduler{store: store, run: run, opts: opts}
}

// Run ticks until ctx ends. Tick errors are logged and retried on the next
// tick: a schedule only moves on once its run exists.
func (s *Scheduler) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	for {
		if err := s.Tick(ctx); err != nil && ctx.Err() == nil {
			s.opts.Logger.WarnContext(ctx, "schedule tick", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Tick fires every due occurrence of every schedule once.
func (s *Scheduler) Tick(ctx context.Context) error {
	scheds, err := s.store.List(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, sched := range scheds {
		if err := s.fire(ctx, sched.GetId()); err != nil {
			errs = append(errs, fmt.Errorf("schedule %s: %w", sched.GetId(), err))
		}
	}
	return errors.Join(errs...)
}

func (s *Scheduler) fire(ctx context.Context, id string) error {
	now := s.opts.Now()
	for range s.opts.MaxCatchUp {
		sched, rev, err := s.store.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		next := sched.GetRecurrence().GetNext()
		if next == nil || next.AsTime().After(now) {
			return nil
		}
		occ := next.AsTime()
		runID := RunID(id, occ)
		if _, err := s.store.kv.Create(ctx, claimKey(id, occ), []byte(runID)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("claim %s: %w", claimKey(id, occ), err)
		}
		// Winner or not, the run must exist before next moves on.
		if err := s.run(ctx, sched, occ, runID); err != nil {
			return fmt.Errorf("run %s: %w", runID, err)
		}
		following, err := Next(sched.GetRecurrence(), occ, false)
		if err != nil {
			return err
		}
		sched.Recurrence.Next = following
		sched.Recurrence.Runs++
		sched.UpdatedAt = timestamppb.New(now)
		if _, err := s.store.Update(ctx, sched, rev); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || strings.Contains(err.Error(), "wrong last sequence") {
				continue // another replica moved it on: read again
			}
			return err
		}
		s.opts.Logger.InfoContext(ctx, "recurring export fired", "job_id", runID, "schedule_id", id, "occurrence", occ)
	}
	return nil
}
