// Command gateway is Dataport's HTTP front door: it authenticates callers,
// validates export requests, writes jobs and publishes their tasks, keeps
// the job projection up to date from status events and serves job status
// and signed downloads.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/httpapi"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/links"
	"dataport.dev/shared/telemetry"
)

const (
	serviceName       = "gateway"
	defaultHTTPAddr   = "127.0.0.1:8080"
	defaultLinkSecret = "dev-only-link-secret-change-me"
	defaultLinkTTL    = 24 * time.Hour
	// projectionConcurrency is how many status events one replica applies
	// at once; revision checks keep concurrent applies to one job correct.
	projectionConcurrency = 4
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
	topo := infra.LoadTopology(l, common)
	httpAddr := l.HostPort("DATAPORT_HTTP_ADDR", defaultHTTPAddr, "HTTP listen address (API and health probes)")
	publicURL := l.URL("DATAPORT_PUBLIC_URL", "http://"+httpAddr, "base URL of the gateway as users reach it; download links start with it")
	linkSecret := l.Secret("DATAPORT_LINK_SECRET", defaultLinkSecret, "HMAC key of signed download links")
	linkTTL := l.Duration("DATAPORT_LINK_TTL", defaultLinkTTL, "how long signed download links stay valid")
	if err := l.Err(); err != nil {
		return fmt.Errorf("gateway: bad configuration:\n%w", err)
	}
	l.Print(stdout)

	tel, err := telemetry.Setup(ctx, telemetry.Options{
		Service:      serviceName,
		LogLevel:     common.LogLevel,
		Out:          stdout,
		OTLPEndpoint: getenv("OTEL_EXPORTER_OTLP_ENDPOINT"),
	})
	if err != nil {
		return fmt.Errorf("gateway: telemetry: %w", err)
	}
	defer func() { _ = tel.Shutdown(context.WithoutCancel(ctx)) }()
	log := tel.Logger
	if linkSecret == defaultLinkSecret {
		log.WarnContext(ctx, "DATAPORT_LINK_SECRET is not set: download links are signed with a well-known development key; set it in any shared deployment")
	}

	inf, err := infra.Connect(ctx, serviceName, common, topo, log)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer inf.Close()

	jobs, err := jobstore.Open(ctx, inf.JS)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	authz, err := auth.Open(ctx, inf.JS)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	consumer, err := bus.EnsureConsumer(ctx, inf.JS, topo, bus.ConsumerGatewayProjection)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}

	pub := bus.NewPublisher(inf.JS, tel.Propagator())
	router := httpapi.New(httpapi.Config{
		Jobs:           jobs,
		Auth:           authz,
		Publisher:      pub,
		Submitter:      submit.New(jobs, pub, nil),
		Blob:           inf.Blob,
		ExportBucket:   common.ExportBucket,
		Links:          links.New(publicURL, []byte(linkSecret), linkTTL, nil),
		Logger:         log,
		TracerProvider: tel.TracerProvider,
		Propagator:     tel.Propagator(),
	})
	infra.HealthRoutes(router, inf.Ready)

	// HTTP stops first; the projection keeps applying events until the
	// server is down, then drains.
	g, gctx := errgroup.WithContext(ctx)
	consumeCtx, stopConsuming := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConsuming()
	g.Go(func() error {
		defer stopConsuming()
		return infra.Serve(gctx, httpAddr, router, common.ShutdownTimeout, log)
	})
	g.Go(func() error {
		err := bus.Consume(consumeCtx, consumer, jobs.Projection(log), bus.ConsumeOptions{
			Concurrency: projectionConcurrency,
			Logger:      log,
			Tracer:      tel.TracerProvider.Tracer("dataport.dev/services/gateway/projection"),
			Propagator:  tel.Propagator(),
		})
		if err == nil && consumeCtx.Err() == nil {
			err = errors.New("projection consumer stopped unexpectedly")
		}
		if err != nil {
			return fmt.Errorf("projection: %w", err)
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	log.InfoContext(context.WithoutCancel(ctx), "stopped")
	return nil
}
