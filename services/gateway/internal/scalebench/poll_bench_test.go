package scalebench_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/shared/infra"
)

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
//   - http: through the HTTP server over one keep-alive connection, as a
//     polling client sends it (the client's work is in the figures too).
//
// nats-msgs/op is what the gateway's NATS connection sent per poll: its
// requests (a direct get of the job is one), whatever asked for them.
//
//	go test -run '^$' -bench BenchmarkPoll -benchmem -count 5 ./internal/scalebench/
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

	sent := func() uint64 { return e.NATS.Conn.Stats().OutMsgs }
	perPoll := func(b *testing.B, before uint64) {
		b.ReportMetric(float64(sent()-before)/float64(b.N), "nats-msgs/op")
	}

	b.Run("router", func(b *testing.B) {
		req := httptest.NewRequestWithContext(b.Context(), http.MethodGet, pollPath, nil)
		req.Header.Set("X-User-Id", gatewaytest.AsAdmin.User)
		req.Header.Set("X-Auth-Token", gatewaytest.AsAdmin.Token)
		w := &bodyWriter{header: http.Header{}}
		e.Router.ServeHTTP(w, req)
		require.Equal(b, string(want.Body), string(w.body), "the router's answer is the server's")
		before := sent()
		for b.Loop() {
			w.reset()
			e.Router.ServeHTTP(w, req)
			if w.status != http.StatusOK || len(w.body) != len(want.Body) {
				b.Fatalf("poll: %d %s", w.status, w.body)
			}
		}
		perPoll(b, before)
	})

	b.Run("http", func(b *testing.B) {
		client := &http.Client{Transport: &http.Transport{}}
		defer client.CloseIdleConnections()
		req, err := http.NewRequestWithContext(b.Context(), http.MethodGet, e.URL+pollPath, nil)
		require.NoError(b, err)
		req.Header.Set("X-User-Id", gatewaytest.AsAdmin.User)
		req.Header.Set("X-Auth-Token", gatewaytest.AsAdmin.Token)
		poll := func() (int, []byte) {
			resp, err := client.Do(req)
			if err != nil {
				b.Fatalf("poll: %v", err)
			}
			defer func() { _ = resp.Body.Close() }()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				b.Fatalf("poll: %v", err)
			}
			return resp.StatusCode, body
		}
		status, body := poll()
		require.Equal(b, http.StatusOK, status)
		require.Equal(b, string(want.Body), string(body))
		before := sent()
		for b.Loop() {
			if status, body := poll(); status != http.StatusOK || len(body) != len(want.Body) {
				b.Fatalf("poll: %d %s", status, body)
			}
		}
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
