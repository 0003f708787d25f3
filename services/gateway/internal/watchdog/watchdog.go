// Package watchdog makes sure no job stays "processing" forever. It fails
// jobs in two situations nobody else notices:
//
//   - a message ran out of deliveries (JetStream's MAX_DELIVERIES advisory):
//     an exporter that crashes or hangs on every attempt never gets to run
//     its own "give up" path, so the gateway fails the job instead;
//   - a job has not changed for StuckAfter (a lost task, a lost event).
//
// Every gateway replica runs a watchdog. That is harmless: failures are
// emitted (published with the once-per-job dedup id "<jobId>.failed" and
// applied to the projection at once) and the projection only moves a job
// forward, so a job fails at most once and a job that finished in the
// meantime stays finished.
package watchdog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/telemetry"
)

// watched are the consumers whose give-ups the watchdog handles.
var watched = []struct{ stream, consumer string }{
	{bus.StreamExportTasks, bus.ConsumerRoomExporter},
	{bus.StreamExportTasks, bus.ConsumerRecordExporter},
	{bus.StreamExportEvents, bus.ConsumerArchiver},
	{bus.StreamExportEvents, bus.ConsumerNotifier},
}

// advisory is the part of io.nats.jetstream.advisory.v1.max_deliver we
// read.
type advisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// Jobs is the part of jobstore.Store the watchdog uses: it reads the
// projection and emits failures (publishes them and applies them at once).
type Jobs interface {
	// Unfinished lists the jobs that have not ended (of every owner for
	// ownerID "", of every kind for kind unspecified).
	Unfinished(ctx context.Context, ownerID string, kind exportv1.JobKind) ([]*exportv1.Job, error)
	Emit(ctx context.Context, pub jobstore.Publisher, ev jobstore.Event) (*exportv1.Job, error)
}

// Publisher publishes status events; it is bus.Publisher.
type Publisher interface {
	PublishStatus(ctx context.Context, ev bus.Event, jobID, discriminator string, m proto.Message) error
}

// instrumentation names the watchdog's tracer and meter.
const instrumentation = "dataport.dev/services/gateway/internal/watchdog"

// Options configure the watchdog.
type Options struct {
	// StuckAfter is how long a non-terminal job may go without any update
	// before it is failed; 0 disables the scan.
	StuckAfter time.Duration
	// ScanEvery is how often the projection is scanned; 0 means
	// StuckAfter/4, at most one minute.
	ScanEvery time.Duration
	Logger    *slog.Logger
	// MeterProvider records the failures and the last scan's view of the
	// unfinished jobs (metrics.go); nil records nothing.
	MeterProvider metric.MeterProvider
	// TracerProvider traces each failure the watchdog decides, inside the
	// job's trace (telemetry.InJobTrace); nil traces nothing.
	TracerProvider trace.TracerProvider
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Watchdog fails jobs that cannot finish. Run it once per process.
type Watchdog struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	jobs    Jobs
	pub     Publisher
	opts    Options
	metrics *metrics
	tracer  trace.Tracer
}

// New returns a Watchdog.
func New(nc *nats.Conn, js jetstream.JetStream, jobs Jobs, pub Publisher, opts Options) *Watchdog {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.ScanEvery <= 0 {
		opts.ScanEvery = min(opts.StuckAfter/4, time.Minute)
	}
	if opts.MeterProvider == nil {
		opts.MeterProvider = metricnoop.NewMeterProvider()
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = tracenoop.NewTracerProvider()
	}
	return &Watchdog{nc: nc, js: js, jobs: jobs, pub: pub, opts: opts, metrics: newMetrics(opts.MeterProvider, opts.Logger),
		tracer: opts.TracerProvider.Tracer(instrumentation)}
}

