package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/proto"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/dialect/rocketchat"
	"dataport.dev/services/gateway/internal/httpapi"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/links"
)

const (
	exportBucket = "dataport-exports"

	// Callers. admin is a member of the private room; admin2 is not.
	adminID, adminToken   = "AdminUserId000001", "admin-token-Zu-Z6eKzIIz7MCCRGeHi"
	admin2ID, admin2Token = "AdminUserId000002", "admin2-token"
	userID, userToken     = "PlainUserId000001", "user-token"

	roomGeneral = "GENERAL"
	roomPrivate = "iu7jtPAhvEeAS5tNq"
	roomDirect  = "DirectRoomId00001"
)

var linkSecret = []byte("test-link-secret")

// env is a gateway router over a real embedded NATS and, when asked for,
// a real MinIO behind a real HTTP server.
type env struct {
	nats   *bustest.Server
	minio  *blobtest.Server
	jobs   *jobstore.Store
	pub    *bus.Publisher
	router *httpapi.Router
	// url is the base URL of the HTTP server ("" without one).
	url string
}

type envOptions struct {
	minio      bool
	server     bool
	projection bool
	// writeTimeout is the HTTP server's WriteTimeout (0: none), also given
	// to the router as the per-write budget of downloads.
	writeTimeout time.Duration
	// maxBody and bodyTimeout are the router's body limits (0: defaults).
	maxBody     int64
	bodyTimeout time.Duration
}

func newEnv(tb testing.TB, o envOptions) *env {
	tb.Helper()
	ctx := tb.Context()
	e := &env{nats: bustest.Start(tb)}
	fixtures(tb, e.nats)

	jobs, err := jobstore.Open(ctx, e.nats.JS)
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
	} else {
		// Never contacted: only downloads use it.
		store, err = blob.New(blob.Config{Endpoint: "127.0.0.1:1", AccessKey: "unused", SecretKey: "unused"})
		require.NoError(tb, err)
	}

	var srv *httptest.Server
	base := "http://gateway.invalid"
	if o.server {
		srv = httptest.NewUnstartedServer(nil)
		base = "http://" + srv.Listener.Addr().String()
	}
	tp := sdktrace.NewTracerProvider()
	tb.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	signer := links.New(base, linkSecret, time.Hour, nil)
	submitter := submit.New(jobs, e.pub, bustest.TaskSigner(tb), nil)
	// The native API is exercised on jobs that Rocket.Chat's rooms.export
	// creates, as in production.
	rc := rocketchat.New(rocketchat.Config{Jobs: jobs, Auth: authz, Submitter: submitter, Links: signer})
	e.router = httpapi.New(httpapi.Config{
		Jobs:            jobs,
		Auth:            authz,
		Publisher:       e.pub,
		Submitter:       submitter,
		Dialects:        []httpapi.Dialect{rc},
		Blob:            store,
		ExportBucket:    exportBucket,
		Links:           signer,
		Logger:          slog.New(slog.DiscardHandler),
		TracerProvider:  tp,
		MaxBodyBytes:    o.maxBody,
		BodyReadTimeout: o.bodyTimeout,
	})
	if srv != nil {
		srv.Config.Handler = e.router
		srv.Config.WriteTimeout = o.writeTimeout
		srv.Start()
		tb.Cleanup(srv.Close)
		e.url = srv.URL
	}
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

// fixtures stores users, rooms and memberships as the host platform would.
func fixtures(tb testing.TB, srv *bustest.Server) {
	tb.Helper()
	put := func(bucket, key string, m proto.Message) {
		kv, err := srv.JS.KeyValue(tb.Context(), bucket)
		require.NoError(tb, err)
		data, err := proto.Marshal(m)
		require.NoError(tb, err)
		_, err = kv.Put(tb.Context(), key, data)
		require.NoError(tb, err)
	}
	put(bus.BucketUsers, adminID, &sourcev1.User{Id: adminID, Username: "root", Email: "root@example.com", Roles: []string{"user", "admin"}, AuthTokenSha256: auth.TokenHash(adminToken)})
	put(bus.BucketUsers, admin2ID, &sourcev1.User{Id: admin2ID, Username: "root2", Roles: []string{"admin"}, AuthTokenSha256: auth.TokenHash(admin2Token)})
	put(bus.BucketUsers, userID, &sourcev1.User{Id: userID, Username: "alice", Roles: []string{"user"}, AuthTokenSha256: auth.TokenHash(userToken)})
	put(bus.BucketRooms, roomGeneral, &sourcev1.Room{Id: roomGeneral, Name: "general", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	put(bus.BucketRooms, roomPrivate, &sourcev1.Room{Id: roomPrivate, Name: "staff", Type: sourcev1.RoomType_ROOM_TYPE_PRIVATE})
	put(bus.BucketRooms, roomDirect, &sourcev1.Room{Id: roomDirect, Type: sourcev1.RoomType_ROOM_TYPE_DIRECT, Usernames: []string{"alice", "root2"}})
	put(bus.BucketMemberships, adminID+"."+roomPrivate, &sourcev1.Membership{UserId: adminID, RoomId: roomPrivate})
	put(bus.BucketMemberships, userID+"."+roomPrivate, &sourcev1.Membership{UserId: userID, RoomId: roomPrivate})
	put(bus.BucketMemberships, userID+"."+roomDirect, &sourcev1.Membership{UserId: userID, RoomId: roomDirect})
	put(bus.BucketMemberships, admin2ID+"."+roomDirect, &sourcev1.Membership{UserId: admin2ID, RoomId: roomDirect})
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
	require.NotEmpty(tb, e.url, "env has no HTTP server")
	return e.doURL(tb, method, e.url+path, c, body)
}

func (e *env) doURL(tb testing.TB, method, url string, c creds, body string) response {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(tb.Context(), method, url, rd)
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
