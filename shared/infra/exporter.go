package infra

import (
	"context"
	"io"
	"time"

	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/taskrun"
	"dataport.dev/shared/telemetry"
)

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
	// Runner holds what is particular to the service's task runner (its
	// telemetry name, rejection reason, progress spacing); RunExporter
	// fills in the connections, the signer and the telemetry.
	Runner taskrun.Options
	// Register builds the service's export kinds once everything they
	// need is connected and registers them with the runner.
	Register func(ctx context.Context, d ExporterDeps, r *taskrun.Runner) error
}

// RunExporter is the whole life of an exporter process, the same for every
// kind of export: Run with the exporter's configuration (its health
// address, DATAPORT_EXPORTER_CONCURRENCY, DATAPORT_DEPENDENCY_WAIT, the
// task keys), its durable
// consumer, and the task runner with the kinds e.Register adds to it.
func RunExporter(ctx context.Context, getenv func(string) string, stdout io.Writer, e Exporter) error {
	type exporterConfig struct {
		HealthAddr     string
		Concurrency    int
		DependencyWait time.Duration
		Signer         *bus.TaskSigner
	}
	return Run(ctx, getenv, stdout, Service[exporterConfig]{
		Name:    e.Name,
		Version: e.Version,
		Load: func(l *config.Loader) (exporterConfig, error) {
			return exporterConfig{
				HealthAddr:  l.HostPort("DATAPORT_HEALTH_ADDR", e.HealthAddr, "listen address of /healthz and /readyz"),
				Concurrency: l.Int("DATAPORT_EXPORTER_CONCURRENCY", 4, 1, 64, "export tasks one process runs at once (1..64)"),
				DependencyWait: l.Duration("DATAPORT_DEPENDENCY_WAIT", taskrun.DefaultDependencyWait,
					"how long a task waits out a MinIO or NATS outage before its job fails"),
				Signer: LoadTaskSigner(l),
			}, nil
		},
		Build: func(ctx context.Context, d Deps, c exporterConfig) (Parts, error) {
			topo, tel := d.Base.Topology, d.Telemetry
			cons, err := bus.EnsureConsumer(ctx, d.Infra.JS, topo, e.Consumer)
			if err != nil {
				return Parts{}, err
			}
			opts := e.Runner
			opts.JS, opts.Store, opts.Bucket = d.Infra.JS, d.Infra.Blob, d.Base.Common.ExportBucket
			opts.Publisher = bus.NewPublisher(d.Infra.JS, tel.Propagator())
			opts.Signer, opts.MaxDeliver, opts.DependencyWait = c.Signer, topo.TaskMaxDeliver, c.DependencyWait
			opts.Logger, opts.TracerProvider, opts.MeterProvider = tel.Logger, tel.TracerProvider, tel.MeterProvider
			exp, err := taskrun.New(ctx, opts)
			if err != nil {
				return Parts{}, err
			}
			if err := e.Register(ctx, ExporterDeps{Infra: d.Infra, Telemetry: tel, Signer: c.Signer, Topology: topo, Common: d.Base.Common}, exp); err != nil {
				return Parts{}, err
			}
			return Parts{
				HTTP: HTTP{Addr: c.HealthAddr},
				Consumers: []Consumer{{Consumer: cons, Handler: exp.Handle, Options: bus.ConsumeOptions{
					Concurrency: c.Concurrency,
					// A task runs for minutes; one pulled ahead of a free
					// slot would outlive its ack wait and run twice.
					FetchWhenFree: true,
					// In-progress acks well inside AckWait/2, as JetStream advises.
					Heartbeat: topo.TaskAckWait / 3,
					// The probe server stops at once; leave the rest of
					// the budget for draining NATS and telemetry.
					Grace:        d.Base.Common.ShutdownTimeout * 2 / 3,
					OnTerminated: exp.Terminated,
					Tracer:       tel.TracerProvider.Tracer(e.Name),
					Propagator:   tel.Propagator(),
				}}},
				LogAttrs: []any{"concurrency", c.Concurrency},
			}, nil
		},
	})
}
