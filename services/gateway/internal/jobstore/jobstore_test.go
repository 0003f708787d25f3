package jobstore_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

var t0 = time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)

func at(sec int) *timestamppb.Timestamp {
	return timestamppb.New(t0.Add(time.Duration(sec) * time.Second))
}

func newStore(t testing.TB) (*jobstore.Store, jetstream.KeyValue, *bustest.Server) {
	t.Helper()
	srv := bustest.Start(t)
	kv, err := srv.JS.KeyValue(t.Context(), bus.BucketJobs)
	require.NoError(t, err)
	store, err := jobstore.Open(t.Context(), srv.JS)
	require.NoError(t, err)
	return store, kv, srv
}

func newJob(id, owner string) *exportv1.Job {
	return &exportv1.Job{
		Id:         id,
		OwnerId:    owner,
		Kind:       exportv1.JobKind_JOB_KIND_ROOM,
		Format:     exportv1.Format_FORMAT_JSON,
		State:      exportv1.JobState_JOB_STATE_PENDING,
		Progress:   &exportv1.Progress{},
		CreatedAt:  at(0),
		UpdatedAt:  at(0),
		Room:       &exportv1.RoomScope{RoomId: "GENERAL"},
		Dialect:    "rocketchat",
		PartsTotal: 1,
	}
}

// create writes job as the gateway does: by applying its request.
func create(ctx context.Context, store *jobstore.Store, job *exportv1.Job) error {
	_, err := store.Create(ctx, requested(job))
	return err
}

func requested(job *exportv1.Job) *exportv1.ExportRequested {
	return &exportv1.ExportRequested{JobId: job.GetId(), OccurredAt: job.GetCreatedAt(), Job: job}
}

func file(name string) *exportv1.File {
	return &exportv1.File{Name: name, ObjectKey: "jobs/x/parts/0/" + name, Size: 2048, Records: 12, Sha256: "ab", ContentType: "application/json"}
}

// Event constructors; sec is the event's occurred_at offset from t0.
func queued(id string, sec int) jobstore.Event {
	return &exportv1.ExportQueued{JobId: id, OccurredAt: at(sec)}
}

func progress(id string, sec int, pct uint32, records uint64) jobstore.Event {
	return &exportv1.ExportProgress{JobId: id, OccurredAt: at(sec), PartsTotal: 1, Progress: &exportv1.Progress{Percent: pct, Records: records, Bytes: records * 100}}
}

func part(id string, sec int) jobstore.Event {
	return &exportv1.PartUploaded{JobId: id, OccurredAt: at(sec), PartsTotal: 1, File: file("general.json")}
}

func finalizing(id string, sec int) jobstore.Event {
	return &exportv1.ExportFinalizing{JobId: id, OccurredAt: at(sec)}
}

func completed(id string, sec int) jobstore.Event {
	return &exportv1.ExportCompleted{JobId: id, OccurredAt: at(sec), Files: []*exportv1.File{file("general.json")}}
}

func failed(id string, sec int, rejected bool) jobstore.Event {
	return &exportv1.ExportFailed{JobId: id, OccurredAt: at(sec), Reason: "boom", Rejected: rejected}
}

func canceled(id string, sec int) jobstore.Event {
	return &exportv1.ExportCanceled{JobId: id, OccurredAt: at(sec), Reason: "user asked"}
}

func notified(id string, sec int, errMsg string) jobstore.Event {
	return &exportv1.NotificationSent{JobId: id, OccurredAt: at(sec), Recipients: []string{"a@example.com"}, Error: errMsg}
}

