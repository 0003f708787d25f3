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
	"net/http"
	"os"
	"strings"
	"time"
	// DATAPORT_TIMEZONE must resolve in a distroless image without tzdata.
	_ "time/tzdata"

	"github.com/nats-io/nats.go/jetstream"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/console"
	"dataport.dev/services/gateway/internal/dialect/mytracker"
	"dataport.dev/services/gateway/internal/dialect/native"
	"dataport.dev/services/gateway/internal/dialect/rebilly"
	"dataport.dev/services/gateway/internal/dialect/rocketchat"
	"dataport.dev/services/gateway/internal/httpapi"
	"dataport.dev/services/gateway/internal/idempotency"
	"dataport.dev/services/gateway/internal/jobmetrics"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/plan"
	"dataport.dev/services/gateway/internal/quota"
	"dataport.dev/services/gateway/internal/schedule"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/services/gateway/internal/watchdog"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/egress"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/links"
	"dataport.dev/shared/resources"
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
// and in the README.
type Config struct {
	HTTPAddr             string
	OpsAddr              string
	PublicURL            string
	TaskSigner           *bus.TaskSigner
	LinkKeys             [][]byte
	LinkTTL              time.Duration
	Retention            time.Duration
	DataDownloadInterval time.Duration
	MaxConcurrent        int
	RatePerMinute        int
	StuckAfter           time.Duration
	// Location is DATAPORT_TIMEZONE, resolved.
	Location       *time.Location
	JWT            auth.KeyConfig
	MaxBody        int
	BodyTimeout    time.Duration
	MaxInFlight    int
	MaxStreams     int
	AuthCacheSize  int
	AuthCacheTTL   time.Duration
	RawLimits      mytracker.Limits
	RecordMaxRows  int
	RecordMaxBytes int
	MinInterval    time.Duration
	MaxSchedules   int
	MaxRecipients  int
	MaxFields      int
	// SplitMinRecords and SplitParts plan big record and room exports as
	// ranges (plan.Split): a room's threshold counts its messages.
	SplitMinRecords int
	SplitParts      int
	// WebhookAllow is DATAPORT_WEBHOOK_ALLOWLIST, as the notifier reads
	// it: the gateway refuses new exports' webhooks the notifier would.
	WebhookAllow []string
}

