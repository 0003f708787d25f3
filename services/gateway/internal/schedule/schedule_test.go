package schedule_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/schedule"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

// clock is a fake clock shared by racing schedulers.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// runs records created run jobs the way jobstore.Create does: an id can be
// created only once.
type runs struct {
	mu      sync.Mutex
	created map[string]time.Time
	calls   atomic.Int32
	fail    atomic.Bool
}

func (r *runs) run(_ context.Context, sched *exportv1.Job, occ time.Time, runID string) error {
	r.calls.Add(1)
	if r.fail.Load() {
		return errors.New("bus down")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.created[runID]; !ok {
		r.created[runID] = occ
	}
	return nil
}

func (r *runs) ids() map[string]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]time.Time{}
	for k, v := range r.created {
		out[k] = v
	}
	return out
}

var t0 = time.Date(2026, 5, 1, 6, 0, 0, 0, time.UTC)

func newStore(t *testing.T) *schedule.Store { return newStoreWith(t) }

func newStoreWith(t *testing.T, opts ...schedule.StoreOption) *schedule.Store {
	srv := bustest.Start(t)
	kv, err := srv.JS.KeyValue(t.Context(), bus.BucketSchedules)
	require.NoError(t, err)
	return schedule.NewStore(kv, opts...)
}

func hourly(t *testing.T, id string) *exportv1.Job {
	rec := &exportv1.Recurrence{Instruction: "FREQ=HOURLY;COUNT=5", Start: timestamppb.New(t0)}
	next, err := schedule.Next(rec, t0, true)
	require.NoError(t, err)
	rec.Next = next
	return &exportv1.Job{Id: id, Recurrence: rec}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		rule string
		ok   bool
	}{
		{"FREQ=DAILY;BYHOUR=6", true},
		{"RRULE:FREQ=WEEKLY;BYDAY=MO,FR", true},
		{"FREQ=MONTHLY;COUNT=3", true},
		{"", false},
		{"FREQ=SOMETIMES", false},
		{"BYHOUR=6", false},
		{"FREQ=SECONDLY", false},
		{"FREQ=DAILY;BYHOUR=25", false},
		{"DTSTART:20260101T000000Z\nRRULE:FREQ=DAILY", false},
		{"not a rule at all", false},
		// rrule-go loops forever on these: the hour (minute) stepped by
		// INTERVAL from the start never meets BYHOUR (BYMINUTE).
		{"FREQ=HOURLY;INTERVAL=24;BYHOUR=5", false},
		{"FREQ=HOURLY;INTERVAL=2;BYHOUR=7,9", false},
		{"FREQ=HOURLY;INTERVAL=2;BYHOUR=8", true},
		{"FREQ=MINUTELY;INTERVAL=60;BYMINUTE=5", false},
		{"FREQ=MINUTELY;INTERVAL=1440;BYHOUR=5", false},
		{"FREQ=MINUTELY;INTERVAL=120;BYHOUR=8;BYMINUTE=0", true},
		{"FREQ=DAILY;INTERVAL=0", true},
		{"FREQ=DAILY;INTERVAL=10001", false},
		{"FREQ=DAILY;INTERVAL=-1", false},
		{"FREQ=DAILY;COUNT=-1", false},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			_, err := schedule.Parse(tc.rule, t0)
			if tc.ok {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, schedule.ErrInvalidRule)
			}
		})
	}
}

func TestTwoSchedulersFireEachOccurrenceOnce(t *testing.T) {
	store := newStore(t)
	ctx := t.Context()
	require.NoError(t, store.Create(ctx, hourly(t, "sched1")))
	clk := &clock{t: t0.Add(-time.Minute)}
	r := &runs{created: map[string]time.Time{}}
	a := schedule.New(store, r.run, schedule.Options{Now: clk.Now})
	b := schedule.New(store, r.run, schedule.Options{Now: clk.Now})

	tickBoth := func() {
		var wg sync.WaitGroup
		for _, s := range []*schedule.Scheduler{a, b, a, b} {
			wg.Go(func() { assert.NoError(t, s.Tick(ctx)) })
		}
		wg.Wait()
	}
	tickBoth()
	assert.Empty(t, r.ids(), "nothing is due before the start")

	for h := range 7 {
		clk.Set(t0.Add(time.Duration(h)*time.Hour + time.Second))
		tickBoth()
	}
	got := r.ids()
	want := map[string]time.Time{}
	for h := range 5 {
		occ := t0.Add(time.Duration(h) * time.Hour)
		want[schedule.RunID("sched1", occ)] = occ
	}
	assert.Equal(t, want, got, "COUNT=5: five runs, one per occurrence")

	sched, _, err := store.Get(ctx, "sched1")
	require.NoError(t, err)
	assert.Nil(t, sched.GetRecurrence().GetNext(), "no occurrence left")
	assert.EqualValues(t, 5, sched.GetRecurrence().GetRuns())
}

