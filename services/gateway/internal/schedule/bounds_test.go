package schedule_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/schedule"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

func TestValidateMinInterval(t *testing.T) {
	now := t0
	for _, tc := range []struct {
		rule string
		min  time.Duration
		// err is nil, ErrTooFrequent or ErrInvalidRule.
		err error
	}{
		{"FREQ=DAILY;BYHOUR=6", 0, nil},
		{"FREQ=HOURLY", 0, nil},
		{"FREQ=HOURLY;BYMINUTE=15", 0, nil},
		{"FREQ=WEEKLY;BYDAY=MO,TU;BYHOUR=0,12", 0, nil},
		{"FREQ=MINUTELY;INTERVAL=60", 0, nil},
		{"FREQ=MINUTELY;INTERVAL=90;BYSECOND=0", 0, nil},
		{"FREQ=MINUTELY", 0, schedule.ErrTooFrequent},
		{"FREQ=MINUTELY;INTERVAL=59", 0, schedule.ErrTooFrequent},
		// Several per minute however large INTERVAL is.
		{"FREQ=MINUTELY;INTERVAL=120;BYSECOND=0,30", 0, schedule.ErrTooFrequent},
		{"FREQ=MINUTELY;BYSECOND=0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20", 0, schedule.ErrTooFrequent},
		// Only once an hour, but the structural bound is MINUTELY's
		// INTERVAL: refused, as documented.
		{"FREQ=MINUTELY;BYMINUTE=0", 0, schedule.ErrTooFrequent},
		{"FREQ=HOURLY;BYMINUTE=0,30", 0, schedule.ErrTooFrequent},
		{"FREQ=HOURLY;BYSECOND=0,1", 0, schedule.ErrTooFrequent},
		{"FREQ=HOURLY;INTERVAL=2;BYMINUTE=0,30", 0, schedule.ErrTooFrequent},
		{"FREQ=DAILY;BYHOUR=6;BYMINUTE=0,1", 0, schedule.ErrTooFrequent},
		{"FREQ=DAILY;BYHOUR=0,23;BYMINUTE=0,30", 0, schedule.ErrTooFrequent},
		// 23:30 then 00:10 the next day: 40 minutes.
		{"FREQ=DAILY;BYHOUR=0,23;BYMINUTE=10,30", 0, schedule.ErrTooFrequent},
		{"FREQ=YEARLY;BYMONTH=1;BYDAY=MO;BYHOUR=1,2;BYMINUTE=0;BYSECOND=0,59", 0, schedule.ErrTooFrequent},
		{"FREQ=SECONDLY;INTERVAL=3600", 0, schedule.ErrInvalidRule},
		// A configured minimum.
		{"FREQ=HOURLY;INTERVAL=2", 3 * time.Hour, schedule.ErrTooFrequent},
		{"FREQ=DAILY", 24 * time.Hour, nil},
		{"FREQ=WEEKLY", 48 * time.Hour, nil},
		{"FREQ=WEEKLY;BYDAY=MO,TU", 48 * time.Hour, schedule.ErrTooFrequent},
		{"FREQ=MINUTELY;INTERVAL=5", 5 * time.Minute, nil},
		// Nothing left to fire.
		{"FREQ=DAILY;COUNT=2", 0, schedule.ErrInvalidRule},
		{"FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", 0, schedule.ErrInvalidRule},
	} {
		t.Run(tc.rule, func(t *testing.T) {
			_, err := schedule.Validate(tc.rule, now.Add(-7*24*time.Hour), now, tc.min)
			if tc.err == nil {
				assert.NoError(t, err)
			} else {
				assert.ErrorIs(t, err, tc.err)
			}
		})
	}
}

func TestValidateStart(t *testing.T) {
	_, err := schedule.Validate("FREQ=DAILY", time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC), t0, 0)
	assert.ErrorIs(t, err, schedule.ErrInvalidRule, "before 1970")
	_, err = schedule.Validate("FREQ=DAILY", time.Unix(0, 0), t0, 0)
	assert.NoError(t, err, "1970 itself")
}

