package notify_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/notifier/internal/notify"
	"dataport.dev/services/notifier/internal/smtptest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

// sends reads MetricSends as "channel outcome" → count.
func sends(t *testing.T, r *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(t.Context(), &rm))
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != notify.MetricSends {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				ch, _ := dp.Attributes.Value("channel")
				out, _ := dp.Attributes.Value("outcome")
				got[ch.AsString()+" "+out.AsString()] += dp.Value
			}
		}
	}
	return got
}

// TestSendsAreCounted: every attempt is counted by outcome, a retried one
// as an error before its success, a refused one as given up.
func TestSendsAreCounted(t *testing.T) {
	for name, tt := range map[string]struct {
		fail func(*smtptest.Server)
		want map[string]int64
	}{
		"retried, then sent": {func(s *smtptest.Server) { s.FailData(2, 451) }, map[string]int64{"email error": 2, "email sent": 1}},
		"refused":            {func(s *smtptest.Server) { s.FailRcpt(-1, 550) }, map[string]int64{"email given_up": 1}},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			e := start(t, bustest.Topology(), func(su *setup) { su.cfg.MeterProvider = mp })
			e.putUser(t, alice)
			tt.fail(e.smtp)
			jobID := newJobID()
			e.publish(t, bus.EventCompleted, jobID, "", completed(jobID, &exportv1.File{Name: "general.json", Size: 10}))
			e.waitNotified(t, jobID)
			assert.Equal(t, tt.want, sends(t, reader))
		})
	}
}
