package console_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/console"
	gt "dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/shared/bus"
)

// browser sends requests as a browser on the console's page would: with
// the session cookie once signed in, and Origin and the CSRF token when
// asked to.
type browser struct {
	t      *testing.T
	env    *gt.Env
	cookie *http.Cookie
	csrf   string
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(a.body, &m), "body: %s", a.body)
	return m
}

// send sends method path with body (JSON when not empty) and the given
// headers on top of the session cookie.
func (b *browser) send(method, path, body string, header map[string]string) answer {
	b.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(b.t.Context(), method, b.env.URL+path, rd)
	require.NoError(b.t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if b.cookie != nil {
		req.AddCookie(b.cookie)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	require.NoError(b.t, err)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	require.NoError(b.t, err)
	return answer{status: resp.StatusCode, header: resp.Header, body: data}
}

// sameOrigin is what a fetch from the console's own page carries.
func (b *browser) sameOrigin() map[string]string {
	return map[string]string{"Origin": b.env.URL, "Sec-Fetch-Site": "same-origin", console.HeaderCSRF: b.csrf}
}

// signIn signs in with body and keeps the session's cookie and token.
func (b *browser) signIn(body string) answer {
	b.t.Helper()
	a := b.send(http.MethodPost, "/console/api/session", body, map[string]string{"Origin": b.env.URL})
	if a.status == http.StatusOK {
		resp := http.Response{Header: a.header}
		cookies := resp.Cookies()
		require.Len(b.t, cookies, 1)
		b.cookie = &http.Cookie{Name: cookies[0].Name, Value: cookies[0].Value}
		b.csrf, _ = a.json(b.t)["csrfToken"].(string)
	}
	return a
}

func newBrowser(t *testing.T, env *gt.Env) *browser { return &browser{t: t, env: env} }

func tokenBody(id, token string) string {
	return `{"userId":"` + id + `","token":"` + token + `"}`
}

// The seeded user may not export rooms; every user may export their own data.
const myDataExport = `{"kind":"user-data"}`

func TestSignInSetsAnHttpOnlyStrictCookieAndKeepsNoCredential(t *testing.T) {
	env := gt.New(t, gt.Options{})
	b := newBrowser(t, env)
	a := b.signIn(tokenBody(gt.UserID, gt.UserToken))
	require.Equal(t, http.StatusOK, a.status, "%s", a.body)

	resp := http.Response{Header: a.header}
	ck := resp.Cookies()[0]
	assert.Equal(t, "dataport_session", ck.Name, "no __Host- prefix over plain http")
	assert.True(t, ck.HttpOnly)
	assert.Equal(t, http.SameSiteStrictMode, ck.SameSite)
	assert.False(t, ck.Secure, "the gateway is reached over http here")
	assert.Equal(t, "/", ck.Path)
	assert.Equal(t, int(console.DefaultSessionTTL/time.Second), ck.MaxAge)
	assert.Equal(t, "no-store", a.header.Get("Cache-Control"))
	assert.NotContains(t, string(a.body), gt.UserToken)
	assert.NotContains(t, string(a.body), ck.Value, "the session id is in the cookie only")

	got := a.json(t)
	assert.Equal(t, gt.UserID, got["userId"])
	assert.Equal(t, "access-token", got["credential"])
	assert.Len(t, b.csrf, 43, "32 random bytes, base64url")

	// The bucket holds the session under the hash of its id, without the
	// id or the token.
	kv := env.KV(t, console.BucketSessions)
	sum := sha256.Sum256([]byte(ck.Value))
	e, err := kv.Get(t.Context(), hex.EncodeToString(sum[:]))
	require.NoError(t, err)
	assert.NotContains(t, string(e.Value()), ck.Value)
	assert.NotContains(t, string(e.Value()), gt.UserToken)
	st, err := kv.Status(t.Context())
	require.NoError(t, err)
	assert.Equal(t, console.DefaultSessionTTL, st.TTL())

	// The session reads the native API and the console's session view.
	list := b.send(http.MethodGet, "/v1/exports", "", nil)
	assert.Equal(t, http.StatusOK, list.status, "%s", list.body)
	sess := b.send(http.MethodGet, "/console/api/session", "", nil)
	require.Equal(t, http.StatusOK, sess.status)
	assert.Equal(t, b.csrf, sess.json(t)["csrfToken"])
}

func TestSignInWithAnAPIKey(t *testing.T) {
	env := gt.New(t, gt.Options{})
	b := newBrowser(t, env)
	a := b.signIn(`{"apiKey":"` + gt.UserAPIKey + `"}`)
	require.Equal(t, http.StatusOK, a.status, "%s", a.body)
	assert.Equal(t, "api-key", a.json(t)["credential"])
	created := b.send(http.MethodPost, "/v1/exports", myDataExport, b.sameOrigin())
	require.Equal(t, http.StatusCreated, created.status, "%s", created.body)
	assert.Equal(t, gt.UserID, env.Job(t, created.json(t)["id"].(string)).GetOwnerId())
}

func TestSignInRefusals(t *testing.T) {
	env := gt.New(t, gt.Options{})
	cases := []struct {
		name   string
		body   string
		header map[string]string
		status int
	}{
		{"wrong token", tokenBody(gt.UserID, "nope"), map[string]string{"Origin": env.URL}, http.StatusUnauthorized},
		{"unknown user", tokenBody("NoSuchUser0000001", gt.UserToken), map[string]string{"Origin": env.URL}, http.StatusUnauthorized},
		{"wrong API key", `{"apiKey":"sk_nope"}`, map[string]string{"Origin": env.URL}, http.StatusUnauthorized},
		{"both credentials", `{"userId":"` + gt.UserID + `","token":"` + gt.UserToken + `","apiKey":"` + gt.UserAPIKey + `"}`, map[string]string{"Origin": env.URL}, http.StatusBadRequest},
		{"no credential", `{}`, map[string]string{"Origin": env.URL}, http.StatusBadRequest},
		{"unknown field", `{"user":"x"}`, map[string]string{"Origin": env.URL}, http.StatusBadRequest},
		// Login CSRF: another site must not sign a visitor in to its
		// own account.
		{"no Origin", tokenBody(gt.UserID, gt.UserToken), nil, http.StatusForbidden},
		{"another Origin", tokenBody(gt.UserID, gt.UserToken), map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"cross-site fetch", tokenBody(gt.UserID, gt.UserToken), map[string]string{"Origin": env.URL, "Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"a form post", tokenBody(gt.UserID, gt.UserToken), map[string]string{"Origin": env.URL, "Content-Type": "application/x-www-form-urlencoded"}, http.StatusUnsupportedMediaType},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBrowser(t, env)
			a := b.send(http.MethodPost, "/console/api/session", tc.body, tc.header)
			assert.Equal(t, tc.status, a.status, "%s", a.body)
			assert.Empty(t, a.header.Values("Set-Cookie"))
			assert.Equal(t, "application/problem+json", a.header.Get("Content-Type"))
		})
	}
}

func TestStateChangesNeedTheCSRFTokenAndTheOrigin(t *testing.T) {
	env := gt.New(t, gt.Options{})
	b := newBrowser(t, env)
	require.Equal(t, http.StatusOK, b.signIn(tokenBody(gt.UserID, gt.UserToken)).status)

	refused := []struct {
		name   string
		header map[string]string
	}{
		{"nothing", nil},
		{"no token", map[string]string{"Origin": env.URL}},
		{"wrong token", map[string]string{"Origin": env.URL, console.HeaderCSRF: strings.Repeat("A", 43)}},
		{"no Origin", map[string]string{console.HeaderCSRF: b.csrf}},
		{"another Origin", map[string]string{"Origin": "http://evil.example", console.HeaderCSRF: b.csrf}},
		{"same-site but not same-origin", map[string]string{"Origin": env.URL, "Sec-Fetch-Site": "same-site", console.HeaderCSRF: b.csrf}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			a := b.send(http.MethodPost, "/v1/exports", myDataExport, tc.header)
			assert.Equal(t, http.StatusForbidden, a.status, "%s", a.body)
			assert.Contains(t, a.json(t)["detail"], "CSRF check failed")
		})
	}
	assert.Zero(t, env.JobCount(t), "no refused request created a job")

	created := b.send(http.MethodPost, "/v1/exports", myDataExport, b.sameOrigin())
	require.Equal(t, http.StatusCreated, created.status, "%s", created.body)
	id := created.json(t)["id"].(string)
	assert.Equal(t, gt.UserID, env.Job(t, id).GetOwnerId())

	assert.Equal(t, http.StatusForbidden, b.send(http.MethodPost, "/v1/exports/"+id+"/cancel", "", nil).status)
	canceled := b.send(http.MethodPost, "/v1/exports/"+id+"/cancel", "", b.sameOrigin())
	require.Equal(t, http.StatusOK, canceled.status, "%s", canceled.body)
	assert.Equal(t, "canceled", canceled.json(t)["state"])
}

func TestTheCookieActsOnNativeRoutesOnly(t *testing.T) {
	env := gt.New(t, gt.Options{})
	b := newBrowser(t, env)
	require.Equal(t, http.StatusOK, b.signIn(tokenBody(gt.UserID, gt.UserToken)).status)

	// A Rocket.Chat GET creates an export: a cookie a cross-site link
	// might carry must never authenticate it.
	rc := b.send(http.MethodGet, "/api/v1/users.requestDataDownload", "", b.sameOrigin())
	assert.Equal(t, http.StatusUnauthorized, rc.status, "%s", rc.body)
	reb := b.send(http.MethodGet, "/data-exports", "", b.sameOrigin())
	assert.Equal(t, http.StatusUnauthorized, reb.status, "%s", reb.body)
	assert.Zero(t, env.JobCount(t))

	// Credential headers win over the cookie.
	created := b.send(http.MethodPost, "/v1/exports", `{"kind":"room","room":{"id":"`+gt.RoomGeneral+`"}}`,
		map[string]string{"X-User-Id": gt.AdminID, "X-Auth-Token": gt.AdminToken})
	require.Equal(t, http.StatusCreated, created.status, "%s", created.body)
	assert.Equal(t, gt.AdminID, env.Job(t, created.json(t)["id"].(string)).GetOwnerId())
}

func TestSignOutEndsTheSessionOnTheServer(t *testing.T) {
	env := gt.New(t, gt.Options{})
	b := newBrowser(t, env)
	require.Equal(t, http.StatusOK, b.signIn(tokenBody(gt.UserID, gt.UserToken)).status)

	assert.Equal(t, http.StatusForbidden, b.send(http.MethodDelete, "/console/api/session", "", nil).status)
	out := b.send(http.MethodDelete, "/console/api/session", "", b.sameOrigin())
	require.Equal(t, http.StatusNoContent, out.status, "%s", out.body)
	resp := http.Response{Header: out.header}
	require.Len(t, resp.Cookies(), 1)
	assert.Negative(t, resp.Cookies()[0].MaxAge, "the cookie is cleared")

	// The old cookie, replayed, is worth nothing.
	assert.Equal(t, http.StatusUnauthorized, b.send(http.MethodGet, "/v1/exports", "", nil).status)
	assert.Equal(t, http.StatusUnauthorized, b.send(http.MethodGet, "/console/api/session", "", nil).status)
	keys, err := env.KV(t, console.BucketSessions).ListKeys(t.Context())
	require.NoError(t, err)
	n := 0
	for range keys.Keys() {
		n++
	}
	assert.Zero(t, n)
}

func TestSessionsEnd(t *testing.T) {
	t.Run("after their lifetime", func(t *testing.T) {
		env := gt.New(t, gt.Options{})
		b := newBrowser(t, env)
		require.Equal(t, http.StatusOK, b.signIn(tokenBody(gt.UserID, gt.UserToken)).status)
		env.Clock.Advance(console.DefaultSessionTTL + time.Second)
		assert.Equal(t, http.StatusUnauthorized, b.send(http.MethodGet, "/v1/exports", "", nil).status)
	})
	t.Run("when the token is rotated", func(t *testing.T) {
		env := gt.New(t, gt.Options{})
		b := newBrowser(t, env)
		require.Equal(t, http.StatusOK, b.signIn(tokenBody(gt.UserID, gt.UserToken)).status)
		u, found, err := env.Auth.User(t.Context(), gt.UserID)
		require.NoError(t, err)
		require.True(t, found)
		u.AuthTokenSha256 = auth.TokenHash("a-new-token")
		env.Put(t, bus.BucketUsers, gt.UserID, u)
		assert.Equal(t, http.StatusUnauthorized, b.send(http.MethodGet, "/v1/exports", "", nil).status)
	})
	t.Run("a forged cookie", func(t *testing.T) {
		env := gt.New(t, gt.Options{})
		b := newBrowser(t, env)
		b.cookie = &http.Cookie{Name: "dataport_session", Value: strings.Repeat("x", 43)}
		assert.Equal(t, http.StatusUnauthorized, b.send(http.MethodGet, "/v1/exports", "", nil).status)
		assert.Equal(t, http.StatusUnauthorized, b.send(http.MethodPost, "/v1/exports", myDataExport, b.sameOrigin()).status)
	})
}

// EventSource sends no headers: the cookie alone opens the stream.
func TestTheCookieOpensTheEventStream(t *testing.T) {
	env := gt.New(t, gt.Options{})
	b := newBrowser(t, env)
	require.Equal(t, http.StatusOK, b.signIn(tokenBody(gt.UserID, gt.UserToken)).status)
	created := b.send(http.MethodPost, "/v1/exports", myDataExport, b.sameOrigin())
	require.Equal(t, http.StatusCreated, created.status, "%s", created.body)
	id := created.json(t)["id"].(string)

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, env.URL+"/v1/exports/events", nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/event-stream")
	req.AddCookie(b.cookie)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			assert.Contains(t, data, id)
			return
		}
	}
	t.Fatalf("no event before the stream ended: %v", sc.Err())
}