func TestApplyMovesForwardOnly(t *testing.T) {
	store, _, _ := newStore(t)
	type want struct {
		state      exportv1.JobState
		percent    uint32
		records    uint64
		files      int
		errMsg     string
		notified   bool
		notifyErr  string
		updatedSec int
	}
	cases := []struct {
		name   string
		events func(id string) []jobstore.Event
		want   want
	}{
		{
			name:   "queued",
			events: func(id string) []jobstore.Event { return []jobstore.Event{queued(id, 1)} },
			want:   want{state: exportv1.JobState_JOB_STATE_QUEUED, updatedSec: 1},
		},
		{
			name: "happy path",
			events: func(id string) []jobstore.Event {
				return []jobstore.Event{queued(id, 1), progress(id, 2, 50, 6), part(id, 3), finalizing(id, 4), completed(id, 5)}
			},
			want: want{state: exportv1.JobState_JOB_STATE_COMPLETED, percent: 100, records: 12, files: 1, updatedSec: 5},
		},
		{
			name: "late progress after completed stays completed",
			events: func(id string) []jobstore.Event {
				return []jobstore.Event{queued(id, 1), completed(id, 5), progress(id, 6, 40, 3), queued(id, 7), finalizing(id, 8)}
			},
			want: want{state: exportv1.JobState_JOB_STATE_COMPLETED, percent: 100, records: 12, files: 1, updatedSec: 5},
		},
		{
			name: "queued after processing does not move back",
			events: func(id string) []jobstore.Event {
				return []jobstore.Event{progress(id, 2, 30, 4), queued(id, 1)}
			},
			want: want{state: exportv1.JobState_JOB_STATE_PROCESSING, percent: 30, records: 4, updatedSec: 2},
		},
		{
			name: "progress only grows",
			events: func(id string) []jobstore.Event {
				return []jobstore.Event{progress(id, 2, 60, 8), progress(id, 3, 20, 2)}
			},
			want: want{state: exportv1.JobState_JOB_STATE_PROCESSING, percent: 60, records: 8, updatedSec: 2},
		},
		{
			name: "a running job never shows 100 percent",
			events: func(id string) []jobstore.Event {
				return []jobstore.Event{progress(id, 2, 100, 12), part(id, 3)}
			},
			want: want{state: exportv1.JobState_JOB_STATE_PROCESSING, percent: 99, records: 12, updatedSec: 3},
		},
		{
			name: "part uploaded adds no files",
			events: func(id string) []jobstore.Event {
				return []jobstore.Event{queued(id, 1), part(id, 3)}
			},
			want: want{state: exportv1.JobState_JOB_STATE_PROCESSING, percent: 99, records: 12, updatedSec: 3},
		},
		{
			name: "failed is terminal",
			events: func(id string) []jobstore.Event {
				return []jobstore.Event{progress(id, 2, 10, 1), failed(id, 3, false), completed(id, 4), canceled(id, 5)}
			},
			want: want{state: exportv1.JobState_JOB_STATE_FAILED, percent: 10, records: 1, errMsg: "boom", updatedSec: 3},
		},
		{
			name:   "rejected",
			events: func(id string) []jobstore.Event { return []jobstore.Event{failed(id, 3, true)} },
			want:   want{state: exportv1.JobState_JOB_STATE_REJECTED, errMsg: "boom", updatedSec: 3},
		},
		{
			name: "canceled is terminal",
			events: func(id string) []jobstore.Event {
				return []jobstore.Event{queued(id, 1), canceled(id, 2), progress(id, 3, 50, 5), failed(id, 4, false)}
			},
			want: want{state: exportv1.JobState_JOB_STATE_CANCELED, errMsg: "user asked", updatedSec: 2},
		},
		{
			name: "notification recorded on a terminal job",
			events: func(id string) []jobstore.Event {
				return []jobstore.Event{completed(id, 5), notified(id, 6, "")}
			},
			want: want{state: exportv1.JobState_JOB_STATE_COMPLETED, percent: 100, records: 12, files: 1, notified: true, updatedSec: 6},
		},
		{
			name: "failed notification then success",
			events: func(id string) []jobstore.Event {
				return []jobstore.Event{completed(id, 5), notified(id, 6, "smtp down"), notified(id, 8, ""), notified(id, 9, "late failure")}
			},
			want: want{state: exportv1.JobState_JOB_STATE_COMPLETED, percent: 100, records: 12, files: 1, notified: true, updatedSec: 8},
		},
		{
			name: "updated_at only moves forward",
			events: func(id string) []jobstore.Event {
				return []jobstore.Event{progress(id, 9, 10, 1), progress(id, 4, 20, 2)}
			},
			want: want{state: exportv1.JobState_JOB_STATE_PROCESSING, percent: 20, records: 2, updatedSec: 9},
		},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			id := fmt.Sprintf("job-forward-%d", i)
			require.NoError(t, create(ctx, store, newJob(id, "alice")))
			for _, ev := range tc.events(id) {
				_, err := store.Apply(ctx, ev)
				require.NoError(t, err)
			}
			got, err := store.Get(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, tc.want.state, got.GetState(), "state")
			assert.Equal(t, tc.want.percent, got.GetProgress().GetPercent(), "percent")
			assert.Equal(t, tc.want.records, got.GetProgress().GetRecords(), "records")
			assert.Len(t, got.GetFiles(), tc.want.files, "files")
			assert.Equal(t, tc.want.errMsg, got.GetError(), "error")
			assert.Equal(t, tc.want.notified, got.GetNotified(), "notified")
			assert.Equal(t, tc.want.notifyErr, got.GetNotifyError(), "notify_error")
			assert.Equal(t, at(tc.want.updatedSec).AsTime(), got.GetUpdatedAt().AsTime(), "updated_at")
			// What the job was created with stays.
			assert.Equal(t, "alice", got.GetOwnerId())
			assert.Equal(t, at(0).AsTime(), got.GetCreatedAt().AsTime())
		})
	}
}

