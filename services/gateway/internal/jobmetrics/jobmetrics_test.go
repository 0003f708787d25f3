package jobmetrics_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobmetrics"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(s float64) *timestamppb.Timestamp {
	return timestamppb.New(t0.Add(time.Duration(s * float64(time.Second))))
}

func collect(t *testing.T, r *sdkmetric.ManualReader) map[string]metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(t.Context(), &rm))
	got := map[string]metricdata.Aggregation{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			got[m.Name] = m.Data
		}
	}
	return got
}

// TestObserveCountsOnceAndTimesEachStage walks one job through its life
// as the projection writes it and checks every instrument.
func TestObserveCountsOnceAndTimesEachStage(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	rec, err := jobmetrics.New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	require.NoError(t, err)

	job := &exportv1.Job{Id: "j", Kind: exportv1.JobKind_JOB_KIND_ROOM, Format: exportv1.Format_FORMAT_JSON,
		Dialect: "rocketchat", State: exportv1.JobState_JOB_STATE_PENDING, CreatedAt: at(0)}
	var before *exportv1.Job
	move := func(change func(j *exportv1.Job)) {
		after := proto.CloneOf(job)
		if after.Stages == nil {
			after.Stages = &exportv1.StageTimes{}
		}
		change(after)
		rec.Observe(t.Context(), before, after)
		before, job = after, after
	}
	rec.Observe(t.Context(), nil, job)
	before = job
	move(func(j *exportv1.Job) { j.State, j.Stages.QueuedAt = exportv1.JobState_JOB_STATE_QUEUED, at(1) })
	move(func(j *exportv1.Job) { j.State, j.Stages.ProcessingAt = exportv1.JobState_JOB_STATE_PROCESSING, at(3) })
	move(func(j *exportv1.Job) { j.Progress = &exportv1.Progress{Percent: 50} })
	move(func(j *exportv1.Job) { j.State, j.Stages.FinalizingAt = exportv1.JobState_JOB_STATE_FINALIZING, at(7) })
	move(func(j *exportv1.Job) {
		j.State, j.Stages.EndedAt = exportv1.JobState_JOB_STATE_COMPLETED, at(8)
		j.Files = []*exportv1.File{{Records: 10, Size: 100}, {Records: 5, Size: 50}}
	})
	move(func(j *exportv1.Job) { j.Notified, j.Stages.NotifiedAt = true, at(8.5) })
	move(func(j *exportv1.Job) { j.FilesExpired = true })

	got := collect(t, reader)
	sum := func(name string) metricdata.Sum[int64] {
		s, ok := got[name].(metricdata.Sum[int64])
		require.True(t, ok, "%s is a counter", name)
		require.Len(t, s.DataPoints, 1, name)
		return s
	}
	requested := sum(jobmetrics.MetricRequested)
	assert.EqualValues(t, 1, requested.DataPoints[0].Value)
	dialect, _ := requested.DataPoints[0].Attributes.Value("dialect")
	assert.Equal(t, "rocketchat", dialect.AsString())
	finished := sum(jobmetrics.MetricFinished)
	assert.EqualValues(t, 1, finished.DataPoints[0].Value)
	for k, v := range map[string]string{"kind": "room", "format": "json", "state": "completed"} {
		got, _ := finished.DataPoints[0].Attributes.Value(attribute.Key(k))
		assert.Equal(t, v, got.AsString(), k)
	}
	assert.EqualValues(t, 15, sum(jobmetrics.MetricRecords).DataPoints[0].Value)
	assert.EqualValues(t, 150, sum(jobmetrics.MetricBytes).DataPoints[0].Value)

	total, ok := got[jobmetrics.MetricDuration].(metricdata.Histogram[float64])
	require.True(t, ok)
	require.Len(t, total.DataPoints, 1)
	assert.InDelta(t, 8, total.DataPoints[0].Sum, 1e-9)

	stages, ok := got[jobmetrics.MetricStageDuration].(metricdata.Histogram[float64])
	require.True(t, ok)
	byStage := map[string]float64{}
	for _, dp := range stages.DataPoints {
		s, _ := dp.Attributes.Value("stage")
		assert.EqualValues(t, 1, dp.Count, "stage %s recorded once", s.AsString())
		byStage[s.AsString()] = dp.Sum
	}
	assert.Equal(t, map[string]float64{
		jobmetrics.StageQueued: 2, jobmetrics.StageExporting: 4, jobmetrics.StageFinalizing: 1, jobmetrics.StageNotifying: 0.5,
	}, byStage)
}

// TestObserveCountsFailuresWithoutFiles: a failed job counts as failed
// and delivers nothing; a canceled one that never started has no stage.
func TestObserveCountsFailuresWithoutFiles(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	rec, err := jobmetrics.New(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	require.NoError(t, err)
	queued := &exportv1.Job{Kind: exportv1.JobKind_JOB_KIND_RECORDS, Format: exportv1.Format_FORMAT_CSV,
		State: exportv1.JobState_JOB_STATE_QUEUED, CreatedAt: at(0), Stages: &exportv1.StageTimes{QueuedAt: at(0)}}
	failed := proto.CloneOf(queued)
	failed.State, failed.Stages.EndedAt = exportv1.JobState_JOB_STATE_FAILED, at(30)
	rec.Observe(t.Context(), queued, failed)
	again := proto.CloneOf(failed)
	again.FilesExpired = true
	rec.Observe(t.Context(), failed, again)

	got := collect(t, reader)
	finished := got[jobmetrics.MetricFinished].(metricdata.Sum[int64])
	require.Len(t, finished.DataPoints, 1)
	assert.EqualValues(t, 1, finished.DataPoints[0].Value, "a terminal job is counted once")
	state, _ := finished.DataPoints[0].Attributes.Value("state")
	assert.Equal(t, "failed", state.AsString())
	assert.NotContains(t, got, jobmetrics.MetricRecords)
	assert.NotContains(t, got, jobmetrics.MetricStageDuration)
}
