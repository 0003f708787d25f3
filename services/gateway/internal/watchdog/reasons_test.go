package watchdog_test

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/watchdog"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

var portInReason = regexp.MustCompile(`:\d+`)

// assertWorded checks a failure reason for internals, which belong in
// the logs: addresses, consumer and stream names, subjects.
func assertWorded(t assert.TestingT, reason string) {
	assert.NotEmpty(t, reason)
	for _, s := range []string{"http", "dial tcp", "exports.", bus.StreamExportTasks, bus.StreamExportEvents,
		bus.ConsumerArchiver, bus.ConsumerRoomExporter, "permanent:"} {
		assert.NotContains(t, reason, s)
	}
	assert.False(t, portInReason.MatchString(reason), "no port in %q", reason)
}

var traceID = trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}

func traced(ctx context.Context) context.Context {
	return trace.ContextWithSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled}))
}

// Every way the watchdog fails a job gives a sentence with the job's trace
// id: a task or a status event that ran out of deliveries, a stuck job.
func TestWatchdogReasonsAreSentences(t *testing.T) {
	nats := bustest.Start(t)
	topo := bustest.Topology()
	topo.TaskMaxDeliver, topo.TaskAckWait = 2, 300*time.Millisecond
	topo.EventMaxDeliver, topo.EventAckWait = 2, 300*time.Millisecond
	tasks, err := bus.EnsureConsumer(t.Context(), nats.JS, topo, bus.ConsumerRoomExporter)
	require.NoError(t, err)
	events, err := bus.EnsureConsumer(t.Context(), nats.JS, topo, bus.ConsumerArchiver)
	require.NoError(t, err)
	jobs := openJobs(t, nats.JS)
	pub := bus.NewPublisher(nats.JS, nil)
	dog := watchdog.New(nats.Conn, nats.JS, jobs, pub, watchdog.Options{StuckAfter: 15 * time.Minute})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- dog.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	subject, err := bus.TaskSubject(bus.TaskRoom)
	require.NoError(t, err)
	require.NoError(t, pub.Publish(traced(t.Context()), subject, "TaskJob.task.0",
		&exportv1.ExportTask{JobId: "TaskJob", OwnerId: "alice", PartsTotal: 1}))
	require.NoError(t, pub.PublishStatus(traced(t.Context()), bus.EventPart, "EventJob", "0",
		&exportv1.PartUploaded{JobId: "EventJob", OwnerId: "alice", PartsTotal: 1}))
	old := timestamppb.New(time.Now().Add(-time.Hour))
	_, err = jobs.Apply(t.Context(), &exportv1.ExportRequested{JobId: "StuckJob", OccurredAt: old, Job: &exportv1.Job{
		Id: "StuckJob", OwnerId: "alice", State: exportv1.JobState_JOB_STATE_PROCESSING, CreatedAt: old, UpdatedAt: old,
		TraceId: traceID.String()}})
	require.NoError(t, err)
	_, err = dog.Scan(t.Context())
	require.NoError(t, err)

	want := map[string]string{
		"TaskJob":  "The export failed 2 times without finishing; please try again.",
		"EventJob": "The export could not be finished after 2 attempts; please try again.",
		"StuckJob": "no progress for 15m0s; the export was stopped, please try again",
	}
	// Consumers that take their messages and die every time.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		for _, cons := range []jetstream.Consumer{tasks, events} {
			if batch, err := cons.Fetch(1, jetstream.FetchMaxWait(100*time.Millisecond)); err == nil {
				for range batch.Messages() {
				}
			}
		}
		got := failures(t, nats.JS)
		for id, reason := range want {
			if assert.NotEmpty(c, got[id], id) {
				assert.Equal(c, reason+" (trace "+traceID.String()+")", got[id][0].GetReason())
				assertWorded(c, got[id][0].GetReason())
			}
		}
	}, 20*time.Second, 50*time.Millisecond)
}