func TestApplyIsIdempotent(t *testing.T) {
	store, kv, _ := newStore(t)
	ctx := t.Context()
	const id = "job-idem"
	job := newJob(id, "alice")
	events := []jobstore.Event{
		&exportv1.ExportRequested{JobId: id, OccurredAt: at(0), Job: job},
		queued(id, 1), progress(id, 2, 50, 6), part(id, 3), finalizing(id, 4), completed(id, 5), notified(id, 6, ""),
	}
	for _, ev := range events {
		_, err := store.Apply(ctx, ev)
		require.NoError(t, err)
	}
	once, err := store.Get(ctx, id)
	require.NoError(t, err)
	entry, err := kv.Get(ctx, id)
	require.NoError(t, err)

	// Every event again, as a redelivery would, in order and reversed.
	for range 2 {
		for _, ev := range events {
			_, err := store.Apply(ctx, ev)
			require.NoError(t, err)
		}
		for i := len(events) - 1; i >= 0; i-- {
			_, err := store.Apply(ctx, events[i])
			require.NoError(t, err)
		}
	}
	twice, err := store.Get(ctx, id)
	require.NoError(t, err)
	assert.Empty(t, cmpDiff(once, twice))
	after, err := kv.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, entry.Revision(), after.Revision(), "re-applied events must not write")
}

