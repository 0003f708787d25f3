package dialect_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/dialect"
	"dataport.dev/services/gateway/internal/principal"
)

func TestIsCreate(t *testing.T) {
	cases := []struct {
		method, path string
		want         bool
	}{
		{http.MethodPost, "/api/v1/rooms.export", true},
		{http.MethodGet, "/api/v1/users.requestDataDownload", true},
		{http.MethodGet, "/api/v1/rooms.export", false},
		{http.MethodPost, "/experimental/data-exports", true},
		{http.MethodPost, "/experimental/data-exports/", true},
		{http.MethodPost, "/experimental/organizations/org1/data-exports/", true},
		{http.MethodPost, "/organizations/org1/data-exports", true},
		{http.MethodPut, "/organizations/org1/data-exports/abc", true},
		{http.MethodPut, "/experimental/data-exports/abc", true},
		{http.MethodPut, "/experimental/data-exports", false},
		{http.MethodGet, "/experimental/data-exports/abc", false},
		{http.MethodDelete, "/experimental/data-exports/abc", false},
		{http.MethodPost, "/api/raw/v1/export/create.json", true},
		{http.MethodPost, "/api/raw/v1/export/cancel.json", false},
		{http.MethodPost, "/v1/exports", true},
		{http.MethodPost, "/v1/exports/abc/cancel", false},
		{http.MethodGet, "/v1/exports", false},
	}
	for _, c := range cases {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			assert.Equal(t, c.want, dialect.IsCreate(httptest.NewRequest(c.method, c.path, nil)))
		})
	}
}

func TestWriteErrorUsesTheDialectsShape(t *testing.T) {
	cases := []struct {
		path string
		want map[string]any
	}{
		{"/api/v1/rooms.export", map[string]any{"success": false, "error": "slow down [error-too-many-requests]", "errorType": "error-too-many-requests"}},
		{"/experimental/data-exports", map[string]any{
			"type": "https://www.rebilly.com/catalog/all/section/errors/too-many-requests", "title": "Too Many Requests",
			"status": float64(429), "detail": "slow down", "error": "Too Many Requests", "details": []any{"slow down"}}},
		{"/api/raw/v1/export/create.json", map[string]any{"code": float64(429), "message": "Too Many Requests",
			"data": map[string]any{"error": map[string]any{"detail": "slow down"}}}},
		{"/v1/exports", map[string]any{"type": "about:blank", "title": "Too Many Requests", "status": float64(429), "detail": "slow down"}},
	}
	for _, c := range cases {
		t.Run(c.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			dialect.WriteError(rec, httptest.NewRequest(http.MethodPost, c.path, nil), http.StatusTooManyRequests, "slow down")
			assert.Equal(t, http.StatusTooManyRequests, rec.Code)
			assert.Contains(t, rec.Header().Get("Content-Type"), "json")
			var got map[string]any
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
			assert.Equal(t, c.want, got)
		})
	}
}

// fakeAuth is both authenticators over a fixed table; the credential
// "outage" fails as an unreadable users bucket would.
type fakeAuth map[string]string // credential -> user id

var errOutage = errors.New("users bucket unavailable")

func (f fakeAuth) Authenticate(_ context.Context, id, token string) (*sourcev1.User, error) {
	if token == "outage" {
		return nil, errOutage
	}
	if f[id+":"+token] != "" {
		return &sourcev1.User{Id: f[id+":"+token]}, nil
	}
	return nil, auth.ErrUnauthenticated
}

func (f fakeAuth) Header(_ context.Context, apiKey, authorization string) (*sourcev1.User, principal.Credential, error) {
	kind := principal.APIKey
	if apiKey == "" && strings.Count(authorization, ".") == 2 {
		kind = principal.JWT
	}
	if u := f[apiKey+authorization]; u != "" {
		return &sourcev1.User{Id: u}, kind, nil
	}
	return nil, 0, auth.ErrUnauthenticated
}

// authenticated runs r through Authenticate and returns the context the
// handler saw.
func authenticated(a fakeAuth, r *http.Request) context.Context {
	var ctx context.Context
	dialect.Authenticate(a, a)(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		ctx = r.Context()
	})).ServeHTTP(httptest.NewRecorder(), r)
	return ctx
}

func TestAuthenticate(t *testing.T) {
	users := fakeAuth{"u1:tok": "u1", "key-2": "u2", "Bearer a.b.c": "u3"}
	cases := []struct {
		name    string
		path    string
		headers map[string]string
		user    string
		kind    principal.Credential
		err     error
	}{
		{"access token", "/api/v1/rooms.export", map[string]string{"X-User-Id": "u1", "X-Auth-Token": "tok"}, "u1", principal.AccessToken, nil},
		{"api key", "/data-exports", map[string]string{"REB-APIKEY": "key-2"}, "u2", principal.APIKey, nil},
		{"jwt on mytracker", "/api/raw/v1/export/get.json", map[string]string{"Authorization": "Bearer a.b.c"}, "u3", principal.JWT, nil},
		{"wrong token", "/v1/exports", map[string]string{"X-User-Id": "u1", "X-Auth-Token": "nope"}, "", 0, principal.ErrUnauthenticated},
		{"no credentials", "/v1/exports", nil, "", 0, principal.ErrUnauthenticated},
		{"another dialect's credential", "/v1/exports", map[string]string{"REB-APIKEY": "key-2"}, "", 0, principal.ErrUnauthenticated},
		{"outage", "/v1/exports", map[string]string{"X-User-Id": "u1", "X-Auth-Token": "outage"}, "", 0, errOutage},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, c.path, nil)
			for k, v := range c.headers {
				r.Header.Set(k, v)
			}
			p, err := principal.From(authenticated(users, r))
			if c.err != nil {
				assert.ErrorIs(t, err, c.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, c.user, p.User.GetId())
			assert.Equal(t, c.kind, p.Credential)
		})
	}
}

