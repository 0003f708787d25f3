package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"dataport.dev/shared/telemetry"
)

// Tests that call Setup are not parallel: Setup sets the global propagator.

// syncBuffer is a bytes.Buffer safe for the logger and the test to share.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines decodes every JSON log line written so far.
func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for line := range strings.SplitSeq(strings.TrimSpace(b.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), "log line is JSON: %s", line)
		out = append(out, m)
	}
	return out
}

func setup(t *testing.T, o telemetry.Options) *telemetry.Telemetry {
	t.Helper()
	tel, err := telemetry.Setup(t.Context(), o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

func TestLoggerAddsTraceIDs(t *testing.T) {
	var out syncBuffer
	tel := setup(t, telemetry.Options{Service: "archiver", Version: "1.2.3", Out: &out})

	ctx, span := tel.TracerProvider.Tracer("test").Start(t.Context(), "work")
	tel.Logger.InfoContext(ctx, "in span", "job_id", "j1")
	span.End()
	tel.Logger.InfoContext(t.Context(), "no span")
	tel.Logger.Info("no context")

	lines := out.lines(t)
	require.Len(t, lines, 3)

	sc := span.SpanContext()
	require.True(t, sc.IsValid(), "the SDK gives spans valid ids even without an exporter")
	assert.Equal(t, sc.TraceID().String(), lines[0]["trace_id"])
	assert.Equal(t, sc.SpanID().String(), lines[0]["span_id"])
	assert.Equal(t, "in span", lines[0]["msg"])
	assert.Equal(t, "j1", lines[0]["job_id"])

	for _, l := range lines {
		assert.Equal(t, "archiver", l["service"])
		assert.Equal(t, "1.2.3", l["version"])
		assert.Equal(t, "INFO", l["level"])
	}
	for _, l := range lines[1:] {
		assert.NotContains(t, l, "trace_id")
		assert.NotContains(t, l, "span_id")
	}
}

func TestLoggerWithKeepsTraceIDs(t *testing.T) {
	var out syncBuffer
	tel := setup(t, telemetry.Options{Service: "gateway", Out: &out})

	ctx, span := tel.TracerProvider.Tracer("test").Start(t.Context(), "work")
	defer span.End()
	tel.Logger.With("job_id", "j2").InfoContext(ctx, "derived logger")

	lines := out.lines(t)
	require.Len(t, lines, 1)
	assert.Equal(t, span.SpanContext().TraceID().String(), lines[0]["trace_id"])
	assert.Equal(t, "j2", lines[0]["job_id"])
	assert.NotContains(t, lines[0], "version", "no version attribute when Version is empty")
}

func TestLogLevelFiltering(t *testing.T) {
	tests := []struct {
		level string
		want  []string // messages that get through
	}{
		{"debug", []string{"d", "i", "w", "e"}},
		{"", []string{"i", "w", "e"}},
		{"info", []string{"i", "w", "e"}},
		{"warn", []string{"w", "e"}},
		{"WARN", []string{"w", "e"}},
		{"error", []string{"e"}},
	}
	for _, tt := range tests {
		t.Run("level="+tt.level, func(t *testing.T) {
			var out syncBuffer
			tel := setup(t, telemetry.Options{Service: "s", LogLevel: tt.level, Out: &out})
			ctx := t.Context()
			tel.Logger.DebugContext(ctx, "d")
			tel.Logger.InfoContext(ctx, "i")
			tel.Logger.WarnContext(ctx, "w")
			tel.Logger.ErrorContext(ctx, "e")

			var got []string
			for _, l := range out.lines(t) {
				got = append(got, l["msg"].(string))
			}
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestSetupRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    telemetry.Options
		wantMsg string
	}{
		{"no service", telemetry.Options{Out: io.Discard}, "service name is required"},
		{"bad level", telemetry.Options{Service: "s", LogLevel: "trace", Out: io.Discard}, `log level "trace"`},
		{"endpoint without scheme", telemetry.Options{Service: "s", Out: io.Discard, OTLPEndpoint: "collector:4318"}, "OTLP endpoint"},
		{"endpoint with grpc scheme", telemetry.Options{Service: "s", Out: io.Discard, OTLPEndpoint: "grpc://collector:4317"}, "OTLP endpoint"},
		{"endpoint unparsable", telemetry.Options{Service: "s", Out: io.Discard, OTLPEndpoint: "http://[::1"}, "OTLP endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tel, err := telemetry.Setup(t.Context(), tt.opts)
			require.Error(t, err)
			assert.Nil(t, tel)
			assert.Contains(t, err.Error(), tt.wantMsg)
		})
	}
}

func TestSetupWithoutEndpoint(t *testing.T) {
	tel, err := telemetry.Setup(t.Context(), telemetry.Options{Service: "notifier", Out: io.Discard})
	require.NoError(t, err)
	require.NotNil(t, tel.Logger)
	require.NotNil(t, tel.TracerProvider)
	require.NotNil(t, tel.MeterProvider)

	counter, err := tel.MeterProvider.Meter("test").Int64Counter("jobs")
	require.NoError(t, err)
	counter.Add(t.Context(), 1)
	_, span := tel.TracerProvider.Tracer("test").Start(t.Context(), "work")
	span.End()

	assert.NoError(t, tel.Shutdown(t.Context()))
	assert.NoError(t, tel.Shutdown(t.Context()), "a second Shutdown is harmless")
}

func TestPropagatorIsTraceContext(t *testing.T) {
	tel := setup(t, telemetry.Options{Service: "s", Out: io.Discard})
	prop := tel.Propagator()
	assert.Equal(t, []string{"traceparent", "tracestate"}, prop.Fields())

	ctx, span := tel.TracerProvider.Tracer("test").Start(t.Context(), "publish")
	defer span.End()
	carrier := propagation.MapCarrier{}
	prop.Inject(ctx, carrier)
	require.Contains(t, carrier, "traceparent")
	assert.Contains(t, carrier["traceparent"], span.SpanContext().TraceID().String())

	// The consumer side: the extracted context makes log lines carry the
	// producer's trace id.
	var out syncBuffer
	consumer := setup(t, telemetry.Options{Service: "consumer", Out: &out})
	cctx := consumer.Propagator().Extract(context.Background(), carrier)
	consumer.Logger.InfoContext(cctx, "consumed")
	lines := out.lines(t)
	require.Len(t, lines, 1)
	assert.Equal(t, span.SpanContext().TraceID().String(), lines[0]["trace_id"])
}

// otlpServer is a fake OTLP/HTTP collector that counts export requests.
type otlpServer struct {
	*httptest.Server
	traces  atomic.Int64
	metrics atomic.Int64
	other   atomic.Int64
}

func newOTLPServer(t *testing.T, basePath string) *otlpServer {
	t.Helper()
	s := &otlpServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch {
		case r.Method == http.MethodPost && r.URL.Path == basePath+"/v1/traces":
			s.traces.Add(1)
		case r.Method == http.MethodPost && r.URL.Path == basePath+"/v1/metrics":
			s.metrics.Add(1)
		default:
			s.other.Add(1)
			http.NotFound(w, r)
			return
		}
		// An empty 200 body is a valid (empty) protobuf export response.
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(s.Close)
	return s
}

func TestExportsOverOTLPHTTP(t *testing.T) {
	tests := []struct {
		name     string
		basePath string
		endpoint func(srvURL string) string
	}{
		{"base URL", "", func(u string) string { return u }},
		{"base URL with slash", "", func(u string) string { return u + "/" }},
		{"base URL with path", "/otlp", func(u string) string { return u + "/otlp" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newOTLPServer(t, tt.basePath)
			tel, err := telemetry.Setup(t.Context(), telemetry.Options{
				Service:      "room-exporter",
				Out:          io.Discard,
				OTLPEndpoint: tt.endpoint(srv.URL),
			})
			require.NoError(t, err)

			ctx, span := tel.TracerProvider.Tracer("test").Start(t.Context(), "export")
			counter, err := tel.MeterProvider.Meter("test").Int64Counter("exports")
			require.NoError(t, err)
			counter.Add(ctx, 1)
			span.End()

			shutdownCtx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			require.NoError(t, tel.Shutdown(shutdownCtx))

			assert.Positive(t, srv.traces.Load(), "spans are exported to /v1/traces by Shutdown")
			assert.Positive(t, srv.metrics.Load(), "metrics are exported to /v1/metrics by Shutdown")
			assert.Zero(t, srv.other.Load(), "no requests to other paths")
		})
	}
}

// TestNoOTLPMetricsExportsTracesOnly: with NoOTLPMetrics the endpoint gets
// spans and no metrics; /metrics still has them.
func TestNoOTLPMetricsExportsTracesOnly(t *testing.T) {
	srv := newOTLPServer(t, "")
	tel, err := telemetry.Setup(t.Context(), telemetry.Options{Service: "archiver", Out: io.Discard, OTLPEndpoint: srv.URL, NoOTLPMetrics: true})
	require.NoError(t, err)
	_, span := tel.TracerProvider.Tracer("test").Start(t.Context(), "work")
	span.End()
	c, err := tel.MeterProvider.Meter("test").Int64Counter("dataport.test.runs")
	require.NoError(t, err)
	c.Add(t.Context(), 1)
	rec := httptest.NewRecorder()
	tel.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	assert.Contains(t, rec.Body.String(), "dataport_test_runs_total")

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	require.NoError(t, tel.Shutdown(ctx))
	assert.Positive(t, srv.traces.Load())
	assert.Zero(t, srv.metrics.Load())
}

// TestMetricsHandlerServesRecordedMetrics: what a service records through
// the MeterProvider is on /metrics in Prometheus names, without an OTLP
// endpoint.
func TestMetricsHandlerServesRecordedMetrics(t *testing.T) {
	tel := setup(t, telemetry.Options{Service: "archiver", Out: io.Discard})
	c, err := tel.MeterProvider.Meter("test").Int64Counter("dataport.test.things", metric.WithUnit("{thing}"))
	require.NoError(t, err)
	c.Add(t.Context(), 3, metric.WithAttributes(attribute.String("kind", "room")))

	srv := httptest.NewServer(tel.MetricsHandler())
	t.Cleanup(srv.Close)
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Contains(t, string(body), `dataport_test_things_total{kind="room"`)
	assert.Contains(t, string(body), `service_name="archiver"`, "target_info names the service")
	assert.Contains(t, string(body), "go_goroutines")
}

// TestLoggerAddsContextAttrsOnce: attributes put in the context land on
// every record once, never beside the same key from the record or the
// logger.
func TestLoggerAddsContextAttrsOnce(t *testing.T) {
	var out syncBuffer
	tel := setup(t, telemetry.Options{Service: "notifier", Out: &out})
	ctx := telemetry.WithLogAttrs(t.Context(), slog.String(telemetry.KeyJobID, "j1"))

	tel.Logger.InfoContext(ctx, "plain")
	tel.Logger.InfoContext(ctx, "own key", telemetry.KeyJobID, "j2")
	tel.Logger.With(telemetry.KeyJobID, "j3").InfoContext(ctx, "logger key")
	tel.Logger.InfoContext(t.Context(), "no attrs")

	lines := out.lines(t)
	require.Len(t, lines, 4)
	assert.Equal(t, "j1", lines[0]["job_id"])
	assert.Equal(t, "j2", lines[1]["job_id"])
	assert.Equal(t, "j3", lines[2]["job_id"])
	assert.NotContains(t, lines[3], "job_id")
	out.mu.Lock()
	raw := out.buf.String()
	out.mu.Unlock()
	assert.Equal(t, 3, strings.Count(raw, `"job_id"`), "never two job_id keys on one line")
}

func TestInJobTraceParentsWorkOnTheJobsSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

	_, span := tp.Tracer("t").Start(telemetry.InJobTrace(context.Background(), traceID, spanID), "expire")
	span.End()
	_, other := tp.Tracer("t").Start(telemetry.InJobTrace(context.Background(), traceID, ""), "old job")
	other.End()

	ended := rec.Ended()
	require.Len(t, ended, 2)
	assert.Equal(t, traceID, ended[0].SpanContext().TraceID().String(), "the work joins the job's trace")
	assert.Equal(t, spanID, ended[0].Parent().SpanID().String(), "as a child of the span that created the job")
	assert.NotEqual(t, traceID, ended[1].SpanContext().TraceID().String(), "without a span id the work starts its own trace")
	assert.False(t, ended[1].Parent().IsValid())
}

func TestWithoutEndpointSpansCarryTheSDKsIDs(t *testing.T) {
	tel := setup(t, telemetry.Options{Service: "gateway", Out: io.Discard})
	tracer := tel.TracerProvider.Tracer("test")

	ctx, root := tracer.Start(t.Context(), "request")
	defer root.End()
	sc := root.SpanContext()
	require.True(t, sc.IsValid(), "a span has a trace id and a span id")
	assert.True(t, sc.IsSampled(), "sampled, as the SDK's default sampler marks a root")
	assert.False(t, root.IsRecording(), "nothing is exported, so nothing is recorded")

	// bus.Publisher starts its send span from the request's span's provider.
	_, child := trace.SpanFromContext(ctx).TracerProvider().Tracer("bus").Start(ctx, "send")
	assert.Equal(t, sc.TraceID(), child.SpanContext().TraceID(), "a child is in its parent's trace")
	assert.NotEqual(t, sc.SpanID(), child.SpanContext().SpanID(), "with a span id of its own")
	assert.True(t, child.SpanContext().IsSampled())

	_, other := tracer.Start(t.Context(), "request")
	assert.NotEqual(t, sc.TraceID(), other.SpanContext().TraceID(), "each root starts a trace")

	_, fresh := tracer.Start(ctx, "run", trace.WithNewRoot())
	assert.NotEqual(t, sc.TraceID(), fresh.SpanContext().TraceID(), "WithNewRoot leaves the parent's trace")

	// A caller's traceparent that is not sampled stays so (ParentBased),
	// with its trace state.
	ts, err := trace.ParseTraceState("vendor=x")
	require.NoError(t, err)
	remote := trace.NewSpanContext(trace.SpanContextConfig{TraceID: sc.TraceID(), SpanID: sc.SpanID(), TraceState: ts, Remote: true})
	_, unsampled := tracer.Start(trace.ContextWithRemoteSpanContext(t.Context(), remote), "request")
	assert.Equal(t, sc.TraceID(), unsampled.SpanContext().TraceID())
	assert.False(t, unsampled.SpanContext().IsSampled())
	assert.Equal(t, "vendor=x", unsampled.SpanContext().TraceState().String())

	carrier := propagation.MapCarrier{}
	tel.Propagator().Inject(ctx, carrier)
	assert.Equal(t, "00-"+sc.TraceID().String()+"-"+sc.SpanID().String()+"-01", carrier["traceparent"])
}

func TestWithASamplerSpansAreTheSDKs(t *testing.T) {
	tel := setup(t, telemetry.Options{Service: "gateway", Out: io.Discard, TracesSampler: "parentbased_always_on"})
	_, span := tel.TracerProvider.Tracer("test").Start(t.Context(), "request")
	defer span.End()
	assert.True(t, span.IsRecording(), "the SDK's span, for the sampler to decide")
}
