package watchdog

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
)

// Metric names. The gauges are the last stuck scan's view, so they move
// every ScanEvery; every gateway replica scans the same jobs, so
// aggregate them with max.
const (
	// MetricFailed counts jobs the watchdog failed, by cause ("stuck",
	// "max_deliveries").
	MetricFailed = "dataport.watchdog.failed"
	// MetricActive is the unfinished jobs by state.
	MetricActive = "dataport.exports.active"
	// MetricOldestUpdate is the age of the least recently updated
	// unfinished job: it nears DATAPORT_STUCK_JOB_AFTER before the
	// watchdog fails that job.
	MetricOldestUpdate = "dataport.exports.oldest_update_age"
)

const (
	causeStuck         = "stuck"
	causeMaxDeliveries = "max_deliveries"
)

// scanStats is what one scan saw of the unfinished jobs.
type scanStats struct {
	byState map[string]int64
	oldest  time.Duration
}

func (s *scanStats) add(state exportv1.JobState, last *timestamppb.Timestamp, now time.Time) {
	if s.byState == nil {
		s.byState = map[string]int64{}
	}
	s.byState[strings.ToLower(strings.TrimPrefix(state.String(), "JOB_STATE_"))]++
	if last != nil {
		s.oldest = max(s.oldest, now.Sub(last.AsTime()))
	}
}

type metrics struct {
	failures metric.Int64Counter

	mu   sync.Mutex
	last scanStats
}

// newMetrics creates the instruments; one that cannot be created is
// logged and left out, since metrics must not stop the watchdog.
func newMetrics(mp metric.MeterProvider, log *slog.Logger) *metrics {
	m := &metrics{}
	meter := mp.Meter(instrumentation)
	var err error
	if m.failures, err = meter.Int64Counter(MetricFailed, metric.WithUnit("{export}"),
		metric.WithDescription("Jobs the watchdog failed, by cause: stuck (no update for DATAPORT_STUCK_JOB_AFTER) or max_deliveries.")); err != nil {
		log.Warn("watchdog metrics", "error", err)
	}
	active, err := meter.Int64ObservableGauge(MetricActive, metric.WithUnit("{export}"),
		metric.WithDescription("Unfinished jobs by state, as of the watchdog's last scan."))
	if err != nil {
		log.Warn("watchdog metrics", "error", err)
		return m
	}
	oldest, err := meter.Float64ObservableGauge(MetricOldestUpdate, metric.WithUnit("s"),
		metric.WithDescription("Time since the least recently updated unfinished job changed, as of the watchdog's last scan."))
	if err != nil {
		log.Warn("watchdog metrics", "error", err)
		return m
	}
	if _, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		m.mu.Lock()
		defer m.mu.Unlock()
		for state, n := range m.last.byState {
			o.ObserveInt64(active, n, metric.WithAttributes(attribute.String("state", state)))
		}
		o.ObserveFloat64(oldest, m.last.oldest.Seconds())
		return nil
	}, active, oldest); err != nil {
		log.Warn("watchdog metrics", "error", err)
	}
	return m
}

func (m *metrics) failed(ctx context.Context, cause string) {
	if m.failures != nil {
		m.failures.Add(context.WithoutCancel(ctx), 1, metric.WithAttributes(attribute.String("cause", cause)))
	}
}

func (m *metrics) scanned(s scanStats) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last = s
}
