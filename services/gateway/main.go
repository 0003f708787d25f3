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
	"strings"
	"time"
	// DATAPORT_TIMEZONE must resolve in a distroless image without tzdata.
	_ "time/tzdata"

	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/compose"
	"dataport.dev/services/gateway/internal/dialect/mytracker"
	"dataport.dev/services/gateway/internal/dialect/rocketchat"
	"dataport.dev/services/gateway/internal/httpapi"
	"dataport.dev/services/gateway/internal/plan"
	"dataport.dev/services/gateway/internal/schedule"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/infra"
)

const (
	serviceName       = "gateway"
	defaultHTTPAddr   = "127.0.0.1:8080"
	defaultLinkSecret = "dev-only-link-secret-change-me"
	defaultLinkTTL    = 24 * time.Hour
	// defaultRetention is how long files are kept; the archiver's
	// sweeper has the same default.
	defaultRetention = 168 * time.Hour
	// projectionConcurrency is how many status events one replica applies
	// at once; revision checks keep concurrent applies to one job correct.
	projectionConcurrency = 4
	// Record exports stream to MinIO, so the caps bound the work and the
	// storage one request can cause, not memory.
	defaultRecordMaxRows  = 10000000
	defaultRecordMaxBytes = 4 << 30
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
		Name: serviceName, Version: version, Load: loadConfig, Build: build,
	})
}

// Config is the gateway's own configuration; infra.Run loads the shared
// variables (NATS, MinIO, topology, HTTP timeouts, shutdown) besides it.
// Each field holds the variable loadConfig reads for it, documented there
// and in the README; what the composition root needs is compose.Config.
type Config struct {
	HTTPAddr string
	OpsAddr  string
	compose.Config
}

