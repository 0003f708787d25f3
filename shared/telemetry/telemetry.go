// Package telemetry sets up logging, tracing and metrics for a Dataport
// service.
//
// Setup returns a JSON slog.Logger that stamps every record with the service
// name and, when the context carries a valid span, its trace_id and span_id;
// an OpenTelemetry SDK TracerProvider and MeterProvider that export over
// OTLP/HTTP when an endpoint is given (without one, a TracerProvider whose
// spans carry ids and record nothing); a Prometheus exposition of every
// metric (MetricsHandler, served on /metrics by infra.Run) whether or not an
// endpoint is given; and the W3C TraceContext propagator.
//
// The providers are not installed globally: a service passes them through
// constructors to whatever needs them. The one global Setup touches is the
// text-map propagator (otel.SetTextMapPropagator), so that instrumentation
// libraries that only know the global one still inject and extract
// traceparent headers.
//
// A typical run function:
//
//	tel, err := telemetry.Setup(ctx, telemetry.Options{
//		Service:      "archiver",
//		Version:      version,
//		LogLevel:     cfg.LogLevel,
//		Out:          stdout,
//		OTLPEndpoint: getenv("OTEL_EXPORTER_OTLP_ENDPOINT"),
//	})
//	if err != nil {
//		return err
//	}
//	defer func() { _ = tel.Shutdown(context.WithoutCancel(ctx)) }()
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Log attribute keys added by the Logger's handler.
const (
	KeyService = "service"
	KeyVersion = "version"
	KeyTraceID = "trace_id"
	KeySpanID  = "span_id"
)

// Options configures Setup.
type Options struct {
	// Service is the service name: the "service" log attribute and the
	// service.name resource attribute. Required.
	Service string
	// Version is the service version (service.version, and the "version"
	// log attribute when set). Optional.
	Version string
	// LogLevel is the minimum level logged: debug, info, warn or error.
	// Empty means info.
	LogLevel string
	// Out receives the JSON log lines, one per record. Nil means os.Stderr.
	Out io.Writer
	// OTLPEndpoint is the OTLP/HTTP base URL, with the semantics of
	// OTEL_EXPORTER_OTLP_ENDPOINT (e.g. "http://otel-collector:4318");
	// traces go to <endpoint>/v1/traces and metrics to <endpoint>/v1/metrics.
	// Empty means nothing is exported: spans still get ids (so logs carry
	// trace ids and traceparent propagates) but record nothing.
	// The other standard OTEL_EXPORTER_OTLP_* variables (headers, timeout,
	// compression, certificates) are read by the exporters themselves.
	OTLPEndpoint string
	// NoOTLPMetrics keeps metrics off OTLP even with an endpoint, for a
	// receiver that takes only traces (Jaeger, in `make run`); infra sets
	// it from OTEL_METRICS_EXPORTER=none, as the SDKs read that variable.
	// MetricsHandler serves them either way.
	NoOTLPMetrics bool
	// TracesSampler is OTEL_TRACES_SAMPLER, which the SDK reads itself.
	// Without an endpoint and with it empty (the default sampler), spans
	// only carry ids: nothing would read what an SDK span records. With a
	// sampler named, the SDK's provider runs as with an endpoint, so the
	// sampler decides the sampled flag that traceparent carries on.
	TracesSampler string
}

// Telemetry holds what Setup built. The exported fields are ready to use and
// must not be replaced; call Shutdown once at the end of run.
type Telemetry struct {
	// Logger writes JSON lines to Options.Out. Log with the *Context
	// methods (InfoContext, ...) so records carry trace_id and span_id.
	Logger *slog.Logger
	// TracerProvider is an SDK tracer provider, or, when nothing is
	// exported, one whose spans carry the same ids but record nothing;
	// pass it to constructors.
	TracerProvider trace.TracerProvider
	// MeterProvider is an SDK meter provider; pass it to constructors.
	MeterProvider metric.MeterProvider

	tp         *sdktrace.TracerProvider
	mp         *sdkmetric.MeterProvider
	propagator propagation.TextMapPropagator
	metrics    http.Handler

	shutdownOnce sync.Once
	shutdownErr  error
}

