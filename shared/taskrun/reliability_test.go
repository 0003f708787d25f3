package taskrun_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/taskrun"
)

// consumeLeased runs the runner behind the consume loop as infra.RunExporter
// does (in-progress acks at a third of AckWait), with a short AckWait so
// that a wait that lost the lease would show as a redelivery.
func (e *env) consumeLeased(t *testing.T, maxDeliver int) {
	t.Helper()
	topo := bustest.Topology()
	topo.TaskMaxDeliver = maxDeliver
	topo.TaskAckWait = 2 * time.Second
	cons, err := bus.EnsureConsumer(t.Context(), e.ns.JS, topo, bus.ConsumerRecordExporter)
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- bus.Consume(ctx, cons, e.run.Handle, bus.ConsumeOptions{OnTerminated: e.run.Terminated,
			Heartbeat: topo.TaskAckWait / 3, NakDelay: func(uint64) time.Duration { return 50 * time.Millisecond }})
	}()
	t.Cleanup(func() { stop(); assert.NoError(t, <-done) })
}

func (e *env) redeliveries(t *testing.T) int {
	t.Helper()
	cons, err := e.ns.JS.Consumer(t.Context(), bus.StreamExportTasks, bus.ConsumerRecordExporter)
	require.NoError(t, err)
	info, err := cons.Info(t.Context())
	require.NoError(t, err)
	return info.NumRedelivered
}

// An object store outage in the middle of a part: the task keeps its lease
// and its delivery, waits, and resumes from its checkpoint once MinIO is
// back. MaxDeliver 1 leaves no delivery to burn: any nak would fail the job.
func TestRunnerWaitsOutAnObjectStoreOutage(t *testing.T) {
	e := setup(t, nil)
	outage := make(chan error, 1)
	var resumed atomic.Bool
	var k fakeKind
	k.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
		var cp struct{ Done int }
		found, err := t.LoadCheckpoint(ctx, &cp)
		if err != nil {
			return nil, err
		}
		if !found {
			if _, err := writeFile(ctx, e.store, t, "first.csv"); err != nil {
				return nil, bus.Permanent(err)
			}
			t.SaveCheckpoint(ctx, struct{ Done int }{1})
			e.ms.Stop()
		} else {
			resumed.Store(cp.Done == 1)
		}
		f, err := writeFile(ctx, e.store, t, "second.csv")
		if err != nil {
			select {
			case outage <- err:
			default:
			}
			return nil, fmt.Errorf("write second file: %w", err)
		}
		return &taskrun.Result{Files: []*exportv1.File{f}, Records: 1}, nil
	}
	e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)
	e.consumeLeased(t, 1)
	e.publish(t, bustest.TaskSigner(t), task("jw", exportv1.PartKind_PART_KIND_RECORDS))

	var err error
	select {
	case err = <-outage:
	case <-time.After(60 * time.Second):
		t.Fatal("the part never met the outage")
	}
	require.ErrorIs(t, err, blob.ErrUnavailable, "a refused connection is the store's state")
	// Down for longer than the task's AckWait: only in-progress acks keep it.
	time.Sleep(3 * time.Second)
	e.ms.Restart(t)

	var part exportv1.PartUploaded
	require.Eventually(t, func() bool { return e.event(t, bus.EventPart, "jw", &part) }, 90*time.Second, 50*time.Millisecond)
	assert.False(t, e.event(t, bus.EventFailed, "jw", &exportv1.ExportFailed{}))
	assert.True(t, resumed.Load(), "the retry resumed from the checkpoint")
	assert.GreaterOrEqual(t, k.runs.Load(), int32(2))
	assert.Zero(t, e.redeliveries(t), "the outage burned no delivery")
	assert.Equal(t, "second.csv", part.GetFile().GetName())
}

// An outage longer than DependencyWait fails the job, with a sentence.
func TestRunnerGivesUpAfterTheDependencyWait(t *testing.T) {
	e := setup(t, func(o *taskrun.Options) { o.DependencyWait = 2 * time.Second })
	var k fakeKind
	k.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
		f, err := writeFile(ctx, e.store, t, "out.csv")
		if err != nil {
			return nil, err
		}
		return &taskrun.Result{Files: []*exportv1.File{f}}, nil
	}
	e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)
	e.consumeLeased(t, 5)
	e.ms.Stop()
	e.publish(t, bustest.TaskSigner(t), task("jx", exportv1.PartKind_PART_KIND_RECORDS))

	var failed exportv1.ExportFailed
	require.Eventually(t, func() bool { return e.event(t, bus.EventFailed, "jx", &failed) }, 90*time.Second, 50*time.Millisecond)
	assert.Equal(t, "The export stopped because the file storage was unavailable for more than 2 seconds; please try again.",
		failed.GetReason())
	assert.False(t, failed.GetRejected())
	assertNoInternals(t, failed.GetReason())
	assert.Zero(t, e.redeliveries(t), "one delivery waited the whole outage")
}

// internalText is the error text of the issue: everything a user must not
// see.
const internalText = `check checkpoint of part 0: list parts of dataport-exports/jobs/j/parts/0/bench.json: ` +
	`Get "http://127.0.0.1:9100/dataport-exports/jobs/j/parts/0/bench.json?uploadId=8d2f-upload-77": ` +
	`dial tcp 127.0.0.1:9100: connect: connection refused`

var port = regexp.MustCompile(`:\d+`)

