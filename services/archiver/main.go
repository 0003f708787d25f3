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
	"time"

	"dataport.dev/services/archiver/internal/archive"
	"dataport.dev/services/archiver/internal/retention"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/jobview"
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
	return infra.Run(ctx, getenv, stdout, infra.Service[Config]{
		Name: "archiver", Version: version, Load: loadConfig, Build: build,
	})
}

// Config is the archiver's own configuration; infra.Run loads the shared
// variables besides it.
type Config struct {
	HealthAddr string
	Retention  time.Duration
	SweepEvery time.Duration
	StaleAge   time.Duration
}

func loadConfig(l *config.Loader) (Config, error) {
	return Config{
		HealthAddr: l.HostPort("DATAPORT_HEALTH_ADDR", "127.0.0.1:8082", "listen address of /healthz and /readyz"),
		Retention:  l.Duration("DATAPORT_RETENTION", 168*time.Hour, "how long a job's files are kept after it ended; the gateway uses the same value for expires_at"),
		SweepEvery: l.Duration("DATAPORT_SWEEP_INTERVAL", 10*time.Minute, "time between retention sweeps"),
		StaleAge:   l.Duration("DATAPORT_STALE_UPLOAD_AGE", 24*time.Hour, "age after which an unfinished multipart upload under jobs/ is aborted"),
	}, nil
}

// build is the archiver's composition root: the archiver on its consumer
// and the retention sweeper as a loop.
func build(ctx context.Context, d infra.Deps, c Config) (infra.Parts, error) {
	inf, tel, common, log := d.Infra, d.Telemetry, d.Base.Common, d.Telemetry.Logger
	consumer, err := bus.EnsureConsumer(ctx, inf.JS, d.Base.Topology, bus.ConsumerArchiver)
	if err != nil {
		return infra.Parts{}, err
	}
	events, err := inf.JS.Stream(ctx, bus.StreamExportEvents)
	if err != nil {
		return infra.Parts{}, fmt.Errorf("stream %s: %w", bus.StreamExportEvents, err)
	}
	jobs, err := jobview.Open(ctx, inf.JS, log)
	if err != nil {
		return infra.Parts{}, err
	}
	publisher := bus.NewPublisher(inf.JS, tel.Propagator())
	archiver, err := archive.New(archive.Config{
		Events:    events,
		Jobs:      jobs,
		Objects:   inf.Blob,
		Bucket:    common.ExportBucket,
		Publisher: publisher,
		Logger:    log,
	})
	if err != nil {
		return infra.Parts{}, err
	}
	sweeper, err := retention.New(retention.Config{
		Jobs:           jobs,
		Events:         events,
		Objects:        inf.Blob,
		Bucket:         common.ExportBucket,
		Publisher:      publisher,
		Retention:      c.Retention,
		StaleUploadAge: c.StaleAge,
		Interval:       c.SweepEvery,
		Logger:         log,
		TracerProvider: tel.TracerProvider,
	})
	if err != nil {
		return infra.Parts{}, fmt.Errorf("invalid configuration:\n%w", err)
	}

	return infra.Parts{
		HTTP: infra.HTTP{Addr: c.HealthAddr},
		Consumers: []infra.Consumer{{Consumer: consumer, Handler: archiver.Handle, Options: bus.ConsumeOptions{
			// Verifying streams whole objects; a few at once keeps one big
			// job from holding up every other.
			Concurrency: 4,
			// A big zip takes longer than the events' ack wait; an event
			// pulled ahead of a free slot would be delivered again.
			FetchWhenFree: true,
			Heartbeat:     d.Base.Topology.EventAckWait / 3,
			Tracer:        tel.TracerProvider.Tracer("dataport.dev/services/archiver"),
			Propagator:    tel.Propagator(),
		}}},
		Loops:    []func(context.Context) error{sweeper.Run},
		LogAttrs: []any{"consumer", bus.ConsumerArchiver},
	}, nil
}