// TestCatchUpFromStartIn1970 is the case: an hourly schedule that
// starts in 1970 fires once, at the most recent occurrence, and next is in
// the future.
func TestCatchUpFromStartIn1970(t *testing.T) {
	store := newStore(t)
	ctx := t.Context()
	rec := &exportv1.Recurrence{Instruction: "FREQ=HOURLY", Start: timestamppb.New(time.Unix(0, 0))}
	next, err := schedule.Next(rec, time.Unix(0, 0), true)
	require.NoError(t, err)
	rec.Next = next
	require.NoError(t, store.Create(ctx, &exportv1.Job{Id: "epoch", OwnerId: "alice", Recurrence: rec}))

	clk := &clock{t: t0.Add(30 * time.Minute)}
	r := &runs{created: map[string]time.Time{}}
	s := schedule.New(store, r.run, schedule.Options{Now: clk.Now})
	for range 3 {
		require.NoError(t, s.Tick(ctx))
	}
	assert.Equal(t, map[string]time.Time{schedule.RunID("epoch", t0): t0}, r.ids(), "one run: the most recent occurrence")
	sched, _, err := store.Get(ctx, "epoch")
	require.NoError(t, err)
	assert.Equal(t, t0.Add(time.Hour), sched.GetRecurrence().GetNext().AsTime())
	assert.EqualValues(t, 1, sched.GetRecurrence().GetRuns())
}

// admission is a fake Admission.
type admission struct {
	allow atomic.Bool
	fail  atomic.Bool
	calls atomic.Int32
}

func (a *admission) CanStart(context.Context, string) (bool, error) {
	a.calls.Add(1)
	if a.fail.Load() {
		return false, errors.New("jobs bucket down")
	}
	return a.allow.Load(), nil
}

func TestAdmissionSkipsRunsOverTheLimit(t *testing.T) {
	store := newStore(t)
	ctx := t.Context()
	require.NoError(t, store.Create(ctx, hourly(t, "busy")))
	clk := &clock{t: t0.Add(time.Second)}
	r := &runs{created: map[string]time.Time{}}
	adm := &admission{}
	s := schedule.New(store, r.run, schedule.Options{Now: clk.Now, Admission: adm})

	// The check cannot be made: nothing happens, the occurrence stays due.
	adm.fail.Store(true)
	assert.Error(t, s.Tick(ctx))
	sched, _, err := store.Get(ctx, "busy")
	require.NoError(t, err)
	assert.Equal(t, t0, sched.GetRecurrence().GetNext().AsTime())

	// At the limit: skipped and consumed, not retried.
	adm.fail.Store(false)
	require.NoError(t, s.Tick(ctx))
	require.NoError(t, s.Tick(ctx))
	assert.Empty(t, r.ids())
	sched, _, err = store.Get(ctx, "busy")
	require.NoError(t, err)
	assert.Equal(t, t0.Add(time.Hour), sched.GetRecurrence().GetNext().AsTime(), "the occurrence is consumed")
	assert.Zero(t, sched.GetRecurrence().GetRuns())

	// Another replica that admits follows the claim's decision for that
	// occurrence, and runs the next one.
	adm.allow.Store(true)
	clk.Set(t0.Add(time.Hour + time.Second))
	other := schedule.New(store, r.run, schedule.Options{Now: clk.Now, Admission: adm})
	require.NoError(t, other.Tick(ctx))
	assert.Equal(t, map[string]time.Time{schedule.RunID("busy", t0.Add(time.Hour)): t0.Add(time.Hour)}, r.ids())
}

type counter map[string]int

func (c counter) CountActive(_ context.Context, owner string) (int, error) { return c[owner], nil }

func TestUnfinishedLimit(t *testing.T) {
	c := counter{"alice": 5, "bob": 4}
	for _, tc := range []struct {
		owner string
		max   int
		ok    bool
	}{
		{"alice", 5, false},
		{"bob", 5, true},
		{"carol", 5, true},
		{"alice", 0, true},
	} {
		ok, err := schedule.UnfinishedLimit(c, tc.max).CanStart(t.Context(), tc.owner)
		require.NoError(t, err)
		assert.Equal(t, tc.ok, ok, "%s with max %d", tc.owner, tc.max)
	}
}

