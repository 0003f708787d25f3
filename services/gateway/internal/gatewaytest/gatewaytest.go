// Package gatewaytest is the gateway's one test environment: the real
// router with every dialect, composed by the constructor
// services/gateway/main.go uses (package compose), credential cache and
// quotas included, over a real embedded NATS JetStream server (shared/bustest) and, on
// request, a real MinIO (shared/blobtest), behind a real HTTP server. It
// seeds a small directory of users, rooms, memberships and organizations,
// sends requests as those users in each dialect's credentials and reads
// back what a request left on the bus: jobs, tasks and status events.
//
// Only tests import it. It lives outside a _test file so the tests of
// every gateway package (httpapi, each dialect, the guards) share one
// environment instead of each building its own.
package gatewaytest

import (
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/compose"
	"dataport.dev/services/gateway/internal/console"
	"dataport.dev/services/gateway/internal/dialect"
	"dataport.dev/services/gateway/internal/dialect/mytracker"
	"dataport.dev/services/gateway/internal/httpapi"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/principal"
	"dataport.dev/services/gateway/internal/quota"
	"dataport.dev/services/gateway/internal/schedule"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/resources"
	"dataport.dev/shared/telemetry"
)

// Buckets of the MinIO server Options.MinIO starts.
const (
	ExportBucket = "dataport-exports"
	AssetBucket  = "dataport-assets"
)

// Settings of the composed gateway that tests assert against.
const (
	// Retention is how long a completed job's files are kept.
	Retention = 72 * time.Hour
	// DataDownloadInterval is Rocket.Chat users.requestDataDownload's
	// interval between two operations.
	DataDownloadInterval = 24 * time.Hour
	// LinkTTL is how long a signed download link stays valid.
	LinkTTL = time.Hour
)

// LinkSecret signs download links; tests mint links of their own with it.
func LinkSecret() []byte { return []byte("test-link-secret") }

// Options adds parts to the environment; the zero value is the router
// over NATS with the directory seeded, without MinIO, the projection or
// quota limits (the quota middleware runs, with no limit to enforce).
type Options struct {
	// MinIO starts a real MinIO with ExportBucket and AssetBucket
	// (downloads, demo assets). Without it the blob store points at a
	// closed port and is never contacted unless a test downloads.
	MinIO bool
	// Projection runs the gateway-projection consumer, so status events
	// published on the bus reach the jobs.
	Projection bool
	// NoFixtures leaves the directory empty, for tests that seed their
	// own (the demo data set).
	NoFixtures bool
	// Limits are the quotas' limits (MaxConcurrent, RatePerMinute); nil:
	// none.
	Limits *quota.Options
	// WriteTimeout is the HTTP server's WriteTimeout (0: none). The
	// router keeps its default per-write budget for downloads, so a test
	// can cut the server's timeout below what any answer needs and see a
	// download outlast it.
	WriteTimeout time.Duration
	// MaxBody and BodyTimeout are the router's body limits (0: defaults).
	MaxBody     int64
	BodyTimeout time.Duration
	// Start is the clock's first reading; zero: now.
	Start time.Time
	// Telemetry replaces the environment's tracer and meter providers,
	// propagator and logger with the service's own (infra.NewTelemetry),
	// for benchmarks that measure a request as a deployment's defaults
	// instrument it; Env.Metrics is nil then.
	Telemetry *telemetry.Telemetry
}

// Env is one composed gateway and its infrastructure, torn down when the
// test ends.
type Env struct {
	NATS *bustest.Server
	// MinIO is nil unless Options.MinIO.
	MinIO *blobtest.Server
	Jobs  *jobstore.Store
	Pub   *bus.Publisher
	// Auth and Keys are the credential checks the router uses, behind a
	// count of their calls (TokenChecks, KeyChecks).
	Auth *auth.Service
	Keys *auth.KeyAuthenticator
	// Credentials is the credential cache in front of them, watching the
	// users as in the gateway.
	Credentials *auth.Cache
	// Resources is the resource registry the Rebilly dialect validates
	// against, with the built-in resources registered.
	Resources *resources.Registry
	Clock     *Clock
	// Router is the gateway's handler; URL is the base URL of the HTTP
	// server in front of it.
	Router *httpapi.Router
	URL    string
	// Metrics reads what the router and the job store recorded (request
	// durations, jobmetrics), as main's MeterProvider would export it.
	Metrics *sdkmetric.ManualReader
	// Console is the web console, on the router as in main.
	Console *console.Console

	tokens countingTokens
	keys   countingKeys
}

