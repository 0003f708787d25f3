package watchdog_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/watchdog"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

func openJobs(t *testing.T, js jetstream.JetStream) *jobstore.Store {
	t.Helper()
	jobs, err := jobstore.Open(t.Context(), js)
	require.NoError(t, err)
	return jobs
}

// failures returns the failed events published per job id.
func failures(t *testing.T, js jetstream.JetStream) map[string][]*exportv1.ExportFailed {
	t.Helper()
	out := map[string][]*exportv1.ExportFailed{}
	stream, err := js.Stream(t.Context(), bus.StreamExportEvents)
	require.NoError(t, err)
	info, err := stream.Info(t.Context())
	require.NoError(t, err)
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := stream.GetMsg(t.Context(), seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(t, err)
		ev, id, err := bus.ParseStatusSubject(m.Subject)
		require.NoError(t, err)
		if ev != bus.EventFailed {
			continue
		}
		var f exportv1.ExportFailed
		require.NoError(t, proto.Unmarshal(m.Data, &f))
		out[id] = append(out[id], &f)
	}
	return out
}

// TestTaskThatRunsOutOfDeliveriesFailsItsJob runs for each exporter's
// consumer: a task that crashes its exporter on every delivery fails its
// job and leaves the work queue.
func TestTaskThatRunsOutOfDeliveriesFailsItsJob(t *testing.T) {
	tests := []struct {
		consumer string
		kind     bus.TaskKind
	}{
		{bus.ConsumerRoomExporter, bus.TaskRoom},
		{bus.ConsumerRecordExporter, bus.TaskRecords},
	}
	for _, tt := range tests {
		t.Run(tt.consumer, func(t *testing.T) {
			t.Parallel()
			nats := bustest.Start(t)
			topo := bustest.Topology()
			topo.TaskMaxDeliver = 2
			topo.TaskAckWait = 300 * time.Millisecond
			consumer, err := bus.EnsureConsumer(t.Context(), nats.JS, topo, tt.consumer)
			require.NoError(t, err)

			jobs := openJobs(t, nats.JS)
			pub := bus.NewPublisher(nats.JS, nil)
			dog := watchdog.New(nats.Conn, nats.JS, jobs, pub, watchdog.Options{})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- dog.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })

			subject, err := bus.TaskSubject(tt.kind)
			require.NoError(t, err)
			task := &exportv1.ExportTask{JobId: "CrashyJob", OwnerId: "alice", Part: 0, PartsTotal: 1}
			require.NoError(t, pub.Publish(t.Context(), subject, "CrashyJob.task.0", task))

			// An exporter that takes the task and dies every time: fetch, never ack.
			require.EventuallyWithT(t, func(c *assert.CollectT) {
				batch, err := consumer.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond))
				if err == nil {
					for range batch.Messages() {
					}
				}
				got := failures(t, nats.JS)["CrashyJob"]
				if assert.Len(c, got, 1) {
					assert.Contains(c, got[0].GetReason(), "failed 2 times")
					assert.Equal(c, "alice", got[0].GetOwnerId())
				}
			}, 15*time.Second, 50*time.Millisecond)

			// The given-up task does not linger in the work queue.
			require.EventuallyWithT(t, func(c *assert.CollectT) {
				stream, err := nats.JS.Stream(t.Context(), bus.StreamExportTasks)
				if !assert.NoError(c, err) {
					return
				}
				info, err := stream.Info(t.Context())
				if assert.NoError(c, err) {
					assert.Zero(c, info.State.Msgs)
				}
			}, 5*time.Second, 50*time.Millisecond)
		})
	}
}

