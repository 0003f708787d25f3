package httpapi

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"dataport.dev/services/gateway/internal/dialect"
)

// Defaults of Config.MaxInFlight and Config.MaxEventStreams. At the
// benchmarks' rates (2,000 polls a second) a replica has a few dozen
// requests in flight; 256 lets a burst or a short stall queue, while what
// they hold stays small: a request is a goroutine and its buffers, tens
// of KiB, plus its body, which is under a KiB for every create a dialect
// takes (MaxBodyBytes bounds a hostile one). Streams and requests together
// fit the listener's default bound on connections (infra, 512), so a
// replica full of streams still takes requests.
const (
	DefaultMaxInFlight     = 256
	DefaultMaxEventStreams = 256
)

// overloadRetryAfter is the Retry-After of a refusal, in seconds: a
// request refused because the replica is full is cheap to repeat, and a
// second is about how long a burst takes to drain.
const overloadRetryAfter = 1

// gate counts what passes through it against a maximum; a nil gate
// admits everything.
type gate struct {
	n   atomic.Int64
	max int64
}

func newGate(max int) *gate {
	if max < 0 {
		return nil
	}
	return &gate{max: int64(max)}
}

func (g *gate) enter() bool {
	if g == nil {
		return true
	}
	if g.n.Add(1) > g.max {
		g.n.Add(-1)
		return false
	}
	return true
}

func (g *gate) leave() {
	if g != nil {
		g.n.Add(-1)
	}
}

// limited caps the requests the replica works on at once, so that under
// overload memory stays bounded by the cap rather than growing with the
// requests piled up, and a client hears at once that it should retry
// rather than wait behind them. Over the cap a request is answered 503
// with Retry-After in its dialect's shape before its body is read or its
// caller looked up.
//
// Three kinds of request are not counted with the others:
//   - The probes (/healthz, /readyz) and /metrics: a busy replica must
//     still look alive to the kubelet (else it is restarted, and its load
//     moves to the others, which then fail the same way) and must still
//     be scraped, which is how its overload is seen.
//   - Server-sent event streams: each holds its slot for as long as its
//     client stays (a console tab for hours), so counted with requests
//     they would let idle browsers take every slot. What a stream costs
//     (a goroutine and a KV watch) is per open stream, not per request
//     rate, so they have a cap of their own.
func (a *api) limited(next http.Handler) http.Handler {
	requests, streams := newGate(a.MaxInFlight), newGate(a.MaxEventStreams)
	if requests == nil && streams == nil {
		return next
	}
	full := fmt.Sprintf("the gateway is serving as many requests as it can (%d); retry in %d s", a.MaxInFlight, overloadRetryAfter)
	fullStreams := fmt.Sprintf("the gateway has as many event streams open as it can (%d); retry in %d s", a.MaxEventStreams, overloadRetryAfter)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g, message := requests, full
		switch {
		case isOps(r.URL.Path):
			next.ServeHTTP(w, r)
			return
		case isEventStream(r):
			g, message = streams, fullStreams
		}
		if !g.enter() {
			w.Header().Set("Retry-After", fmt.Sprint(overloadRetryAfter))
			dialect.WriteError(w, r, http.StatusServiceUnavailable, message)
			return
		}
		defer g.leave()
		next.ServeHTTP(w, r)
	})
}

// isOps reports whether path is a probe or the metrics, which
// infra.Run registers on the router when they share the API's port.
func isOps(path string) bool {
	return path == "/healthz" || path == "/readyz" || path == "/metrics"
}

// isEventStream reports whether r asks for one of the native API's
// server-sent event streams: GET /v1/exports/events or
// /v1/exports/{id}/events.
func isEventStream(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v1/exports/")
	if !ok {
		return false
	}
	if rest == "events" {
		return true
	}
	id, ok := strings.CutSuffix(rest, "/events")
	return ok && id != "" && !strings.Contains(id, "/")
}