// loadConfig reads the gateway's variables and cross-checks them.
func loadConfig(l *config.Loader) (Config, error) {
	httpAddr := l.HostPort("DATAPORT_HTTP_ADDR", defaultHTTPAddr, "HTTP listen address (API and health probes)")
	c := Config{
		HTTPAddr: httpAddr,
		OpsAddr: l.HostPort("DATAPORT_OPS_ADDR", "", "listen address of a second server with only /metrics and the probes; when set, /metrics leaves the API port "+
			"(set it wherever the API port is published, as the Kubernetes manifests do)"),
	}
	c.Config = compose.Config{
		PublicURL:  l.URL("DATAPORT_PUBLIC_URL", "http://"+httpAddr, "base URL of the gateway as users reach it; download links start with it"),
		TaskSigner: infra.LoadTaskSigner(l),
		LinkKeys: l.SigningKeyRing("DATAPORT_LINK_SECRET", defaultLinkSecret, "HMAC key that signs download links (32+ random bytes outside development)",
			"DATAPORT_LINK_PREVIOUS_SECRETS", "comma-separated earlier link keys still accepted (not used to sign) during a key rotation"),
		LinkTTL:              l.Duration("DATAPORT_LINK_TTL", defaultLinkTTL, "how long signed download links stay valid"),
		Retention:            l.Duration("DATAPORT_RETENTION", defaultRetention, "how long a job's files are kept after completion (expires_at); the archiver's sweeper deletes them then"),
		DataDownloadInterval: l.Duration("DATAPORT_DATA_DOWNLOAD_INTERVAL", rocketchat.DefaultDataDownloadInterval, "Rocket.Chat users.requestDataDownload: how long after a request a new one returns the previous operation"),
		MaxConcurrent:        l.Int("DATAPORT_MAX_CONCURRENT_EXPORTS_PER_USER", 5, 0, 10000, "unfinished exports one user may have before creates get 429, over all gateway replicas (0: no limit)"),
		RatePerMinute:        l.Int("DATAPORT_CREATE_RATE_PER_MINUTE", 30, 0, 100000, "exports one user may create per clock minute, over all gateway replicas (0: no limit)"),
		StuckAfter:           l.Duration("DATAPORT_STUCK_JOB_AFTER", 15*time.Minute, "a job with no update for this long is failed by the watchdog"),
	}
	timezone := l.String("DATAPORT_TIMEZONE", "UTC", "IANA time zone in which relative and date-only export ranges (today, -7 days, dateFrom) are resolved")
	c.JWT = auth.KeyConfig{
		HS256Secret:       l.Secret("DATAPORT_JWT_HS256_SECRET", "", "HS256 key of accepted Bearer JWTs (Rebilly and myTracker dialects); empty: none"),
		RS256PublicKeyPEM: l.String("DATAPORT_JWT_RS256_PUBLIC_KEY", "", "PEM public key of accepted RS256 Bearer JWTs; empty: none"),
		Issuer:            l.String("DATAPORT_JWT_ISSUER", "", "required iss of Bearer JWTs; empty: not checked"),
		Audience:          l.String("DATAPORT_JWT_AUDIENCE", "", "audience Bearer JWTs must list in aud; empty: not checked"),
		MaxLifetime:       l.Duration("DATAPORT_JWT_MAX_LIFETIME", auth.DefaultMaxTokenLifetime, "longest accepted Bearer JWT lifetime (exp minus iat, or nbf); tokens without exp are refused"),
	}
	c.MaxBody = l.Int("DATAPORT_HTTP_MAX_BODY_BYTES", httpapi.DefaultMaxBodyBytes, 1024, 64<<20, "largest request body accepted (bytes); larger ones get 413")
	c.BodyTimeout = l.Duration("DATAPORT_HTTP_BODY_TIMEOUT", httpapi.DefaultBodyReadTimeout, "time a client has to send a request body, read before any work; slower ones get 408")
	c.MaxInFlight = l.Int("DATAPORT_MAX_IN_FLIGHT", httpapi.DefaultMaxInFlight, 0, 1<<20, "API requests one replica serves at once; more get 503 with Retry-After at once, so memory stays bounded under overload (0: no limit; probes, /metrics and event streams are not counted)")
	c.MaxStreams = l.Int("DATAPORT_MAX_EVENT_STREAMS", httpapi.DefaultMaxEventStreams, 0, 1<<20, "server-sent event streams (GET /v1/exports/events, /v1/exports/{id}/events) one replica keeps open at once; more get 503 with Retry-After (0: no limit)")
	c.AuthCacheSize = l.Int("DATAPORT_AUTH_CACHE_SIZE", auth.DefaultCacheSize, 0, 1<<24, "credentials one replica keeps after accepting them, so a poll reads only its job; ended at once by a watch of the users when one changes (0: no cache)")
	c.AuthCacheTTL = l.Duration("DATAPORT_AUTH_CACHE_TTL", auth.DefaultCacheTTL, "longest a cached credential is used without reading its user again, a safety net behind the watch")
	rawRowsPerChunk := l.Int("DATAPORT_RAW_MAX_ROWS_PER_CHUNK", 100000, 1, 1<<31-1, "rows per chunk file of a myTracker raw export")
	rawBytesPerChunk := l.Int("DATAPORT_RAW_MAX_BYTES_PER_CHUNK", 64<<20, 1024, 1<<40, "uncompressed bytes per chunk file of a myTracker raw export")
	rawMaxRows := l.Int("DATAPORT_RAW_MAX_ROWS", 1000000, 1, 1<<40, "rows above which a raw export is rejected (Too many lines in one export)")
	c.RecordMaxRows = l.Int("DATAPORT_RECORD_MAX_ROWS", defaultRecordMaxRows, 1, 1<<40, "rows above which a Rebilly data export (one-off or a recurring run) is rejected (Too many lines in one export); raw exports use DATAPORT_RAW_MAX_ROWS")
	c.RecordMaxBytes = l.Int("DATAPORT_RECORD_MAX_BYTES", defaultRecordMaxBytes, 1<<10, 1<<44, "stored bytes above which any record export (Rebilly or myTracker raw) is rejected (Too much export data)")
	c.SplitMinRecords = l.Int("DATAPORT_SPLIT_MIN_RECORDS", plan.DefaultSplitMinRecords, 1, 1<<40, "records on its stream subject from which a single-file record export (or messages in its room from which a JSON, JSON lines or csv.gz room export) is split into ranges taken by several exporters and joined into one file")
	c.SplitParts = l.Int("DATAPORT_SPLIT_PARTS", plan.DefaultSplitParts, 1, 256, "ranges a split record export is planned as (1: never split)")
	c.MinInterval = l.Duration("DATAPORT_SCHEDULE_MIN_INTERVAL", schedule.DefaultMinInterval, "shortest time allowed between two occurrences of a recurring export's RRULE")
	c.MaxSchedules = l.Int("DATAPORT_MAX_SCHEDULES_PER_USER", 10, 0, 100000, "active recurring exports one user may have before creates get 422 (0: no limit)")
	c.MaxRecipients = l.Int("DATAPORT_MAX_EMAIL_RECIPIENTS", plan.DefaultMaxEmailRecipients, 1, 1000, "addresses one export's emailNotification may list")
	c.MaxFields = l.Int("DATAPORT_MAX_FIELDS", plan.DefaultMaxFields, 1, 10000, "columns one record export may name (Rebilly fields, myTracker selectors)")
	c.WebhookAllow = strings.Split(l.String("DATAPORT_WEBHOOK_ALLOWLIST", "", "comma-separated hosts and CIDRs per-export webhooks may name although private, loopback or link-local (set it as the notifier's)"), ",")
	c.RawLimits = mytracker.Limits{
		MaxRowsPerChunk: uint64(rawRowsPerChunk), MaxBytesPerChunk: uint64(rawBytesPerChunk),
		MaxRows: uint64(rawMaxRows), MaxBytes: uint64(c.RecordMaxBytes), MaxFields: c.MaxFields,
	}
	loc, tzErr := time.LoadLocation(timezone)
	c.Location = loc
	var keyErr, intervalErr error
	if c.JWT.HS256Secret != "" && len(c.JWT.HS256Secret) < auth.MinHS256KeyBytes {
		// RFC 7518 requires it; a shorter key falls to an offline guess
		// from a single token. Checked in every environment.
		keyErr = fmt.Errorf("DATAPORT_JWT_HS256_SECRET is %d bytes long; HS256 keys must be at least %d bytes", len(c.JWT.HS256Secret), auth.MinHS256KeyBytes)
	}
	if c.MinInterval < time.Minute {
		// The scheduler walks a rule from its start to now; below a minute
		// a start in 1970 means tens of millions of steps per check.
		intervalErr = fmt.Errorf("DATAPORT_SCHEDULE_MIN_INTERVAL=%s: must be at least 1m", c.MinInterval)
	}
	return c, errors.Join(tzErr, keyErr, intervalErr)
}