func TestIdentity(t *testing.T) {
	users := fakeAuth{"u1:tok": "u1", "key-2": "u2", "Bearer key-3": "u3", "Bearer key-2": "u2"}
	identify := func(r *http.Request) (dialect.Caller, bool, error) {
		return dialect.Identity(r.WithContext(authenticated(users, r)))
	}
	rcToken := map[string]string{"X-User-Id": "u1", "X-Auth-Token": "tok"}
	with := func(a, b map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range a {
			out[k] = v
		}
		for k, v := range b {
			out[k] = v
		}
		return out
	}
	cases := []struct {
		name      string
		path      string
		headers   map[string]string
		ok        bool
		principal string
		scope     string
		userID    string
	}{
		{"rocket.chat token", "/api/v1/rooms.export", rcToken, true, "user:u1", "user:u1", "u1"},
		{"native token", "/v1/exports", rcToken, true, "user:u1", "user:u1", "u1"},
		{"api key", "/experimental/data-exports", map[string]string{"REB-APIKEY": "key-2"}, true, "user:u2", "user:u2", "u2"},
		{"bearer on rebilly", "/data-exports", map[string]string{"Authorization": "Bearer key-2"}, true, "user:u2", "user:u2", "u2"},
		{"api key in an organization: org in the idempotency scope, not in the principal", "/experimental/organizations/acme/data-exports",
			map[string]string{"REB-APIKEY": "key-2"}, true, "user:u2", "user:u2/org:acme", "u2"},
		{"rebilly route ignores Rocket.Chat headers", "/experimental/organizations/acme/data-exports/x",
			with(rcToken, map[string]string{"REB-APIKEY": "key-2"}), true, "user:u2", "user:u2/org:acme", "u2"},
		{"rebilly route with only Rocket.Chat headers has no credential", "/experimental/data-exports", rcToken, false, "", "", ""},
		{"bearer on mytracker", "/api/raw/v1/export/create.json", map[string]string{"Authorization": "Bearer key-3"}, true, "user:u3", "user:u3", "u3"},
		{"mytracker ignores REB-APIKEY and Rocket.Chat headers", "/api/raw/v1/export/create.json",
			with(rcToken, map[string]string{"REB-APIKEY": "key-2", "Authorization": "Bearer key-3"}), true, "user:u3", "user:u3", "u3"},
		{"rocket.chat route ignores API keys", "/api/v1/rooms.export", map[string]string{"REB-APIKEY": "key-2"}, false, "", "", ""},
		{"rocket.chat ignores /organizations/ in its path", "/api/v1/organizations/acme/x", rcToken, true, "user:u1", "user:u1", "u1"},
		{"unknown key: scoped by its hash, no user", "/experimental/data-exports", map[string]string{"REB-APIKEY": "wrong"}, true, "cred:", "cred:", ""},
		{"no credentials", "/api/v1/rooms.export", nil, false, "", "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, c.path, nil)
			for k, v := range c.headers {
				r.Header.Set(k, v)
			}
			got, ok, err := identify(r)
			require.NoError(t, err)
			assert.Equal(t, c.ok, ok)
			if c.principal == "cred:" {
				assert.True(t, strings.HasPrefix(got.Principal, "cred:"), "principal %q", got.Principal)
				assert.Equal(t, got.Principal, got.Scope)
			} else {
				assert.Equal(t, c.principal, got.Principal)
				assert.Equal(t, c.scope, got.Scope)
			}
			assert.Equal(t, c.userID, got.UserID)
		})
	}

	// Credentials that could not be checked are an error, not a caller.
	r := httptest.NewRequest(http.MethodPost, "/v1/exports", nil)
	r.Header.Set("X-User-Id", "u1")
	r.Header.Set("X-Auth-Token", "outage")
	_, _, err := identify(r)
	assert.ErrorIs(t, err, errOutage)

	// A wrong credential of another dialect does not change the hash.
	hashOf := func(h map[string]string) string {
		r := httptest.NewRequest(http.MethodPost, "/experimental/data-exports", nil)
		for k, v := range h {
			r.Header.Set(k, v)
		}
		got, _, err := identify(r)
		require.NoError(t, err)
		return got.Principal
	}
	assert.Equal(t, hashOf(map[string]string{"REB-APIKEY": "wrong"}),
		hashOf(map[string]string{"REB-APIKEY": "wrong", "X-User-Id": "u9", "X-Auth-Token": "random"}))
}
