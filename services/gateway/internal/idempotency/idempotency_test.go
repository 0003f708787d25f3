package idempotency_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/services/gateway/internal/dialect"
	"dataport.dev/services/gateway/internal/idempotency"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

// byTestUser identifies callers by a header, standing in for real
// authentication, which is not what these tests are about.
func byTestUser(r *http.Request) (dialect.Caller, bool, error) {
	u := r.Header.Get("X-Test-User")
	if u == "" {
		return dialect.Caller{}, false, nil
	}
	return dialect.Caller{Scope: "user:" + u, UserID: u}, true, nil
}

// jobMaker answers every create with a fresh job id, like a dialect
// handler, and counts the jobs it made.
type jobMaker struct {
	made    atomic.Int64
	status  atomic.Int64
	release chan struct{}
}

func (j *jobMaker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if j.release != nil {
		<-j.release
	}
	n := j.made.Add(1)
	status := int(j.status.Load())
	if status == 0 {
		status = http.StatusOK
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"success":true,"exportId":"job-%d"}`, n)
}

type env struct {
	srv  *httptest.Server
	jobs *jobMaker
	kv   jetstream.KeyValue
}

func newEnv(t *testing.T, wait time.Duration, release chan struct{}) *env {
	t.Helper()
	nats := bustest.Start(t)
	m, err := idempotency.Open(t.Context(), nats.JS, idempotency.Options{Identify: byTestUser, Wait: wait})
	require.NoError(t, err)
	jobs := &jobMaker{release: release}
	srv := httptest.NewServer(m.Handler(jobs))
	t.Cleanup(srv.Close)
	kv, err := nats.JS.KeyValue(t.Context(), bus.BucketIdempotency)
	require.NoError(t, err)
	return &env{srv: srv, jobs: jobs, kv: kv}
}

type answer struct {
	status   int
	body     string
	replayed string
	retry    string
}

func (e *env) send(t *testing.T, method, path, user, key, body string) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, e.srv.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if user != "" {
		req.Header.Set("X-Test-User", user)
	}
	if key != "" {
		req.Header.Set(idempotency.Header, key)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{resp.StatusCode, strings.TrimSpace(string(b)), resp.Header.Get(idempotency.ReplayedHeader), resp.Header.Get("Retry-After")}
}

// waitForClaim waits until the first request has claimed its key.
func (e *env) waitForClaim(t *testing.T) {
	t.Helper()
	require.Eventually(t, func() bool {
		keys, err := e.kv.ListKeys(t.Context())
		if err != nil {
			return false
		}
		n := 0
		for range keys.Keys() {
			n++
		}
		return n > 0
	}, 5*time.Second, 10*time.Millisecond)
}

const (
	rcPath   = "/api/v1/rooms.export"
	rcBody   = `{"rid":"GENERAL","type":"file","format":"json"}`
	rcOther  = `{"rid":"GENERAL","type":"file","format":"html"}`
	rebPath  = "/experimental/data-exports"
	rebBody  = `{"name":"tx","resource":"transactions","format":"csv"}`
	rebOther = `{"name":"tx","resource":"transactions","format":"json"}`
)

func TestSameKeySameBodyReplaysTheFirstJob(t *testing.T) {
	e := newEnv(t, 0, nil)
	first := e.send(t, http.MethodPost, rcPath, "alice", "k-1", rcBody)
	require.Equal(t, http.StatusOK, first.status)
	assert.Empty(t, first.replayed)

	again := e.send(t, http.MethodPost, rcPath, "alice", "k-1", rcBody)
	assert.Equal(t, first.status, again.status)
	assert.JSONEq(t, first.body, again.body, "the retry names the same job")
	assert.Equal(t, "true", again.replayed)
	assert.EqualValues(t, 1, e.jobs.made.Load(), "one job for two requests with one key")

	// Another key, another user with the same key, or no key: new jobs.
	e.send(t, http.MethodPost, rcPath, "alice", "k-2", rcBody)
	e.send(t, http.MethodPost, rcPath, "bob", "k-1", rcBody)
	e.send(t, http.MethodPost, rcPath, "alice", "", rcBody)
	e.send(t, http.MethodPost, rcPath, "alice", "", rcBody)
	assert.EqualValues(t, 5, e.jobs.made.Load())
}

func TestSameKeyDifferentBodyIs422InTheDialectsShape(t *testing.T) {
	e := newEnv(t, 0, nil)
	cases := []struct {
		name, path, body, other string
		check                   func(t *testing.T, body map[string]any)
	}{
		{"rocket.chat", rcPath, rcBody, rcOther, func(t *testing.T, b map[string]any) {
			assert.Equal(t, false, b["success"])
			assert.Contains(t, b["error"], "Idempotency-Key")
		}},
		{"rebilly", rebPath, rebBody, rebOther, func(t *testing.T, b map[string]any) {
			assert.EqualValues(t, 422, b["status"])
			assert.Contains(t, b["detail"], "Idempotency-Key")
		}},
		{"mytracker", "/api/raw/v1/export/create.json", `{"a":1}`, `{"a":2}`, func(t *testing.T, b map[string]any) {
			assert.EqualValues(t, 422, b["code"])
			assert.Contains(t, b["data"].(map[string]any)["error"].(map[string]any)["detail"], "Idempotency-Key")
		}},
		{"native", "/v1/exports", `{"a":1}`, `{"a":2}`, func(t *testing.T, b map[string]any) {
			assert.EqualValues(t, 422, b["status"])
			assert.Contains(t, b["detail"], "Idempotency-Key")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			key := "key-" + c.name
			require.Equal(t, http.StatusOK, e.send(t, http.MethodPost, c.path, "alice", key, c.body).status)
			got := e.send(t, http.MethodPost, c.path, "alice", key, c.other)
			assert.Equal(t, http.StatusUnprocessableEntity, got.status)
			var b map[string]any
			require.NoError(t, json.Unmarshal([]byte(got.body), &b), got.body)
			c.check(t, b)
		})
	}
}

func TestRetryableAnswersReleaseTheKey(t *testing.T) {
	e := newEnv(t, 0, nil)
	e.jobs.status.Store(http.StatusServiceUnavailable)
	assert.Equal(t, http.StatusServiceUnavailable, e.send(t, http.MethodPost, rcPath, "alice", "k", rcBody).status)
	e.jobs.status.Store(http.StatusOK)
	got := e.send(t, http.MethodPost, rcPath, "alice", "k", rcBody)
	assert.Equal(t, http.StatusOK, got.status)
	assert.Empty(t, got.replayed, "a failed first try is not replayed")
	assert.EqualValues(t, 2, e.jobs.made.Load())
}

func TestOtherRequestsPassThrough(t *testing.T) {
	e := newEnv(t, 0, nil)
	for range 2 {
		e.send(t, http.MethodGet, "/v1/exports", "alice", "k", "")
		e.send(t, http.MethodPost, "/v1/exports/abc/cancel", "alice", "k", "")
		e.send(t, http.MethodPost, rcPath, "", "k", rcBody) // no credentials
	}
	assert.EqualValues(t, 6, e.jobs.made.Load())
}

func TestConcurrentDuplicatesGetOneJob(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, 10*time.Second, release)
	var wg sync.WaitGroup
	answers := make([]answer, 4)
	for i := range answers {
		wg.Go(func() { answers[i] = e.send(t, http.MethodPost, rcPath, "alice", "same", rcBody) })
	}
	e.waitForClaim(t)
	close(release)
	wg.Wait()
	for _, a := range answers {
		assert.Equal(t, http.StatusOK, a.status)
		assert.JSONEq(t, `{"success":true,"exportId":"job-1"}`, a.body)
	}
	assert.EqualValues(t, 1, e.jobs.made.Load())
}

func TestConcurrentDuplicateGives409WhenTheFirstTakesTooLong(t *testing.T) {
	release := make(chan struct{})
	e := newEnv(t, 300*time.Millisecond, release)
	done := make(chan answer)
	go func() { done <- e.send(t, http.MethodPost, rcPath, "alice", "slow", rcBody) }()
	e.waitForClaim(t)
	a := e.send(t, http.MethodPost, rcPath, "alice", "slow", rcBody)
	assert.Equal(t, http.StatusConflict, a.status)
	assert.Equal(t, "1", a.retry)
	close(release)
	assert.Equal(t, http.StatusOK, (<-done).status)
	assert.EqualValues(t, 1, e.jobs.made.Load())
}
