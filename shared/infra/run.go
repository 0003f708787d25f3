package infra

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/telemetry"
)

// Service describes one long-running Dataport service to Run. C is the
// service's typed configuration: what its own environment variables hold,
// validated.
type Service[C any] struct {
	// Name names the service in logs, traces, the NATS connection and
	// the errors Run returns.
	Name string
	// Version is the build's version (main.version).
	Version string
	// Load reads the service's own variables. Run has asked l for the
	// shared ones (Base) already and checks l.Err itself, so Load returns
	// an error only for what l cannot check, such as a cross-check of two
	// variables.
	Load func(l *config.Loader) (C, error)
	// Build is the composition root: it constructs the service's parts
	// from its configuration and the connections Run opened. It runs
	// once, before anything is served; what it returns runs until
	// shutdown.
	Build func(ctx context.Context, d Deps, c C) (Parts, error)
}

// Base is the configuration every service shares: config.LoadCommon,
// LoadTopology and LoadHTTPLimits.
type Base struct {
	Common   config.Common
	Topology bus.Topology
	HTTP     HTTPLimits
	// PprofAddr, when set, is a listener with only Go's profiles
	// (/debug/pprof/). It is off by default: a profile shows where a
	// process spends its CPU under real load, which benchmarks in process
	// do not reproduce, but its handlers must never face clients.
	PprofAddr string
}

// LoadBase reads the variables every service shares through l.
func LoadBase(l *config.Loader) Base {
	common := config.LoadCommon(l)
	return Base{Common: common, Topology: LoadTopology(l, common), HTTP: LoadHTTPLimits(l),
		PprofAddr: l.HostPort("DATAPORT_PPROF_ADDR", "", "listen address of a server with only Go's profiles (/debug/pprof/); empty: none. Bind it to loopback")}
}

// Deps are what Run has set up when it calls Build.
type Deps struct {
	Base      Base
	Infra     *Infra
	Telemetry *telemetry.Telemetry
}

// Parts are what a service runs: one HTTP server, its durable consumers
// and its background loops.
type Parts struct {
	// HTTP is the service's one HTTP server; Run adds the health probes
	// to its handler.
	HTTP HTTP
	// Consumers are consumed from until shutdown. A consumer that stops
	// on its own (it was deleted) stops the service: a service that no
	// longer consumes must not look healthy.
	Consumers []Consumer
	// Loops run until shutdown, stopped together with the consumers; an
	// error from one stops the service.
	Loops []func(ctx context.Context) error
	// Ready, when set, is checked by /readyz after NATS and MinIO, for a
	// service that must warm up before it takes traffic.
	Ready func(ctx context.Context) error
	// LogAttrs are added to the "<name> started" log line.
	LogAttrs []any
}

// HTTP is a service's HTTP server.
type HTTP struct {
	// Addr is the listen address.
	Addr string
	// Handler serves the service's routes; nil serves only the probes.
	Handler Mux
	// OpsAddr, when set, is a second listener with the probes and
	// /metrics, and /metrics is left off Handler. A service whose Addr is
	// published to the internet (the gateway, behind its Ingress) keeps its
	// metrics off it this way; the probes stay on both, as the kubelet may
	// use either.
	OpsAddr string
}

// Mux is a handler routes can be added to, such as *http.ServeMux or the
// gateway's router.
type Mux interface {
	http.Handler
	HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request))
}

// Consumer is a durable consumer and the handler of its messages.
type Consumer struct {
	Consumer jetstream.Consumer
	Handler  bus.Handler
	// Options tune the consume loop. Grace defaults to half of
	// DATAPORT_SHUTDOWN_TIMEOUT and Logger to the service's logger.
	Options bus.ConsumeOptions
}

