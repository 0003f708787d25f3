// Command room-exporter takes room tasks (room files, user-data parts, room
// mail) off the EXPORT_TASKS work queue, streams the rooms' histories into
// files in MinIO and reports progress and finished parts as status events.
// Replicas share one durable consumer, which filters only the room kinds of
// task (record tasks belong to record-exporter), so adding instances adds
// throughput.
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"dataport.dev/services/room-exporter/internal/roomexport"
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
		Name: "room-exporter", Version: version, HealthAddr: "127.0.0.1:8081", Consumer: bus.ConsumerRoomExporter,
		Runner: taskrun.Options{Name: "roomexport", NotAllowed: roomexport.ReasonNotAllowed},
		Register: func(ctx context.Context, d infra.ExporterDeps, r *taskrun.Runner) error {
			rooms, err := roomexport.New(ctx, roomexport.Options{
				JS:            d.Infra.JS,
				Store:         d.Infra.Blob,
				Bucket:        d.Common.ExportBucket,
				AssetBucket:   d.Common.AssetBucket,
				Logger:        d.Telemetry.Logger,
				MeterProvider: d.Telemetry.MeterProvider,
				// A split room export's last range queues the render
				// stage, signed as the gateway signs tasks.
				Publisher: bus.NewPublisher(d.Infra.JS, d.Telemetry.Propagator()),
				Signer:    d.Signer,
			})
			if err != nil {
				return err
			}
			rooms.Register(r)
			return nil
		},
	})
}
