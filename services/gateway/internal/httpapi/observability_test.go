package httpapi_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/services/gateway/internal/httpapi"
	"dataport.dev/services/gateway/internal/jobmetrics"
	"dataport.dev/shared/bus"
)

// metricsOf collects what the environment's meter provider holds.
func metricsOf(t *testing.T, e *gatewaytest.Env) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, e.Metrics.Collect(t.Context(), &rm))
	got := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			got[m.Name] = m.Data
		}
	}
	return got
}

func attr(s attribute.Set, key string) string {
	v, _ := s.Value(attribute.Key(key))
	return v.String()
}

// TestAnExportIsOneTraceAndCounted: the creating answer names its trace
// (traceparent, X-Trace-Id), the job and its native view carry the same
// id, and so does the task; the request is measured by route, and the
// job's end is counted once.
func TestAnExportIsOneTraceAndCounted(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{Projection: true})
	ctx := t.Context()

	resp := e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin, `{"rid": "iu7jtPAhvEeAS5tNq", "type": "file", "format": "json"}`)
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
	id, _ := resp.JSON(t)["exportId"].(string)
	traceID := resp.Header.Get(httpapi.HeaderTraceID)
	assert.Regexp(t, `^[0-9a-f]{32}$`, traceID)
	assert.Regexp(t, `^00-`+traceID+`-[0-9a-f]{16}-0[01]$`, resp.Header.Get("traceparent"))

	assert.Equal(t, traceID, e.Job(t, id).GetTraceId())
	view := e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "")
	assert.Equal(t, traceID, view.JSON(t)["traceId"])
	assert.NotEqual(t, traceID, view.Header.Get(httpapi.HeaderTraceID), "each request is its own trace; the job keeps its creator's")
	for _, task := range e.TasksOf(t, "exports.tasks.room", id) {
		assert.Equal(t, id, task.GetJobId())
	}

	f := &exportv1.File{Name: "staff.json", ObjectKey: "jobs/" + id + "/parts/0/staff.json", Size: 120, Records: 3}
	require.NoError(t, e.Pub.PublishStatus(ctx, bus.EventCompleted, id, "", &exportv1.ExportCompleted{
		JobId: id, OccurredAt: timestamppb.Now(), Files: []*exportv1.File{f}, OwnerId: gatewaytest.AdminID, Kind: exportv1.JobKind_JOB_KIND_ROOM}))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, "completed", e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "").JSON(t)["state"])
	}, 10*time.Second, 20*time.Millisecond)
	// The copy of the event from the stream, applied again, is no second end.
	require.NoError(t, e.Pub.PublishStatus(ctx, bus.EventCompleted, id, "again", &exportv1.ExportCompleted{
		JobId: id, OccurredAt: timestamppb.Now(), Files: []*exportv1.File{f}, OwnerId: gatewaytest.AdminID, Kind: exportv1.JobKind_JOB_KIND_ROOM}))

	// The end is counted right after the write a poll can already see.
	var (
		got      map[string]metricdata.Aggregation
		finished metricdata.Sum[int64]
	)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got = metricsOf(t, e)
		var ok bool
		finished, ok = got[jobmetrics.MetricFinished].(metricdata.Sum[int64])
		assert.True(c, ok, "exports finished")
	}, 10*time.Second, 20*time.Millisecond)
	require.Len(t, finished.DataPoints, 1)
	assert.EqualValues(t, 1, finished.DataPoints[0].Value)
	assert.Equal(t, "completed", attr(finished.DataPoints[0].Attributes, "state"))
	assert.Equal(t, "room", attr(finished.DataPoints[0].Attributes, "kind"))
	assert.Equal(t, "json", attr(finished.DataPoints[0].Attributes, "format"))
	records := got[jobmetrics.MetricRecords].(metricdata.Sum[int64])
	assert.EqualValues(t, 3, records.DataPoints[0].Value)

	requests, ok := got[httpapi.MetricRequestDuration].(metricdata.Histogram[float64])
	require.True(t, ok, "request durations")
	routes := map[string]uint64{}
	for _, dp := range requests.DataPoints {
		routes[attr(dp.Attributes, "http.request.method")+" "+attr(dp.Attributes, "http.route")+" "+attr(dp.Attributes, "http.response.status_code")] += dp.Count
	}
	assert.EqualValues(t, 1, routes["POST /api/v1/rooms.export 200"])
	assert.GreaterOrEqual(t, routes["GET /v1/exports/{id} 200"], uint64(2), "by route pattern, not by path: %v", routes)
}
