// Package infra is the life every Dataport service shares: Run loads a
// service's configuration, sets up telemetry, connects to NATS and MinIO
// (declaring the topology), builds the service, serves its HTTP server and
// health probes and runs its consumers and loops until SIGTERM, then shuts
// them down in order. Its pieces (LoadConfig, NewTelemetry, Connect, Serve)
// serve the one-shot seeder too.
package infra

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
)

// LoadTopology reads the bus settings that differ between environments.
func LoadTopology(l *config.Loader, c config.Common) bus.Topology {
	t := bus.DefaultTopology()
	t.Replicas = c.StreamReplicas
	t.TaskAckWait = l.Duration("DATAPORT_TASK_ACK_WAIT", t.TaskAckWait, "How long an exporter may hold a task without a heartbeat before it is redelivered.")
	t.TaskMaxDeliver = l.Int("DATAPORT_TASK_MAX_DELIVER", t.TaskMaxDeliver, 1, 100, "How many times a task is tried before its job fails.")
	t.EventAckWait = l.Duration("DATAPORT_EVENT_ACK_WAIT", t.EventAckWait, "Ack wait of status-event consumers.")
	t.EventMaxDeliver = l.Int("DATAPORT_EVENT_MAX_DELIVER", t.EventMaxDeliver, 1, 1000, "How many times a status event is tried by a consumer.")
	t.EventsMaxAge = l.Duration("DATAPORT_EVENTS_MAX_AGE", t.EventsMaxAge, "How long status events are kept in the EXPORT_EVENTS stream.")
	return t
}

// Infra holds a service's connections.
type Infra struct {
	NC       *nats.Conn
	JS       jetstream.JetStream
	Blob     *blob.Store
	Topology bus.Topology
	Common   config.Common
}

// Connect opens NATS and MinIO, declares every stream and bucket and makes
// sure both object buckets exist. It retries until ctx ends, so services
// may start before their dependencies.
func Connect(ctx context.Context, name string, c config.Common, t bus.Topology, log *slog.Logger) (*Infra, error) {
	var nc *nats.Conn
	err := retry(ctx, log, "connect to NATS", func() error {
		var err error
		nc, err = nats.Connect(c.NATSURL,
			nats.Name(name),
			nats.MaxReconnects(-1),
			nats.ReconnectWait(500*time.Millisecond),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
				if err != nil {
					log.Warn("NATS disconnected", "error", err)
				}
			}),
			nats.ReconnectHandler(func(*nats.Conn) { log.Info("NATS reconnected") }),
		)
		return err
	})
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	if err := retry(ctx, log, "declare streams", func() error { return bus.EnsureTopology(ctx, js, t) }); err != nil {
		nc.Close()
		return nil, err
	}
	store, err := blob.New(blob.Config{Endpoint: c.S3Endpoint, AccessKey: c.S3AccessKey, SecretKey: c.S3SecretKey, Region: c.S3Region, UseTLS: c.S3UseTLS})
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("object store: %w", err)
	}
	err = retry(ctx, log, "ensure buckets", func() error {
		if err := store.EnsureBucket(ctx, c.ExportBucket); err != nil {
			return err
		}
		return store.EnsureBucket(ctx, c.AssetBucket)
	})
	if err != nil {
		nc.Close()
		return nil, err
	}
	return &Infra{NC: nc, JS: js, Blob: store, Topology: t, Common: c}, nil
}

