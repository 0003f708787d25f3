package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	collmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	colltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpSpan is one received span, with the service that sent it.
type otlpSpan struct {
	service      string
	name         string
	kind         tracev1.Span_SpanKind
	traceID      string
	spanID       string
	parentSpanID string
}

// otlpReceiver is a fake of the OpenTelemetry collector's OTLP/HTTP
// receiver (protobuf encoding): it keeps the spans it is sent and notes
// which services sent metrics.
type otlpReceiver struct {
	url string

	mu             sync.Mutex
	spans          []otlpSpan
	metricServices map[string]bool
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	r := &otlpReceiver{metricServices: map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := readOTLP(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var resp proto.Message
		switch req.URL.Path {
		case "/v1/traces":
			var m colltrace.ExportTraceServiceRequest
			if err := proto.Unmarshal(body, &m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.addSpans(&m)
			resp = &colltrace.ExportTraceServiceResponse{}
		case "/v1/metrics":
			var m collmetrics.ExportMetricsServiceRequest
			if err := proto.Unmarshal(body, &m); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.mu.Lock()
			for _, rm := range m.GetResourceMetrics() {
				r.metricServices[serviceName(rm.GetResource())] = true
			}
			r.mu.Unlock()
			resp = &collmetrics.ExportMetricsServiceResponse{}
		default:
			http.NotFound(w, req)
			return
		}
		out, _ := proto.Marshal(resp)
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

func readOTLP(req *http.Request) ([]byte, error) {
	var rd io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			return nil, err
		}
		rd = gz
	}
	return io.ReadAll(rd)
}

func serviceName(r *resourcev1.Resource) string {
	for _, kv := range r.GetAttributes() {
		if kv.GetKey() == "service.name" {
			return kv.GetValue().GetStringValue()
		}
	}
	return ""
}

func (r *otlpReceiver) addSpans(m *colltrace.ExportTraceServiceRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range m.GetResourceSpans() {
		svc := serviceName(rs.GetResource())
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				r.spans = append(r.spans, otlpSpan{
					service: svc, name: s.GetName(), kind: s.GetKind(),
					traceID: hex.EncodeToString(s.GetTraceId()), spanID: hex.EncodeToString(s.GetSpanId()),
					parentSpanID: hex.EncodeToString(s.GetParentSpanId()),
				})
			}
		}
	}
}

// trace is every span received so far of one trace.
func (r *otlpReceiver) trace(id string) []otlpSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []otlpSpan
	for _, s := range r.spans {
		if s.traceID == id {
			out = append(out, s)
		}
	}
	return out
}