// loadConfig reads the gateway's variables and cross-checks them.
func loadConfig(l *config.Loader) (Config, error) {
	httpAddr := l.HostPort("DATAPORT_HTTP_ADDR", defaultHTTPAddr, "HTTP listen address (API and health probes)")
	c := Config{
		HTTPAddr: httpAddr,
		OpsAddr: l.HostPort("DATAPORT_OPS_ADDR", "", "listen address of a second server with only /metrics and the probes; when set, /metrics leaves the API port "+
			"(set it wherever the API port is published, as the Kubernetes manifests do)"),
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

// build is the gateway's composition root: the job store and its guards,
// the dialects on one router with the probes, and the loops that keep jobs
// moving (the projection of status events, the scheduler, the watchdog).
func build(ctx context.Context, d infra.Deps, c Config) (infra.Parts, error) {
	inf, tel, common, log := d.Infra, d.Telemetry, d.Base.Common, d.Telemetry.Logger
	if string(c.LinkKeys[0]) == defaultLinkSecret {
		// Only reachable with DATAPORT_ENV=development: elsewhere the
		// default is refused by loadConfig.
		log.WarnContext(ctx, "DATAPORT_LINK_SECRET is not set: download links are signed with a well-known development key; set it in any shared deployment")
	}

	// The limiter repairs lost slot releases from the projection, and the
	// projection releases a job's slot when the job ends.
	var jobs *jobstore.Store
	limiter, err := quota.Open(ctx, inf.JS, quota.Options{
		MaxConcurrent: c.MaxConcurrent,
		RatePerMinute: c.RatePerMinute,
		Jobs:          quota.JobLookupFunc(func(ctx context.Context, id string) (*exportv1.Job, error) { return jobs.Get(ctx, id) }),
		Logger:        log,
	})
	if err != nil {
		return infra.Parts{}, err
	}
	// Every change of a job is written once over all replicas; the job
	// metrics count there.
	recorder, err := jobmetrics.New(tel.MeterProvider)
	if err != nil {
		return infra.Parts{}, fmt.Errorf("job metrics: %w", err)
	}
	jobs, err = jobstore.Open(ctx, inf.JS, jobstore.WithRetention(c.Retention), jobstore.WithOnTerminal(limiter.ReleaseTerminal),
		jobstore.WithOnChange(recorder.Observe))
	if err != nil {
		return infra.Parts{}, err
	}
	// Jobs of a projection older than its index become listable before
	// this replica serves (once per deployment).
	if built, err := jobs.BuildIndex(ctx); err != nil {
		return infra.Parts{}, err
	} else if built {
		log.InfoContext(ctx, "job index built from the projection")
	}
	kvs := map[string]jetstream.KeyValue{}
	for _, name := range []string{bus.BucketUsers, bus.BucketUserIndex, bus.BucketJobs, bus.BucketSchedules, bus.BucketCounters} {
		if kvs[name], err = inf.JS.KeyValue(ctx, name); err != nil {
			return infra.Parts{}, fmt.Errorf("open bucket %s: %w", name, err)
		}
	}
	// One cache for both authenticators: a change of a user ends its
	// entries of every kind.
	var credentials *auth.Cache
	var loops []func(context.Context) error
	if c.AuthCacheSize > 0 {
		credentials = auth.NewCache(kvs[bus.BucketUsers], kvs[bus.BucketUserIndex], auth.CacheOptions{Size: c.AuthCacheSize, TTL: c.AuthCacheTTL, Logger: log})
		loops = append(loops, credentials.Run)
	}
	authz, err := auth.Open(ctx, inf.JS, auth.WithCache(credentials))
	if err != nil {
		return infra.Parts{}, err
	}
	consumer, err := bus.EnsureConsumer(ctx, inf.JS, d.Base.Topology, bus.ConsumerGatewayProjection)
	if err != nil {
		return infra.Parts{}, err
	}

	pub := bus.NewPublisher(inf.JS, tel.Propagator())
	submitter := submit.New(jobs, pub, c.TaskSigner, nil, submit.WithAdmission(limiter))
	signer := links.NewRotating(c.PublicURL, c.LinkKeys, c.LinkTTL, nil)
	jwtConfig := c.JWT
	jwtConfig.Cache = credentials
	keys, err := auth.NewKeyAuthenticator(kvs[bus.BucketUsers], kvs[bus.BucketUserIndex], jwtConfig)
	if err != nil {
		// The HS256 key length was checked with the rest of the
		// configuration, so what is left is the RS256 key.
		return infra.Parts{}, fmt.Errorf("bad configuration: DATAPORT_JWT_RS256_PUBLIC_KEY: %w", err)
	}
	if _, err := keys.IndexUsers(ctx); err != nil {
		return infra.Parts{}, err
	}
	schedules := schedule.NewStore(kvs[bus.BucketSchedules], schedule.WithMaxPerOwner(c.MaxSchedules), schedule.WithBatchReads(inf.JS))
	// Schedules created before the organization index are listed for
	// their organization's administrators from now on.
	if _, err := schedules.IndexOrganizations(ctx); err != nil {
		return infra.Parts{}, err
	}
	// Installations that predate the registry keep their built-in
	// resources; the host registers its own.
	registry, err := resources.Open(ctx, inf.JS)
	if err != nil {
		return infra.Parts{}, err
	}
	if err := registry.EnsureBuiltins(ctx); err != nil {
		return infra.Parts{}, err
	}
	records, err := inf.JS.Stream(ctx, bus.StreamRecords)
	if err != nil {
		return infra.Parts{}, fmt.Errorf("stream %s: %w", bus.StreamRecords, err)
	}
	chat, err := inf.JS.Stream(ctx, bus.StreamChatMessages)
	if err != nil {
		return infra.Parts{}, fmt.Errorf("stream %s: %w", bus.StreamChatMessages, err)
	}
	split := plan.Split{Subjects: plan.StreamSubjects{Stream: records}, Rooms: plan.StreamSubjects{Stream: chat},
		MinRecords: uint64(c.SplitMinRecords), Parts: c.SplitParts}
	rebillyAPI := rebilly.New(rebilly.Config{
		Resources: registry, Directory: authz.Directory, Jobs: jobs, Schedules: schedules, Submitter: submitter,
		Links: signer, Blob: inf.Blob, ExportBucket: common.ExportBucket, PublicURL: c.PublicURL, Location: c.Location, Logger: log,
		Split: split,
		Limits: plan.Limits{
			MinInterval: c.MinInterval, MaxEmailRecipients: c.MaxRecipients, MaxFields: c.MaxFields,
			MaxRows: uint64(c.RecordMaxRows), MaxBytes: uint64(c.RecordMaxBytes),
		},
	})
	myTrackerAPI := mytracker.New(mytracker.Config{
		Directory: authz.Directory, Jobs: jobs, Counters: kvs[bus.BucketCounters], Submitter: submitter, Links: signer, Location: c.Location, Logger: log,
		Limits: c.RawLimits,
	})
	// A run that would take its owner over the unfinished-export limit is
	// skipped rather than queued behind the others.
	scheduler := schedule.New(schedules, rebillyAPI.RunSchedule, schedule.Options{
		Admission: schedule.UnfinishedLimit(quota.ActiveJobs(jobs), c.MaxConcurrent),
		Logger:    log, TracerProvider: tel.TracerProvider,
	})
	rocketChatAPI := rocketchat.New(rocketchat.Config{
		Jobs: jobs, Auth: authz, Submitter: submitter, Links: signer,
		DataDownloadInterval: c.DataDownloadInterval, Split: split, Logger: log,
	})
	// Idempotency scopes keys by the principal the router's
	// authentication put in the request's context.
	idem, err := idempotency.Open(ctx, inf.JS, idempotency.Options{Logger: log})
	if err != nil {
		return infra.Parts{}, err
	}
	dog := watchdog.New(inf.NC, inf.JS, jobs, pub, watchdog.Options{
		StuckAfter: c.StuckAfter, Logger: log, MeterProvider: tel.MeterProvider, TracerProvider: tel.TracerProvider,
	})
	// The console checks sign-ins with the API's own authenticators.
	webConsole, err := console.Open(ctx, inf.JS, console.Options{
		Tokens: authz, Keys: keys, Users: authz.Directory, PublicURL: c.PublicURL,
		Replicas: d.Base.Topology.Replicas, Logger: log,
	})
	if err != nil {
		return infra.Parts{}, err
	}
	router := httpapi.New(httpapi.Config{
		Jobs:      jobs,
		Auth:      authz,
		Keys:      keys,
		Publisher: pub,
		Submitter: submitter,
		NativeCreate: native.Create{
			Rooms: authz, Directory: authz.Directory, Schedules: schedules, Webhooks: egress.NewGuard(c.WebhookAllow), Location: c.Location,
			Resources: registry,
			Split:     split,
			Limits: plan.Limits{
				MinInterval: c.MinInterval, MaxEmailRecipients: c.MaxRecipients, MaxFields: c.MaxFields,
				MaxRows: uint64(c.RecordMaxRows), MaxBytes: uint64(c.RecordMaxBytes),
			},
		},
		Dialects:       []httpapi.Dialect{rocketChatAPI, rebillyAPI, myTrackerAPI},
		Console:        webConsole,
		Blob:           inf.Blob,
		ExportBucket:   common.ExportBucket,
		Links:          signer,
		Logger:         log,
		TracerProvider: tel.TracerProvider,
		MeterProvider:  tel.MeterProvider,
		Propagator:     tel.Propagator(),
		// After authentication; idempotency first, so a replayed create
		// does not spend quota.
		Middleware:      []func(http.Handler) http.Handler{idem.Handler, limiter.Handler},
		MaxBodyBytes:    int64(c.MaxBody),
		BodyReadTimeout: c.BodyTimeout,
		MaxInFlight:     noLimitBelowOne(c.MaxInFlight),
		MaxEventStreams: noLimitBelowOne(c.MaxStreams),
		WriteTimeout:    d.Base.HTTP.Write,
	})

	// The projection keeps applying events until the API is down, so
	// every request's writes reach the job records; then it drains.
	return infra.Parts{
		HTTP: infra.HTTP{Addr: c.HTTPAddr, Handler: router, OpsAddr: c.OpsAddr},
		Consumers: []infra.Consumer{{Consumer: consumer, Handler: jobs.Projection(log), Options: bus.ConsumeOptions{
			Concurrency: projectionConcurrency,
			Tracer:      tel.TracerProvider.Tracer("dataport.dev/services/gateway/projection"),
			Propagator:  tel.Propagator(),
		}}},
		Loops: append(loops, dog.Run, scheduler.Run),
	}, nil
}

// noLimitBelowOne maps a variable's 0 ("no limit") to the router's
// negative one, whose zero means the default.
func noLimitBelowOne(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}
