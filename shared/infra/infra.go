// Package infra is the start-up and shutdown scaffolding every Dataport
// service shares: connecting to NATS and MinIO, declaring the topology,
// answering health probes and serving HTTP until the context ends.
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

// Close drains the NATS connection so pending publishes and acks go out.
func (i *Infra) Close() {
	if err := i.NC.Drain(); err != nil {
		i.NC.Close()
	}
	for i.NC.IsDraining() {
		time.Sleep(10 * time.Millisecond)
	}
}

// HealthRoutes registers /healthz (the process is alive) and /readyz (ready
// runs within two seconds) on mux.
func HealthRoutes(mux interface {
	HandleFunc(string, func(http.ResponseWriter, *http.Request))
}, ready func(context.Context) error) {
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "error": err.Error()})
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

// Serve runs an HTTP server on addr until ctx ends, then shuts it down,
// letting open requests finish within timeout. The listener is opened
// before Serve returns control to the server loop, so a port clash is
// reported at once.
func Serve(ctx context.Context, addr string, h http.Handler, timeout time.Duration, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.InfoContext(ctx, "listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown %s: %w", addr, err)
	}
	return nil
}
