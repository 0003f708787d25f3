package scalebench_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/procstat"
)

// inFlight times GOMAXPROCS is how many polls BenchmarkPoll keeps in
// flight: on 2 cores, 32, about the connections loadgen's 2,000 polls a
// second hold open at once. With polls in flight together the process's
// CPU is spent on them rather than on waking up for one at a time.
const inFlight = 16

// pollPath is the job BenchmarkPoll polls: a completed room export of
// the admin, as loadgen's poll scenario polls the admin's jobs.
const pollPath = "/v1/exports/admin-0000"

// BenchmarkPoll is one poll by id (GET /v1/exports/{id} with the admin's
// personal access token, loadgen's "poll by id") through the router as
// main composes it, with the telemetry a deployment's defaults set up
// (infra.NewTelemetry without OTEL_EXPORTER_OTLP_ENDPOINT: JSON logs at
// info, spans with ids but no exporter, the request metric recorded for
// /metrics) over the embedded NATS server, which runs in this process
// too: a CPU profile shows both sides of the poll's reads.
//
//   - router: the router's ServeHTTP alone, so the figures are the
//     gateway's own work (and the NATS server's answer to it);
//   - http: through the HTTP server over keep-alive connections, as
//     polling clients send it (the client's work is in the figures too).
//
// Both keep inFlight polls per core going at once, as a polled gateway
// has them.
//
// nats-msgs/op is what the gateway's NATS connection sent per poll: its
// requests (a direct get of the job is one), whatever asked for them.
// cpu-ns/op is the process's CPU time per poll (/proc, 10 ms ticks: run
// thousands), the NATS server's included.
//
//	go test -run '^$' -bench BenchmarkPoll -benchmem -benchtime 20000x -count 5 ./internal/scalebench/
func BenchmarkPoll(b *testing.B) {
	// What infra.Run sets up for the gateway with the defaults of
	// compose.yaml and deploy/k8s/base/config (no OTEL_* variable set).
	tel, err := infra.NewTelemetry(b.Context(), func(string) string { return "" }, "gateway", "bench", "info", io.Discard)
	require.NoError(b, err)
	e := gatewaytest.New(b, gatewaytest.Options{Telemetry: tel})
	t0 := time.Now().Add(-time.Hour).UTC()
	fill(b, e.Jobs, 1, func(int) *exportv1.Job {
		return &exportv1.Job{Id: "admin-0000", OwnerId: gatewaytest.AdminID,
			Kind: exportv1.JobKind_JOB_KIND_ROOM, Dialect: "rocketchat", Room: &exportv1.RoomScope{RoomId: gatewaytest.RoomGeneral},
			State: exportv1.JobState_JOB_STATE_COMPLETED, CreatedAt: timestamppb.New(t0), UpdatedAt: timestamppb.New(t0)}
	})
	// The answer every poll must give, byte for byte.
	want := e.Do(b, http.MethodGet, pollPath, gatewaytest.AsAdmin, "")
	require.Equal(b, http.StatusOK, want.Status, "%s", want.Body)

	type mark struct {
		msgs uint64
		cpu  time.Duration
	}
	// ns/op is the wall time per poll with inFlight polls at once on a
	// shared machine; cpu-ns/op is what the process spent per poll
	// whatever the load (the NATS server's share included, as it runs
	// here).
	now := func(b *testing.B) mark {
		cpu, err := procstat.CPUTime(os.Getpid())
		require.NoError(b, err)
		return mark{e.NATS.Conn.Stats().OutMsgs, cpu}
	}
	perPoll := func(b *testing.B, before mark) {
		after := now(b)
		b.ReportMetric(float64(after.msgs-before.msgs)/float64(b.N), "nats-msgs/op")
		b.ReportMetric(float64(after.cpu-before.cpu)/float64(b.N), "cpu-ns/op")
	}

	b.Run("router", func(b *testing.B) {
		// The router changes no request it serves (each middleware hands
		// on a copy), so one request per goroutine serves all its polls.
		newRequest := func() *http.Request {
			req := httptest.NewRequestWithContext(b.Context(), http.MethodGet, pollPath, nil)
			req.Header.Set("X-User-Id", gatewaytest.AsAdmin.User)
			req.Header.Set("X-Auth-Token", gatewaytest.AsAdmin.Token)
			return req
		}
		poll := func(w *bodyWriter, req *http.Request) {
			w.reset()
			e.Router.ServeHTTP(w, req)
		}
		w := &bodyWriter{header: http.Header{}}
		poll(w, newRequest())
		require.Equal(b, string(want.Body), string(w.body), "the router's answer is the server's")
		before := now(b)
		b.SetParallelism(inFlight)
		b.RunParallel(func(pb *testing.PB) {
			w, req := &bodyWriter{header: http.Header{}}, newRequest()
			for pb.Next() {
				if poll(w, req); w.status != http.StatusOK || len(w.body) != len(want.Body) {
					b.Errorf("poll: %d %s", w.status, w.body)
					return
				}
			}
		})
		perPoll(b, before)
	})

	b.Run("http", func(b *testing.B) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * inFlight * runtime.GOMAXPROCS(0)}}
		defer client.CloseIdleConnections()
		poll := func() (int, []byte, error) {
			req, err := http.NewRequestWithContext(b.Context(), http.MethodGet, e.URL+pollPath, nil)
			if err != nil {
				return 0, nil, err
			}
			req.Header.Set("X-User-Id", gatewaytest.AsAdmin.User)
			req.Header.Set("X-Auth-Token", gatewaytest.AsAdmin.Token)
			resp, err := client.Do(req)
			if err != nil {
				return 0, nil, err
			}
			defer func() { _ = resp.Body.Close() }()
			body, err := io.ReadAll(resp.Body)
			return resp.StatusCode, body, err
		}
		status, body, err := poll()
		require.NoError(b, err)
		require.Equal(b, http.StatusOK, status)
		require.Equal(b, string(want.Body), string(body))
		before := now(b)
		b.SetParallelism(inFlight)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if status, body, err := poll(); err != nil || status != http.StatusOK || len(body) != len(want.Body) {
					b.Errorf("poll: %v %d %s", err, status, body)
					return
				}
			}
		})
		perPoll(b, before)
	})
}

// bodyWriter is the least a ResponseWriter can be, so the router's
// figures hold no recorder of their own; it keeps the status and body.
type bodyWriter struct {
	header http.Header
	status int
	body   []byte
}

func (w *bodyWriter) Header() http.Header { return w.header }

func (w *bodyWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *bodyWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.body = append(w.body, p...)
	return len(p), nil
}

func (w *bodyWriter) reset() {
	clear(w.header)
	w.status, w.body = 0, w.body[:0]
}
