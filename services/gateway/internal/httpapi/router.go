// Package httpapi is the gateway's HTTP API on one chi router, composing
// the dialects: the native API (package dialect/native, always served)
// and the others (dialect/rocketchat, dialect/rebilly, dialect/mytracker)
// registered through Config.Dialects, and the description of all of them,
// GET /openapi.json (package openapi), and, when configured, the web
// console (package console).
//
// Every request goes through the same path: tracing, panic recovery, a
// cap on requests in flight (limited), reading the body whole (readBodies), authentication once by the
// credential of the route's dialect (dialect.Authenticate, which puts the
// principal in the request's context), the configured middleware
// (idempotency keys, quotas), then the dialect's handler, which reads the
// principal from the context. Every answer is JSON in the shape of the
// dialect the route belongs to. Bad input is always a 4xx; a 5xx only
// means that NATS or MinIO failed.
package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"dataport.dev/services/gateway/internal/console"
	"dataport.dev/services/gateway/internal/dialect"
	"dataport.dev/services/gateway/internal/dialect/native"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/openapi"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/links"
)

// Config holds the API's dependencies. Jobs, Auth, Publisher, Submitter,
// Blob, ExportBucket and Links are required.
type Config struct {
	Jobs *jobstore.Store
	// Auth checks personal access tokens (native and Rocket.Chat routes);
	// it is auth.Service.
	Auth dialect.TokenAuthenticator
	// Keys checks API keys and bearer JWTs (Rebilly and myTracker routes);
	// it is auth.KeyAuthenticator. Nil: those routes see no caller.
	Keys      dialect.KeyAuthenticator
	Publisher *bus.Publisher
	// Blob and ExportBucket are where downloads are read from.
	Blob         *blob.Store
	ExportBucket string
	// Links mints and verifies download links.
	Links *links.Signer
	// Submitter creates jobs for every dialect.
	Submitter *submit.Submitter
	// NativeCreate configures the native POST /v1/exports; it is served
	// when its Rooms and Directory are set.
	NativeCreate native.Create
	// Dialects add their routes to the router; each owns its paths and
	// answers in its own shapes.
	Dialects []Dialect
	// Console, when set, serves the web console under /console/ and lets
	// its session cookie authenticate native routes (console.Authenticate,
	// after the header authentication, so the headers win).
	Console *console.Console
	// Middleware runs on every request after tracing, panic recovery,
	// body reading and authentication, before routing: idempotency keys
	// and quotas, which act on the job-creating requests of every
	// dialect.
	Middleware []func(http.Handler) http.Handler
	// MaxBodyBytes bounds a request body; a larger one is refused with 413
	// before any work. Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// BodyReadTimeout is how long a client has to send a request body; a
	// slower one is refused with 408. Zero means DefaultBodyReadTimeout.
	BodyReadTimeout time.Duration
	// MaxInFlight is the most requests served at once; more are answered
	// 503 with Retry-After in their dialect's shape (api.limited). The
	// probes, /metrics and event streams are not counted. Zero means
	// DefaultMaxInFlight, a negative value no limit.
	MaxInFlight int
	// MaxEventStreams is the most server-sent event streams open at once,
	// counted apart from other requests; more are answered 503. Zero
	// means DefaultMaxEventStreams, a negative value no limit.
	MaxEventStreams int
	// WriteTimeout is the server's write timeout, which a download renews
	// before every write so a large file can stream for as long as the
	// client keeps reading. Zero means infra.DefaultWriteTimeout.
	WriteTimeout time.Duration

	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	// MeterProvider records the request metrics; nil records nothing.
	MeterProvider metric.MeterProvider
	Propagator    propagation.TextMapPropagator
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Dialect is one public API served over the job model.
type Dialect interface {
	// Routes registers the dialect's handlers.
	Routes(r chi.Router)
}

// Router is the API's http.Handler.
type Router struct {
	mux *chi.Mux
}

// ServeHTTP implements http.Handler.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) { rt.mux.ServeHTTP(w, r) }

// HandleFunc adds a route outside the API, such as the health probes of
// infra.HealthRoutes; it gets the same tracing and panic recovery.
func (rt *Router) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	rt.mux.HandleFunc(pattern, h)
}

type api struct {
	Config
	log    *slog.Logger
	tracer trace.Tracer
	// duration is the semantic conventions' http.server.request.duration:
	// its count by route and status is the request and error rate.
	duration metric.Float64Histogram
	series   seriesCache
}

// HeaderTraceID is the response header naming the request's trace, for
// clients that do not parse traceparent.
const HeaderTraceID = "X-Trace-Id"

// MetricRequestDuration is the request metric of the HTTP semantic
// conventions.
const MetricRequestDuration = "http.server.request.duration"