// New composes the gateway for tb.
func New(tb testing.TB, o Options) *Env {
	tb.Helper()
	ctx := tb.Context()
	start := o.Start
	if start.IsZero() {
		start = time.Now().UTC().Truncate(time.Millisecond)
	}
	e := &Env{NATS: bustest.Start(tb), Clock: &Clock{t: start}}
	if !o.NoFixtures {
		seed(tb, e.NATS)
	}

	var store *blob.Store
	var err error
	if o.MinIO {
		e.MinIO = blobtest.Start(tb)
		store = e.MinIO.Store
		require.NoError(tb, store.EnsureBucket(ctx, ExportBucket))
		require.NoError(tb, store.EnsureBucket(ctx, AssetBucket))
	} else {
		store, err = blob.New(blob.Config{Endpoint: "127.0.0.1:1", AccessKey: "unused", SecretKey: "unused"})
		require.NoError(tb, err)
	}

	// The server's address is the public URL, so signed links point at it.
	srv := httptest.NewUnstartedServer(nil)
	e.URL = "http://" + srv.Listener.Addr().String()
	var (
		tp     trace.TracerProvider
		mp     metric.MeterProvider
		prop   propagation.TextMapPropagator = propagation.TraceContext{}
		logger                               = slog.New(slog.DiscardHandler)
	)
	if tel := o.Telemetry; tel != nil {
		tp, mp, prop, logger = tel.TracerProvider, tel.MeterProvider, tel.Propagator(), tel.Logger
		tb.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	} else {
		sdktp := sdktrace.NewTracerProvider()
		tb.Cleanup(func() { _ = sdktp.Shutdown(context.Background()) })
		e.Metrics = sdkmetric.NewManualReader()
		tp, mp = sdktp, sdkmetric.NewMeterProvider(sdkmetric.WithReader(e.Metrics))
	}
	// The gateway as main composes it, with the production defaults
	// where a test sets nothing.
	c := compose.Config{
		PublicURL: e.URL, TaskSigner: bustest.TaskSigner(tb), LinkKeys: [][]byte{LinkSecret()}, LinkTTL: LinkTTL,
		Retention: Retention, DataDownloadInterval: DataDownloadInterval, StuckAfter: 15 * time.Minute,
		JWT:     auth.KeyConfig{HS256Secret: JWTSecret},
		MaxBody: int(o.MaxBody), BodyTimeout: o.BodyTimeout,
		MaxInFlight: httpapi.DefaultMaxInFlight, MaxStreams: httpapi.DefaultMaxEventStreams,
		AuthCacheSize: auth.DefaultCacheSize, AuthCacheTTL: auth.DefaultCacheTTL,
		RawLimits:     mytracker.Limits{MaxRowsPerChunk: 1000, MaxBytesPerChunk: 1 << 20, MaxRows: 1000000, MaxBytes: 4 << 30},
		RecordMaxRows: 10000000, RecordMaxBytes: 4 << 30,
		MinInterval: schedule.DefaultMinInterval, MaxSchedules: 10,
	}
	if o.Limits != nil {
		c.MaxConcurrent, c.RatePerMinute = o.Limits.MaxConcurrent, o.Limits.RatePerMinute
	}
	g, err := compose.New(ctx, compose.Deps{
		NC: e.NATS.Conn, JS: e.NATS.JS, Topology: bustest.Topology(), Blob: store, ExportBucket: ExportBucket,
		Logger: logger, TracerProvider: tp, MeterProvider: mp, Propagator: prop,
	}, c, compose.WithClock(e.Clock.Now), compose.WithCredentialChecks(
		func(tokens dialect.TokenAuthenticator, keys dialect.KeyAuthenticator) (dialect.TokenAuthenticator, dialect.KeyAuthenticator) {
			e.tokens.TokenAuthenticator, e.keys.KeyAuthenticator = tokens, keys
			return &e.tokens, &e.keys
		}))
	require.NoError(tb, err)
	e.Jobs, e.Auth, e.Keys, e.Pub, e.Resources, e.Console, e.Router = g.Jobs, g.Auth, g.Keys, g.Publisher, g.Resources, g.Console, g.Router
	e.Credentials = g.Credentials
	// The credential cache answers only while its watch runs, as in the
	// gateway.
	watchCtx, stopWatch := context.WithCancel(context.Background())
	watched := make(chan error, 1)
	go func() { watched <- g.Credentials.Run(watchCtx) }()
	tb.Cleanup(func() { stopWatch(); <-watched })
	require.Eventually(tb, g.Credentials.Watching, 10*time.Second, time.Millisecond, "the credential cache watches the users")
	srv.Config.Handler = e.Router
	srv.Config.WriteTimeout = o.WriteTimeout
	srv.Start()
	tb.Cleanup(srv.Close)

	if o.Projection {
		cctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- bus.Consume(cctx, g.Projection, g.ProjectionHandler, bus.ConsumeOptions{
				Concurrency: 4,
				NakDelay:    func(uint64) time.Duration { return 50 * time.Millisecond },
			})
		}()
		tb.Cleanup(func() { stop(); <-done })
	}
	return e
}

