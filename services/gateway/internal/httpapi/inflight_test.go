package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/services/gateway/internal/httpapi"
)

// slowRoutes is a dialect whose routes, one under each dialect's prefix,
// hold their requests until released.
type slowRoutes struct {
	entered chan struct{}
	release chan struct{}
	now     atomic.Int64 // requests inside a handler
	most    atomic.Int64
}

var slowPaths = []string{"/v1/slow", "/api/v1/slow", "/experimental/slow", "/api/raw/slow"}

func (s *slowRoutes) Routes(r chi.Router) {
	for _, p := range slowPaths {
		r.Get(p, s.serve)
	}
	r.Get("/v1/boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
}

func (s *slowRoutes) serve(w http.ResponseWriter, r *http.Request) {
	n := s.now.Add(1)
	defer s.now.Add(-1)
	for m := s.most.Load(); n > m && !s.most.CompareAndSwap(m, n); m = s.most.Load() {
	}
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	select {
	case <-s.release:
	case <-r.Context().Done():
	}
	w.WriteHeader(http.StatusNoContent)
}

// limitedServer serves the gateway's router with the given caps.
func limitedServer(t *testing.T, maxRequests, maxStreams int, slow *slowRoutes) (*gatewaytest.Env, string) {
	t.Helper()
	e := gatewaytest.New(t, gatewaytest.Options{})
	rt := httpapi.New(httpapi.Config{
		Jobs: e.Jobs, Auth: e.Auth, Keys: e.Keys,
		MaxInFlight: maxRequests, MaxEventStreams: maxStreams,
		Dialects: []httpapi.Dialect{slow},
	})
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		rt.HandleFunc(p, func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	}
	srv := httptest.NewServer(rt)
	t.Cleanup(srv.Close)
	return e, srv.URL
}

// status sends a GET without credentials and returns the answer's
// status, or the error; it is for goroutines, which must not stop the
// test.
func status(ctx context.Context, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func get(t *testing.T, ctx context.Context, url string, c gatewaytest.Creds) answer {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	if c.User != "" {
		req.Header.Set("X-User-Id", c.User)
		req.Header.Set("X-Auth-Token", c.Token)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	a := answer{status: resp.StatusCode, header: resp.Header}
	if len(b) > 0 {
		require.NoError(t, json.Unmarshal(b, &a.body), "%s", b)
	}
	return a
}

// Over the cap every dialect's request is answered 503 with Retry-After
// in that dialect's error shape, at once, while the probes, /metrics and
// event streams (which have their own cap) still answer; once the held
// requests finish, requests are served again.
func TestRequestsOverTheCapAreRefusedInTheirDialect(t *testing.T) {
	slow := &slowRoutes{entered: make(chan struct{}, 8), release: make(chan struct{})}
	_, url := limitedServer(t, 2, 1, slow)
	ctx := t.Context()

	// An open event stream takes no request slot.
	streamCtx, closeStream := context.WithCancel(ctx)
	defer closeStream()
	req, err := http.NewRequestWithContext(streamCtx, http.MethodGet, url+"/v1/exports/events", nil)
	require.NoError(t, err)
	req.Header.Set("X-User-Id", gatewaytest.UserID)
	req.Header.Set("X-Auth-Token", gatewaytest.UserToken)
	stream, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer stream.Body.Close()
	require.Equal(t, http.StatusOK, stream.StatusCode)

	var held sync.WaitGroup
	for range 2 {
		held.Add(1)
		go func() {
			defer held.Done()
			code, err := status(ctx, url+"/v1/slow")
			assert.NoError(t, err)
			assert.Equal(t, http.StatusNoContent, code)
		}()
	}
	for range 2 {
		<-slow.entered
	}

	shapes := []struct {
		path  string
		check func(t *testing.T, body map[string]any)
	}{
		{"/v1/slow", func(t *testing.T, b map[string]any) {
			assert.Equal(t, 503.0, b["status"])
			assert.Equal(t, "about:blank", b["type"])
			assert.Contains(t, b["detail"], "retry in 1 s")
		}},
		{"/api/v1/slow", func(t *testing.T, b map[string]any) {
			assert.Equal(t, false, b["success"])
			assert.Equal(t, "error-unavailable", b["errorType"])
			assert.Contains(t, b["error"], "retry in 1 s")
		}},
		{"/experimental/slow", func(t *testing.T, b map[string]any) {
			assert.Equal(t, 503.0, b["status"])
			assert.Equal(t, "Service Unavailable", b["title"])
			assert.Contains(t, b["detail"], "retry in 1 s")
		}},
		{"/api/raw/slow", func(t *testing.T, b map[string]any) {
			assert.Equal(t, 503.0, b["code"])
			assert.Equal(t, "Service Unavailable", b["message"])
			assert.Contains(t, b["data"].(map[string]any)["error"].(map[string]any)["detail"], "retry in 1 s")
		}},
	}
	for _, s := range shapes {
		t.Run(s.path, func(t *testing.T) {
			start := time.Now()
			a := get(t, ctx, url+s.path, gatewaytest.Creds{})
			assert.Less(t, time.Since(start), time.Second, "answered at once")
			require.Equal(t, http.StatusServiceUnavailable, a.status)
			assert.Equal(t, "1", a.header.Get("Retry-After"))
			s.check(t, a.body)
		})
	}
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		assert.Equal(t, http.StatusOK, get(t, ctx, url+p, gatewaytest.Creds{}).status, p)
	}
	// The stream cap is full with one stream.
	second := get(t, ctx, url+"/v1/exports/events", gatewaytest.AsUser)
	assert.Equal(t, http.StatusServiceUnavailable, second.status)
	assert.Equal(t, "1", second.header.Get("Retry-After"))
	assert.Contains(t, second.body["detail"], "event streams")

	close(slow.release)
	held.Wait()
	assert.Equal(t, http.StatusNoContent, get(t, ctx, url+"/v1/slow", gatewaytest.Creds{}).status)
	closeStream()
	// The stream's slot is given back when its handler returns.
	require.Eventually(t, func() bool {
		sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		req, err := http.NewRequestWithContext(sctx, http.MethodGet, url+"/v1/exports/events", nil)
		require.NoError(t, err)
		req.Header.Set("X-User-Id", gatewaytest.UserID)
		req.Header.Set("X-Auth-Token", gatewaytest.UserToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 5*time.Second, 10*time.Millisecond)
}

// A handler that panics gives its slot back.
func TestAPanicGivesTheSlotBack(t *testing.T) {
	_, url := limitedServer(t, 1, 1, &slowRoutes{release: make(chan struct{})})
	for range 3 {
		assert.Equal(t, http.StatusInternalServerError, get(t, t.Context(), url+"/v1/boom", gatewaytest.Creds{}).status)
	}
}

// Under concurrent requests no more than the cap are ever inside a
// handler, and every request is either served or refused with 503.
func TestTheCapHoldsUnderConcurrency(t *testing.T) {
	release := make(chan struct{})
	slow := &slowRoutes{release: release}
	_, url := limitedServer(t, 4, 1, slow)
	go func() {
		// Handlers finish a little after they start, so requests overlap.
		for {
			select {
			case <-t.Context().Done():
				return
			case release <- struct{}{}:
				time.Sleep(100 * time.Microsecond)
			}
		}
	}()
	var (
		wg               sync.WaitGroup
		served, refused  atomic.Int64
		unexpectedStatus atomic.Int64
	)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				code, err := status(t.Context(), url+"/api/v1/slow")
				assert.NoError(t, err)
				switch code {
				case http.StatusNoContent:
					served.Add(1)
				case http.StatusServiceUnavailable:
					refused.Add(1)
				default:
					unexpectedStatus.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	assert.LessOrEqual(t, slow.most.Load(), int64(4))
	assert.Equal(t, int64(320), served.Load()+refused.Load())
	assert.Zero(t, unexpectedStatus.Load())
	assert.Positive(t, refused.Load(), "32 clients against 4 slots are refused some of the time")
	t.Logf("served %d, refused %d, at most %d at once", served.Load(), refused.Load(), slow.most.Load())
}

// Without a cap (a negative maximum) nothing is refused.
func TestNoCap(t *testing.T) {
	slow := &slowRoutes{entered: make(chan struct{}, 16), release: make(chan struct{})}
	_, url := limitedServer(t, -1, -1, slow)
	var held sync.WaitGroup
	for range 16 {
		held.Add(1)
		go func() {
			defer held.Done()
			code, err := status(t.Context(), url+"/v1/slow")
			assert.NoError(t, err)
			assert.Equal(t, http.StatusNoContent, code)
		}()
	}
	for range 16 {
		<-slow.entered
	}
	close(slow.release)
	held.Wait()
}
