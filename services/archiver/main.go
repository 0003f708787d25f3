// Command archiver finalises export jobs: it records the parts exporters
// upload, verifies and packages them when a job has all of its parts and
// publishes the job's deliverable files (ExportCompleted) or its failure
// (ExportFailed). Its retention sweeper deletes expired files and stale
// multipart uploads.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"dataport.dev/services/archiver/internal/archive"
	"dataport.dev/services/archiver/internal/retention"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/jobview"
	"dataport.dev/shared/telemetry"
)

// version is set by the build (-ldflags "-X main.version=..."; the
// Makefile and the Dockerfiles pass `git describe`).
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
	topology := infra.LoadTopology(l, common)
	healthAddr := l.HostPort("DATAPORT_HEALTH_ADDR", "127.0.0.1:8082", "listen address of /healthz and /readyz")
	httpTimeouts := infra.LoadHTTPTimeouts(l)
	retain := l.Duration("DATAPORT_RETENTION", 168*time.Hour, "how long a job's files are kept after it ended; the gateway uses the same value for expires_at")
	sweepEvery := l.Duration("DATAPORT_SWEEP_INTERVAL", 10*time.Minute, "time between retention sweeps")
	staleAge := l.Duration("DATAPORT_STALE_UPLOAD_AGE", 24*time.Hour, "age after which an unfinished multipart upload under jobs/ is aborted")
	if err := l.Err(); err != nil {
		return fmt.Errorf("archiver: invalid configuration:\n%w", err)
	}
	l.Print(stdout)

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
	events, err := inf.JS.Stream(ctx, bus.StreamExportEvents)
	if err != nil {
		return fmt.Errorf("archiver: stream %s: %w", bus.StreamExportEvents, err)
	}
	jobs, err := inf.JS.KeyValue(ctx, bus.BucketJobs)
	if err != nil {
		return fmt.Errorf("archiver: bucket %s: %w", bus.BucketJobs, err)
	}
	publisher := bus.NewPublisher(inf.JS, tel.Propagator())
	archiver, err := archive.New(archive.Config{
		Events:    events,
		Jobs:      jobview.New(jobs, log),
		Objects:   inf.Blob,
		Bucket:    common.ExportBucket,
		Publisher: publisher,
		Logger:    log,
	})
	if err != nil {
		return fmt.Errorf("archiver: %w", err)
	}
	sweeper, err := retention.New(retention.Config{
		Jobs:           jobs,
		Events:         events,
		Objects:        inf.Blob,
		Bucket:         common.ExportBucket,
		Publisher:      publisher,
		Retention:      retain,
		StaleUploadAge: staleAge,
		Interval:       sweepEvery,
		Logger:         log,
	})
	if err != nil {
		return fmt.Errorf("archiver: invalid configuration:\n%w", err)
	}

	worker := infra.Worker{
		HealthAddr:      healthAddr,
		HTTP:            httpTimeouts,
		Ready:           inf.Ready,
		Consumer:        consumer,
		Handler:         archiver.Handle,
		ShutdownTimeout: common.ShutdownTimeout,
		Logger:          log,
		Consume: bus.ConsumeOptions{
			// Verifying streams whole objects; a few at once keeps one big
			// job from holding up every other.
			Concurrency: 4,
			Heartbeat:   topology.EventAckWait / 3,
			Tracer:      tel.TracerProvider.Tracer("dataport.dev/services/archiver"),
			Propagator:  tel.Propagator(),
		},
		Also: []func(context.Context) error{sweeper.Run},
	}
	log.InfoContext(ctx, "archiver started", "consumer", bus.ConsumerArchiver)
	if err := worker.Run(ctx); err != nil {
		return fmt.Errorf("archiver: %w", err)
	}
	log.InfoContext(ctx, "archiver stopped")
	return nil
}
