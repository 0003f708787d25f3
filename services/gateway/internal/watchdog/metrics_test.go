package watchdog_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/watchdog"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

// TestScanReportsUnfinishedJobsAndFailures: a scan shows the unfinished
// jobs by state and how long the oldest has not moved, and counts the
// jobs it fails as stuck.
func TestScanReportsUnfinishedJobsAndFailures(t *testing.T) {
	nats := bustest.Start(t)
	jobs := openJobs(t, nats.JS)
	now := time.Now()
	for _, j := range []*exportv1.Job{
		{Id: "Stuck", OwnerId: "alice", State: exportv1.JobState_JOB_STATE_PROCESSING, CreatedAt: timestamppb.New(now.Add(-20 * time.Minute)), UpdatedAt: timestamppb.New(now.Add(-20 * time.Minute))},
		{Id: "Slow", OwnerId: "alice", State: exportv1.JobState_JOB_STATE_PROCESSING, CreatedAt: timestamppb.New(now.Add(-10 * time.Minute)), UpdatedAt: timestamppb.New(now.Add(-10 * time.Minute))},
		{Id: "Waiting", OwnerId: "bob", State: exportv1.JobState_JOB_STATE_QUEUED, CreatedAt: timestamppb.New(now), UpdatedAt: timestamppb.New(now)},
		{Id: "Done", OwnerId: "bob", State: exportv1.JobState_JOB_STATE_COMPLETED, CreatedAt: timestamppb.New(now), UpdatedAt: timestamppb.New(now)},
	} {
		_, err := jobs.Apply(t.Context(), &exportv1.ExportRequested{JobId: j.GetId(), OccurredAt: j.GetCreatedAt(), Job: j})
		require.NoError(t, err)
	}
	reader := sdkmetric.NewManualReader()
	dog := watchdog.New(nats.Conn, nats.JS, jobs, bus.NewPublisher(nats.JS, nil), watchdog.Options{
		StuckAfter: 15 * time.Minute, Now: func() time.Time { return now },
		MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)),
	})
	ids, err := dog.Scan(t.Context())
	require.NoError(t, err)
	assert.Equal(t, []string{"Stuck"}, ids)

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(t.Context(), &rm))
	got := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			got[m.Name] = m.Data
		}
	}
	active := map[string]int64{}
	for _, dp := range got[watchdog.MetricActive].(metricdata.Gauge[int64]).DataPoints {
		s, _ := dp.Attributes.Value("state")
		active[s.AsString()] = dp.Value
	}
	assert.Equal(t, map[string]int64{"processing": 2, "queued": 1}, active, "as seen before the failures")
	oldest := got[watchdog.MetricOldestUpdate].(metricdata.Gauge[float64]).DataPoints
	require.Len(t, oldest, 1)
	assert.InDelta(t, (20 * time.Minute).Seconds(), oldest[0].Value, 1)
	failed := got[watchdog.MetricFailed].(metricdata.Sum[int64]).DataPoints
	require.Len(t, failed, 1)
	assert.EqualValues(t, 1, failed[0].Value)
	cause, _ := failed[0].Attributes.Value("cause")
	assert.Equal(t, "stuck", cause.AsString())
}
