// Command notifier emails a job's owner when an export completed or
// failed, once per job, and reports each outcome as a NotificationSent
// event.
package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"dataport.dev/services/notifier/internal/notify"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/links"
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

	const defaultLinkSecret = "dev-only-link-secret-change-me"
	l := config.New(getenv)
	common := config.LoadCommon(l)
	topology := infra.LoadTopology(l, common)
	healthAddr := l.HostPort("DATAPORT_HEALTH_ADDR", "127.0.0.1:8083", "listen address of /healthz and /readyz")
	smtpCfg := notify.SMTPConfig{
		Host:     l.String("DATAPORT_SMTP_HOST", "127.0.0.1", "SMTP server host"),
		Port:     l.Int("DATAPORT_SMTP_PORT", 1025, 1, 65535, "SMTP server port"),
		Username: l.String("DATAPORT_SMTP_USERNAME", "", "SMTP AUTH user name; empty disables AUTH"),
		Password: l.Secret("DATAPORT_SMTP_PASSWORD", "", "SMTP AUTH password"),
		TLS:      l.Enum("DATAPORT_SMTP_TLS", notify.TLSNone, notify.TLSModes(), "SMTP transport security: none, starttls (required) or tls (implicit, usually port 465)"),
	}
	mailFrom := l.String("DATAPORT_MAIL_FROM", "Dataport <exports@dataport.local>", "sender of notification emails, RFC 5322 address")
	publicURL := l.URL("DATAPORT_PUBLIC_URL", "http://127.0.0.1:8080", "public base URL of the gateway, used in download links")
	linkSecret := l.Secret("DATAPORT_LINK_SECRET", defaultLinkSecret, "HMAC key of download links; must equal the gateway's")
	linkTTL := l.Duration("DATAPORT_LINK_TTL", 24*time.Hour, "how long emailed download links stay valid")
	if err := l.Err(); err != nil {
		return fmt.Errorf("notifier: invalid configuration:\n%w", err)
	}
	l.Print(stdout)
	from, err := mail.ParseAddress(mailFrom)
	if err != nil {
		return fmt.Errorf("notifier: invalid configuration:\nDATAPORT_MAIL_FROM=%q: %w", mailFrom, err)
	}
	mailer, err := notify.NewSMTPMailer(smtpCfg)
	if err != nil {
		return fmt.Errorf("notifier: invalid configuration:\n%w", err)
	}
	signer := links.New(publicURL, []byte(linkSecret), linkTTL, nil)

	version := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		version = bi.Main.Version
	}
	tel, err := telemetry.Setup(ctx, telemetry.Options{
		Service:      "notifier",
		Version:      version,
		LogLevel:     common.LogLevel,
		Out:          stdout,
		OTLPEndpoint: getenv("OTEL_EXPORTER_OTLP_ENDPOINT"),
	})
	if err != nil {
		return fmt.Errorf("notifier: telemetry: %w", err)
	}
	// Deferred first, so it runs last: logs and spans of the shutdown
	// itself are flushed too.
	defer func() { _ = tel.Shutdown(context.WithoutCancel(ctx)) }()
	log := tel.Logger
	if linkSecret == defaultLinkSecret {
		log.WarnContext(ctx, "DATAPORT_LINK_SECRET is the development default; anyone can forge download links")
	}

	inf, err := infra.Connect(ctx, "notifier", common, topology, log)
	if err != nil {
		return fmt.Errorf("notifier: %w", err)
	}
	defer inf.Close()

	consumer, err := bus.EnsureConsumer(ctx, inf.JS, topology, bus.ConsumerNotifier)
	if err != nil {
		return fmt.Errorf("notifier: %w", err)
	}
	users, err := inf.JS.KeyValue(ctx, bus.BucketUsers)
	if err != nil {
		return fmt.Errorf("notifier: bucket %s: %w", bus.BucketUsers, err)
	}
	sent, err := inf.JS.KeyValue(ctx, bus.BucketNotifications)
	if err != nil {
		return fmt.Errorf("notifier: bucket %s: %w", bus.BucketNotifications, err)
	}
	notifier, err := notify.New(notify.Config{
		Users:     users,
		Sent:      sent,
		Mailer:    mailer,
		Links:     signer,
		LinkTTL:   linkTTL,
		From:      *from,
		Publisher: bus.NewPublisher(inf.JS, tel.Propagator()),
		Topology:  topology,
		Logger:    log,
	})
	if err != nil {
		return fmt.Errorf("notifier: %w", err)
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
		return bus.Consume(consumeCtx, consumer, notifier.Handle, bus.ConsumeOptions{
			// A few sends at once: each waits mostly on the mail server.
			Concurrency: 4,
			Heartbeat:   topology.EventAckWait / 3,
			Grace:       common.ShutdownTimeout / 2,
			Logger:      log,
			Tracer:      tel.TracerProvider.Tracer("dataport.dev/services/notifier"),
			Propagator:  tel.Propagator(),
		})
	})
	log.InfoContext(ctx, "notifier started", "consumer", bus.ConsumerNotifier, "smtp_host", smtpCfg.Host, "smtp_port", smtpCfg.Port)
	if err := g.Wait(); err != nil {
		return fmt.Errorf("notifier: %w", err)
	}
	log.InfoContext(ctx, "notifier stopped")
	return nil
}
