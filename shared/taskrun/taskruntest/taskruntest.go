// Package taskruntest runs a taskrun.Runner's tasks in tests without the
// consume loop, and reads back the status events the Runner published.
package taskruntest

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/taskrun"
)

// Exporter is a Runner whose Export ends as a task's last delivery in the
// consume loop would: a permanent failure also fails the job, as the
// loop's OnTerminated hook (taskrun.Runner.Terminated) does. Without that,
// a test of a rejection would see no ExportFailed.
type Exporter struct{ *taskrun.Runner }

// Export runs task and, if its error is permanent, fails the job with it
// (taskrun.Runner.Fail). It returns Export's error.
func (x Exporter) Export(ctx context.Context, task *exportv1.ExportTask) error {
	err := x.Runner.Export(ctx, task)
	if bus.IsPermanent(err) {
		x.Fail(ctx, task, err)
	}
	return err
}

// Consume runs r behind the real consume loop on the durable consumer
// named consumer (declared with topo) until the test ends, as an
// exporter's main runs it: Handle for each task, Terminated as the
// OnTerminated hook; o sets the rest. Call it after the servers have
// started, so that the loop stops before they do.
func Consume(t testing.TB, js jetstream.JetStream, topo bus.Topology, consumer string, r *taskrun.Runner, o bus.ConsumeOptions) {
	t.Helper()
	cons, err := bus.EnsureConsumer(t.Context(), js, topo, consumer)
	require.NoError(t, err)
	o.OnTerminated = r.Terminated
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- bus.Consume(ctx, cons, r.Handle, o) }()
	t.Cleanup(func() {
		stop()
		assert.NoError(t, <-done)
	})
}

// LastEvent decodes jobID's last status event of kind ev into m. It
// reports false if the job has no such event yet.
func LastEvent(t testing.TB, js jetstream.JetStream, ev bus.Event, jobID string, m proto.Message) bool {
	t.Helper()
	stream, subject := events(t, js, ev, jobID)
	raw, err := stream.GetLastMsgForSubject(t.Context(), subject)
	if err != nil {
		return false
	}
	require.NoError(t, proto.Unmarshal(raw.Data, m))
	return true
}

// WaitOutcome waits up to within for jobID's ExportCompleted or
// ExportFailed and returns the one that came, the other nil; it fails the
// test if neither does. Benchmarks that run whole exports wait with it,
// under a bound that covers their largest case.
func WaitOutcome(t testing.TB, js jetstream.JetStream, jobID string, within time.Duration) (*exportv1.ExportCompleted, *exportv1.ExportFailed) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var done exportv1.ExportCompleted
		if LastEvent(t, js, bus.EventCompleted, jobID, &done) {
			return &done, nil
		}
		var failed exportv1.ExportFailed
		if LastEvent(t, js, bus.EventFailed, jobID, &failed) {
			return nil, &failed
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s neither completed nor failed within %v", jobID, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitEvent waits up to two minutes for jobID's status event of kind ev
// and decodes the last one into m; it fails the test if none comes. The
// bound is generous because it is only a bound: a long export under -race
// on a loaded 2-core machine has needed more than 30 s.
func WaitEvent(t testing.TB, js jetstream.JetStream, ev bus.Event, jobID string, m proto.Message) {
	t.Helper()
	stream, subject := events(t, js, ev, jobID)
	var raw *jetstream.RawStreamMsg
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var err error
		raw, err = stream.GetLastMsgForSubject(t.Context(), subject)
		assert.NoError(c, err)
	}, 2*time.Minute, 20*time.Millisecond, "no %s event for job %s", ev, jobID)
	require.NoError(t, proto.Unmarshal(raw.Data, m))
}

// events returns the status events stream and the subject of jobID's
// events of kind ev.
func events(t testing.TB, js jetstream.JetStream, ev bus.Event, jobID string) (jetstream.Stream, string) {
	t.Helper()
	subject, err := bus.StatusSubject(ev, jobID)
	require.NoError(t, err)
	stream, err := js.Stream(t.Context(), bus.StreamExportEvents)
	require.NoError(t, err)
	return stream, subject
}
