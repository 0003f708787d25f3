// Command notifier tells people that an export ended: it emails the job's
// owner and extra addresses, mails room-mail jobs to their recipients and
// posts signed webhook events, once per job and channel, and reports each
// outcome as a NotificationSent event.
package main

import (
	"context"
	"fmt"
	"io"
	"net/mail"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"dataport.dev/services/notifier/internal/notify"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/jobview"
	"dataport.dev/shared/links"
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

	const defaultLinkSecret = "dev-only-link-secret-change-me"
	const defaultWebhookSecret = "dev-only-webhook-secret-change-me"
	l := config.New(getenv)
	common := config.LoadCommon(l)
	topology := infra.LoadTopology(l, common)
	healthAddr := l.HostPort("DATAPORT_HEALTH_ADDR", "127.0.0.1:8083", "listen address of /healthz and /readyz")
	httpTimeouts := infra.LoadHTTPTimeouts(l)
	smtpCfg := notify.SMTPConfig{
		Host:     l.String("DATAPORT_SMTP_HOST", "127.0.0.1", "SMTP server host"),
		Port:     l.Int("DATAPORT_SMTP_PORT", 1025, 1, 65535, "SMTP server port"),
		Username: l.String("DATAPORT_SMTP_USERNAME", "", "SMTP AUTH user name; empty disables AUTH"),
		Password: l.Secret("DATAPORT_SMTP_PASSWORD", "", "SMTP AUTH password"),
		TLS:      l.Enum("DATAPORT_SMTP_TLS", notify.TLSNone, notify.TLSModes(), "SMTP transport security: none, starttls (required) or tls (implicit, usually port 465)"),
		CAFile:   l.String("DATAPORT_SMTP_CA_FILE", "", "PEM file of the CAs trusted for the SMTP server's certificate; empty uses the system's"),
		// Development and tests only: a self-signed Mailpit or test server.
		InsecureSkipVerify: l.Bool("DATAPORT_SMTP_TLS_INSECURE_SKIP_VERIFY", false, "accept any SMTP server certificate (development and tests only)"),
	}
	webhookSecret := l.SigningSecret("DATAPORT_WEBHOOK_SECRET", defaultWebhookSecret, "HMAC key of webhook signatures (X-Dataport-Signature; 32+ random bytes outside development)")
	webhookURLs := l.String("DATAPORT_WEBHOOK_URLS", "", "comma-separated webhook URLs told about every job, besides each job's own")
	webhookAllow := l.String("DATAPORT_WEBHOOK_ALLOWLIST", "", "comma-separated hosts and CIDRs webhooks may reach although private, loopback or link-local")
	mailFrom := l.String("DATAPORT_MAIL_FROM", "Dataport <exports@dataport.local>", "sender of notification emails, RFC 5322 address")
	publicURL := l.URL("DATAPORT_PUBLIC_URL", "http://127.0.0.1:8080", "public base URL of the gateway, used in download links")
	linkSecret := l.SigningSecret("DATAPORT_LINK_SECRET", defaultLinkSecret, "HMAC key that signs download links; must equal the gateway's (32+ random bytes outside development)")
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
	webhooks, err := notify.NewWebhooks(notify.WebhookConfig{
		Secret: []byte(webhookSecret),
		URLs:   strings.Split(webhookURLs, ","),
		Allow:  strings.Split(webhookAllow, ","),
	})
	if err != nil {
		return fmt.Errorf("notifier: invalid configuration:\n%w", err)
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
	// The defaults are refused outside development, so these only warn
	// a developer.
	if linkSecret == defaultLinkSecret {
		log.WarnContext(ctx, "DATAPORT_LINK_SECRET is the development default; anyone can forge download links")
	}
	if webhookSecret == defaultWebhookSecret {
		log.WarnContext(ctx, "DATAPORT_WEBHOOK_SECRET is the development default; anyone can forge webhook signatures")
	}
	if smtpCfg.InsecureSkipVerify {
		log.WarnContext(ctx, "DATAPORT_SMTP_TLS_INSECURE_SKIP_VERIFY is set; the SMTP server's certificate is not checked")
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
	jobs, err := jobview.Open(ctx, inf.JS, log)
	if err != nil {
		return fmt.Errorf("notifier: %w", err)
	}
	notifier, err := notify.New(notify.Config{
		Users:     users,
		Sent:      sent,
		Jobs:      jobs,
		Objects:   inf.Blob,
		Bucket:    common.ExportBucket,
		Mailer:    mailer,
		Webhooks:  webhooks,
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

	worker := infra.Worker{
		HealthAddr:      healthAddr,
		HTTP:            httpTimeouts,
		Ready:           inf.Ready,
		Consumer:        consumer,
		Handler:         notifier.Handle,
		ShutdownTimeout: common.ShutdownTimeout,
		Logger:          log,
		Consume: bus.ConsumeOptions{
			// A few sends at once: each waits mostly on the mail server.
			Concurrency: 4,
			Heartbeat:   topology.EventAckWait / 3,
			Tracer:      tel.TracerProvider.Tracer("dataport.dev/services/notifier"),
			Propagator:  tel.Propagator(),
		},
	}
	log.InfoContext(ctx, "notifier started", "consumer", bus.ConsumerNotifier, "smtp_host", smtpCfg.Host, "smtp_port", smtpCfg.Port)
	if err := worker.Run(ctx); err != nil {
		return fmt.Errorf("notifier: %w", err)
	}
	log.InfoContext(ctx, "notifier stopped")
	return nil
}