// Setup builds the logger, the tracer and meter providers and the
// propagator described by o, and installs the propagator as the global
// text-map propagator. It does not contact the OTLP endpoint; export
// failures later are reported through OpenTelemetry's error handler, not
// returned.
func Setup(ctx context.Context, o Options) (*Telemetry, error) {
	if o.Service == "" {
		return nil, errors.New("telemetry: service name is required")
	}
	level, err := parseLevel(o.LogLevel)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	out := o.Out
	if out == nil {
		out = os.Stderr
	}

	res, err := newResource(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}

	// A registry of this Telemetry's own rather than Prometheus's global
	// default one: two Setups in one process (tests) must not collide.
	reg := prometheus.NewRegistry()
	if err := reg.Register(collectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("telemetry: go collector: %w", err)
	}
	if err := reg.Register(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("telemetry: process collector: %w", err)
	}
	promReader, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return nil, fmt.Errorf("telemetry: prometheus exporter: %w", err)
	}

	tpOpts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	mpOpts := []sdkmetric.Option{sdkmetric.WithResource(res), sdkmetric.WithReader(promReader)}
	if o.OTLPEndpoint != "" {
		tracesURL, metricsURL, err := signalURLs(o.OTLPEndpoint)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP endpoint %q: %w", o.OTLPEndpoint, err)
		}
		// Creating the exporters does not dial, so neither fails on an
		// unreachable collector; only bad options make them fail.
		te, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(tracesURL))
		if err != nil {
			return nil, fmt.Errorf("telemetry: trace exporter: %w", err)
		}
		tpOpts = append(tpOpts, sdktrace.WithBatcher(te))
		if !o.NoOTLPMetrics {
			me, err := otlpmetrichttp.New(ctx, otlpmetrichttp.WithEndpointURL(metricsURL))
			if err != nil {
				return nil, errors.Join(fmt.Errorf("telemetry: metric exporter: %w", err), te.Shutdown(ctx))
			}
			mpOpts = append(mpOpts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(me)))
		}
	}
	var tp *sdktrace.TracerProvider
	var tracers trace.TracerProvider = &idsOnly{}
	if o.OTLPEndpoint != "" || o.TracesSampler != "" {
		tp = sdktrace.NewTracerProvider(tpOpts...)
		tracers = tp
	}
	mp := sdkmetric.NewMeterProvider(mpOpts...)

	prop := propagation.TraceContext{}
	otel.SetTextMapPropagator(prop)

	logger := slog.New(traceHandler{Handler: slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level})}).
		With(KeyService, o.Service)
	if o.Version != "" {
		logger = logger.With(KeyVersion, o.Version)
	}

	return &Telemetry{
		Logger:         logger,
		TracerProvider: tracers,
		MeterProvider:  mp,
		tp:             tp,
		mp:             mp,
		propagator:     prop,
		metrics:        promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
	}, nil
}

// MetricsHandler serves every metric recorded through MeterProvider, and
// the Go runtime's and the process's, in the Prometheus text format, for
// a scraper's GET /metrics. The values are cumulative since Setup.
func (t *Telemetry) MetricsHandler() http.Handler {
	return t.metrics
}

// Propagator returns the W3C TraceContext propagator that Setup also
// installed globally. Use it to inject and extract traceparent headers
// (HTTP headers, NATS message headers).
func (t *Telemetry) Propagator() propagation.TextMapPropagator {
	return t.propagator
}

// Shutdown flushes pending spans and metrics to the OTLP endpoint, if any,
// and stops the providers. It honours ctx's deadline; give it what is left
// of the shutdown budget. It is meant to be called once, last; further
// calls do nothing and return the first call's result.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.shutdownOnce.Do(func() {
		var errs []error
		if t.tp != nil {
			if err := t.tp.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("telemetry: shut down tracer provider: %w", err))
			}
		}
		if err := t.mp.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("telemetry: shut down meter provider: %w", err))
		}
		t.shutdownErr = errors.Join(errs...)
	})
	return t.shutdownErr
}

