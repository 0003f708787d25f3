// Command archiver finalises export jobs: it records the parts exporters
// upload, verifies them when a job has all of its parts and publishes the
// job's deliverable files (ExportCompleted) or its failure (ExportFailed).
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"golang.org/x/sync/errgroup"

	"dataport.dev/services/archiver/internal/archive"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/telemetry"
)

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
	topology := infra.LoadTopology(l, common)
	healthAddr := l.HostPort("DATAPORT_HEALTH_ADDR", "127.0.0.1:8082", "listen address of /healthz and /readyz")
	if err := l.Err(); err != nil {
		return fmt.Errorf("archiver: invalid configuration:\n%w", err)
	}
	l.Print(stdout)

	version := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	tel, err := telemetry.Setup(ctx, telemetry.Options{
		Service:      "archiver",
		Version:      version,
		LogLevel:     common.LogLevel,
		Out:          stdout,
		OTLPEndpoint: getenv("OTEL_EXPORTER_OTLP_ENDPOINT"),
	})
	if err != nil {
		return fmt.Errorf("archiver: telemetry: %w", err)
	}
	// Deferred first, so it runs last: logs and spans of the shutdown
	// itself are flushed too.
	defer func() { _ = tel.Shutdown(context.WithoutCancel(ctx)) }()
	log := tel.Logger

	inf, err := infra.Connect(ctx, "archiver", common, topology, log)
	if err != nil {
		return fmt.Errorf("archiver: %w", err)
	}
	defer inf.Close()

	consumer, err := bus.EnsureConsumer(ctx, inf.JS, topology, bus.ConsumerArchiver)
	if err != nil {
		return fmt.Errorf("archiver: %w", err)
	}
	parts, err := inf.JS.KeyValue(ctx, bus.BucketParts)
	if err != nil {
		return fmt.Errorf("archiver: bucket %s: %w", bus.BucketParts, err)
	}
	events, err := inf.JS.Stream(ctx, bus.StreamExportEvents)
	if err != nil {
		return fmt.Errorf("archiver: stream %s: %w", bus.StreamExportEvents, err)
	}
	archiver, err := archive.New(archive.Config{
		Parts:     parts,
		Events:    events,
		Objects:   inf.Blob,
		Bucket:    common.ExportBucket,
		Publisher: bus.NewPublisher(inf.JS, tel.Propagator()),
		Logger:    log,
	})
	if err != nil {
		return fmt.Errorf("archiver: %w", err)
	}

	mux := http.NewServeMux()
	infra.HealthRoutes(mux, inf.Ready)

	// The consumer outlives the HTTP server: it is told to stop only once
	// the probes are down, so Kubernetes stops routing to us before we hand
	// back in-flight messages. Half the shutdown budget goes to each.
	consumeCtx, stopConsuming := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConsuming()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer stopConsuming()
		return infra.Serve(gctx, healthAddr, mux, common.ShutdownTimeout/2, log)
	})
	g.Go(func() error {
		return bus.Consume(consumeCtx, consumer, archiver.Handle, bus.ConsumeOptions{
			// Verifying streams whole objects; a few at once keeps one big
			// job from holding up every other.
			Concurrency: 4,
			Heartbeat:   topology.EventAckWait / 3,
			Grace:       common.ShutdownTimeout / 2,
			Logger:      log,
			Tracer:      tel.TracerProvider.Tracer("dataport.dev/services/archiver"),
			Propagator:  tel.Propagator(),
		})
	})
	log.InfoContext(ctx, "archiver started", "consumer", bus.ConsumerArchiver)
	if err := g.Wait(); err != nil {
		return fmt.Errorf("archiver: %w", err)
	}
	log.InfoContext(ctx, "archiver stopped")
	return nil
}