// assertNoInternals checks a reason against what must stay in the logs.
func assertNoInternals(t *testing.T, reason string) {
	t.Helper()
	require.NotEmpty(t, reason)
	for _, s := range []string{"http", "dial tcp", bucket, "uploadId", "8d2f-upload-77", "127.0.0.1", "permanent:", "goroutine"} {
		assert.NotContains(t, reason, s)
	}
	assert.False(t, port.MatchString(reason), "no port in %q", reason)
}

// Every way a task fails its job says so in a sentence, with the trace id,
// and keeps the internal error text in the logs.
func TestFailureReasonsAreSentences(t *testing.T) {
	e := setup(t, func(o *taskrun.Options) { o.MaxDeliver = 2; o.DependencyWait = time.Second })
	internal := errors.New(internalText)
	byFormat := map[exportv1.Format]func() (*taskrun.Result, error){
		exportv1.Format_FORMAT_JSON: func() (*taskrun.Result, error) { return nil, bus.Permanent(internal) },
		exportv1.Format_FORMAT_CSV:  func() (*taskrun.Result, error) { return nil, internal },
		exportv1.Format_FORMAT_HTML: func() (*taskrun.Result, error) {
			return nil, fmt.Errorf("%w: %w", blob.ErrUnavailable, internal)
		},
		exportv1.Format_FORMAT_PDF: func() (*taskrun.Result, error) { panic(internalText) },
		exportv1.Format_FORMAT_XML: func() (*taskrun.Result, error) { return &taskrun.Result{}, nil },
		exportv1.Format_FORMAT_JSONL: func() (*taskrun.Result, error) {
			return nil, taskrun.Reject("Too many lines in one export")
		},
	}
	var k fakeKind
	k.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
		return byFormat[t.Task.GetFormat()]()
	}
	e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)
	e.consumeLeased(t, 2)

	traceID := trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	ctx := trace.ContextWithSpanContext(t.Context(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled}))
	for _, tc := range []struct {
		name   string
		format exportv1.Format
		part   uint32
		reason string
	}{
		{"permanent internal error", exportv1.Format_FORMAT_JSON, 0, bus.DefaultReason},
		{"transient error on the last delivery", exportv1.Format_FORMAT_CSV, 0,
			"The export failed, giving up after 2 attempts; please try again."},
		{"dependency down too long", exportv1.Format_FORMAT_HTML, 0,
			"The export stopped because the file storage was unavailable for more than 1 second; please try again."},
		{"kind panics", exportv1.Format_FORMAT_PDF, 0, bus.DefaultReason},
		{"kind produced no file", exportv1.Format_FORMAT_XML, 0, bus.DefaultReason},
		{"part beyond the plan", exportv1.Format_FORMAT_JSON, 4, bus.DefaultReason},
		{"rejected", exportv1.Format_FORMAT_JSONL, 0, "Too many lines in one export"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "why-" + strings.ReplaceAll(tc.name, " ", "-")
			tk := task(id, exportv1.PartKind_PART_KIND_RECORDS)
			tk.Format, tk.Part = tc.format, tc.part
			subject, err := bus.TaskSubject(bus.TaskRecords)
			require.NoError(t, err)
			require.NoError(t, e.pub.PublishTask(ctx, bustest.TaskSigner(t), subject, id+".task.0", tk))
			var failed exportv1.ExportFailed
			require.Eventually(t, func() bool { return e.event(t, bus.EventFailed, id, &failed) }, 20*time.Second, 10*time.Millisecond)
			assert.Equal(t, tc.reason+" (trace "+traceID.String()+")", failed.GetReason())
			assertNoInternals(t, failed.GetReason())
		})
	}
}

// A NATS outage when the part is done: the announcement waits for the
// server (nats.go holds requests while it reconnects; when one fails with
// a timeout, the runner waits: bus.Unavailable) and the part is not run
// again.
func TestRunnerWaitsOutANATSOutage(t *testing.T) {
	e := setup(t, nil)
	uploaded, down := make(chan struct{}), make(chan struct{})
	var k fakeKind
	k.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
		f, err := writeFile(ctx, e.store, t, "out.csv")
		if err != nil {
			return nil, err
		}
		close(uploaded)
		<-down
		return &taskrun.Result{Files: []*exportv1.File{f}, Records: 1}, nil
	}
	e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)
	e.setJob(t, "jn", exportv1.JobState_JOB_STATE_PROCESSING)

	done := make(chan error, 1)
	go func() { done <- e.run.Export(t.Context(), task("jn", exportv1.PartKind_PART_KIND_RECORDS)) }()
	<-uploaded
	port := e.ns.Addr().(*net.TCPAddr).Port
	e.ns.Shutdown()
	e.ns.WaitForShutdown()
	close(down)
	// Longer than the clients' request timeout (5 s): requests fail.
	time.Sleep(7 * time.Second)
	// bustest.Restart has no pause between stop and start: the same
	// server again, by hand, after the outage.
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: e.ns.StoreDir, NoLog: true, NoSigs: true})
	require.NoError(t, err)
	go srv.Start()
	require.True(t, srv.ReadyForConnections(10*time.Second))
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(60 * time.Second):
		t.Fatal("the part was not announced after NATS came back")
	}
	var part exportv1.PartUploaded
	require.True(t, e.event(t, bus.EventPart, "jn", &part))
	assert.Equal(t, "out.csv", part.GetFile().GetName())
	assert.EqualValues(t, 1, k.runs.Load(), "the finished part is announced, not run again")
}
