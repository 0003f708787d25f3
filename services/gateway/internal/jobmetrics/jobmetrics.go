// Package jobmetrics measures exports from the job projection's
// transitions: how many were requested and how many ended in which state,
// how long each stage took, and the records and bytes delivered.
//
// The projection writes each change of a job once over all gateway
// replicas (its writes are revision-checked), so counting in its change
// hook (jobstore.WithOnChange) counts every job once, whichever replica
// applied the event, and no other service has to agree on the numbers.
// Stage durations are differences of the job's stage stamps
// (exportv1.StageTimes), which come from the events' occurred_at: they
// measure the services' clocks, not the projection's lag.
package jobmetrics

import (
	"context"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
)

// Metric names.
const (
	MetricRequested     = "dataport.exports.requested"
	MetricFinished      = "dataport.exports.finished"
	MetricDuration      = "dataport.export.duration"
	MetricStageDuration = "dataport.export.stage.duration"
	MetricRecords       = "dataport.export.records"
	MetricBytes         = "dataport.export.bytes"
)

// Stages, the values of the "stage" attribute of MetricStageDuration.
const (
	// StageQueued is from queued to the first progress of an exporter.
	StageQueued = "queued"
	// StageExporting is from the first progress to finalizing (every
	// part uploaded).
	StageExporting = "exporting"
	// StageFinalizing is from finalizing to completed (the archiver's
	// checks and bundling).
	StageFinalizing = "finalizing"
	// StageNotifying is from completed to the owner's email sent.
	StageNotifying = "notifying"
)

// durationBuckets span a quick export (well under a second) to the
// watchdog's default limit and beyond, in seconds.
var durationBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200}

// Recorder records the metrics. It is safe for concurrent use.
type Recorder struct {
	requested, finished metric.Int64Counter
	records, bytes      metric.Int64Counter
	duration, stage     metric.Float64Histogram
}

// New creates the instruments on mp's meter.
func New(mp metric.MeterProvider) (*Recorder, error) {
	m := mp.Meter("dataport.dev/services/gateway/internal/jobmetrics")
	var r Recorder
	var err error
	if r.requested, err = m.Int64Counter(MetricRequested, metric.WithUnit("{export}"),
		metric.WithDescription("Export jobs created, by kind, format and dialect.")); err != nil {
		return nil, err
	}
	if r.finished, err = m.Int64Counter(MetricFinished, metric.WithUnit("{export}"),
		metric.WithDescription("Export jobs that reached a final state (completed, failed, rejected, canceled), by kind, format and state.")); err != nil {
		return nil, err
	}
	if r.records, err = m.Int64Counter(MetricRecords, metric.WithUnit("{record}"),
		metric.WithDescription("Records in the files of completed exports, by kind and format.")); err != nil {
		return nil, err
	}
	if r.bytes, err = m.Int64Counter(MetricBytes, metric.WithUnit("By"),
		metric.WithDescription("Bytes of the files of completed exports, by kind and format.")); err != nil {
		return nil, err
	}
	if r.duration, err = m.Float64Histogram(MetricDuration, metric.WithUnit("s"),
		metric.WithDescription("Time from an export's request to its final state, by kind, format and state."),
		metric.WithExplicitBucketBoundaries(durationBuckets...)); err != nil {
		return nil, err
	}
	if r.stage, err = m.Float64Histogram(MetricStageDuration, metric.WithUnit("s"),
		metric.WithDescription("Time an export spent in a stage (queued, exporting, finalizing, notifying), by kind and format."),
		metric.WithExplicitBucketBoundaries(durationBuckets...)); err != nil {
		return nil, err
	}
	return &r, nil
}

// Observe records what the change of a job from before (nil: created) to
// after means; it is the jobstore.WithOnChange hook.
func (r *Recorder) Observe(ctx context.Context, before, after *exportv1.Job) {
	kind, format := word(after.GetKind().String(), "JOB_KIND_"), word(after.GetFormat().String(), "FORMAT_")
	base := []attribute.KeyValue{attribute.String("kind", kind), attribute.String("format", format)}
	if before == nil {
		r.requested.Add(ctx, 1, metric.WithAttributes(append(base, attribute.String("dialect", after.GetDialect()))...))
	}
	was, now := before.GetStages(), after.GetStages()
	stage := func(name string, from, to *timestamppb.Timestamp) {
		if d, ok := between(from, to); ok {
			r.stage.Record(ctx, d.Seconds(), metric.WithAttributes(append(base, attribute.String("stage", name))...))
		}
	}
	if was.GetProcessingAt() == nil {
		// A job whose queued event came late waited from its creation.
		queued := now.GetQueuedAt()
		if queued == nil {
			queued = after.GetCreatedAt()
		}
		stage(StageQueued, queued, now.GetProcessingAt())
	}
	if was.GetFinalizingAt() == nil {
		stage(StageExporting, now.GetProcessingAt(), now.GetFinalizingAt())
	}
	if was.GetNotifiedAt() == nil {
		stage(StageNotifying, now.GetEndedAt(), now.GetNotifiedAt())
	}
	if jobstore.Terminal(before.GetState()) || !jobstore.Terminal(after.GetState()) {
		return
	}
	state := word(after.GetState().String(), "JOB_STATE_")
	withState := metric.WithAttributes(append(base, attribute.String("state", state))...)
	r.finished.Add(ctx, 1, withState)
	if d, ok := between(after.GetCreatedAt(), now.GetEndedAt()); ok {
		r.duration.Record(ctx, d.Seconds(), withState)
	}
	if after.GetState() != exportv1.JobState_JOB_STATE_COMPLETED {
		return
	}
	stage(StageFinalizing, now.GetFinalizingAt(), now.GetEndedAt())
	var records, size uint64
	for _, f := range after.GetFiles() {
		records += f.GetRecords()
		size += f.GetSize()
	}
	r.records.Add(ctx, int64(records), metric.WithAttributes(base...))
	r.bytes.Add(ctx, int64(size), metric.WithAttributes(base...))
}

// between is to minus from when both are set and in order; clocks of
// different services may disagree by a little, and a negative stage is
// no measurement.
func between(from, to *timestamppb.Timestamp) (time.Duration, bool) {
	if from == nil || to == nil {
		return 0, false
	}
	d := to.AsTime().Sub(from.AsTime())
	return d, d >= 0
}

// word is an enum value's name without its prefix, in lower case
// ("JOB_KIND_ROOM" → "room"): the words the native API uses too.
func word(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}
