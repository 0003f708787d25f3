package rocketchat_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/dialect/rocketchat"
	"dataport.dev/services/gateway/internal/httpapi"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/quota"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/links"
)

const (
	exportBucket = "dataport-exports"
	assetBucket  = "dataport-assets"

	// Callers. admin is a member of the private room; admin2 is not.
	adminID, adminToken   = "AdminUserId000001", "admin-token-Zu-Z6eKzIIz7MCCRGeHi"
	admin2ID, admin2Token = "AdminUserId000002", "admin2-token"
	userID, userToken     = "PlainUserId000001", "user-token"

	roomGeneral = "GENERAL"
	roomPrivate = "iu7jtPAhvEeAS5tNq"
	roomDirect  = "DirectRoomId00001"

	retention = 72 * time.Hour
	interval  = 24 * time.Hour
)

var linkSecret = []byte("test-link-secret")

// clock is a settable clock shared by the dialect and the submitter.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is the gateway router with the Rocket.Chat dialect over a real
// embedded NATS (and MinIO when asked for) behind a real HTTP server.
type env struct {
	nats  *bustest.Server
	minio *blobtest.Server
	jobs  *jobstore.Store
	pub   *bus.Publisher
	clock *clock
	url   string
}

type envOptions struct {
	// minio starts a real MinIO (downloads, demo assets).
	minio bool
	// projection runs the gateway-projection consumer.
	projection bool
	// fixtures stores the hand-made users and rooms.
	fixtures bool
	// limits wires the quota middleware and admission as the gateway does.
	limits *quota.Options
}

func newEnv(tb testing.TB, o envOptions) *env {
	tb.Helper()
	ctx := tb.Context()
	e := &env{nats: bustest.Start(tb), clock: &clock{t: time.Now().UTC().Truncate(time.Millisecond)}}
	if o.fixtures {
		fixtures(tb, e.nats)
	}
	var (
		jobs      *jobstore.Store
		limiter   *quota.Limiter
		err       error
		storeOpts = []jobstore.Option{jobstore.WithRetention(retention)}
	)
	if o.limits != nil {
		lo := *o.limits
		lo.Now = e.clock.Now
		lo.Jobs = quota.JobLookupFunc(func(ctx context.Context, id string) (*exportv1.Job, error) { return jobs.Get(ctx, id) })
		limiter, err = quota.Open(ctx, e.nats.JS, lo)
		require.NoError(tb, err)
		storeOpts = append(storeOpts, jobstore.WithOnTerminal(limiter.ReleaseTerminal))
	}
	jobs, err = jobstore.Open(ctx, e.nats.JS, storeOpts...)
	require.NoError(tb, err)
	authz, err := auth.Open(ctx, e.nats.JS)
	require.NoError(tb, err)
	e.jobs = jobs
	e.pub = bus.NewPublisher(e.nats.JS, nil)

	var store *blob.Store
	if o.minio {
		e.minio = blobtest.Start(tb)
		store = e.minio.Store
		require.NoError(tb, store.EnsureBucket(ctx, exportBucket))
		require.NoError(tb, store.EnsureBucket(ctx, assetBucket))
	} else {
		// Never contacted: only downloads use it.
		store, err = blob.New(blob.Config{Endpoint: "127.0.0.1:1", AccessKey: "unused", SecretKey: "unused"})
		require.NoError(tb, err)
	}

	srv := httptest.NewUnstartedServer(nil)
	base := "http://" + srv.Listener.Addr().String()
	signer := links.New(base, linkSecret, time.Hour, nil)
	var subOpts []submit.Option
	var middleware []func(http.Handler) http.Handler
	if limiter != nil {
		subOpts = append(subOpts, submit.WithAdmission(limiter))
		middleware = append(middleware, limiter.Handler)
	}
	submitter := submit.New(jobs, e.pub, bustest.TaskSigner(tb), e.clock.Now, subOpts...)
	rc := rocketchat.New(rocketchat.Config{
		Jobs:                 jobs,
		Auth:                 authz,
		Submitter:            submitter,
		Links:                signer,
		DataDownloadInterval: interval,
		Now:                  e.clock.Now,
	})
	router := httpapi.New(httpapi.Config{
		Jobs:         jobs,
		Auth:         authz,
		Publisher:    e.pub,
		Submitter:    submitter,
		Blob:         store,
		ExportBucket: exportBucket,
		Links:        signer,
		Dialects:     []httpapi.Dialect{rc},
		Logger:       slog.New(slog.DiscardHandler),
		Middleware:   middleware,
	})
	srv.Config.Handler = router
	srv.Start()
	tb.Cleanup(srv.Close)
	e.url = srv.URL

	if o.projection {
		consumer, err := bus.EnsureConsumer(ctx, e.nats.JS, bustest.Topology(), bus.ConsumerGatewayProjection)
		require.NoError(tb, err)
		cctx, stop := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			done <- bus.Consume(cctx, consumer, jobs.Projection(slog.New(slog.DiscardHandler)), bus.ConsumeOptions{
				Concurrency: 4,
				NakDelay:    func(uint64) time.Duration { return 50 * time.Millisecond },
			})
		}()
		tb.Cleanup(func() { stop(); <-done })
	}
	return e
}