func TestMaxSchedulesPerOwner(t *testing.T) {
	store := newStoreWith(t, schedule.WithMaxPerOwner(2))
	ctx := t.Context()
	mk := func(id, owner string, next bool) *exportv1.Job {
		j := hourly(t, id)
		j.OwnerId = owner
		if !next {
			j.Recurrence.Next = nil
		}
		return j
	}
	require.NoError(t, store.Create(ctx, mk("a1", "alice", true)))
	require.NoError(t, store.Create(ctx, mk("a2", "alice", true)))
	require.NoError(t, store.Create(ctx, mk("done", "alice", false)), "a finished schedule is not active")
	assert.ErrorIs(t, store.Create(ctx, mk("a3", "alice", true)), schedule.ErrTooMany)
	_, _, err := store.Get(ctx, "a3")
	assert.ErrorIs(t, err, schedule.ErrNotFound, "a refused create leaves nothing behind")
	require.NoError(t, store.Create(ctx, mk("b1", "bob", true)), "the cap is per owner")
	n, err := store.CountActive(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, 2, n)

	// Reviving the finished one would make three.
	done, rev, err := store.Get(ctx, "done")
	require.NoError(t, err)
	done.Recurrence.Next = timestamppb.New(t0)
	_, err = store.Update(ctx, done, rev)
	assert.ErrorIs(t, err, schedule.ErrTooMany)

	// Deleting one makes room.
	require.NoError(t, store.Delete(ctx, "a1"))
	require.NoError(t, store.Create(ctx, mk("a3", "alice", true)))
	n, err = store.CountActive(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	all, err := store.List(ctx)
	require.NoError(t, err)
	assert.Len(t, all, 4, "index keys are not schedules: a2, a3, done, b1")
}

func TestListOwnerAndIsHidden(t *testing.T) {
	store := newStore(t)
	ctx := t.Context()
	for _, s := range []struct{ id, owner string }{{"a1", "alice"}, {"b1", "bob"}, {"a2", "alice"}} {
		j := hourly(t, s.id)
		j.OwnerId = s.owner
		require.NoError(t, store.Create(ctx, j))
	}
	require.NoError(t, store.Delete(ctx, "a2"))
	mine, err := store.ListOwner(ctx, "alice")
	require.NoError(t, err)
	require.Len(t, mine, 1)
	assert.Equal(t, "a1", mine[0].GetId())
	none, err := store.ListOwner(ctx, "carol")
	require.NoError(t, err)
	assert.Empty(t, none)

	require.NoError(t, store.Hide(ctx, "job-1"))
	for id, want := range map[string]bool{"job-1": true, "job-2": false, "bad.id": false} {
		got, err := store.IsHidden(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, want, got, id)
	}
}

func TestHiddenReadsOnlyTheMarkersAskedFor(t *testing.T) {
	srv := bustest.Start(t)
	ctx := t.Context()
	kv, err := srv.JS.KeyValue(ctx, bus.BucketSchedules)
	require.NoError(t, err)
	for name, store := range map[string]*schedule.Store{
		"one by one": schedule.NewStore(kv),
		"batched":    schedule.NewStore(kv, schedule.WithBatchReads(srv.JS)),
	} {
		t.Run(name, func(t *testing.T) {
			require.NoError(t, store.Hide(ctx, "gone-1"))
			require.NoError(t, store.Hide(ctx, "gone-2"))
			got, err := store.Hidden(ctx, []string{"gone-1", "kept", "gone-2", "bad.id"})
			require.NoError(t, err)
			for id, want := range map[string]bool{"gone-1": true, "gone-2": true, "kept": false, "bad.id": false} {
				assert.Equal(t, want, got[id], id)
			}
		})
	}
}

func TestListOrganization(t *testing.T) {
	srv := bustest.Start(t)
	ctx := t.Context()
	kv, err := srv.JS.KeyValue(ctx, bus.BucketSchedules)
	require.NoError(t, err)
	store := schedule.NewStore(kv, schedule.WithBatchReads(srv.JS))
	for _, s := range []struct{ id, owner, org string }{{"a1", "alice", "acme"}, {"b1", "bob", "acme"}, {"c1", "carol", "beta"}, {"d1", "dave", ""}} {
		j := hourly(t, s.id)
		j.OwnerId, j.OrganizationId = s.owner, s.org
		require.NoError(t, store.Create(ctx, j))
	}
	// A schedule written before organization keys existed.
	old := hourly(t, "old1")
	old.OwnerId, old.OrganizationId = "erin", "acme"
	data, err := proto.Marshal(old)
	require.NoError(t, err)
	_, err = kv.Create(ctx, "old1", data)
	require.NoError(t, err)

	ids := func(jobs []*exportv1.Job) []string {
		out := []string{}
		for _, j := range jobs {
			out = append(out, j.GetId())
		}
		slices.Sort(out)
		return out
	}
	acme, err := store.ListOrganization(ctx, "acme")
	require.NoError(t, err)
	assert.Equal(t, []string{"a1", "b1"}, ids(acme))
	n, err := store.IndexOrganizations(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	n, err = store.IndexOrganizations(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "idempotent")
	acme, err = store.ListOrganization(ctx, "acme")
	require.NoError(t, err)
	assert.Equal(t, []string{"a1", "b1", "old1"}, ids(acme))

	require.NoError(t, store.Delete(ctx, "b1"))
	acme, err = store.ListOrganization(ctx, "acme")
	require.NoError(t, err)
	assert.Equal(t, []string{"a1", "old1"}, ids(acme))
	none, err := store.ListOrganization(ctx, "")
	require.NoError(t, err)
	assert.Empty(t, none)
}
