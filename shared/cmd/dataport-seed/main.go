// Command dataport-seed fills NATS and MinIO with Dataport's deterministic
// demo data set (users, rooms, memberships, organizations, chat histories,
// assets and records), registers the record resources (the built-in ones
// and Rebilly's customers, subscriptions and invoices), gives its users credentials of this installation
// (kept in credentials.json across runs), and writes the demo credentials and expected counts to
// $DATAPORT_DEV_DIR. Running it again changes nothing.
package main

import (
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/demo"
	"dataport.dev/shared/infra"
)

const service = "dataport-seed"

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

	c, err := infra.LoadConfig(getenv, stdout, service, loadConfig)
	if err != nil {
		return err
	}
	// Logs go to stderr: stdout is for the summary.
	tel, err := infra.NewTelemetry(ctx, getenv, service, version, c.Common.LogLevel, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", service, err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tel.Shutdown(sctx)
	}()
	log := tel.Logger

	// infra.Connect retries until its context ends: the seeder may start
	// before NATS and MinIO, but must not wait for them forever.
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()

	inf, err := infra.Connect(ctx, service, c.Common, c.Topology, log)
	if err != nil {
		return fmt.Errorf("%s: %w", service, err)
	}
	defer inf.Close()

	d := demo.Generate()
	prev, err := demo.ReadCredentials(c.DevDir)
	if err != nil {
		return fmt.Errorf("%s: %w", service, err)
	}
	if err := d.UseSecrets(prev); err != nil {
		return fmt.Errorf("%s: %w", service, err)
	}
	if err := demo.Seed(ctx, inf.JS, inf.Blob, c.Common.AssetBucket, d, log); err != nil {
		return fmt.Errorf("%s: seed: %w", service, err)
	}
	if err := demo.WriteFiles(c.DevDir, d); err != nil {
		return fmt.Errorf("%s: %w", service, err)
	}
	return summary(stdout, c.DevDir, d)
}

// Config is the seeder's configuration. It is a one-shot command, not a
// service: no HTTP server, so none of the HTTP variables.
type Config struct {
	Common   config.Common
	Topology bus.Topology
	DevDir   string
	Timeout  time.Duration
}

func loadConfig(l *config.Loader) (Config, error) {
	common := config.LoadCommon(l)
	return Config{
		Common:   common,
		Topology: infra.LoadTopology(l, common),
		DevDir:   l.String("DATAPORT_DEV_DIR", ".dataport/dev", "directory for credentials.json and seed.json"),
		Timeout:  l.Duration("DATAPORT_SEED_TIMEOUT", 5*time.Minute, "give up when NATS or MinIO are not reachable and seeded within this time"),
	}, nil
}

// summary tells a developer what is now available and where to find the
// secrets.
func summary(w io.Writer, devDir string, d *demo.Dataset) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nseeded %s\n\nUSER\tUSER ID\tROLES\n", d)
	for _, u := range d.Users {
		fmt.Fprintf(tw, "%s\t%s\t%v\n", u.User.GetUsername(), u.User.GetId(), u.User.GetRoles())
	}
	counts := d.Counts()
	fmt.Fprintf(tw, "\nROOM\tROOM ID\tMESSAGES\n")
	for _, r := range d.Rooms {
		name := r.GetName()
		if name == "" {
			name = strings.Join(r.GetUsernames(), " + ") + " (direct)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\n", name, r.GetId(), counts.Rooms[r.GetId()].Messages)
	}
	fmt.Fprintf(tw, "\nRESOURCE\tRECORDS\n")
	for _, res := range slices.Sorted(maps.Keys(counts.Records)) {
		fmt.Fprintf(tw, "%s\t%d\n", res, counts.Records[res])
	}
	fmt.Fprintf(tw, "\ncredentials: %s\ncounts:      %s\n",
		filepath.Join(devDir, demo.CredentialsFile), filepath.Join(devDir, demo.SeedFile))
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write summary: %w", err)
	}
	return nil
}