// Run listens for advisories and scans for stuck jobs until ctx ends.
// Advisories are core NATS messages: one that arrives while no gateway
// listens is lost, and the stuck scan catches its job later.
func (w *Watchdog) Run(ctx context.Context) error {
	advisories := make(chan *nats.Msg, 256)
	for _, c := range watched {
		sub, err := w.nc.ChanSubscribe(bus.MaxDeliveriesAdvisory(c.stream, c.consumer), advisories)
		if err != nil {
			return fmt.Errorf("watchdog: subscribe advisories of %s: %w", c.consumer, err)
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	var tick <-chan time.Time
	if w.opts.StuckAfter > 0 {
		t := time.NewTicker(w.opts.ScanEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-advisories:
			w.handleAdvisory(ctx, m.Data)
		case <-tick:
			if _, err := w.Scan(ctx); err != nil {
				w.opts.Logger.WarnContext(ctx, "stuck job scan failed", "error", err)
			}
		}
	}
}

// handleAdvisory finds the job the given-up message belongs to and fails
// it. Errors are logged: a retry would need the advisory again, and the
// stuck scan is the backstop.
func (w *Watchdog) handleAdvisory(ctx context.Context, data []byte) {
	log := w.opts.Logger
	var a advisory
	if err := json.Unmarshal(data, &a); err != nil {
		log.WarnContext(ctx, "undecodable max-deliveries advisory", "error", err)
		return
	}
	log = log.With("stream", a.Stream, "consumer", a.Consumer, "stream_seq", a.StreamSeq, "deliveries", a.Deliveries)
	stream, err := w.js.Stream(ctx, a.Stream)
	if err != nil {
		log.ErrorContext(ctx, "max deliveries: open stream", "error", err)
		return
	}
	msg, err := stream.GetMsg(ctx, a.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// Another replica already handled and removed it.
		return
	}
	if err != nil {
		log.ErrorContext(ctx, "max deliveries: fetch message", "error", err)
		return
	}

	var jobID, ownerID, reason string
	switch a.Stream {
	case bus.StreamExportTasks:
		var task exportv1.ExportTask
		if err := proto.Unmarshal(msg.Data, &task); err != nil || bus.Token(task.GetJobId()) != nil {
			log.WarnContext(ctx, "max deliveries: task names no job; removing it", "subject", msg.Subject)
		} else {
			jobID, ownerID = task.GetJobId(), task.GetOwnerId()
			reason = fmt.Sprintf("The export failed %d times without finishing; please try again.", a.Deliveries)
			log.WarnContext(ctx, "max deliveries: export task given up (the exporter crashed or timed out every time)",
				"job_id", jobID, "part", task.GetPart())
		}
	default:
		ev, id, err := bus.ParseStatusSubject(msg.Subject)
		if err != nil {
			log.WarnContext(ctx, "max deliveries: not a status event", "subject", msg.Subject)
			return
		}
		if a.Consumer == bus.ConsumerNotifier {
			// The job's outcome is already final; only the notice is lost.
			log.ErrorContext(ctx, "notification given up", "job_id", id, "event", string(ev))
			return
		}
		jobID = id
		reason = fmt.Sprintf("The export could not be finished after %d attempts; please try again.", a.Deliveries)
		log.WarnContext(ctx, "max deliveries: status event given up", "job_id", id, "event", string(ev))
	}

	if jobID != "" {
		// The given-up message carries the trace of the request that
		// created the job: the reason names it for support.
		tctx := bus.ExtractTrace(ctx, propagation.TraceContext{}, msg.Header)
		reason = bus.ReasonFor(tctx, bus.Worded(reason, nil))
		if err := w.traced(tctx, "watchdog fail_max_deliveries", jobID, func(ctx context.Context) error {
			return w.fail(ctx, jobID, ownerID, reason)
		}); err != nil {
			log.ErrorContext(ctx, "max deliveries: fail job", "job_id", jobID, "error", err)
			return
		}
		w.metrics.failed(ctx, causeMaxDeliveries)
		log.WarnContext(ctx, "job failed after max deliveries", "job_id", jobID, "reason", reason)
	}
	if a.Stream == bus.StreamExportTasks {
		// A work-queue stream keeps messages that ran out of deliveries
		// forever; the job is failed, so the task goes.
		if err := stream.DeleteMsg(ctx, a.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			log.WarnContext(ctx, "max deliveries: delete task", "error", err)
		}
	}
}

// Scan fails every non-terminal job that has not changed for StuckAfter
// and returns their ids.
func (w *Watchdog) Scan(ctx context.Context) ([]string, error) {
	now := w.opts.Now()
	cutoff := now.Add(-w.opts.StuckAfter)
	unfinished, err := w.jobs.Unfinished(ctx, "", exportv1.JobKind_JOB_KIND_UNSPECIFIED)
	if err != nil {
		return nil, fmt.Errorf("select stuck jobs: %w", err)
	}
	var seen scanStats
	stuck := slices.DeleteFunc(unfinished, func(j *exportv1.Job) bool {
		// A recurring definition waits for its next occurrence by design.
		if jobstore.Terminal(j.GetState()) || j.GetRecurrence() != nil {
			return true
		}
		last := j.GetUpdatedAt()
		if last == nil {
			last = j.GetCreatedAt()
		}
		seen.add(j.GetState(), last, now)
		return last == nil || !last.AsTime().Before(cutoff)
	})
	w.metrics.scanned(seen)
	var ids []string
	var errs []error
	for _, j := range stuck {
		reason := fmt.Sprintf("no progress for %s; the export was stopped, please try again", w.opts.StuckAfter)
		if id, err := trace.TraceIDFromHex(j.GetTraceId()); err == nil {
			reason = bus.WithTraceID(reason, id)
		}
		if err := w.traced(telemetry.InJobTrace(ctx, j.GetTraceId(), j.GetSpanId()), "watchdog fail_stuck", j.GetId(), func(ctx context.Context) error {
			return w.fail(ctx, j.GetId(), j.GetOwnerId(), reason)
		}); err != nil {
			errs = append(errs, err)
			continue
		}
		w.metrics.failed(ctx, causeStuck)
		w.opts.Logger.WarnContext(ctx, "stuck job failed", "job_id", j.GetId(), "state", j.GetState().String())
		ids = append(ids, j.GetId())
	}
	return ids, errors.Join(errs...)
}

// traced runs do in a span of its own under ctx's span: the job's trace
// then shows who failed the job and when, and the failure event carries
// the trace to the projection and the notifier.
func (w *Watchdog) traced(ctx context.Context, name, jobID string, do func(context.Context) error) error {
	ctx, span := w.tracer.Start(ctx, name, trace.WithAttributes(attribute.String("dataport.job_id", jobID)))
	defer span.End()
	err := do(ctx)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

func (w *Watchdog) fail(ctx context.Context, jobID, ownerID, reason string) error {
	ev := &exportv1.ExportFailed{JobId: jobID, OccurredAt: timestamppb.New(w.opts.Now()), Reason: reason, OwnerId: ownerID}
	_, err := w.jobs.Emit(ctx, w.pub, ev)
	if errors.Is(err, jobstore.ErrNotFound) {
		// Published, but the job is not in the projection (yet): the
		// projection consumer applies the failure once it is.
		return nil
	}
	return err
}
