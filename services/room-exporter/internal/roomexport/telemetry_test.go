package roomexport_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/taskrun"
)

func TestExportTelemetry(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	spans := tracetest.NewSpanRecorder()
	h := start(t, func(o *config) {
		o.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		o.Runner.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	})
	h.putRoom(t, &sourcev1.Room{Id: "R8", Name: "observed"})
	h.publishMessages(t, roomMessages("R8", 12)...)

	const jobID = "job-telemetry"
	h.publishTask(t, jobID+".task.0", roomTask(jobID, "R8", nil, at(9)))
	var part exportv1.PartUploaded
	h.event(t, bus.EventPart, jobID, &part)
	h.waitTasksSettled(t, 1) // the handler has returned

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(t.Context(), &rm))
	metrics := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			metrics[m.Name] = m.Data
		}
	}
	exported, ok := metrics["dataport.roomexport.messages"].(metricdata.Sum[int64])
	require.True(t, ok, "exported-messages counter missing: %v", metrics)
	require.Len(t, exported.DataPoints, 1)
	assert.Equal(t, int64(10), exported.DataPoints[0].Value, "messages written, not messages read")

	duration, ok := metrics[taskrun.MetricDuration].(metricdata.Histogram[float64])
	require.True(t, ok, "task duration histogram missing: %v", metrics)
	require.Len(t, duration.DataPoints, 1)
	assert.Equal(t, uint64(1), duration.DataPoints[0].Count)
	outcome, _ := duration.DataPoints[0].Attributes.Value("outcome")
	assert.Equal(t, "ok", outcome.AsString())
	exporter, _ := duration.DataPoints[0].Attributes.Value("exporter")
	assert.Equal(t, "roomexport", exporter.AsString())

	var found bool
	for _, s := range spans.Ended() {
		if s.Name() != "roomexport.Export" {
			continue
		}
		found = true
		assert.Contains(t, s.Attributes(), attribute.String("dataport.job_id", jobID))
		assert.Contains(t, s.Attributes(), attribute.String("dataport.room_id", "R8"))
		assert.Contains(t, s.Attributes(), attribute.String("dataport.outcome", "ok"))
	}
	assert.True(t, found, "one span per task")
}
