package infra

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/telemetry"
)

// TaskExporter is what an exporter service does with its tasks: Handle is
// the consume loop's handler, Terminated its hook for a task that will
// never be delivered again.
type TaskExporter interface {
	Handle(ctx context.Context, msg jetstream.Msg) error
	Terminated(ctx context.Context, msg jetstream.Msg, cause error)
}

// ExporterDeps are what an exporter is built from.
type ExporterDeps struct {
	Infra     *Infra
	Telemetry *telemetry.Telemetry
	// Signer verifies the gateway's signature on every task.
	Signer   *bus.TaskSigner
	Topology bus.Topology
	Common   config.Common
}

// Exporter describes one exporter service.
type Exporter struct {
	// Name is the service name (logs, traces, NATS connection name).
	Name, Version string
	// HealthAddr is the default of DATAPORT_HEALTH_ADDR.
	HealthAddr string
	// Consumer is the durable consumer the service takes its tasks from
	// (bus.ConsumerRoomExporter, bus.ConsumerRecordExporter).
	Consumer string
	// New builds the exporter once everything it needs is connected.
	New func(ctx context.Context, d ExporterDeps) (TaskExporter, error)
}

// RunExporter is the whole life of an exporter process, the same for every
// kind of export: configuration from getenv (printed to stdout, masked),
// telemetry, NATS and MinIO, the durable consumer, the exporter, and the
// Worker that serves the probes and consumes until SIGINT or SIGTERM.
func RunExporter(ctx context.Context, getenv func(string) string, stdout io.Writer, e Exporter) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	l := config.New(getenv)
	common := config.LoadCommon(l)
	topo := LoadTopology(l, common)
	healthAddr := l.HostPort("DATAPORT_HEALTH_ADDR", e.HealthAddr, "listen address of /healthz and /readyz")
	httpTimeouts := LoadHTTPTimeouts(l)
	concurrency := l.Int("DATAPORT_EXPORTER_CONCURRENCY", 4, 1, 64, "export tasks one process runs at once (1..64)")
	signer := LoadTaskSigner(l)
	if err := l.Err(); err != nil {
		return fmt.Errorf("%s: invalid configuration:\n%w", e.Name, err)
	}
	l.Print(stdout)

	tel, err := telemetry.Setup(ctx, telemetry.Options{
		Service:      e.Name,
		Version:      e.Version,
		LogLevel:     common.LogLevel,
		Out:          stdout,
		OTLPEndpoint: getenv("OTEL_EXPORTER_OTLP_ENDPOINT"),
	})
	if err != nil {
		return fmt.Errorf("%s: %w", e.Name, err)
	}
	log := tel.Logger
	// Deferred first, so it runs last: spans of the shutdown itself are
	// flushed too.
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tel.Shutdown(sctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}()

	inf, err := Connect(ctx, e.Name, common, topo, log)
	if err != nil {
		return fmt.Errorf("%s: %w", e.Name, err)
	}
	defer inf.Close()

	cons, err := bus.EnsureConsumer(ctx, inf.JS, topo, e.Consumer)
	if err != nil {
		return fmt.Errorf("%s: %w", e.Name, err)
	}
	exp, err := e.New(ctx, ExporterDeps{Infra: inf, Telemetry: tel, Signer: signer, Topology: topo, Common: common})
	if err != nil {
		return fmt.Errorf("%s: %w", e.Name, err)
	}

	worker := Worker{
		HealthAddr:      healthAddr,
		HTTP:            httpTimeouts,
		Ready:           inf.Ready,
		Consumer:        cons,
		Handler:         exp.Handle,
		ShutdownTimeout: common.ShutdownTimeout,
		Logger:          log,
		Consume: bus.ConsumeOptions{
			Concurrency: concurrency,
			// In-progress acks well inside AckWait/2, as JetStream advises.
			Heartbeat: topo.TaskAckWait / 3,
			// Leave part of the budget for draining NATS and telemetry.
			Grace:        common.ShutdownTimeout * 2 / 3,
			OnTerminated: exp.Terminated,
			Tracer:       tel.TracerProvider.Tracer(e.Name),
			Propagator:   tel.Propagator(),
		},
	}
	log.InfoContext(ctx, e.Name+" started", "concurrency", concurrency, "health_addr", healthAddr)
	err = worker.Run(ctx)
	log.InfoContext(ctx, e.Name+" stopped", "error", err)
	return err
}