func retry(ctx context.Context, log *slog.Logger, what string, f func() error) error {
	delay := 200 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		log.WarnContext(ctx, what+" failed; retrying", "error", err, "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", what, errors.Join(err, ctx.Err()))
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// Ready reports whether NATS is connected, the topology exists and MinIO
// answers.
func (i *Infra) Ready(ctx context.Context) error {
	if !i.NC.IsConnected() {
		return errors.New("nats: not connected")
	}
	if err := bus.CheckTopology(ctx, i.JS, i.Topology); err != nil {
		return err
	}
	if err := i.Blob.Ping(ctx); err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	return nil
}

// Close drains the NATS connection so pending publishes and acks go out,
// waiting as long as the drain takes (nats.go bounds it with its own
// DrainTimeout).
func (i *Infra) Close() {
	_ = i.Drain(context.Background())
}

// Drain drains the NATS connection so pending publishes and acks go out,
// and waits until it is closed. When ctx ends first, the connection is
// closed at once and ctx's error returned: the shutdown budget is spent.
func (i *Infra) Drain(ctx context.Context) error {
	if err := i.NC.Drain(); err != nil {
		i.NC.Close()
		return nil // already closed or closing
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !i.NC.IsClosed() {
		select {
		case <-ctx.Done():
			i.NC.Close()
			return fmt.Errorf("drain NATS: %w", ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// HealthRoutes registers /healthz (the process is alive) and /readyz (ready
// runs within two seconds) on mux. The probes are unauthenticated and may be
// reachable by more than the kubelet, so /readyz answers only
// {"status":"ready"} with 200 or {"status":"not ready"} with 503; why it is
// not ready (which may name hosts, buckets or streams) goes to log.
func HealthRoutes(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}, ready func(context.Context) error, log *slog.Logger) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			log.WarnContext(ctx, "not ready", "error", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// HTTPLimits bound what one client may hold of a server: how long a
// connection (timeouts, so slow or idle clients cannot pin goroutines and
// file descriptors) and how many connections all clients together may
// hold open (MaxConns, so memory stays bounded when they open them faster
// than the server answers). A zero field takes its default.
type HTTPLimits struct {
	// ReadHeader is the time to read a request's headers
	// (DATAPORT_HTTP_READ_HEADER_TIMEOUT, default 10s).
	ReadHeader time.Duration
	// Read is the time to read a whole request, headers and body
	// (DATAPORT_HTTP_READ_TIMEOUT, default 30s).
	Read time.Duration
	// Write is the time from the end of the request headers to the end of
	// the response (DATAPORT_HTTP_WRITE_TIMEOUT, default 60s). A handler
	// that streams for longer (a download) extends its own deadline per
	// write with http.ResponseController.
	Write time.Duration
	// Idle is how long a keep-alive connection may wait for its next
	// request (DATAPORT_HTTP_IDLE_TIMEOUT, default 120s).
	Idle time.Duration
	// MaxConns is the most connections the server holds open at once
	// (DATAPORT_HTTP_MAX_CONNS, default DefaultMaxConns), event streams
	// and idle keep-alives included. At the limit the connection idle the
	// longest is closed to make room; when none is idle the new one is
	// answered 503 with Retry-After: 1 and closed (see connLimit).
	MaxConns int
}

// Defaults of HTTPLimits.
const (
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
)

// LoadHTTPLimits reads the limits every service's HTTP listener uses.
func LoadHTTPLimits(l *config.Loader) HTTPLimits {
	return HTTPLimits{
		ReadHeader: l.Duration("DATAPORT_HTTP_READ_HEADER_TIMEOUT", DefaultReadHeaderTimeout, "time a client has to send a request's headers"),
		Read:       l.Duration("DATAPORT_HTTP_READ_TIMEOUT", DefaultReadTimeout, "time a client has to send a whole request, headers and body"),
		Write:      l.Duration("DATAPORT_HTTP_WRITE_TIMEOUT", DefaultWriteTimeout, "time to write a response; downloads get it afresh for every write"),
		Idle:       l.Duration("DATAPORT_HTTP_IDLE_TIMEOUT", DefaultIdleTimeout, "how long an idle keep-alive connection stays open"),
		MaxConns: l.Int("DATAPORT_HTTP_MAX_CONNS", DefaultMaxConns, 1, 1<<20,
			"connections one listener holds open at once; at the limit the longest idle one is closed, else a new one gets 503 with Retry-After"),
	}
}

// withDefaults fills zero fields.
func (t HTTPLimits) withDefaults() HTTPLimits {
	set := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	set(&t.ReadHeader, DefaultReadHeaderTimeout)
	set(&t.Read, DefaultReadTimeout)
	set(&t.Write, DefaultWriteTimeout)
	set(&t.Idle, DefaultIdleTimeout)
	if t.MaxConns <= 0 {
		t.MaxConns = DefaultMaxConns
	}
	return t
}

// Serve runs an HTTP server on addr with the limits t until ctx ends,
// then shuts it down, letting open requests finish within shutdown. The
// listener is opened before Serve returns control to the server loop, so a
// port clash is reported at once.
func Serve(ctx context.Context, addr string, h http.Handler, t HTTPLimits, shutdown time.Duration, log *slog.Logger) error {
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	t = t.withDefaults()
	ln := newConnLimit(tcp, t.MaxConns, log)
	srv := &http.Server{
		ConnState:         ln.connState,
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		WriteTimeout:      t.Write,
		IdleTimeout:       t.Idle,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Event streams end when the shutdown begins instead of holding it
	// to its deadline.
	DrainOnShutdown(srv)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.InfoContext(ctx, "listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdown)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown %s: %w", addr, err)
	}
	return nil
}
