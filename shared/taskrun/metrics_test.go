package taskrun_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/taskrun"
)

// TestRunnerCountsAnnouncedRecordsAndBytes: what an announced part holds
// is counted by part kind and format; a failed attempt counts nothing.
func TestRunnerCountsAnnouncedRecordsAndBytes(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	e := setup(t, func(o *taskrun.Options) { o.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)) })
	var k fakeKind
	fail := true
	k.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
		if fail {
			return nil, errors.New("transient")
		}
		f, err := writeFile(ctx, e.store, t, "out.csv")
		if err != nil {
			return nil, err
		}
		return &taskrun.Result{Files: []*exportv1.File{f}, Records: 7, Bytes: 120}, nil
	}
	e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)
	e.setJob(t, "j1", exportv1.JobState_JOB_STATE_PROCESSING)
	tk := task("j1", exportv1.PartKind_PART_KIND_RECORDS)
	tk.Format = exportv1.Format_FORMAT_CSV
	require.Error(t, e.run.Export(t.Context(), tk))
	fail = false
	require.NoError(t, e.run.Export(t.Context(), tk))

	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(t.Context(), &rm))
	got := map[string]metricdata.Sum[int64]{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok {
				got[m.Name] = s
			}
		}
	}
	for name, want := range map[string]int64{taskrun.MetricRecords: 7, taskrun.MetricBytes: 120} {
		s := got[name]
		require.Len(t, s.DataPoints, 1, name)
		assert.Equal(t, want, s.DataPoints[0].Value, name)
		pk, _ := s.DataPoints[0].Attributes.Value("part_kind")
		format, _ := s.DataPoints[0].Attributes.Value("format")
		assert.Equal(t, "records csv", pk.AsString()+" "+format.AsString())
	}
}