func put(tb testing.TB, srv *bustest.Server, bucket, key string, m proto.Message) {
	tb.Helper()
	kv, err := srv.JS.KeyValue(tb.Context(), bucket)
	require.NoError(tb, err)
	data, err := proto.Marshal(m)
	require.NoError(tb, err)
	_, err = kv.Put(tb.Context(), key, data)
	require.NoError(tb, err)
}

// fixtures stores users, rooms and memberships as the host platform would.
func fixtures(tb testing.TB, srv *bustest.Server) {
	tb.Helper()
	put(tb, srv, bus.BucketUsers, adminID, &sourcev1.User{Id: adminID, Username: "root", Email: "root@example.com", Roles: []string{"user", "admin"}, AuthTokenSha256: auth.TokenHash(adminToken)})
	put(tb, srv, bus.BucketUsers, admin2ID, &sourcev1.User{Id: admin2ID, Username: "root2", Roles: []string{"admin"}, AuthTokenSha256: auth.TokenHash(admin2Token)})
	put(tb, srv, bus.BucketUsers, userID, &sourcev1.User{Id: userID, Username: "alice", Email: "Alice Example <alice@example.com>", Roles: []string{"user"}, AuthTokenSha256: auth.TokenHash(userToken)})
	put(tb, srv, bus.BucketRooms, roomGeneral, &sourcev1.Room{Id: roomGeneral, Name: "general", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	put(tb, srv, bus.BucketRooms, roomPrivate, &sourcev1.Room{Id: roomPrivate, Name: "staff", Type: sourcev1.RoomType_ROOM_TYPE_PRIVATE})
	put(tb, srv, bus.BucketRooms, roomDirect, &sourcev1.Room{Id: roomDirect, Type: sourcev1.RoomType_ROOM_TYPE_DIRECT, Usernames: []string{"alice", "root2"}})
	put(tb, srv, bus.BucketMemberships, adminID+"."+roomPrivate, &sourcev1.Membership{UserId: adminID, RoomId: roomPrivate})
	put(tb, srv, bus.BucketMemberships, adminID+"."+roomGeneral, &sourcev1.Membership{UserId: adminID, RoomId: roomGeneral})
	put(tb, srv, bus.BucketMemberships, userID+"."+roomPrivate, &sourcev1.Membership{UserId: userID, RoomId: roomPrivate})
	put(tb, srv, bus.BucketMemberships, userID+"."+roomDirect, &sourcev1.Membership{UserId: userID, RoomId: roomDirect})
	put(tb, srv, bus.BucketMemberships, admin2ID+"."+roomDirect, &sourcev1.Membership{UserId: admin2ID, RoomId: roomDirect})
}

// creds are the X-User-Id and X-Auth-Token headers of a request; empty
// values are not sent.
type creds struct{ user, token string }

var (
	asAdmin  = creds{adminID, adminToken}
	asAdmin2 = creds{admin2ID, admin2Token}
	asUser   = creds{userID, userToken}
	anon     = creds{}
)

type response struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body as a JSON object.
func (r response) json(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	require.NoError(tb, json.Unmarshal(r.body, &m), "body %q", r.body)
	return m
}

// do sends a request through the real HTTP server.
func (e *env) do(tb testing.TB, method, path string, c creds, body string) response {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(tb.Context(), method, e.url+path, rd)
	require.NoError(tb, err)
	if c.user != "" {
		req.Header.Set("X-User-Id", c.user)
	}
	if c.token != "" {
		req.Header.Set("X-Auth-Token", c.token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// jobCount is how many jobs the store holds.
func (e *env) jobCount(tb testing.TB) int {
	tb.Helper()
	kv, err := e.nats.JS.KeyValue(tb.Context(), bus.BucketJobs)
	require.NoError(tb, err)
	keys, err := kv.Keys(tb.Context())
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0
	}
	require.NoError(tb, err)
	return len(keys)
}

// tasksOf returns the tasks published on subject for a job, in part
// order. The task stream is a work queue, so it is read message by
// message rather than through a consumer.
func (e *env) tasksOf(tb testing.TB, subject, jobID string) []*exportv1.ExportTask {
	tb.Helper()
	ctx := tb.Context()
	stream, err := e.nats.JS.Stream(ctx, bus.StreamExportTasks)
	require.NoError(tb, err)
	info, err := stream.Info(ctx)
	require.NoError(tb, err)
	var out []*exportv1.ExportTask
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := stream.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		require.NoError(tb, err)
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

// eventually polls f until it passes.
func eventually(t *testing.T, f func(c *assert.CollectT)) {
	t.Helper()
	require.EventuallyWithT(t, f, 10*time.Second, 20*time.Millisecond)
}