func TestPagesCarryAStrictPolicy(t *testing.T) {
	env := gt.New(t, gt.Options{})
	b := newBrowser(t, env)
	for _, tc := range []struct{ path, contentType string }{
		{"/console/", "text/html"},
		{"/console/app.js", "javascript"},
		{"/console/app.css", "text/css"},
		{"/console/favicon.svg", "image/svg+xml"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			a := b.send(http.MethodGet, tc.path, "", nil)
			require.Equal(t, http.StatusOK, a.status)
			assert.Contains(t, a.header.Get("Content-Type"), tc.contentType)
			csp := a.header.Get("Content-Security-Policy")
			assert.Contains(t, csp, "default-src 'self'")
			assert.Contains(t, csp, "frame-ancestors 'none'")
			assert.NotContains(t, csp, "unsafe-inline")
			assert.Equal(t, "nosniff", a.header.Get("X-Content-Type-Options"))
		})
	}
	page := b.send(http.MethodGet, "/console/", "", nil)
	assert.NotContains(t, string(page.body), "<script>", "no inline script")
	assert.NotContains(t, string(page.body), "style=", "no inline style")
	assert.NotContains(t, string(page.body), "http", "no external resource")

	redirect := b.send(http.MethodGet, "/console", "", nil)
	assert.Equal(t, http.StatusMovedPermanently, redirect.status)
	assert.Equal(t, "/console/", redirect.header.Get("Location"))
	assert.Equal(t, http.StatusNotFound, b.send(http.MethodGet, "/console/nothing.js", "", nil).status)
}