// Run is the whole life of a service process, the same for every
// service:
//
//  1. configuration: LoadBase and s.Load read getenv; on any error Run
//     returns them all, naming each variable, and starts nothing; else it
//     prints the effective configuration to stdout, secrets masked;
//  2. telemetry (JSON logs to stdout, OTLP when OTEL_EXPORTER_OTLP_ENDPOINT
//     is set), then NATS and MinIO (retried until SIGINT or SIGTERM, so a
//     service may start before its dependencies);
//  3. s.Build, then the HTTP server with /healthz, /readyz and /metrics
//     (every metric of the service, Prometheus text format), the
//     consumers (traced, and measured: handler time, outcomes,
//     redeliveries, backlog) and the loops, until SIGINT, SIGTERM, ctx's end or the
//     failure of any of them;
//  4. shutdown, in the order Kubernetes needs, within
//     DATAPORT_SHUTDOWN_TIMEOUT: /readyz answers 503 and the HTTP server
//     stops taking connections and finishes open requests (at most half
//     the budget), so no new traffic is routed here; then the consumers
//     stop pulling and finish or hand back their messages (their Grace)
//     and the loops stop; then the NATS connection drains, so the last
//     acks and publishes go out; telemetry is flushed last, so the spans
//     and logs of the shutdown itself are exported too.
//
// A signal-style stop returns nil.
func Run[C any](ctx context.Context, getenv func(string) string, stdout io.Writer, s Service[C]) (err error) {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	type loaded struct {
		base Base
		svc  C
	}
	cfg, err := LoadConfig(getenv, stdout, s.Name, func(l *config.Loader) (loaded, error) {
		base := LoadBase(l)
		svc, err := s.Load(l)
		return loaded{base, svc}, err
	})
	if err != nil {
		return err
	}
	base := cfg.base

	tel, err := NewTelemetry(ctx, getenv, s.Name, s.Version, base.Common.LogLevel, stdout)
	if err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	log := tel.Logger
	b := &budget{total: base.Common.ShutdownTimeout}
	// Deferred first, so it runs last.
	defer func() {
		fctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), b.flushBy())
		defer cancel()
		if err := tel.Shutdown(fctx); err != nil {
			log.WarnContext(fctx, "flush telemetry", "error", err)
		}
	}()

	inf, err := Connect(ctx, s.Name, base.Common, base.Topology, log)
	if err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	defer func() {
		dctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), b.drainBy())
		defer cancel()
		if err := inf.Drain(dctx); err != nil {
			log.WarnContext(dctx, "drain NATS connection", "error", err)
		}
	}()

	parts, err := s.Build(ctx, Deps{Base: base, Infra: inf, Telemetry: tel}, cfg.svc)
	if err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	attrs := []any{"http_addr", parts.HTTP.Addr}
	if parts.HTTP.OpsAddr != "" {
		attrs = append(attrs, "ops_addr", parts.HTTP.OpsAddr)
	}
	log.InfoContext(ctx, s.Name+" started", append(attrs, parts.LogAttrs...)...)
	err = parts.run(ctx, base, inf.Ready, b, tel)
	log.InfoContext(context.WithoutCancel(ctx), s.Name+" stopped", "error", err)
	if err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	return nil
}

// busInstrumentation names the consume loops' tracer and meter.
const busInstrumentation = "dataport.dev/shared/bus"

// errStopping is what /readyz reports once the shutdown has begun.
var errStopping = errors.New("shutting down")

// run serves and consumes until ctx ends or a part fails, then stops the
// HTTP server first and the consumers and loops after it.
func (p Parts) run(ctx context.Context, base Base, ready func(context.Context) error, b *budget, tel *telemetry.Telemetry) error {
	log := tel.Logger
	g, gctx := errgroup.WithContext(ctx)
	stopWatching := context.AfterFunc(gctx, func() {
		b.begin()
		log.InfoContext(context.WithoutCancel(ctx), "shutting down", "budget", b.total.String())
	})
	defer stopWatching()

	// The consumers and loops outlive ctx: they stop only once the HTTP
	// server is down.
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()

	mux := p.HTTP.Handler
	if mux == nil {
		mux = http.NewServeMux()
	}
	probe := func(ctx context.Context) error {
		if gctx.Err() != nil {
			return errStopping
		}
		if err := ready(ctx); err != nil {
			return err
		}
		if p.Ready != nil {
			return p.Ready(ctx)
		}
		return nil
	}
	HealthRoutes(mux, probe, log)
	if p.HTTP.OpsAddr == "" {
		// Metrics on the same server as the probes, so one port is
		// scraped and probed.
		mux.HandleFunc("/metrics", tel.MetricsHandler().ServeHTTP)
	} else {
		ops := http.NewServeMux()
		HealthRoutes(ops, probe, log)
		ops.HandleFunc("/metrics", tel.MetricsHandler().ServeHTTP)
		g.Go(func() error {
			defer stopWork()
			return Serve(gctx, p.HTTP.OpsAddr, ops, base.HTTP, b.total/2, log)
		})
	}
	if base.PprofAddr != "" {
		g.Go(func() error {
			defer stopWork()
			return Serve(gctx, base.PprofAddr, pprofMux(), base.HTTP, b.total/2, log)
		})
	}
	g.Go(func() error {
		defer stopWork()
		return Serve(gctx, p.HTTP.Addr, mux, base.HTTP, b.total/2, log)
	})
	for _, c := range p.Consumers {
		o := c.Options
		if o.Grace <= 0 {
			o.Grace = b.total / 2
		}
		if o.Logger == nil {
			o.Logger = log
		}
		if o.Tracer == nil {
			o.Tracer = tel.TracerProvider.Tracer(busInstrumentation)
		}
		if o.Propagator == nil {
			o.Propagator = tel.Propagator()
		}
		if o.Meter == nil {
			o.Meter = tel.MeterProvider.Meter(busInstrumentation)
		}
		g.Go(func() error { return consume(work, c.Consumer, c.Handler, o) })
	}
	for _, loop := range p.Loops {
		g.Go(func() error { return loop(work) })
	}
	return g.Wait()
}