// TokenChecks is how many times the router checked a personal access
// token (native and Rocket.Chat credentials).
func (e *Env) TokenChecks() int { return int(e.tokens.calls.Load()) }

// KeyChecks is how many times the router checked an API key or bearer
// token (Rebilly and myTracker credentials).
func (e *Env) KeyChecks() int { return int(e.keys.calls.Load()) }

// KV opens one of the topology's buckets.
func (e *Env) KV(tb testing.TB, bucket string) jetstream.KeyValue {
	tb.Helper()
	kv, err := e.NATS.JS.KeyValue(tb.Context(), bucket)
	require.NoError(tb, err)
	return kv
}

// Put stores m under key in bucket, as the host platform writes users,
// rooms, memberships and organizations.
func (e *Env) Put(tb testing.TB, bucket, key string, m proto.Message) {
	tb.Helper()
	put(tb, e.NATS, bucket, key, m)
}

// Job is the stored job id.
func (e *Env) Job(tb testing.TB, id string) *exportv1.Job {
	tb.Helper()
	job, err := e.Jobs.Get(tb.Context(), id)
	require.NoError(tb, err)
	return job
}

// JobCount is how many jobs the store holds.
func (e *Env) JobCount(tb testing.TB) int {
	tb.Helper()
	keys, err := e.KV(tb, bus.BucketJobs).Keys(tb.Context())
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0
	}
	require.NoError(tb, err)
	return len(keys)
}

// StreamMsgs is how many messages stream holds.
func (e *Env) StreamMsgs(tb testing.TB, stream string) uint64 {
	tb.Helper()
	s, err := e.NATS.JS.Stream(tb.Context(), stream)
	require.NoError(tb, err)
	info, err := s.Info(tb.Context())
	require.NoError(tb, err)
	return info.State.Msgs
}

// TasksOf returns the tasks published on subject for a job, in part
// order. The task stream is a work queue, so it is read message by
// message rather than through a consumer.
func (e *Env) TasksOf(tb testing.TB, subject, jobID string) []*exportv1.ExportTask {
	tb.Helper()
	var out []*exportv1.ExportTask
	for _, m := range e.messages(tb, bus.StreamExportTasks) {
		if m.Subject != subject {
			continue
		}
		t := &exportv1.ExportTask{}
		require.NoError(tb, proto.Unmarshal(m.Data, t))
		if t.GetJobId() == jobID {
			out = append(out, t)
		}
	}
	return out
}

// Events returns the kinds of the status events published for a job,
// in order.
func (e *Env) Events(tb testing.TB, jobID string) []bus.Event {
	tb.Helper()
	var out []bus.Event
	for _, m := range e.messages(tb, bus.StreamExportEvents) {
		if ev, id, err := bus.ParseStatusSubject(m.Subject); err == nil && id == jobID {
			out = append(out, ev)
		}
	}
	return out
}

func (e *Env) messages(tb testing.TB, stream string) []*jetstream.RawStreamMsg {
	tb.Helper()
	ctx := tb.Context()
	s, err := e.NATS.JS.Stream(ctx, stream)
	require.NoError(tb, err)
	info, err := s.Info(ctx)
	require.NoError(tb, err)
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(tb, err)
		out = append(out, m)
	}
	return out
}

// Eventually polls f until it passes, for up to ten seconds.
func Eventually(t *testing.T, f func(c *assert.CollectT)) {
	t.Helper()
	require.EventuallyWithT(t, f, 10*time.Second, 20*time.Millisecond)
}

// Clock is the settable clock of the submitter, the dialects and the
// quotas.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// Now reads the clock.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock on by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// countingTokens is the router's token check, counted, so tests can
// tell that a request was authenticated once.
type countingTokens struct {
	dialect.TokenAuthenticator
	calls atomic.Int32
}

func (c *countingTokens) Authenticate(ctx context.Context, userID, token string) (*sourcev1.User, error) {
	c.calls.Add(1)
	return c.TokenAuthenticator.Authenticate(ctx, userID, token)
}

// countingKeys is the router's key check, counted.
type countingKeys struct {
	dialect.KeyAuthenticator
	calls atomic.Int32
}

func (c *countingKeys) Header(ctx context.Context, apiKey, authorization string) (*sourcev1.User, principal.Credential, error) {
	c.calls.Add(1)
	return c.KeyAuthenticator.Header(ctx, apiKey, authorization)
}