func TestConcurrentAppliersLoseNoUpdate(t *testing.T) {
	store, _, _ := newStore(t)
	ctx := t.Context()
	const id = "job-race"
	require.NoError(t, create(ctx, store, newJob(id, "alice")))

	// One applier raises the record count, the other the byte count; each
	// update touches a field the other does not, so a write based on a
	// stale read would show as a count below n.
	const n = 60
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for _, field := range []string{"records", "bytes"} {
		wg.Go(func() {
			for i := uint64(1); i <= n; i++ {
				p := &exportv1.Progress{}
				if field == "records" {
					p.Records = i
				} else {
					p.Bytes = i
				}
				_, err := store.Apply(ctx, &exportv1.ExportProgress{JobId: id, OccurredAt: at(int(i)), PartsTotal: 1, Progress: p})
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	got, err := store.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, uint64(n), got.GetProgress().GetRecords())
	assert.Equal(t, uint64(n), got.GetProgress().GetBytes())
	assert.Equal(t, exportv1.JobState_JOB_STATE_PROCESSING, got.GetState())
	assert.Equal(t, at(n).AsTime(), got.GetUpdatedAt().AsTime())
}

func TestConcurrentTerminalEventsPickOneOutcome(t *testing.T) {
	store, _, _ := newStore(t)
	ctx := t.Context()
	for i := range 10 {
		id := fmt.Sprintf("job-terminal-%d", i)
		require.NoError(t, create(ctx, store, newJob(id, "alice")))
		var wg sync.WaitGroup
		wg.Go(func() { _, err := store.Apply(ctx, completed(id, 5)); assert.NoError(t, err) })
		wg.Go(func() { _, err := store.Apply(ctx, failed(id, 5, false)); assert.NoError(t, err) })
		wg.Wait()
		got, err := store.Get(ctx, id)
		require.NoError(t, err)
		// Whichever came first wins, and wins whole: no completed job with
		// an error, no failed job with files.
		switch got.GetState() {
		case exportv1.JobState_JOB_STATE_COMPLETED:
			assert.Empty(t, got.GetError())
			assert.Len(t, got.GetFiles(), 1)
		case exportv1.JobState_JOB_STATE_FAILED:
			assert.Equal(t, "boom", got.GetError())
			assert.Empty(t, got.GetFiles())
		default:
			t.Fatalf("state %v", got.GetState())
		}
	}
}

// TestOnTerminalRunsOncePerJob: however many terminal events race or are
// redelivered, the hook sees a job end exactly once, as it is stored.
func TestOnTerminalRunsOncePerJob(t *testing.T) {
	srv := bustest.Start(t)
	var mu sync.Mutex
	ended := map[string][]exportv1.JobState{}
	store, err := jobstore.Open(t.Context(), srv.JS, jobstore.WithOnTerminal(func(_ context.Context, j *exportv1.Job) {
		mu.Lock()
		defer mu.Unlock()
		ended[j.GetId()] = append(ended[j.GetId()], j.GetState())
	}))
	require.NoError(t, err)
	ctx := t.Context()
	for i := range 5 {
		id := fmt.Sprintf("job-hook-%d", i)
		require.NoError(t, create(ctx, store, newJob(id, "alice")))
		var wg sync.WaitGroup
		for _, ev := range []jobstore.Event{queued(id, 1), progress(id, 2, 50, 5), completed(id, 5), failed(id, 5, false), canceled(id, 6), completed(id, 5)} {
			wg.Go(func() { _, err := store.Apply(ctx, ev); assert.NoError(t, err) })
		}
		wg.Wait()
		got, err := store.Get(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, []exportv1.JobState{got.GetState()}, ended[id])
	}
	require.NoError(t, create(ctx, store, newJob("job-hook-running", "alice")))
	_, err = store.Apply(ctx, progress("job-hook-running", 2, 50, 5))
	require.NoError(t, err)
	assert.NotContains(t, ended, "job-hook-running")
}

func TestRequestedCreatesMissingJob(t *testing.T) {
	store, _, _ := newStore(t)
	ctx := t.Context()
	job := newJob("job-lost", "bob")
	got, err := store.Apply(ctx, &exportv1.ExportRequested{JobId: job.GetId(), OccurredAt: at(0), Job: job})
	require.NoError(t, err)
	assert.Empty(t, cmpDiff(job, got))
	stored, err := store.Get(ctx, job.GetId())
	require.NoError(t, err)
	assert.Empty(t, cmpDiff(job, stored))
}

func TestEventForUnknownJobIsRetryable(t *testing.T) {
	store, _, _ := newStore(t)
	_, err := store.Apply(t.Context(), queued("job-not-yet", 1))
	require.ErrorIs(t, err, jobstore.ErrNotFound)
	assert.False(t, bus.IsPermanent(err), "the job may still appear: retry")

	_, err = store.Get(t.Context(), "job-not-yet")
	assert.ErrorIs(t, err, jobstore.ErrNotFound)
}

func TestMalformedEventsArePermanent(t *testing.T) {
	store, _, _ := newStore(t)
	cases := map[string]jobstore.Event{
		"requested without job":     &exportv1.ExportRequested{JobId: "job-a"},
		"requested with another id": &exportv1.ExportRequested{JobId: "job-a", Job: newJob("job-b", "x")},
		"bad job id":                queued("a.b", 1),
		"empty job id":              queued("", 1),
	}
	for name, ev := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := store.Apply(t.Context(), ev)
			require.Error(t, err)
			assert.True(t, bus.IsPermanent(err), "%v", err)
		})
	}
}

