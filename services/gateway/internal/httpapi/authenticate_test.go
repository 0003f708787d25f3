package httpapi_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/dialect/mytracker"
	"dataport.dev/services/gateway/internal/dialect/rebilly"
	"dataport.dev/services/gateway/internal/dialect/rocketchat"
	"dataport.dev/services/gateway/internal/httpapi"
	"dataport.dev/services/gateway/internal/idempotency"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/principal"
	"dataport.dev/services/gateway/internal/quota"
	"dataport.dev/services/gateway/internal/schedule"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/links"
)

// countingTokens is auth.Service's Authenticate, counted.
type countingTokens struct {
	*auth.Service
	calls atomic.Int32
}

func (c *countingTokens) Authenticate(ctx context.Context, userID, token string) (*sourcev1.User, error) {
	c.calls.Add(1)
	return c.Service.Authenticate(ctx, userID, token)
}

// countingKeys is auth.KeyAuthenticator's Header, counted.
type countingKeys struct {
	*auth.KeyAuthenticator
	calls atomic.Int32
}

func (c *countingKeys) Header(ctx context.Context, apiKey, authorization string) (*sourcev1.User, principal.Credential, error) {
	c.calls.Add(1)
	return c.KeyAuthenticator.Header(ctx, apiKey, authorization)
}

// TestCreateAuthenticatesOnce sends a create of every dialect with an
// Idempotency-Key through the whole router (authentication, idempotency,
// quotas, the handler) and counts the credential checks: one per request,
// and none for the replay's handler, which never runs.
func TestCreateAuthenticatesOnce(t *testing.T) {
	ctx := t.Context()
	nats := bustest.Start(t)
	fixtures(t, nats)
	const apiKey = "sk_live_alice_0123456789"
	kv := func(name string) jetstream.KeyValue { return mustKV(t, nats, name) }
	sum := sha256.Sum256([]byte(apiKey))
	alice := &sourcev1.User{Id: userID, Username: "alice", Roles: []string{"user"},
		AuthTokenSha256: auth.TokenHash(userToken), ApiKeySha256: hex.EncodeToString(sum[:])}
	putProto(t, kv(bus.BucketUsers), userID, alice)
	putProto(t, kv(bus.BucketOrgMembers), userID+".acme", &sourcev1.OrganizationMembership{UserId: userID, OrganizationId: "acme", Default: true})

	jobs, err := jobstore.Open(ctx, nats.JS)
	require.NoError(t, err)
	authz, err := auth.Open(ctx, nats.JS)
	require.NoError(t, err)
	keyAuth, err := auth.NewKeyAuthenticator(kv(bus.BucketUsers), auth.KeyConfig{})
	require.NoError(t, err)
	tokens, keys := &countingTokens{Service: authz}, &countingKeys{KeyAuthenticator: keyAuth}
	limiter, err := quota.Open(ctx, nats.JS, quota.Options{MaxConcurrent: 100, RatePerMinute: 100})
	require.NoError(t, err)
	idem, err := idempotency.Open(ctx, nats.JS, idempotency.Options{})
	require.NoError(t, err)
	pub := bus.NewPublisher(nats.JS, nil)
	submitter := submit.New(jobs, pub, bustest.TaskSigner(t), nil, submit.WithAdmission(limiter))
	signer := links.New("http://gw.test", linkSecret, time.Hour, nil)
	store, err := blob.New(blob.Config{Endpoint: "127.0.0.1:1", AccessKey: "unused", SecretKey: "unused"})
	require.NoError(t, err)
	router := httpapi.New(httpapi.Config{
		Jobs: jobs, Auth: tokens, Keys: keys, Publisher: pub, Submitter: submitter,
		Blob: store, ExportBucket: exportBucket, Links: signer, Logger: slog.New(slog.DiscardHandler),
		Dialects: []httpapi.Dialect{
			rocketchat.New(rocketchat.Config{Jobs: jobs, Auth: authz, Submitter: submitter, Links: signer}),
			rebilly.New(rebilly.Config{
				Directory: authz.Directory, Jobs: jobs, JobsKV: kv(bus.BucketJobs), Schedules: schedule.NewStore(kv(bus.BucketSchedules)),
				Submitter: submitter, Links: signer, PublicURL: "http://gw.test",
			}),
			mytracker.New(mytracker.Config{
				Directory: authz.Directory, Jobs: jobs, Counters: kv(bus.BucketCounters), Submitter: submitter, Links: signer,
				Limits: mytracker.Limits{MaxRowsPerChunk: 1000, MaxBytesPerChunk: 1 << 20},
			}),
		},
		Middleware: []func(http.Handler) http.Handler{idem.Handler, limiter.Handler},
	})

	cases := []struct {
		name, path, contentType, body string
		headers                       map[string]string
		status                        int
		counter                       *atomic.Int32
	}{
		{"rocket.chat rooms.export", "/api/v1/rooms.export", "application/json",
			`{"rid": "iu7jtPAhvEeAS5tNq", "type": "file", "dateFrom": "2020-01-01", "dateTo": "2020-01-31", "format": "json"}`,
			map[string]string{"X-User-Id": adminID, "X-Auth-Token": adminToken}, http.StatusOK, &tokens.calls},
		{"rebilly data-exports", "/data-exports", "application/json", `{"name":"n","resource":"events","format":"csv"}`,
			map[string]string{"REB-APIKEY": apiKey}, http.StatusCreated, &keys.calls},
		{"mytracker create.json", "/api/raw/v1/export/create.json", "application/x-www-form-urlencoded",
			"event=payments&selectors=id,revenue&dateFrom=2020-01-01&dateTo=2020-01-31",
			map[string]string{"Authorization": "Bearer " + apiKey}, http.StatusOK, &keys.calls},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			send := func() *httptest.ResponseRecorder {
				r := httptest.NewRequestWithContext(t.Context(), http.MethodPost, c.path, strings.NewReader(c.body))
				r.Header.Set("Content-Type", c.contentType)
				r.Header.Set("Idempotency-Key", "once-"+c.name)
				for k, v := range c.headers {
					r.Header.Set(k, v)
				}
				w := httptest.NewRecorder()
				router.ServeHTTP(w, r)
				return w
			}
			before := c.counter.Load()
			first := send()
			require.Equal(t, c.status, first.Code, "%s", first.Body)
			assert.EqualValues(t, 1, c.counter.Load()-before, "one credential check for idempotency, quota and handler")

			replay := send()
			assert.Equal(t, c.status, replay.Code)
			assert.Equal(t, first.Body.String(), replay.Body.String(), "the replay is the stored answer")
			assert.EqualValues(t, 2, c.counter.Load()-before, "a replay is authenticated once too")
		})
	}
}

func mustKV(tb testing.TB, srv *bustest.Server, name string) jetstream.KeyValue {
	tb.Helper()
	kv, err := srv.JS.KeyValue(tb.Context(), name)
	require.NoError(tb, err)
	return kv
}

func putProto(tb testing.TB, kv jetstream.KeyValue, key string, m proto.Message) {
	tb.Helper()
	data, err := proto.Marshal(m)
	require.NoError(tb, err)
	_, err = kv.Put(tb.Context(), key, data)
	require.NoError(tb, err)
}
