// Package compose is the gateway's composition root: New wires the job
// store and its index, authentication with its credential cache, quotas,
// idempotency, the dialects, the console and the router from a Config,
// and hands back what the service runs (the router, the projection's
// consumer, the loops). services/gateway/main.go and the test environment
// (gatewaytest) both build the gateway with it, so tests run the path
// production runs; they differ only in the Deps and Options they pass.
package compose

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/console"
	"dataport.dev/services/gateway/internal/dialect"
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
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/egress"
	"dataport.dev/shared/links"
	"dataport.dev/shared/resources"
)

// Config is the gateway's own configuration, as main loads it from the
// environment (each field's variable is documented there and in the
// README).
type Config struct {
	PublicURL            string
	TaskSigner           *bus.TaskSigner
	LinkKeys             [][]byte
	LinkTTL              time.Duration
	Retention            time.Duration
	DataDownloadInterval time.Duration
	MaxConcurrent        int
	RatePerMinute        int
	StuckAfter           time.Duration
	// Location is DATAPORT_TIMEZONE, resolved; nil means UTC.
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

// Deps are the connections and telemetry the gateway runs on.
type Deps struct {
	NC *nats.Conn
	JS jetstream.JetStream
	// Topology declares the projection's consumer; Replicas of it are the
	// console's session bucket's.
	Topology     bus.Topology
	Blob         *blob.Store
	ExportBucket string
	// WriteTimeout is the HTTP server's, which downloads outlast with a
	// per-write budget of their own.
	WriteTimeout   time.Duration
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Propagator     propagation.TextMapPropagator
}

// Option changes how New wires the gateway; production passes none.
type Option func(*options)

type options struct {
	now  func() time.Time
	wrap func(dialect.TokenAuthenticator, dialect.KeyAuthenticator) (dialect.TokenAuthenticator, dialect.KeyAuthenticator)
}

// WithClock gives the request path (submitter, dialects, quotas, bearer
// token checks, console) the clock now instead of time.Now, for tests that
// move time.
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithCredentialChecks puts wrap around the credential checks the router
// calls (the credential cache stays inside them), so that a test can count
// the checks a request makes.
func WithCredentialChecks(wrap func(dialect.TokenAuthenticator, dialect.KeyAuthenticator) (dialect.TokenAuthenticator, dialect.KeyAuthenticator)) Option {
	return func(o *options) { o.wrap = wrap }
}

// Gateway is one composed gateway: its handler and what keeps it running.
type Gateway struct {
	Router *httpapi.Router
	Jobs   *jobstore.Store
	// Auth and Keys are the credential checks, behind Credentials.
	Auth *auth.Service
	Keys *auth.KeyAuthenticator
	// Credentials is the credential cache, nil when Config.AuthCacheSize
	// is 0. It answers only while its Run is running.
	Credentials *auth.Cache
	Publisher   *bus.Publisher
	Resources   *resources.Registry
	Console     *console.Console
	// Projection is the gateway-projection consumer and its handler.
	Projection        jetstream.Consumer
	ProjectionHandler bus.Handler
	// IndexPurge, Watchdog and Scheduler are background loops; Loops
	// lists them with the credential cache's watch.
	IndexPurge, Watchdog, Scheduler func(context.Context) error
}

// Loops are every background loop of g, all of which production runs.
func (g *Gateway) Loops() []func(context.Context) error {
	var out []func(context.Context) error
	if g.Credentials != nil {
		out = append(out, g.Credentials.Run)
	}
	return append(out, g.IndexPurge, g.Watchdog, g.Scheduler)
}

// New composes the gateway: it opens the stores (building the job index
// of a projection older than it, once per deployment), and wires the
// guards and the dialects onto one router.
func New(ctx context.Context, d Deps, c Config, opts ...Option) (*Gateway, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	log := d.Logger
	g := &Gateway{}

	// The limiter repairs lost slot releases from the projection, and the
	// projection releases a job's slot when the job ends.
	var jobs *jobstore.Store
	limiter, err := quota.Open(ctx, d.JS, quota.Options{
		MaxConcurrent: c.MaxConcurrent,
		RatePerMinute: c.RatePerMinute,
		Jobs:          quota.JobLookupFunc(func(ctx context.Context, id string) (*exportv1.Job, error) { return jobs.Get(ctx, id) }),
		Logger:        log,
		Now:           o.now,
	})
	if err != nil {
		return nil, err
	}
	// Every change of a job is written once over all replicas; the job
	// metrics count there.
	recorder, err := jobmetrics.New(d.MeterProvider)
	if err != nil {
		return nil, fmt.Errorf("job metrics: %w", err)
	}
	jobs, err = jobstore.Open(ctx, d.JS, jobstore.WithRetention(c.Retention), jobstore.WithOnTerminal(limiter.ReleaseTerminal),
		jobstore.WithOnChange(recorder.Observe))
	if err != nil {
		return nil, err
	}
	g.Jobs = jobs
	// Jobs of a projection older than its index become listable before
	// this replica serves (once per deployment).
	if built, err := jobs.BuildIndex(ctx); err != nil {
		return nil, err
	} else if built {
		log.InfoContext(ctx, "job index built from the projection")
	}
	g.IndexPurge = purgeOldLayout(jobs, log)
	kvs := map[string]jetstream.KeyValue{}
	for _, name := range []string{bus.BucketUsers, bus.BucketUserIndex, bus.BucketSchedules, bus.BucketCounters} {
		if kvs[name], err = d.JS.KeyValue(ctx, name); err != nil {
			return nil, fmt.Errorf("open bucket %s: %w", name, err)
		}
	}
	// One cache for both authenticators: a change of a user ends its
	// entries of every kind.
	if c.AuthCacheSize > 0 {
		g.Credentials = auth.NewCache(kvs[bus.BucketUsers], kvs[bus.BucketUserIndex], auth.CacheOptions{Size: c.AuthCacheSize, TTL: c.AuthCacheTTL, Logger: log})
	}
	if g.Auth, err = auth.Open(ctx, d.JS, auth.WithCache(g.Credentials)); err != nil {
		return nil, err
	}
	if g.Projection, err = bus.EnsureConsumer(ctx, d.JS, d.Topology, bus.ConsumerGatewayProjection); err != nil {
		return nil, err
	}
	g.ProjectionHandler = jobs.Projection(log)

	g.Publisher = bus.NewPublisher(d.JS, d.Propagator)
	submitter := submit.New(jobs, g.Publisher, c.TaskSigner, o.now, submit.WithAdmission(limiter))
	signer := links.NewRotating(c.PublicURL, c.LinkKeys, c.LinkTTL, nil)
	jwtConfig := c.JWT
	jwtConfig.Cache = g.Credentials
	if o.now != nil {
		jwtConfig.Now = o.now
	}
	if g.Keys, err = auth.NewKeyAuthenticator(kvs[bus.BucketUsers], kvs[bus.BucketUserIndex], jwtConfig); err != nil {
		// The HS256 key length was checked with the rest of the
		// configuration, so what is left is the RS256 key.
		return nil, fmt.Errorf("bad configuration: DATAPORT_JWT_RS256_PUBLIC_KEY: %w", err)
	}
	if _, err := g.Keys.IndexUsers(ctx); err != nil {
		return nil, err
	}
	schedules := schedule.NewStore(kvs[bus.BucketSchedules], schedule.WithMaxPerOwner(c.MaxSchedules), schedule.WithBatchReads(d.JS))
	// Schedules created before the organization index are listed for
	// their organization's administrators from now on.
	if _, err := schedules.IndexOrganizations(ctx); err != nil {
		return nil, err
	}
	// Installations that predate the registry keep their built-in
	// resources; the host registers its own.
	if g.Resources, err = resources.Open(ctx, d.JS); err != nil {
		return nil, err
	}
	if err := g.Resources.EnsureBuiltins(ctx); err != nil {
		return nil, err
	}
	records, err := d.JS.Stream(ctx, bus.StreamRecords)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", bus.StreamRecords, err)
	}
	chat, err := d.JS.Stream(ctx, bus.StreamChatMessages)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", bus.StreamChatMessages, err)
	}
	split := plan.Split{Subjects: plan.StreamSubjects{Stream: records}, Rooms: plan.StreamSubjects{Stream: chat},
		MinRecords: uint64(c.SplitMinRecords), Parts: c.SplitParts}
	limits := plan.Limits{
		MinInterval: c.MinInterval, MaxEmailRecipients: c.MaxRecipients, MaxFields: c.MaxFields,
		MaxRows: uint64(c.RecordMaxRows), MaxBytes: uint64(c.RecordMaxBytes),
	}
	rebillyAPI := rebilly.New(rebilly.Config{
		Resources: g.Resources, Directory: g.Auth.Directory, Jobs: jobs, Schedules: schedules, Submitter: submitter,
		Links: signer, Blob: d.Blob, ExportBucket: d.ExportBucket, PublicURL: c.PublicURL, Location: c.Location, Logger: log,
		Split: split, Limits: limits, Now: o.now,
	})
	myTrackerAPI := mytracker.New(mytracker.Config{
		Directory: g.Auth.Directory, Jobs: jobs, Counters: kvs[bus.BucketCounters], Submitter: submitter, Links: signer, Location: c.Location, Logger: log,
		Limits: c.RawLimits, Now: o.now,
	})
	// A run that would take its owner over the unfinished-export limit is
	// skipped rather than queued behind the others.
	g.Scheduler = schedule.New(schedules, rebillyAPI.RunSchedule, schedule.Options{
		Admission: schedule.UnfinishedLimit(quota.ActiveJobs(jobs), c.MaxConcurrent),
		Logger:    log, TracerProvider: d.TracerProvider,
	}).Run
	rocketChatAPI := rocketchat.New(rocketchat.Config{
		Jobs: jobs, Auth: g.Auth, Submitter: submitter, Links: signer,
		DataDownloadInterval: c.DataDownloadInterval, Split: split, Logger: log, Now: o.now,
	})
	// Idempotency scopes keys by the principal the router's
	// authentication put in the request's context.
	idem, err := idempotency.Open(ctx, d.JS, idempotency.Options{Logger: log})
	if err != nil {
		return nil, err
	}
	g.Watchdog = watchdog.New(d.NC, d.JS, jobs, g.Publisher, watchdog.Options{
		StuckAfter: c.StuckAfter, Logger: log, MeterProvider: d.MeterProvider, TracerProvider: d.TracerProvider,
	}).Run
	// The console checks sign-ins with the API's own authenticators.
	if g.Console, err = console.Open(ctx, d.JS, console.Options{
		Tokens: g.Auth, Keys: g.Keys, Users: g.Auth.Directory, PublicURL: c.PublicURL,
		Replicas: d.Topology.Replicas, Logger: log, Now: o.now,
	}); err != nil {
		return nil, err
	}
	var tokens dialect.TokenAuthenticator = g.Auth
	var keys dialect.KeyAuthenticator = g.Keys
	if o.wrap != nil {
		tokens, keys = o.wrap(tokens, keys)
	}
	g.Router = httpapi.New(httpapi.Config{
		Jobs:      jobs,
		Auth:      tokens,
		Keys:      keys,
		Publisher: g.Publisher,
		Submitter: submitter,
		NativeCreate: native.Create{
			Rooms: g.Auth, Directory: g.Auth.Directory, Schedules: schedules, Webhooks: egress.NewGuard(c.WebhookAllow), Location: c.Location,
			Resources: g.Resources, Split: split, Limits: limits, Now: o.now,
		},
		Dialects:       []httpapi.Dialect{rocketChatAPI, rebillyAPI, myTrackerAPI},
		Console:        g.Console,
		Blob:           d.Blob,
		ExportBucket:   d.ExportBucket,
		Links:          signer,
		Logger:         log,
		TracerProvider: d.TracerProvider,
		MeterProvider:  d.MeterProvider,
		Propagator:     d.Propagator,
		// After authentication; idempotency first, so a replayed create
		// does not spend quota.
		Middleware:      []func(http.Handler) http.Handler{idem.Handler, limiter.Handler},
		MaxBodyBytes:    int64(c.MaxBody),
		BodyReadTimeout: c.BodyTimeout,
		MaxInFlight:     noLimitBelowOne(c.MaxInFlight),
		MaxEventStreams: noLimitBelowOne(c.MaxStreams),
		WriteTimeout:    d.WriteTimeout,
	})
	return g, nil
}

// purgeOldLayout is the loop that removes the job index's earlier
// layouts once jobstore.LayoutGrace has passed since this layout was
// built. A failure is logged and retried; it never stops the gateway,
// whose reads ignore old entries anyway.
func purgeOldLayout(jobs *jobstore.Store, log *slog.Logger) func(context.Context) error {
	return func(ctx context.Context) error {
		for {
			wait, err := jobs.PurgeOldLayout(ctx, jobstore.LayoutGrace)
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				log.WarnContext(ctx, "purge the job index's old layout", "error", err)
				wait = time.Minute
			case wait == 0:
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
	}
}

// noLimitBelowOne maps a variable's 0 ("no limit") to the router's
// negative one, whose zero means the default.
func noLimitBelowOne(n int) int {
	if n <= 0 {
		return -1
	}
	return n
}
