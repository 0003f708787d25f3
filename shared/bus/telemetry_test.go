package bus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/telemetry"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPublishAndConsumeAreOneTrace: a publish inside a span is a "send"
// producer span, its consumer's "process" span is the send span's child
// (named and attributed by the messaging conventions, with the job id),
// the handler's logs carry job_id, and the loop counts the message and
// reports the consumer's backlog.
func TestPublishAndConsumeAreOneTrace(t *testing.T) {
	srv := bustest.Start(t)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	var logs lockedBuffer
	tel, err := telemetry.Setup(t.Context(), telemetry.Options{Service: "test", Out: &logs})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })

	pub := bus.NewPublisher(srv.JS, propagation.TraceContext{})
	ctx, parent := tp.Tracer("test").Start(t.Context(), "POST /v1/exports", trace.WithSpanKind(trace.SpanKindServer))
	require.NoError(t, pub.PublishStatus(ctx, bus.EventQueued, "J7", "", &exportv1.ExportQueued{JobId: "J7", OccurredAt: timestamppb.Now()}))
	parent.End()

	cons, err := srv.JS.CreateOrUpdateConsumer(t.Context(), bus.StreamExportEvents, jetstream.ConsumerConfig{
		Durable: "trace-test", FilterSubject: bus.StatusFilter(bus.EventQueued), AckPolicy: jetstream.AckExplicitPolicy,
	})
	require.NoError(t, err)
	handled := make(chan struct{})
	var once sync.Once
	runConsume(t, cons, func(ctx context.Context, msg jetstream.Msg) error {
		tel.Logger.InfoContext(ctx, "handling")
		once.Do(func() { close(handled) })
		return nil
	}, bus.ConsumeOptions{Tracer: tp.Tracer("consumer"), Meter: mp.Meter("consumer")})
	select {
	case <-handled:
	case <-time.After(10 * time.Second):
		t.Fatal("message not handled")
	}

	var send, process sdktrace.ReadOnlySpan
	require.Eventually(t, func() bool {
		for _, s := range rec.Ended() {
			switch s.Name() {
			case "send exports.status.queued.*":
				send = s
			case "process exports.status.queued.*":
				process = s
			}
		}
		return send != nil && process != nil
	}, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, trace.SpanKindProducer, send.SpanKind())
	assert.Equal(t, parent.SpanContext().SpanID(), send.Parent().SpanID())
	assert.Equal(t, trace.SpanKindConsumer, process.SpanKind())
	assert.Equal(t, send.SpanContext().SpanID(), process.Parent().SpanID(), "process continues the send")
	assert.Equal(t, parent.SpanContext().TraceID(), process.SpanContext().TraceID())
	assert.Contains(t, process.Attributes(), attribute.String(bus.AttrJobID, "J7"))
	assert.Contains(t, process.Attributes(), attribute.String("messaging.consumer.group.name", "trace-test"))
	assert.Contains(t, process.Attributes(), attribute.String("messaging.destination.name", "exports.status.queued.J7"))

	require.Eventually(t, func() bool { return strings.Contains(logs.String(), `"handling"`) }, 5*time.Second, 10*time.Millisecond)
	var line map[string]any
	for l := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		if strings.Contains(l, `"handling"`) {
			require.NoError(t, json.Unmarshal([]byte(l), &line))
			break
		}
	}
	assert.Equal(t, "J7", line["job_id"])
	assert.Equal(t, process.SpanContext().TraceID().String(), line["trace_id"])

	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var rm metricdata.ResourceMetrics
		if !assert.NoError(c, reader.Collect(t.Context(), &rm)) {
			return
		}
		got := map[string]metricdata.Aggregation{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				got[m.Name] = m.Data
			}
		}
		sum, ok := got[bus.MetricMessagesHandled].(metricdata.Sum[int64])
		if assert.True(c, ok, "handled counter") && assert.Len(c, sum.DataPoints, 1) {
			assert.EqualValues(c, 1, sum.DataPoints[0].Value)
			v, _ := sum.DataPoints[0].Attributes.Value("outcome")
			assert.Equal(c, "ack", v.AsString())
		}
		assert.Contains(c, got, bus.MetricProcessDuration)
		g, ok := got[bus.MetricConsumerPending].(metricdata.Gauge[int64])
		if assert.True(c, ok, "pending gauge") && assert.Len(c, g.DataPoints, 1) {
			assert.EqualValues(c, 0, g.DataPoints[0].Value)
		}
	}, 10*time.Second, 20*time.Millisecond)
}