func TestStuckJobsAreFailedOnceWhateverTheReplicas(t *testing.T) {
	nats := bustest.Start(t)
	jobs := openJobs(t, nats.JS)
	pub := bus.NewPublisher(nats.JS, nil)
	now := time.Now()
	old := timestamppb.New(now.Add(-20 * time.Minute))
	recent := timestamppb.New(now.Add(-time.Minute))
	seed := []*exportv1.Job{
		{Id: "StuckProcessing", OwnerId: "alice", State: exportv1.JobState_JOB_STATE_PROCESSING, CreatedAt: old, UpdatedAt: old},
		{Id: "StuckQueued", OwnerId: "bob", State: exportv1.JobState_JOB_STATE_QUEUED, CreatedAt: old, UpdatedAt: old},
		{Id: "Moving", OwnerId: "alice", State: exportv1.JobState_JOB_STATE_PROCESSING, CreatedAt: old, UpdatedAt: recent},
		{Id: "OldButDone", OwnerId: "alice", State: exportv1.JobState_JOB_STATE_COMPLETED, CreatedAt: old, UpdatedAt: old},
		{Id: "OldAndFailed", OwnerId: "alice", State: exportv1.JobState_JOB_STATE_FAILED, CreatedAt: old, UpdatedAt: old},
	}
	for _, j := range seed {
		_, err := jobs.Apply(t.Context(), &exportv1.ExportRequested{JobId: j.GetId(), OccurredAt: j.GetCreatedAt(), Job: j})
		require.NoError(t, err)
	}

	// Two gateway replicas scan at the same moment: each fails what it
	// finds stuck, and a job one of them has failed already is either
	// skipped by the other or failed again to no effect.
	var mu sync.Mutex
	found := map[string]bool{}
	var wg sync.WaitGroup
	for range 2 {
		dog := watchdog.New(nats.Conn, nats.JS, jobs, pub, watchdog.Options{StuckAfter: 15 * time.Minute})
		wg.Go(func() {
			ids, err := dog.Scan(t.Context())
			assert.NoError(t, err)
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				found[id] = true
			}
		})
	}
	wg.Wait()
	assert.Equal(t, map[string]bool{"StuckProcessing": true, "StuckQueued": true}, found)

	got := failures(t, nats.JS)
	assert.Len(t, got, 2, "only the stuck jobs fail")
	for _, id := range []string{"StuckProcessing", "StuckQueued"} {
		if assert.Len(t, got[id], 1, "dedup keeps one failure per job for %s", id) {
			assert.Contains(t, got[id][0].GetReason(), "no progress for 15m0s")
		}
	}
	// The failures show in the projection at once, and only there.
	for _, j := range seed {
		stored, err := jobs.Get(t.Context(), j.GetId())
		require.NoError(t, err)
		if found[j.GetId()] {
			assert.Equal(t, exportv1.JobState_JOB_STATE_FAILED, stored.GetState(), j.GetId())
			assert.Contains(t, stored.GetError(), "no progress for 15m0s")
		} else {
			assert.Equal(t, j.GetState(), stored.GetState(), "%s is left alone", j.GetId())
		}
	}
	// A later scan finds nothing left to fail.
	ids, err := watchdog.New(nats.Conn, nats.JS, jobs, pub, watchdog.Options{StuckAfter: 15 * time.Minute}).Scan(t.Context())
	require.NoError(t, err)
	assert.Empty(t, ids)
}

// TestStuckJobFailureIsInTheJobsTrace: an operator who opens a failed
// job's trace sees the watchdog's decision in it, and the failure event
// carries that trace on to the projection and the notifier.
func TestStuckJobFailureIsInTheJobsTrace(t *testing.T) {
	nats := bustest.Start(t)
	jobs := openJobs(t, nats.JS)
	pub := bus.NewPublisher(nats.JS, nil)
	old := timestamppb.New(time.Now().Add(-time.Hour))
	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	job := &exportv1.Job{Id: "StuckTraced", OwnerId: "alice", State: exportv1.JobState_JOB_STATE_PROCESSING,
		CreatedAt: old, UpdatedAt: old, TraceId: traceID, SpanId: spanID}
	_, err := jobs.Apply(t.Context(), &exportv1.ExportRequested{JobId: job.GetId(), OccurredAt: old, Job: job})
	require.NoError(t, err)

	rec := tracetest.NewSpanRecorder()
	dog := watchdog.New(nats.Conn, nats.JS, jobs, pub, watchdog.Options{
		StuckAfter: 15 * time.Minute, TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec)),
	})
	ids, err := dog.Scan(t.Context())
	require.NoError(t, err)
	require.Equal(t, []string{"StuckTraced"}, ids)

	var decided sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "watchdog fail_stuck" {
			decided = s
		}
	}
	require.NotNil(t, decided, "the watchdog's failure is a span")
	assert.Equal(t, traceID, decided.SpanContext().TraceID().String(), "in the job's trace")
	assert.Equal(t, spanID, decided.Parent().SpanID().String(), "under the span that created the job")

	stream, err := nats.JS.Stream(t.Context(), bus.StreamExportEvents)
	require.NoError(t, err)
	subject, err := bus.StatusSubject(bus.EventFailed, "StuckTraced")
	require.NoError(t, err)
	m, err := stream.GetLastMsgForSubject(t.Context(), subject)
	require.NoError(t, err)
	assert.Contains(t, m.Header.Get("traceparent"), traceID, "the failure event carries the job's trace")
}
