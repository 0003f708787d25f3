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
	"os/signal"
	"syscall"
	"time"
	// DATAPORT_TIMEZONE must resolve in a distroless image without tzdata.
	_ "time/tzdata"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/dialect/mytracker"
	"dataport.dev/services/gateway/internal/dialect/rebilly"
	"dataport.dev/services/gateway/internal/dialect/rocketchat"
	"dataport.dev/services/gateway/internal/httpapi"
	"dataport.dev/services/gateway/internal/idempotency"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/quota"
	"dataport.dev/services/gateway/internal/schedule"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/services/gateway/internal/watchdog"
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
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	l := config.New(getenv)
	common := config.LoadCommon(l)
	topo := infra.LoadTopology(l, common)
	httpAddr := l.HostPort("DATAPORT_HTTP_ADDR", defaultHTTPAddr, "HTTP listen address (API and health probes)")
	publicURL := l.URL("DATAPORT_PUBLIC_URL", "http://"+httpAddr, "base URL of the gateway as users reach it; download links start with it")
	taskSigner := infra.LoadTaskSigner(l)
	linkKeys := l.SigningKeyRing("DATAPORT_LINK_SECRET", defaultLinkSecret, "HMAC key that signs download links (32+ random bytes outside development)",
		"DATAPORT_LINK_PREVIOUS_SECRETS", "comma-separated earlier link keys still accepted (not used to sign) during a key rotation")
	linkTTL := l.Duration("DATAPORT_LINK_TTL", defaultLinkTTL, "how long signed download links stay valid")
	retention := l.Duration("DATAPORT_RETENTION", defaultRetention, "how long a job's files are kept after completion (expires_at); the archiver's sweeper deletes them then")
	dataDownloadInterval := l.Duration("DATAPORT_DATA_DOWNLOAD_INTERVAL", rocketchat.DefaultDataDownloadInterval, "Rocket.Chat users.requestDataDownload: how long after a request a new one returns the previous operation")
	maxConcurrent := l.Int("DATAPORT_MAX_CONCURRENT_EXPORTS_PER_USER", 5, 0, 10000, "unfinished exports one user may have before creates get 429, over all gateway replicas (0: no limit)")
	ratePerMinute := l.Int("DATAPORT_CREATE_RATE_PER_MINUTE", 30, 0, 100000, "exports one user may create per clock minute, over all gateway replicas (0: no limit)")
	stuckAfter := l.Duration("DATAPORT_STUCK_JOB_AFTER", 15*time.Minute, "a job with no update for this long is failed by the watchdog")
	timezone := l.String("DATAPORT_TIMEZONE", "UTC", "IANA time zone in which relative and date-only export ranges (today, -7 days, dateFrom) are resolved")
	jwtHS256 := l.Secret("DATAPORT_JWT_HS256_SECRET", "", "HS256 key of accepted Bearer JWTs (Rebilly and myTracker dialects); empty: none")
	jwtRS256 := l.String("DATAPORT_JWT_RS256_PUBLIC_KEY", "", "PEM public key of accepted RS256 Bearer JWTs; empty: none")
	jwtIssuer := l.String("DATAPORT_JWT_ISSUER", "", "required iss of Bearer JWTs; empty: not checked")
	jwtAudience := l.String("DATAPORT_JWT_AUDIENCE", "", "audience Bearer JWTs must list in aud; empty: not checked")
	jwtMaxLifetime := l.Duration("DATAPORT_JWT_MAX_LIFETIME", auth.DefaultMaxTokenLifetime, "longest accepted Bearer JWT lifetime (exp minus iat, or nbf); tokens without exp are refused")
	httpTimeouts := infra.LoadHTTPTimeouts(l)
	maxBody := l.Int("DATAPORT_HTTP_MAX_BODY_BYTES", httpapi.DefaultMaxBodyBytes, 1024, 64<<20, "largest request body accepted (bytes); larger ones get 413")
	bodyTimeout := l.Duration("DATAPORT_HTTP_BODY_TIMEOUT", httpapi.DefaultBodyReadTimeout, "time a client has to send a request body, read before any work; slower ones get 408")
	rawRowsPerChunk := l.Int("DATAPORT_RAW_MAX_ROWS_PER_CHUNK", 100000, 1, 1<<31-1, "rows per chunk file of a myTracker raw export")
	rawBytesPerChunk := l.Int("DATAPORT_RAW_MAX_BYTES_PER_CHUNK", 64<<20, 1024, 1<<40, "uncompressed bytes per chunk file of a myTracker raw export")
	rawMaxRows := l.Int("DATAPORT_RAW_MAX_ROWS", 1000000, 1, 1<<40, "rows above which a raw export is rejected (Too many lines in one export)")
	recordMaxRows := l.Int("DATAPORT_RECORD_MAX_ROWS", defaultRecordMaxRows, 1, 1<<40, "rows above which a Rebilly data export (one-off or a recurring run) is rejected (Too many lines in one export); raw exports use DATAPORT_RAW_MAX_ROWS")
	recordMaxBytes := l.Int("DATAPORT_RECORD_MAX_BYTES", defaultRecordMaxBytes, 1<<10, 1<<44, "stored bytes above which any record export (Rebilly or myTracker raw) is rejected (Too much export data)")
	minInterval := l.Duration("DATAPORT_SCHEDULE_MIN_INTERVAL", schedule.DefaultMinInterval, "shortest time allowed between two occurrences of a recurring export's RRULE")
	maxSchedules := l.Int("DATAPORT_MAX_SCHEDULES_PER_USER", 10, 0, 100000, "active recurring exports one user may have before creates get 422 (0: no limit)")
	maxRecipients := l.Int("DATAPORT_MAX_EMAIL_RECIPIENTS", rebilly.DefaultMaxEmailRecipients, 1, 1000, "addresses one export's emailNotification may list")
	maxFields := l.Int("DATAPORT_MAX_FIELDS", rebilly.DefaultMaxFields, 1, 10000, "columns one record export may name (Rebilly fields, myTracker selectors)")
	loc, tzErr := time.LoadLocation(timezone)
	var keyErr, intervalErr error
	if jwtHS256 != "" && len(jwtHS256) < auth.MinHS256KeyBytes {
		// RFC 7518 requires it; a shorter key falls to an offline guess
		// from a single token. Checked in every environment.
		keyErr = fmt.Errorf("DATAPORT_JWT_HS256_SECRET is %d bytes long; HS256 keys must be at least %d bytes", len(jwtHS256), auth.MinHS256KeyBytes)
	}
	if minInterval < time.Minute {
		// The scheduler walks a rule from its start to now; below a minute
		// a start in 1970 means tens of millions of steps per check.
		intervalErr = fmt.Errorf("DATAPORT_SCHEDULE_MIN_INTERVAL=%s: must be at least 1m", minInterval)
	}
	if err := errors.Join(l.Err(), tzErr, keyErr, intervalErr); err != nil {
		return fmt.Errorf("gateway: bad configuration:\n%w", err)
	}
	l.Print(stdout)

	tel, err := telemetry.Setup(ctx, telemetry.Options{
		Service:      serviceName,
		Version:      version,
		LogLevel:     common.LogLevel,
		Out:          stdout,
		OTLPEndpoint: getenv("OTEL_EXPORTER_OTLP_ENDPOINT"),
	})
	if err != nil {
		return fmt.Errorf("gateway: telemetry: %w", err)
	}
	defer func() { _ = tel.Shutdown(context.WithoutCancel(ctx)) }()
	log := tel.Logger
	if string(linkKeys[0]) == defaultLinkSecret {
		// Only reachable with DATAPORT_ENV=development: elsewhere the
		// default is refused above.
		log.WarnContext(ctx, "DATAPORT_LINK_SECRET is not set: download links are signed with a well-known development key; set it in any shared deployment")
	}

	inf, err := infra.Connect(ctx, serviceName, common, topo, log)
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	defer inf.Close()

	// The limiter repairs lost slot releases from the projection, and the
	// projection releases a job's slot when the job ends.
	var jobs *jobstore.Store
	limiter, err := quota.Open(ctx, inf.JS, quota.Options{
		MaxConcurrent: maxConcurrent,
		RatePerMinute: ratePerMinute,
		Jobs:          quota.JobLookupFunc(func(ctx context.Context, id string) (*exportv1.Job, error) { return jobs.Get(ctx, id) }),
		Logger:        log,
	})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	jobs, err = jobstore.Open(ctx, inf.JS, jobstore.WithRetention(retention), jobstore.WithOnTerminal(limiter.ReleaseTerminal))
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
	submitter := submit.New(jobs, pub, taskSigner, nil, submit.WithAdmission(limiter))
	signer := links.NewRotating(publicURL, linkKeys, linkTTL, nil)
	kvs := map[string]jetstream.KeyValue{}
	for _, name := range []string{bus.BucketUsers, bus.BucketJobs, bus.BucketSchedules, bus.BucketCounters} {
		if kvs[name], err = inf.JS.KeyValue(ctx, name); err != nil {
			return fmt.Errorf("gateway: open bucket %s: %w", name, err)
		}
	}
	keys, err := auth.NewKeyAuthenticator(kvs[bus.BucketUsers], auth.KeyConfig{
		HS256Secret: jwtHS256, RS256PublicKeyPEM: jwtRS256,
		Issuer: jwtIssuer, Audience: jwtAudience, MaxLifetime: jwtMaxLifetime,
	})
	if err != nil {
		// The HS256 key length was checked with the rest of the
		// configuration, so what is left is the RS256 key.
		return fmt.Errorf("gateway: bad configuration: DATAPORT_JWT_RS256_PUBLIC_KEY: %w", err)
	}
	schedules := schedule.NewStore(kvs[bus.BucketSchedules], schedule.WithMaxPerOwner(maxSchedules))
	rebillyAPI := rebilly.New(rebilly.Config{
		Directory: authz.Directory, Jobs: jobs, JobsKV: kvs[bus.BucketJobs], Schedules: schedules, Submitter: submitter,
		Links: signer, Blob: inf.Blob, ExportBucket: common.ExportBucket, PublicURL: publicURL, Location: loc, Logger: log,
		Limits: rebilly.Limits{
			MinInterval: minInterval, MaxEmailRecipients: maxRecipients, MaxFields: maxFields,
			MaxRows: uint64(recordMaxRows), MaxBytes: uint64(recordMaxBytes),
		},
	})
	myTrackerAPI := mytracker.New(mytracker.Config{
		Directory: authz.Directory, Jobs: jobs, Counters: kvs[bus.BucketCounters], Submitter: submitter, Links: signer, Location: loc, Logger: log,
		Limits: mytracker.Limits{
			MaxRowsPerChunk: uint64(rawRowsPerChunk), MaxBytesPerChunk: uint64(rawBytesPerChunk),
			MaxRows: uint64(rawMaxRows), MaxBytes: uint64(recordMaxBytes), MaxFields: maxFields,
		},
	})
	// A run that would take its owner over the unfinished-export limit is
	// skipped rather than queued behind the others.
	scheduler := schedule.New(schedules, rebillyAPI.RunSchedule, schedule.Options{
		Admission: schedule.UnfinishedLimit(quota.ActiveJobs(jobs), maxConcurrent),
		Logger:    log,
	})
	rocketChatAPI := rocketchat.New(rocketchat.Config{
		Jobs: jobs, Auth: authz, Submitter: submitter, Links: signer,
		DataDownloadInterval: dataDownloadInterval, Logger: log,
	})
	// Idempotency scopes keys by the principal the router's
	// authentication put in the request's context.
	idem, err := idempotency.Open(ctx, inf.JS, idempotency.Options{Logger: log})
	if err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	dog := watchdog.New(inf.NC, inf.JS, jobs, pub, watchdog.Options{StuckAfter: stuckAfter, Logger: log})
	router := httpapi.New(httpapi.Config{
		Jobs:           jobs,
		Auth:           authz,
		Keys:           keys,
		Publisher:      pub,
		Submitter:      submitter,
		Dialects:       []httpapi.Dialect{rocketChatAPI, rebillyAPI, myTrackerAPI},
		Blob:           inf.Blob,
		ExportBucket:   common.ExportBucket,
		Links:          signer,
		Logger:         log,
		TracerProvider: tel.TracerProvider,
		Propagator:     tel.Propagator(),
		// After authentication; idempotency first, so a replayed create
		// does not spend quota.
		Middleware:      []func(http.Handler) http.Handler{idem.Handler, limiter.Handler},
		MaxBodyBytes:    int64(maxBody),
		BodyReadTimeout: bodyTimeout,
		WriteTimeout:    httpTimeouts.Write,
	})
	infra.HealthRoutes(router, inf.Ready, log)

	// HTTP stops first; the projection keeps applying events until the
	// server is down, then drains.
	g, gctx := errgroup.WithContext(ctx)
	consumeCtx, stopConsuming := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConsuming()
	g.Go(func() error {
		defer stopConsuming()
		return infra.Serve(gctx, httpAddr, router, httpTimeouts, common.ShutdownTimeout, log)
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
	g.Go(func() error { return dog.Run(consumeCtx) })
	g.Go(func() error { return scheduler.Run(consumeCtx) })
	if err := g.Wait(); err != nil {
		return fmt.Errorf("gateway: %w", err)
	}
	log.InfoContext(context.WithoutCancel(ctx), "stopped")
	return nil
}