func consume(ctx context.Context, c jetstream.Consumer, h bus.Handler, o bus.ConsumeOptions) error {
	name := c.CachedInfo().Name
	if err := bus.Consume(ctx, c, h, o); err != nil {
		return fmt.Errorf("consumer %s: %w", name, err)
	}
	if ctx.Err() == nil {
		// Consume returns early only when its consumer went away.
		return fmt.Errorf("consumer %s: stopped unexpectedly", name)
	}
	return nil
}

// budget is the time a shutdown has: DATAPORT_SHUTDOWN_TIMEOUT from the
// moment the service began to stop.
type budget struct {
	total time.Duration

	mu    sync.Mutex
	start time.Time
}

// begin starts the clock; later calls keep the first start.
func (b *budget) begin() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.start.IsZero() {
		b.start = time.Now()
	}
}

// flushReserve is the part of the budget kept for flushing telemetry.
func (b *budget) flushReserve() time.Duration { return b.total / 10 }

// drainBy is when the NATS drain must end, leaving the flush its reserve.
func (b *budget) drainBy() time.Time {
	b.begin() // a service that failed before serving stops now
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.start.Add(b.total - b.flushReserve())
}

// flushBy is when the telemetry flush must end: the end of the budget,
// but never less than the reserve from now, so an overrun of the earlier
// steps does not lose the shutdown's telemetry.
func (b *budget) flushBy() time.Time {
	b.begin()
	b.mu.Lock()
	defer b.mu.Unlock()
	return later(b.start.Add(b.total), time.Now().Add(b.flushReserve()))
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// LoadConfig reads a program's configuration through load from getenv.
// When every variable is valid it prints the effective configuration to
// stdout, secrets masked; otherwise it returns every error at once (those
// l collected and load's own), naming the variables, and prints nothing.
func LoadConfig[C any](getenv func(string) string, stdout io.Writer, name string, load func(l *config.Loader) (C, error)) (C, error) {
	l := config.New(getenv)
	c, err := load(l)
	if err := errors.Join(l.Err(), err); err != nil {
		var zero C
		return zero, fmt.Errorf("%s: invalid configuration:\n%w", name, err)
	}
	l.Print(stdout)
	return c, nil
}

// NewTelemetry sets up a program's logs, traces and metrics: JSON logs to
// out (nil: stderr) at logLevel, OTLP export when getenv has
// OTEL_EXPORTER_OTLP_ENDPOINT (the SDK reads the other OTEL_ variables),
// traces only when OTEL_METRICS_EXPORTER is "none"; without an endpoint
// or OTEL_TRACES_SAMPLER, spans carry ids and record nothing.
func NewTelemetry(ctx context.Context, getenv func(string) string, name, version, logLevel string, out io.Writer) (*telemetry.Telemetry, error) {
	return telemetry.Setup(ctx, telemetry.Options{
		Service:      name,
		Version:      version,
		LogLevel:     logLevel,
		Out:          out,
		OTLPEndpoint: getenv("OTEL_EXPORTER_OTLP_ENDPOINT"),
		// The standard variable's "none"; other values (otlp, the
		// default) change nothing.
		NoOTLPMetrics: getenv("OTEL_METRICS_EXPORTER") == "none",
		TracesSampler: getenv("OTEL_TRACES_SAMPLER"),
	})
}