func TestNoOccurrenceLostAcrossOutageAndFailures(t *testing.T) {
	store := newStore(t)
	ctx := t.Context()
	require.NoError(t, store.Create(ctx, hourly(t, "sched2")))
	clk := &clock{t: t0.Add(90 * time.Minute)}
	r := &runs{created: map[string]time.Time{}}
	r.fail.Store(true)
	s := schedule.New(store, r.run, schedule.Options{Now: clk.Now})

	// 06:00 and 07:00 are due; only 07:00, the most recent, runs. Its run
	// cannot be created (bus down): the schedule must not move on.
	assert.Error(t, s.Tick(ctx))
	sched, _, err := store.Get(ctx, "sched2")
	require.NoError(t, err)
	assert.Equal(t, t0, sched.GetRecurrence().GetNext().AsTime(), "next stays until its run exists")

	// The bus is back within the hour: the claimed occurrence runs.
	first := t0.Add(time.Hour)
	r.fail.Store(false)
	require.NoError(t, s.Tick(ctx))
	assert.Equal(t, map[string]time.Time{schedule.RunID("sched2", first): first}, r.ids())

	// A new scheduler (a restart) after a long outage runs only the most
	// recent missed occurrence (the last of COUNT=5), not all of them.
	clk.Set(t0.Add(10 * time.Hour))
	s2 := schedule.New(store, r.run, schedule.Options{Now: clk.Now})
	require.NoError(t, s2.Tick(ctx))
	last := t0.Add(4 * time.Hour)
	assert.Equal(t, map[string]time.Time{schedule.RunID("sched2", first): first, schedule.RunID("sched2", last): last}, r.ids())
}

func TestDeleteStopsFiring(t *testing.T) {
	store := newStore(t)
	ctx := t.Context()
	require.NoError(t, store.Create(ctx, hourly(t, "sched3")))
	require.ErrorIs(t, store.Create(ctx, hourly(t, "sched3")), schedule.ErrExists)
	require.NoError(t, store.Delete(ctx, "sched3"))
	clk := &clock{t: t0.Add(24 * time.Hour)}
	r := &runs{created: map[string]time.Time{}}
	require.NoError(t, schedule.New(store, r.run, schedule.Options{Now: clk.Now}).Tick(ctx))
	assert.Empty(t, r.ids())
	_, _, err := store.Get(ctx, "sched3")
	assert.ErrorIs(t, err, schedule.ErrNotFound)
}

// TestEachRunStartsItsOwnTrace: a scheduled run has no request behind it,
// so the scheduler's decision is the root of the run's trace, linked to
// the trace that created the schedule; the run is created inside it.
func TestEachRunStartsItsOwnTrace(t *testing.T) {
	store := newStore(t)
	ctx := t.Context()
	sched := hourly(t, "traced")
	sched.TraceId, sched.SpanId = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	require.NoError(t, store.Create(ctx, sched))
	rec := tracetest.NewSpanRecorder()
	var inRun trace.SpanContext
	run := func(ctx context.Context, _ *exportv1.Job, _ time.Time, _ string) error {
		inRun = trace.SpanContextFromContext(ctx)
		return nil
	}
	s := schedule.New(store, run, schedule.Options{
		Now:            func() time.Time { return t0.Add(time.Second) },
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)),
	})
	require.NoError(t, s.Tick(ctx))

	ended := rec.Ended()
	require.Len(t, ended, 1)
	span := ended[0]
	assert.Equal(t, "schedule run", span.Name())
	assert.False(t, span.Parent().IsValid(), "a root span")
	assert.Equal(t, span.SpanContext(), inRun, "the run is created inside it")
	require.Len(t, span.Links(), 1)
	assert.Equal(t, sched.TraceId, span.Links()[0].SpanContext.TraceID().String(), "linked to the schedule's creation")
}