// TestOneExportIsOneTrace is the observability promise: one export is one
// trace, from the HTTP request through the gateway's publish, the
// exporter, the archiver and the notifier, each service's spans children
// of the one before it; the trace id is in the answer, on the job and on
// every log line about the job; and each service's /metrics counted the
// export.
func TestOneExportIsOneTrace(t *testing.T) {
	otlp := startOTLPReceiver(t)
	s := startStackWith(t, stackOptions{env: []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + otlp.url,
		// Export quickly, so the test does not wait for the defaults
		// (5 s for spans, 60 s for metrics).
		"OTEL_BSP_SCHEDULE_DELAY=100",
		"OTEL_METRIC_EXPORT_INTERVAL=500",
	}})
	admin := s.user(t, "admin")

	body := strings.NewReader(`{"rid": "GENERAL", "type": "file", "format": "json"}`)
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, s.gatewayURL+"/api/v1/rooms.export", body)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-User-Id", admin.UserID)
	req.Header.Set("X-Auth-Token", admin.AuthToken)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	var created struct {
		ExportID string `json:"exportId"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&created))
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	traceID := resp.Header.Get("X-Trace-Id")
	require.Regexp(t, `^[0-9a-f]{32}$`, traceID)
	assert.Contains(t, resp.Header.Get("traceparent"), traceID)
	id := created.ExportID

	var job struct {
		nativeJob
		TraceID string `json:"traceId"`
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		code := call(t, http.MethodGet, s.gatewayURL+"/v1/exports/"+id, &admin, nil, &job)
		assert.Equal(c, http.StatusOK, code)
		assert.Equal(c, "completed", job.State, "job error: %q", job.Error)
	}, 90*time.Second, 200*time.Millisecond)
	assert.Equal(t, traceID, job.TraceID, "the native API shows the job's trace")
	waitForMail(t, s.mailpitURL, admin.Email)

	// The trace: every service's spans, each a child of the span that
	// published what it consumed.
	var spans []otlpSpan
	byID := map[string]otlpSpan{}
	find := func(c *assert.CollectT, service, name string) (otlpSpan, bool) {
		for _, sp := range spans {
			if sp.service == service && sp.name == name {
				return sp, true
			}
		}
		c.Errorf("no span %q from %s among %d", name, service, len(spans))
		return otlpSpan{}, false
	}
	// parentIs checks that child's parent is the span parent, and that
	// both are of the kinds a send/process pair has.
	parentIs := func(c *assert.CollectT, child, parent otlpSpan) {
		assert.Equal(c, parent.spanID, child.parentSpanID, "%s/%s is a child of %s/%s", child.service, child.name, parent.service, parent.name)
	}
	ancestorIs := func(c *assert.CollectT, span, ancestor otlpSpan) {
		for cur, ok := span, true; ok; cur, ok = byID[cur.parentSpanID] {
			if cur.spanID == ancestor.spanID {
				return
			}
		}
		c.Errorf("%s/%s does not descend from %s/%s", span.service, span.name, ancestor.service, ancestor.name)
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		spans = otlp.trace(traceID)
		byID = map[string]otlpSpan{}
		for _, sp := range spans {
			byID[sp.spanID] = sp
		}
		root, ok1 := find(c, "gateway", "POST /api/v1/rooms.export")
		sendTask, ok2 := find(c, "gateway", "send exports.tasks.room")
		runTask, ok3 := find(c, "room-exporter", "process exports.tasks.room")
		sendPart, ok4 := find(c, "room-exporter", "send exports.status.part.*")
		archive, ok5 := find(c, "archiver", "process exports.status.part.*")
		sendDone, ok6 := find(c, "archiver", "send exports.status.completed.*")
		notify, ok7 := find(c, "notifier", "process exports.status.completed.*")
		sendNotified, ok8 := find(c, "notifier", "send exports.status.notified.*")
		project, ok9 := find(c, "gateway", "process exports.status.notified.*")
		if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7 && ok8 && ok9) {
			return
		}
		assert.Equal(c, tracev1.Span_SPAN_KIND_SERVER, root.kind)
		assert.Empty(c, root.parentSpanID, "the request starts the trace")
		assert.Equal(c, tracev1.Span_SPAN_KIND_PRODUCER, sendTask.kind)
		assert.Equal(c, tracev1.Span_SPAN_KIND_CONSUMER, runTask.kind)
		ancestorIs(c, sendTask, root)
		parentIs(c, runTask, sendTask)
		ancestorIs(c, sendPart, runTask)
		parentIs(c, archive, sendPart)
		ancestorIs(c, sendDone, archive)
		parentIs(c, notify, sendDone)
		ancestorIs(c, sendNotified, notify)
		parentIs(c, project, sendNotified)
		// One tree: every span's parent is in the trace, but the root's.
		for _, sp := range spans {
			if sp.spanID != root.spanID {
				_, ok := byID[sp.parentSpanID]
				assert.True(c, ok, "parent of %s/%s is in the trace", sp.service, sp.name)
			}
		}
	}, 30*time.Second, 200*time.Millisecond)

	// Every log line about the job names it and its trace.
	for _, p := range []*process{s.gateway, s.exporters[0], s.archiver, s.notifier} {
		lines := 0
		sc := bufio.NewScanner(strings.NewReader(p.logText(t)))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var line map[string]any
			if !bytes.HasPrefix(sc.Bytes(), []byte("{")) || json.Unmarshal(sc.Bytes(), &line) != nil {
				continue
			}
			if line["job_id"] != id {
				continue
			}
			lines++
			assert.Equal(t, traceID, line["trace_id"], "%s: %s", p.name, sc.Text())
		}
		assert.Positive(t, lines, "%s logs about the job", p.name)
	}

	// Each service's /metrics counted the export.
	want := map[string][]string{
		"gateway": {
			`dataport_exports_finished_total{format="json",kind="room",otel_scope_name="dataport.dev/services/gateway/internal/jobmetrics",otel_scope_schema_url="",otel_scope_version="",state="completed"} 1`,
			`dataport_export_stage_duration_seconds_count{format="json",kind="room",otel_scope_name="dataport.dev/services/gateway/internal/jobmetrics",otel_scope_schema_url="",otel_scope_version="",stage="notifying"} 1`,
			`http_server_request_duration_seconds_count{http_request_method="POST",http_response_status_code="200",http_route="/api/v1/rooms.export"`,
		},
		"room-exporter": {`dataport_messages_handled_total{messaging_consumer_group_name="room-exporter",messaging_destination_template="exports.tasks.room",messaging_system="nats",otel_scope_name="dataport.dev/shared/bus",otel_scope_schema_url="",otel_scope_version="",outcome="ack"} 1`,
			`dataport_task_records_total{format="json",otel_scope_name="dataport.dev/shared/taskrun",otel_scope_schema_url="",otel_scope_version="",part_kind="room"}`},
		"archiver": {`dataport_messages_handled_total{messaging_consumer_group_name="archiver",messaging_destination_template="exports.status.part.*",messaging_system="nats",otel_scope_name="dataport.dev/shared/bus",otel_scope_schema_url="",otel_scope_version="",outcome="ack"} 1`},
		"notifier": {`dataport_notification_sends_total{channel="email",otel_scope_name="dataport.dev/services/notifier/internal/notify",otel_scope_schema_url="",otel_scope_version="",outcome="sent"} 1`},
	}
	for service, series := range want {
		require.EventuallyWithT(t, func(c *assert.CollectT) {
			text := scrape(c, "http://"+s.httpAddrs[service]+"/metrics")
			for _, line := range series {
				assert.Contains(c, text, line, "%s /metrics", service)
			}
		}, 10*time.Second, 200*time.Millisecond)
	}
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		otlp.mu.Lock()
		defer otlp.mu.Unlock()
		for service := range want {
			assert.True(c, otlp.metricServices[service], "%s sends OTLP metrics", service)
		}
	}, 10*time.Second, 200*time.Millisecond)
}

func scrape(c *assert.CollectT, url string) string {
	resp, err := http.Get(url)
	if !assert.NoError(c, err) {
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	assert.NoError(c, err)
	if resp.StatusCode != http.StatusOK {
		c.Errorf("GET %s: %d", url, resp.StatusCode)
	}
	return fmt.Sprint(string(b))
}
