package quota_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/services/gateway/internal/dialect"
	"dataport.dev/services/gateway/internal/quota"
)

func byTestUser(r *http.Request) (dialect.Caller, bool, error) {
	u := r.Header.Get("X-Test-User")
	if u == "" {
		return dialect.Caller{}, false, nil
	}
	return dialect.Caller{Scope: "user:" + u, UserID: u}, true, nil
}

// clock is a settable fake clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

func do(t *testing.T, h http.Handler, method, path, user string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, path, strings.NewReader("{}"))
	if user != "" {
		req.Header.Set("X-Test-User", user)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestRateLimitPerCaller(t *testing.T) {
	clk := &clock{now: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)}
	h := quota.New(quota.Options{RatePerMinute: 3, Identify: byTestUser, Now: clk.Now}).Handler(ok)

	for i := range 3 {
		assert.Equal(t, http.StatusOK, do(t, h, http.MethodPost, "/api/v1/rooms.export", "alice").Code, "request %d", i)
	}
	rec := do(t, h, http.MethodPost, "/api/v1/rooms.export", "alice")
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.Equal(t, "20", rec.Header().Get("Retry-After"), "one token comes back every 20 s at 3 per minute")
	var body map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
	assert.Equal(t, false, body["success"], "Rocket.Chat's error shape")
	assert.Contains(t, body["error"], "3 per minute")

	assert.Equal(t, http.StatusOK, do(t, h, http.MethodPost, "/api/v1/rooms.export", "bob").Code, "callers have their own buckets")
	assert.Equal(t, http.StatusOK, do(t, h, http.MethodGet, "/v1/exports", "alice").Code, "reads are not limited")

	clk.Add(20 * time.Second)
	assert.Equal(t, http.StatusOK, do(t, h, http.MethodPost, "/api/v1/rooms.export", "alice").Code, "a token came back")
	assert.Equal(t, http.StatusTooManyRequests, do(t, h, http.MethodPost, "/api/v1/rooms.export", "alice").Code)
}

func TestConcurrentExportsPerUser(t *testing.T) {
	active := map[string]int{"alice": 2, "bob": 1}
	counter := quota.ActiveCounterFunc(func(_ context.Context, owner string) (int, error) { return active[owner], nil })
	h := quota.New(quota.Options{MaxConcurrent: 2, Identify: byTestUser, Active: counter}).Handler(ok)

	cases := []struct {
		name, path, user string
		status           int
		shape            func(t *testing.T, b map[string]any)
	}{
		{"rocket.chat at the limit", "/api/v1/rooms.export", "alice", http.StatusTooManyRequests, func(t *testing.T, b map[string]any) {
			assert.Equal(t, false, b["success"])
			assert.Contains(t, b["error"], "at most 2")
		}},
		{"rebilly at the limit", "/experimental/data-exports", "alice", http.StatusTooManyRequests, func(t *testing.T, b map[string]any) {
			assert.EqualValues(t, 429, b["status"])
			assert.Contains(t, b["detail"], "at most 2")
		}},
		{"mytracker at the limit", "/api/raw/v1/export/create.json", "alice", http.StatusTooManyRequests, func(t *testing.T, b map[string]any) {
			assert.EqualValues(t, 429, b["code"])
			assert.Contains(t, b["data"].(map[string]any)["error"].(map[string]any)["detail"], "at most 2")
		}},
		{"under the limit", "/api/v1/rooms.export", "bob", http.StatusOK, nil},
		{"no credentials: the handler decides", "/api/v1/rooms.export", "", http.StatusOK, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := do(t, h, http.MethodPost, c.path, c.user)
			require.Equal(t, c.status, rec.Code)
			if c.shape == nil {
				return
			}
			assert.Equal(t, "30", rec.Header().Get("Retry-After"))
			var b map[string]any
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &b))
			c.shape(t, b)
		})
	}
}