// TestRequestForATakenIDIsRefused: a request for an id another request's
// job holds fails with ErrExists and leaves that job as it is; the
// request that created the job, applied again, changes nothing, and
// Create refuses any id that is taken.
func TestRequestForATakenIDIsRefused(t *testing.T) {
	store, kv, _ := newStore(t)
	ctx := t.Context()
	first := newJob("job-dup", "alice")
	require.NoError(t, create(ctx, store, first))
	before, err := kv.Get(ctx, "job-dup")
	require.NoError(t, err)

	other := newJob("job-dup", "mallory")
	_, err = store.Apply(ctx, requested(other))
	require.ErrorIs(t, err, jobstore.ErrExists)
	assert.False(t, bus.IsPermanent(err), "Apply reports the taken id; the projection consumer decides it is permanent")
	later := newJob("job-dup", "alice")
	later.CreatedAt = at(1)
	_, err = store.Apply(ctx, requested(later))
	require.ErrorIs(t, err, jobstore.ErrExists, "the same owner's second request is another job")

	got, err := store.Apply(ctx, requested(first))
	require.NoError(t, err, "the request's own copy")
	assert.Empty(t, cmpDiff(first, got))
	_, err = store.Create(ctx, requested(first))
	require.ErrorIs(t, err, jobstore.ErrExists, "a second create, even of an equal job, did not create it")
	after, err := kv.Get(ctx, "job-dup")
	require.NoError(t, err)
	assert.Equal(t, before.Revision(), after.Revision())
	assert.Equal(t, before.Value(), after.Value())
}

func TestListNewestFirstPerOwner(t *testing.T) {
	store, _, _ := newStore(t)
	ctx := t.Context()
	jobs, err := store.List(ctx, "alice")
	require.NoError(t, err)
	assert.Empty(t, jobs)

	for i, owner := range []string{"alice", "bob", "alice", "alice"} {
		j := newJob(fmt.Sprintf("job-list-%d", i), owner)
		j.CreatedAt = at(i * 10)
		require.NoError(t, create(ctx, store, j))
	}
	jobs, err = store.List(ctx, "alice")
	require.NoError(t, err)
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.GetId())
	}
	assert.Equal(t, []string{"job-list-3", "job-list-2", "job-list-0"}, ids)
}

func TestProjectionAppliesBusEvents(t *testing.T) {
	store, _, srv := newStore(t)
	ctx := t.Context()
	pub := bus.NewPublisher(srv.JS, nil)
	consumer, err := bus.EnsureConsumer(ctx, srv.JS, bustest.Topology(), bus.ConsumerGatewayProjection)
	require.NoError(t, err)
	consumeCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- bus.Consume(consumeCtx, consumer, store.Projection(slog.New(slog.DiscardHandler)), bus.ConsumeOptions{
			Concurrency: 4,
			NakDelay:    func(uint64) time.Duration { return 50 * time.Millisecond },
		})
	}()
	t.Cleanup(func() { stop(); <-done })

	const id = "job-proj"
	job := newJob(id, "alice")
	// The exporter's progress arrives before the request: it is retried
	// until the job exists.
	require.NoError(t, pub.PublishStatus(ctx, bus.EventProgress, id, "0.6", progress(id, 2, 50, 6)))
	require.NoError(t, pub.PublishStatus(ctx, bus.EventRequested, id, "", &exportv1.ExportRequested{JobId: id, OccurredAt: at(0), Job: job}))
	require.NoError(t, pub.PublishStatus(ctx, bus.EventQueued, id, "", queued(id, 1)))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got, err := store.Get(ctx, id)
		if !assert.NoError(c, err) {
			return
		}
		assert.Equal(c, exportv1.JobState_JOB_STATE_PROCESSING, got.GetState())
		assert.Equal(c, uint32(50), got.GetProgress().GetPercent())
	}, 10*time.Second, 20*time.Millisecond)

	// An event of a kind this gateway does not know is skipped, and a body
	// that does not decode is terminated; neither blocks later events.
	require.NoError(t, srv.Conn.Publish("exports.status.teleported."+id, []byte("x")))
	_, err = srv.JS.Publish(ctx, "exports.status.completed."+id, []byte{0xff, 0xff})
	require.NoError(t, err)
	require.NoError(t, pub.PublishStatus(ctx, bus.EventCompleted, id, "", completed(id, 5)))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got, err := store.Get(ctx, id)
		if !assert.NoError(c, err) {
			return
		}
		assert.Equal(c, exportv1.JobState_JOB_STATE_COMPLETED, got.GetState())
		assert.Len(c, got.GetFiles(), 1)
	}, 10*time.Second, 20*time.Millisecond)
}

