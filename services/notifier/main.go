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
	"strings"
	"time"

	"dataport.dev/services/notifier/internal/notify"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/jobview"
	"dataport.dev/shared/links"
)

// version is set by the build (-ldflags "-X main.version=..."; the
// Makefile and the Dockerfiles pass `git describe`).
var version = "dev"

const (
	defaultLinkSecret    = "dev-only-link-secret-change-me"
	defaultWebhookSecret = "dev-only-webhook-secret-change-me"
)

func main() {
	if err := run(context.Background(), os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context, getenv func(string) string, stdout io.Writer) error {
	return infra.Run(ctx, getenv, stdout, infra.Service[Config]{
		Name: "notifier", Version: version, Load: loadConfig, Build: build,
	})
}

// Config is the notifier's own configuration; infra.Run loads the shared
// variables besides it. The mailer, the webhooks and the sender are built
// here, with the rest of the configuration, because building them is what
// validates their settings: a bad one is reported before anything starts.
type Config struct {
	HealthAddr    string
	SMTP          notify.SMTPConfig
	Mailer        *notify.SMTPMailer
	Webhooks      *notify.Webhooks
	WebhookSecret string
	From          mail.Address
	PublicURL     string
	LinkSecret    string
	LinkTTL       time.Duration
	// AttachMaxBytes caps the files one room mail attaches.
	AttachMaxBytes int
}

func loadConfig(l *config.Loader) (Config, error) {
	c := Config{
		HealthAddr: l.HostPort("DATAPORT_HEALTH_ADDR", "127.0.0.1:8083", "listen address of /healthz and /readyz"),
		SMTP: notify.SMTPConfig{
			Host:     l.String("DATAPORT_SMTP_HOST", "127.0.0.1", "SMTP server host"),
			Port:     l.Int("DATAPORT_SMTP_PORT", 1025, 1, 65535, "SMTP server port"),
			Username: l.String("DATAPORT_SMTP_USERNAME", "", "SMTP AUTH user name; empty disables AUTH"),
			Password: l.Secret("DATAPORT_SMTP_PASSWORD", "", "SMTP AUTH password"),
			TLS:      l.Enum("DATAPORT_SMTP_TLS", notify.TLSNone, notify.TLSModes(), "SMTP transport security: none, starttls (required) or tls (implicit, usually port 465)"),
			CAFile:   l.String("DATAPORT_SMTP_CA_FILE", "", "PEM file of the CAs trusted for the SMTP server's certificate; empty uses the system's"),
			// Development and tests only: a self-signed Mailpit or test server.
			InsecureSkipVerify: l.Bool("DATAPORT_SMTP_TLS_INSECURE_SKIP_VERIFY", false, "accept any SMTP server certificate (development and tests only)"),
		},
		WebhookSecret: l.SigningSecret("DATAPORT_WEBHOOK_SECRET", defaultWebhookSecret, "HMAC key of webhook signatures (X-Dataport-Signature; 32+ random bytes outside development)"),
	}
	webhookURLs := l.String("DATAPORT_WEBHOOK_URLS", "", "comma-separated webhook URLs told about every job, besides each job's own")
	webhookAllow := l.String("DATAPORT_WEBHOOK_ALLOWLIST", "", "comma-separated hosts and CIDRs webhooks may reach although private, loopback or link-local")
	mailFrom := l.String("DATAPORT_MAIL_FROM", "Dataport <exports@dataport.local>", "sender of notification emails, RFC 5322 address")
	c.PublicURL = l.URL("DATAPORT_PUBLIC_URL", "http://127.0.0.1:8080", "public base URL of the gateway, used in download links")
	c.LinkSecret = l.SigningSecret("DATAPORT_LINK_SECRET", defaultLinkSecret, "HMAC key that signs download links; must equal the gateway's (32+ random bytes outside development)")
	c.LinkTTL = l.Duration("DATAPORT_LINK_TTL", 24*time.Hour, "how long emailed download links stay valid")
	c.AttachMaxBytes = l.Int("DATAPORT_MAIL_ATTACH_MAX_BYTES", notify.DefaultAttachMaxBytes, 1, 1<<30,
		"bytes of files one room mail attaches; files past it are sent as signed download links")
	if err := l.Err(); err != nil {
		return c, nil // infra.Run reports l's errors; the rest builds on valid values
	}
	from, err := mail.ParseAddress(mailFrom)
	if err != nil {
		return c, fmt.Errorf("DATAPORT_MAIL_FROM=%q: %w", mailFrom, err)
	}
	c.From = *from
	if c.Mailer, err = notify.NewSMTPMailer(c.SMTP); err != nil {
		return c, err
	}
	c.Webhooks, err = notify.NewWebhooks(notify.WebhookConfig{
		Secret: []byte(c.WebhookSecret),
		URLs:   strings.Split(webhookURLs, ","),
		Allow:  strings.Split(webhookAllow, ","),
	})
	return c, err
}

// build is the notifier's composition root: the notifier on its consumer.
func build(ctx context.Context, d infra.Deps, c Config) (infra.Parts, error) {
	inf, tel, common, log := d.Infra, d.Telemetry, d.Base.Common, d.Telemetry.Logger
	// The defaults are refused outside development, so these only warn
	// a developer.
	if c.LinkSecret == defaultLinkSecret {
		log.WarnContext(ctx, "DATAPORT_LINK_SECRET is the development default; anyone can forge download links")
	}
	if c.WebhookSecret == defaultWebhookSecret {
		log.WarnContext(ctx, "DATAPORT_WEBHOOK_SECRET is the development default; anyone can forge webhook signatures")
	}
	if c.SMTP.InsecureSkipVerify {
		log.WarnContext(ctx, "DATAPORT_SMTP_TLS_INSECURE_SKIP_VERIFY is set; the SMTP server's certificate is not checked")
	}
	signer := links.New(c.PublicURL, []byte(c.LinkSecret), c.LinkTTL, nil)

	consumer, err := bus.EnsureConsumer(ctx, inf.JS, d.Base.Topology, bus.ConsumerNotifier)
	if err != nil {
		return infra.Parts{}, err
	}
	users, err := inf.JS.KeyValue(ctx, bus.BucketUsers)
	if err != nil {
		return infra.Parts{}, fmt.Errorf("bucket %s: %w", bus.BucketUsers, err)
	}
	sent, err := inf.JS.KeyValue(ctx, bus.BucketNotifications)
	if err != nil {
		return infra.Parts{}, fmt.Errorf("bucket %s: %w", bus.BucketNotifications, err)
	}
	jobs, err := jobview.Open(ctx, inf.JS, log)
	if err != nil {
		return infra.Parts{}, err
	}
	notifier, err := notify.New(notify.Config{
		Users:     users,
		Sent:      sent,
		Jobs:      jobs,
		Objects:   inf.Blob,
		Bucket:    common.ExportBucket,
		Mailer:    c.Mailer,
		Webhooks:  c.Webhooks,
		Links:     signer,
		LinkTTL:   c.LinkTTL,
		From:      c.From,
		Publisher: bus.NewPublisher(inf.JS, tel.Propagator()),
		Topology:  d.Base.Topology,
		Logger:    log,

		MeterProvider:  tel.MeterProvider,
		AttachMaxBytes: uint64(c.AttachMaxBytes),
	})
	if err != nil {
		return infra.Parts{}, err
	}

	return infra.Parts{
		HTTP: infra.HTTP{Addr: c.HealthAddr},
		Consumers: []infra.Consumer{{Consumer: consumer, Handler: notifier.Handle, Options: bus.ConsumeOptions{
			// A few sends at once: each waits mostly on the mail server.
			Concurrency: 4,
			Heartbeat:   d.Base.Topology.EventAckWait / 3,
			Tracer:      tel.TracerProvider.Tracer("dataport.dev/services/notifier"),
			Propagator:  tel.Propagator(),
		}}},
		LogAttrs: []any{"consumer", bus.ConsumerNotifier, "smtp_host", c.SMTP.Host, "smtp_port", c.SMTP.Port},
	}, nil
}