// New builds the router.
func New(cfg Config) *Router {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.TraceContext{}
	}
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = metricnoop.NewMeterProvider()
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.BodyReadTimeout <= 0 {
		cfg.BodyReadTimeout = DefaultBodyReadTimeout
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.MaxEventStreams == 0 {
		cfg.MaxEventStreams = DefaultMaxEventStreams
	}
	a := &api{
		Config: cfg,
		log:    cfg.Logger,
		tracer: cfg.TracerProvider.Tracer(instrumentation),
	}
	// The SDK rejects only malformed instrument definitions, which these
	// are not; a nil histogram cannot happen.
	a.duration, _ = cfg.MeterProvider.Meter(instrumentation).Float64Histogram(MetricRequestDuration,
		metric.WithUnit("s"), metric.WithDescription("Duration of HTTP server requests, by method, route and status."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
	mux := chi.NewRouter()
	// The cap on requests in flight comes before anything a request
	// holds memory or a lookup for, and after tracing, so refusals are
	// counted in the request metric. Bodies are read before
	// authentication (a lookup) and the configured middleware, which
	// reads them too (idempotency hashes them) or spends state on them
	// (quotas). Authentication runs once, before the middleware that
	// needs the caller.
	mux.Use(a.traced, a.recovered, a.limited, readBodies(cfg.MaxBodyBytes, cfg.BodyReadTimeout), dialect.Authenticate(cfg.Auth, cfg.Keys))
	if cfg.Console != nil {
		mux.Use(cfg.Console.Authenticate)
	}
	mux.Use(cfg.Middleware...)
	// Unknown paths and methods answer in the shape of the dialect whose
	// prefix the path has, like the dialect's own errors.
	mux.NotFound(func(w http.ResponseWriter, r *http.Request) {
		dialect.WriteError(w, r, http.StatusNotFound, "not found")
	})
	mux.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		dialect.WriteError(w, r, http.StatusMethodNotAllowed, "method not allowed")
	})
	// The API's description is public, like the API's existence.
	if doc, err := openapi.Handler(); err != nil {
		a.log.Error("OpenAPI document unavailable", "error", err)
		mux.Get("/openapi.json", func(w http.ResponseWriter, r *http.Request) {
			dialect.WriteError(w, r, http.StatusInternalServerError, "the OpenAPI document is broken")
		})
	} else {
		mux.Method(http.MethodGet, "/openapi.json", doc)
	}
	native.New(native.Config{
		Jobs: cfg.Jobs, Submitter: cfg.Submitter, Blob: cfg.Blob, ExportBucket: cfg.ExportBucket,
		Links: cfg.Links, WriteTimeout: cfg.WriteTimeout, Create: cfg.NativeCreate, Logger: cfg.Logger,
	}).Routes(mux)
	for _, d := range cfg.Dialects {
		d.Routes(mux)
	}
	if cfg.Console != nil {
		cfg.Console.Routes(mux)
	}
	return &Router{mux: mux}
}

const instrumentation = "dataport.dev/services/gateway/internal/httpapi"

// traced runs each request in a server span, continuing the caller's trace
// when it sends traceparent, and names the span after the matched route
// ("POST /v1/exports", as the HTTP semantic conventions name server
// spans). The answer carries the trace in traceparent and X-Trace-Id, so
// a client can quote it; a job created by the request stores the same
// trace id. The request's duration is recorded by route, never by raw
// path, which would make a series per job id.
func (a *api) traced(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := a.Propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		ctx, span := a.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		// A span that records nothing (no exporter) takes no attributes
		// and no name: building them was most of what tracing cost a poll.
		recording := span.IsRecording()
		if recording {
			span.SetAttributes(semconv.HTTPRequestMethodKey.String(r.Method), semconv.URLPath(r.URL.Path))
		}
		if sc := span.SpanContext(); sc.IsValid() {
			a.Propagator.Inject(ctx, propagation.HeaderCarrier(w.Header()))
			w.Header().Set(HeaderTraceID, sc.TraceID().String())
		}
		ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
		start := time.Now()
		next.ServeHTTP(ww, r.WithContext(ctx))

		status := ww.Status()
		if status == 0 {
			status = http.StatusOK
		}
		route := ""
		if rc := chi.RouteContext(ctx); rc != nil {
			route = rc.RoutePattern()
		}
		if recording {
			attrs := []attribute.KeyValue{semconv.HTTPRequestMethodKey.String(r.Method), semconv.HTTPResponseStatusCode(status)}
			if route != "" {
				span.SetName(r.Method + " " + route)
				attrs = append(attrs, semconv.HTTPRoute(route))
			}
			span.SetAttributes(attrs...)
			if status >= 500 {
				span.SetStatus(codes.Error, http.StatusText(status))
			}
		}
		a.duration.Record(context.WithoutCancel(ctx), time.Since(start).Seconds(), a.series.of(r.Method, route, status))
		// Checked first: the arguments alone (a slice and three boxed
		// values) would be allocated on every request even with debug off.
		if a.log.Enabled(ctx, slog.LevelDebug) {
			a.log.DebugContext(ctx, "http request", "method", r.Method, "route", route,
				"status", status, "duration_ms", time.Since(start).Milliseconds())
		}
	})
}

// recovered turns a handler panic into a 500 so one bad request cannot
// take the process down. Handlers are written not to panic; this is the
// last line, and it logs loudly.
func (a *api) recovered(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				a.log.ErrorContext(r.Context(), "handler panic", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
				dialect.WriteError(w, r, http.StatusInternalServerError, "internal error")
			}
		}()
		next.ServeHTTP(w, r)
	})
}
