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

	"dataport.dev/services/record-exporter/internal/recordexport"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/taskrun"
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
	return infra.RunExporter(ctx, getenv, stdout, infra.Exporter{
		Name: "record-exporter", Version: version, HealthAddr: "127.0.0.1:8084", Consumer: bus.ConsumerRecordExporter,
		Runner: taskrun.Options{Name: "recordexport", NotAllowed: recordexport.ReasonNotAllowed, ProgressRecords: recordexport.DefaultProgressRecords},
		Register: func(ctx context.Context, d infra.ExporterDeps, r *taskrun.Runner) error {
			records, err := recordexport.New(ctx, recordexport.Options{
				JS:     d.Infra.JS,
				Store:  d.Infra.Blob,
				Bucket: d.Common.ExportBucket,
				Logger: d.Telemetry.Logger,
			})
			if err != nil {
				return err
			}
			records.Register(r)
			return nil
		},
	})
}