// parseLevel maps the DATAPORT_LOG_LEVEL values to slog levels.
func parseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	default:
		return 0, fmt.Errorf("log level %q: must be one of debug|info|warn|error", s)
	}
}

// newResource describes the service. OTEL_RESOURCE_ATTRIBUTES is honoured
// (e.g. k8s.pod.name set by the Deployment), but service.name and
// service.version from Options take precedence.
func newResource(ctx context.Context, o Options) (*resource.Resource, error) {
	kvs := []attribute.KeyValue{semconv.ServiceName(o.Service)}
	if o.Version != "" {
		kvs = append(kvs, semconv.ServiceVersion(o.Version))
	}
	// Later options win on conflicting keys.
	return resource.New(ctx,
		resource.WithFromEnv(),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(kvs...),
		resource.WithSchemaURL(semconv.SchemaURL),
	)
}

// signalURLs derives the per-signal OTLP/HTTP URLs from a base endpoint the
// way the OTLP exporters treat OTEL_EXPORTER_OTLP_ENDPOINT: the signal path
// is appended to the base path.
func signalURLs(endpoint string) (traces, metrics string, err error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", "", errors.New("not a URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", "", errors.New("want an http:// or https:// URL with a host")
	}
	base := strings.TrimSuffix(u.Path, "/")
	t, m := *u, *u
	t.Path, m.Path = base+"/v1/traces", base+"/v1/metrics"
	t.RawPath, m.RawPath = "", ""
	return t.String(), m.String(), nil
}

// KeyJobID is the log attribute naming the job a line is about.
const KeyJobID = "job_id"

type logAttrsKey struct{}

// WithLogAttrs returns ctx carrying attrs, which the Logger adds to every
// record logged with that context (or one derived from it), unless the
// record or the logger already has an attribute of the same key. The
// consume loop puts the message's job_id there, so whatever a handler
// logs about the message names its job.
func WithLogAttrs(ctx context.Context, attrs ...slog.Attr) context.Context {
	prev, _ := ctx.Value(logAttrsKey{}).([]slog.Attr)
	return context.WithValue(ctx, logAttrsKey{}, append(prev[:len(prev):len(prev)], attrs...))
}

// traceHandler adds trace_id and span_id from the record's context when it
// holds a valid span context, and the context's WithLogAttrs. Inside a
// WithGroup the ids land in that group, like any other record attribute.
type traceHandler struct {
	slog.Handler
	// keys are the top-level keys added with WithAttrs, which context
	// attributes must not repeat.
	keys map[string]bool
}

// Handle implements slog.Handler.
func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	extra, _ := ctx.Value(logAttrsKey{}).([]slog.Attr)
	if !sc.IsValid() && len(extra) == 0 {
		return h.Handler.Handle(ctx, r)
	}
	// Clone so that appending cannot write into an array shared with
	// the caller's copy of the record.
	r = r.Clone()
	if len(extra) > 0 {
		have := map[string]bool{}
		r.Attrs(func(a slog.Attr) bool { have[a.Key] = true; return true })
		for _, a := range extra {
			if !have[a.Key] && !h.keys[a.Key] {
				have[a.Key] = true
				r.AddAttrs(a)
			}
		}
	}
	if sc.IsValid() {
		r.AddAttrs(
			slog.String(KeyTraceID, sc.TraceID().String()),
			slog.String(KeySpanID, sc.SpanID().String()),
		)
	}
	return h.Handler.Handle(ctx, r)
}

// WithAttrs implements slog.Handler.
func (h traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	keys := make(map[string]bool, len(h.keys)+len(attrs))
	for k := range h.keys {
		keys[k] = true
	}
	for _, a := range attrs {
		keys[a.Key] = true
	}
	return traceHandler{h.Handler.WithAttrs(attrs), keys}
}

// WithGroup implements slog.Handler. Keys added after it are inside the
// group and cannot collide with top-level ones.
func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name), h.keys}
}
