// Command record-exporter takes record tasks (Rebilly data-exports,
// myTracker raw exports) off the EXPORT_TASKS work queue, streams the
// matching records into files in MinIO and reports progress and finished
// parts as status events. Replicas share one durable consumer, which
// filters only record tasks (room tasks belong to room-exporter), so record
// exports scale on their own queue.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"dataport.dev/services/record-exporter/internal/recordexport"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/telemetry"
)

const service = "record-exporter"

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(context.Background(), os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	l := config.New(getenv)
	common := config.LoadCommon(l)
	topo := infra.LoadTopology(l, common)
	healthAddr := l.HostPort("DATAPORT_HEALTH_ADDR", "127.0.0.1:8084", "listen address of /healthz and /readyz")
	httpTimeouts := infra.LoadHTTPTimeouts(l)
	concurrency := l.Int("DATAPORT_EXPORTER_CONCURRENCY", 4, 1, 64, "export tasks one process runs at once (1..64)")
	signer := infra.LoadTaskSigner(l)
	if err := l.Err(); err != nil {
		return fmt.Errorf("%s: invalid configuration:\n%w", service, err)
	}
	l.Print(stdout)

	tel, err := telemetry.Setup(ctx, telemetry.Options{
		Service:      service,
		Version:      version,
		LogLevel:     common.LogLevel,
		Out:          stdout,
		OTLPEndpoint: getenv("OTEL_EXPORTER_OTLP_ENDPOINT"),
	})
	if err != nil {
		return fmt.Errorf("%s: %w", service, err)
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

	inf, err := infra.Connect(ctx, service, common, topo, log)
	if err != nil {
		return fmt.Errorf("%s: %w", service, err)
	}
	defer inf.Close()

	cons, err := bus.EnsureConsumer(ctx, inf.JS, topo, bus.ConsumerRecordExporter)
	if err != nil {
		return fmt.Errorf("%s: %w", service, err)
	}
	exp, err := recordexport.New(ctx, recordexport.Options{
		JS:             inf.JS,
		Store:          inf.Blob,
		Publisher:      bus.NewPublisher(inf.JS, tel.Propagator()),
		Bucket:         common.ExportBucket,
		Signer:         signer,
		MaxDeliver:     topo.TaskMaxDeliver,
		Logger:         log,
		TracerProvider: tel.TracerProvider,
	})
	if err != nil {
		return fmt.Errorf("%s: %w", service, err)
	}

	worker := infra.Worker{
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
			Tracer:       tel.TracerProvider.Tracer(service),
			Propagator:   tel.Propagator(),
		},
	}
	log.InfoContext(ctx, "record-exporter started", "concurrency", concurrency, "health_addr", healthAddr)
	err = worker.Run(ctx)
	log.InfoContext(ctx, "record-exporter stopped", "error", err)
	return err
}
