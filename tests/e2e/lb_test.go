package e2e

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// loadBalancer is a tiny reverse proxy over gateway replicas that does
// what a load balancer in front of them does: round robin, and one retry
// on another replica when a request could not be delivered or got a 5xx
// (for idempotent requests: GETs, and POSTs with an Idempotency-Key).
// What it answers after that retry is what a client sees.
type loadBalancer struct {
	URL      string
	backends []string
	next     atomic.Uint64
	client   *http.Client

	retries atomic.Int64
	mu      sync.Mutex
	// failed counts answers a client saw that were not served: a 5xx
	// after the retry, or no answer at all.
	failed []string
}

func startLoadBalancer(t *testing.T, backends []string) *loadBalancer {
	t.Helper()
	lb := &loadBalancer{backends: backends, client: &http.Client{
		Timeout: 30 * time.Second,
		// A fresh connection per try would hide nothing; keep-alives are
		// what a real balancer uses, so a killed replica's idle
		// connections fail as they would there.
		Transport: &http.Transport{MaxIdleConnsPerHost: 32},
	}}
	srv := httptest.NewServer(http.HandlerFunc(lb.serve))
	t.Cleanup(srv.Close)
	lb.URL = srv.URL
	return lb
}

func (lb *loadBalancer) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	retryable := r.Method == http.MethodGet || r.Header.Get("Idempotency-Key") != ""
	first := int(lb.next.Add(1))
	var resp *http.Response
	for try := range 2 {
		if try > 0 {
			lb.retries.Add(1)
		}
		backend := lb.backends[(first+try)%len(lb.backends)]
		req, err := http.NewRequestWithContext(r.Context(), r.Method, backend+r.URL.RequestURI(), bytes.NewReader(body))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		req.Header = r.Header.Clone()
		resp, err = lb.client.Do(req)
		if err == nil && resp.StatusCode < 500 {
			break
		}
		what := "no answer"
		if err == nil {
			what = resp.Status
		}
		if r.Context().Err() != nil {
			// The client went away (the test stopped polling): nobody
			// sees this answer.
			return
		}
		if try == 1 || !retryable {
			lb.fail(r.Method + " " + r.URL.Path + ": " + what)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			break
		}
		if err == nil {
			resp.Body.Close()
		}
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

func (lb *loadBalancer) fail(what string) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	lb.failed = append(lb.failed, what)
}

func (lb *loadBalancer) failures() []string {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	return append([]string(nil), lb.failed...)
}