func cmpDiff(a, b proto.Message) string {
	if proto.Equal(a, b) {
		return ""
	}
	return fmt.Sprintf("%v\n!=\n%v", a, b)
}

func TestNotificationChannelsAreKeptApart(t *testing.T) {
	store, _, _ := newStore(t)
	ctx := t.Context()
	const id = "job-channels"
	require.NoError(t, create(ctx, store, newJob(id, "alice")))
	hook := func(sec int, errMsg string) jobstore.Event {
		return &exportv1.NotificationSent{JobId: id, OccurredAt: at(sec), Recipients: []string{"https://hooks.example.com/x"}, Error: errMsg, Channel: "webhook.0123456789abcdef"}
	}
	for _, ev := range []jobstore.Event{
		completed(id, 1),
		notified(id, 2, "smtp: 550 mailbox unavailable"),
		hook(3, "connection refused"),
		hook(4, ""),
		hook(5, "late failure after success"),
	} {
		_, err := store.Apply(ctx, ev)
		require.NoError(t, err)
	}
	job, err := store.Get(ctx, id)
	require.NoError(t, err)
	assert.False(t, job.GetNotified(), "a webhook success must not mark the email sent")
	assert.Equal(t, "smtp: 550 mailbox unavailable", job.GetNotifyError())
	require.Len(t, job.GetNotifications(), 2)
	byChannel := map[string]*exportv1.NotificationStatus{}
	for _, n := range job.GetNotifications() {
		byChannel[n.GetChannel()] = n
	}
	assert.Equal(t, "smtp: 550 mailbox unavailable", byChannel["email"].GetError())
	assert.Empty(t, byChannel["webhook.0123456789abcdef"].GetError(), "a success is final for its channel")
}

// TestListSeesEveryJobWhileJobsChange guards against a watcher quirk: a key
// updated while the listing starts must still be listed.
func TestListSeesEveryJobWhileJobsChange(t *testing.T) {
	store, _, _ := newStore(t)
	ctx := t.Context()
	const n = 20
	for i := range n {
		require.NoError(t, create(ctx, store, newJob(fmt.Sprintf("job-%02d", i), "alice")))
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for round := 1; ; round++ {
			for i := range n {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = store.Apply(ctx, progress(fmt.Sprintf("job-%02d", i), round, uint32(round%99), uint64(round)))
			}
		}
	}()
	for range 200 {
		jobs, err := store.List(ctx, "alice")
		require.NoError(t, err)
		if !assert.Len(t, jobs, n, "a listing missed jobs being updated") {
			break
		}
	}
	close(stop)
	<-done
}

func TestValidID(t *testing.T) {
	for _, tt := range []struct {
		id   string
		want bool
	}{
		{"Zk3-xQ_9=", true},
		{strings.Repeat("a", 128), true},
		{strings.Repeat("a", 129), false},
		{"", false},
		{"a.b", false},
		{"a/b", false},
		{"a*", false},
		{"a>", false},
		{"a b", false},
		{"job\n", false},
		{"jöb", false},
	} {
		assert.Equal(t, tt.want, jobstore.ValidID(tt.id), "%q", tt.id)
	}
}