// build hands the gateway's composition (package compose, which the
// tests' environment shares) to infra.Run: its router, the projection's
// consumer and the loops that keep jobs moving.
func build(ctx context.Context, d infra.Deps, c Config) (infra.Parts, error) {
	tel, log := d.Telemetry, d.Telemetry.Logger
	if string(c.LinkKeys[0]) == defaultLinkSecret {
		// Only reachable with DATAPORT_ENV=development: elsewhere the
		// default is refused by loadConfig.
		log.WarnContext(ctx, "DATAPORT_LINK_SECRET is not set: download links are signed with a well-known development key; set it in any shared deployment")
	}
	g, err := compose.New(ctx, compose.Deps{
		NC: d.Infra.NC, JS: d.Infra.JS, Topology: d.Base.Topology, Blob: d.Infra.Blob, ExportBucket: d.Base.Common.ExportBucket,
		WriteTimeout: d.Base.HTTP.Write, Logger: log,
		TracerProvider: tel.TracerProvider, MeterProvider: tel.MeterProvider, Propagator: tel.Propagator(),
	}, c.Config)
	if err != nil {
		return infra.Parts{}, err
	}
	// The projection keeps applying events until the API is down, so
	// every request's writes reach the job records; then it drains.
	return infra.Parts{
		HTTP: infra.HTTP{Addr: c.HTTPAddr, Handler: g.Router, OpsAddr: c.OpsAddr},
		Consumers: []infra.Consumer{{Consumer: g.Projection, Handler: g.ProjectionHandler, Options: bus.ConsumeOptions{
			Concurrency: projectionConcurrency,
			Tracer:      tel.TracerProvider.Tracer("dataport.dev/services/gateway/projection"),
			Propagator:  tel.Propagator(),
		}}},
		Loops: g.Loops(),
	}, nil
}
