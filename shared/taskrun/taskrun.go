// Package taskrun is the one lifecycle of an export task, shared by every
// exporter service: verify the gateway's signature, decode, validate,
// dispatch once by part kind, check the task's scope, watch its job for a
// cancellation, run the kind, announce the part, and clean up after a
// cancellation, a rejection or a task that ran out of deliveries.
//
// An export kind (a room document, a user's profile, a records file)
// implements Kind, and optionally Validator, Authorizer and Discarder,
// and is registered once with a Runner. A kind writes its part's objects
// under objects.PartPrefix and returns them; everything else — progress
// events, the PartUploaded announcement and its dedup ids, checkpoints in
// bus.BucketCheckpoints, ExportFailed — is the Runner's.
//
// An outage of the object store or NATS is not the task's fault: an
// attempt that fails because one is unavailable (blob.ErrUnavailable,
// bus.Unavailable) is retried from its checkpoint in the same delivery,
// with a capped backoff, for up to Options.DependencyWait, instead of
// using up the task's deliveries. A failed job's reason is a sentence for
// people (bus.ReasonFor); the internal error is logged with the job id.
package taskrun

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/jobview"
	"dataport.dev/shared/objects"
)

const instrumentation = "dataport.dev/shared/taskrun"

// Defaults of Options.
const (
	DefaultProgressInterval = time.Second
	DefaultProgressRecords  = 1000
	// DefaultNotAllowed is the rejection reason of a task whose scope
	// allows nothing, when Options.NotAllowed is empty.
	DefaultNotAllowed = "You are not allowed to export this data."
	// DefaultDependencyWait is how long a task waits out an object store
	// or NATS outage before its job fails, when Options.DependencyWait is
	// zero. A restart or a brownout of a few minutes is routine.
	DefaultDependencyWait = 30 * time.Minute
)

// Backoff between attempts while a dependency is down, and how long an
// attempt must have run before its failure counts as a new outage rather
// than the same one: attempts during an outage fail within seconds (the
// clients' own retries and request timeouts), one that ran this long got
// going, so the dependency had come back.
const (
	firstDependencyBackoff = time.Second
	maxDependencyBackoff   = 30 * time.Second
	outageReset            = 2 * time.Minute
)

// Kind produces one kind of part.
//
// Run writes the task's objects (under objects.PartPrefix of its job and
// part, or references to objects elsewhere) and returns them; the Runner
// announces them. ctx ends with cause jobview.ErrCanceled when the job is
// canceled while Run runs, jobview.ErrFailed when another part fails it:
// Run then returns any error, and the Runner deletes the part's objects
// (but a Keeper's finished files). Errors are transient (the task is
// redelivered and may resume from its checkpoint) unless they are
// bus.Permanent or a Reject. Run must be idempotent: object keys derive
// from the job id and part, so a second run overwrites the first. Run is
// called concurrently for different tasks.
type Kind interface {
	Run(ctx context.Context, t *Task) (*Result, error)
}

// Validator is a Kind that checks a task before its scope is read: what
// no retry can fix about the task itself (an unknown format, a bad room
// id). Validate returns a Reject or a bus.Permanent error, or nil.
type Validator interface {
	Validate(t *Task) error
}

// Authorizer is a Kind with checks beyond the scope the Runner resolved
// (t.Grant): e.g. whether the grant may read the task's room. It returns
// a Reject when the scope does not cover the task, any other error when
// it could not tell.
type Authorizer interface {
	Authorize(ctx context.Context, t *Task) error
}

// Discarder is a Kind that holds more than objects and a checkpoint
// between attempts (an unfinished multipart upload named in its
// checkpoint). Discard frees it; it runs before the Runner deletes the
// checkpoint, when no attempt will resume the part (its job was canceled
// or failed). Best effort: failures are logged, not returned.
type Discarder interface {
	Discard(ctx context.Context, t *Task)
}

// Keeper is a Kind whose unfinished part may leave finished files worth
// keeping: the chunks a chunked record export stored before its job was
// canceled or it failed. Finished returns them (it runs before Discard and
// before the checkpoint, which usually lists them, is deleted); the Runner
// keeps their objects while deleting the rest of the part's, and
// announces them as the job's partial results: in ExportFailed, or in a
// partial PartUploaded for a canceled job. An error or nothing keeps
// nothing, which is what a Kind without Keeper gets.
type Keeper interface {
	Finished(ctx context.Context, t *Task) ([]*exportv1.File, error)
}

// Result is a finished part.
type Result struct {
	Files []*exportv1.File
	// Records and Bytes are the part's totals, reported in the final
	// progress event.
	Records, Bytes uint64
	// FileList announces Files in PartUploaded.files even when there is
	// one (chunked exports, asset lists); otherwise a single file goes in
	// PartUploaded.file.
	FileList bool
	// Piece marks the single file as one piece of a split export's file
	// (PartUploaded.piece), which the archiver joins with the other parts'.
	Piece *exportv1.FilePiece
	// Attachments are files the part's single file links to and that are
	// delivered with it (a room export's assets): announced in
	// PartUploaded.files beside PartUploaded.file.
	Attachments []*exportv1.File
	// AttachmentList, instead of Attachments, is a list of them that the
	// kind already uploaded (Task.UploadAttachmentList): announced in
	// PartUploaded.attachment_list, for a part with more than
	// MaxInlineAttachments that it does not hold in memory.
	AttachmentList *exportv1.File
	// HiddenUsernames and HiddenUsernamesTruncated go into
	// PartUploaded as they are: whom a personal download's room file
	// pseudonymised.
	HiddenUsernames          []string
	HiddenUsernamesTruncated bool
	// Log holds extra slog attributes for the "part uploaded" line.
	Log []any
	// Handoff ends the task without announcing its part: the run did
	// its share and queued the task that will announce the part (a split
	// room export's index stage, whose render stage announces the
	// piece). Files may then be empty.
	Handoff bool
}

// Options configure a Runner. JS, Store, Publisher, Bucket and Signer are
// required.
type Options struct {
	JS        jetstream.JetStream
	Store     *blob.Store
	Publisher *bus.Publisher
	// Bucket holds the parts (the exports bucket).
	Bucket string
	// Signer verifies that tasks come from the gateway.
	Signer *bus.TaskSigner
	// Name names the exporter in telemetry: spans are "<Name>.Export",
	// and the task histogram MetricDuration carries it as "exporter"
	// (e.g. roomexport).
	Name string
	// NotAllowed is the rejection reason of a task whose scope allows
	// nothing (DefaultNotAllowed when empty).
	NotAllowed string
	// MaxDeliver is the task consumer's MaxDeliver. A transient failure on
	// the last delivery is reported as permanent, so the job fails with a
	// reason instead of its task silently running out of deliveries.
	// Zero disables that.
	MaxDeliver int
	// DependencyWait bounds how long one delivery of a task waits while
	// the object store or NATS is unavailable (DefaultDependencyWait when
	// zero). Meanwhile the attempt is retried from its checkpoint with a
	// capped backoff, and the consume loop's in-progress acks keep the
	// task's lease, so an outage burns no deliveries: MaxDeliver counts
	// the task's own failures. When the wait runs out the job fails with
	// a reason that says so.
	DependencyWait time.Duration
	// ProgressInterval and ProgressRecords: Task.Tick publishes an
	// ExportProgress event when either this much time or this many records
	// passed since the last one.
	ProgressInterval time.Duration
	ProgressRecords  int
	Logger           *slog.Logger
	TracerProvider   trace.TracerProvider
	MeterProvider    metric.MeterProvider
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Runner runs export tasks through their kinds. Register every kind
// before the first task; after that it is safe for concurrent use.
type Runner struct {
	opts        Options
	kinds       map[exportv1.PartKind]Kind
	jobs        *jobview.Reader
	dir         *access.Directory
	checkpoints jetstream.KeyValue
	log         *slog.Logger
	tracer      trace.Tracer
	duration    metric.Float64Histogram
	// records and bytes count what announced parts hold, under one name
	// for every exporter (the service tells them apart).
	records, bytes metric.Int64Counter
}

// Names of the exporters' throughput counters.
const (
	MetricRecords = "dataport.task.records"
	MetricBytes   = "dataport.task.bytes"
	// MetricDuration is one name for every exporter, so dashboards and
	// alerts name a metric that exists whatever exporters are deployed.
	MetricDuration = "dataport.task.duration"
)

// New returns a Runner with no kinds. It looks up the jobs, checkpoints
// and directory buckets, which must exist (bus.EnsureTopology).
func New(ctx context.Context, o Options) (*Runner, error) {
	if o.JS == nil || o.Store == nil || o.Publisher == nil || o.Bucket == "" || o.Signer == nil {
		return nil, errors.New("taskrun: JS, Store, Publisher, Bucket and Signer are required")
	}
	if o.Name == "" {
		o.Name = "taskrun"
	}
	if o.NotAllowed == "" {
		o.NotAllowed = DefaultNotAllowed
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = DefaultProgressInterval
	}
	if o.ProgressRecords <= 0 {
		o.ProgressRecords = DefaultProgressRecords
	}
	if o.DependencyWait <= 0 {
		o.DependencyWait = DefaultDependencyWait
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TracerProvider == nil {
		o.TracerProvider = tracenoop.NewTracerProvider()
	}
	if o.MeterProvider == nil {
		o.MeterProvider = metricnoop.NewMeterProvider()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	jobs, err := jobview.Open(ctx, o.JS, o.Logger)
	if err != nil {
		return nil, fmt.Errorf("taskrun: %w", err)
	}
	checkpoints, err := o.JS.KeyValue(ctx, bus.BucketCheckpoints)
	if err != nil {
		return nil, fmt.Errorf("taskrun: bucket %s: %w", bus.BucketCheckpoints, err)
	}
	dir, err := access.OpenDirectory(ctx, o.JS)
	if err != nil {
		return nil, fmt.Errorf("taskrun: %w", err)
	}
	duration, err := o.MeterProvider.Meter(instrumentation).Float64Histogram(MetricDuration,
		metric.WithUnit("s"), metric.WithDescription("Time spent on one export task, by exporter and outcome."))
	if err != nil {
		return nil, fmt.Errorf("taskrun: histogram: %w", err)
	}
	records, err := o.MeterProvider.Meter(instrumentation).Int64Counter(MetricRecords, metric.WithUnit("{record}"),
		metric.WithDescription("Records in the parts exporters uploaded and announced, by part kind and format."))
	if err != nil {
		return nil, fmt.Errorf("taskrun: counter: %w", err)
	}
	bytes, err := o.MeterProvider.Meter(instrumentation).Int64Counter(MetricBytes, metric.WithUnit("By"),
		metric.WithDescription("Bytes of the parts exporters uploaded and announced, by part kind and format."))
	if err != nil {
		return nil, fmt.Errorf("taskrun: counter: %w", err)
	}
	return &Runner{
		records: records, bytes: bytes,
		opts: o, kinds: make(map[exportv1.PartKind]Kind), jobs: jobs, dir: dir, checkpoints: checkpoints,
		log: o.Logger, tracer: o.TracerProvider.Tracer(instrumentation), duration: duration,
	}, nil
}

// Register makes k the producer of parts of kind pk, replacing an earlier
// registration. Call it before the Runner takes tasks.
func (r *Runner) Register(pk exportv1.PartKind, k Kind) {
	r.kinds[pk] = k
}

// PartKind is the task's part kind. Tasks from before parts had kinds do
// not say: theirs follows from the job kind.
func PartKind(task *exportv1.ExportTask) exportv1.PartKind {
	if k := task.GetPartKind(); k != exportv1.PartKind_PART_KIND_UNSPECIFIED {
		return k
	}
	switch task.GetKind() {
	case exportv1.JobKind_JOB_KIND_ROOM:
		return exportv1.PartKind_PART_KIND_ROOM
	case exportv1.JobKind_JOB_KIND_ROOM_MAIL:
		return exportv1.PartKind_PART_KIND_ROOM_MAIL
	case exportv1.JobKind_JOB_KIND_RECORDS:
		return exportv1.PartKind_PART_KIND_RECORDS
	}
	return exportv1.PartKind_PART_KIND_UNSPECIFIED
}

// rejection marks a task that can never succeed as asked: its job ends
// rejected, with the message as reason.
type rejection struct{ sentence string }

func (e *rejection) Error() string  { return e.sentence }
func (e *rejection) Reason() string { return e.sentence }

// Reject returns the permanent error of a task that can never succeed as
// asked (unknown room, unsupported format, over its limits): the task is
// terminated and its job fails as rejected with the formatted reason,
// which people read.
func Reject(format string, args ...any) error {
	return bus.Permanent(&rejection{sentence: fmt.Sprintf(format, args...)})
}

// IsRejected reports whether err carries a Reject.
func IsRejected(err error) bool {
	var rej *rejection
	return errors.As(err, &rej)
}

// EnumWord turns an enum name such as FORMAT_HTML into "html" for reasons
// people read.
func EnumWord(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

// Handle is the bus.Handler for export tasks. It returns nil once the part
// is announced (or the job turned out to be canceled), a bus.Permanent
// error for tasks no retry can fix, and any other error for transient
// failures, which the consume loop retries; on the consumer's last
// delivery a transient failure becomes permanent (bus.GiveUpOnLastDelivery).
// A task without the gateway's signature is terminated without failing
// the job it names.
func (r *Runner) Handle(ctx context.Context, msg jetstream.Msg) error {
	if err := r.opts.Signer.VerifyMsg(msg); err != nil {
		return err
	}
	var task exportv1.ExportTask
	if err := bus.Decode(msg, &task); err != nil {
		return err
	}
	return bus.GiveUpOnLastDelivery(ctx, msg, r.opts.MaxDeliver, r.Export(ctx, &task))
}

// Terminated is the consume loop's OnTerminated hook: it fails the task's
// job (Fail), so a task that cannot be done ends its job with a reason
// instead of vanishing.
func (r *Runner) Terminated(ctx context.Context, msg jetstream.Msg, cause error) {
	if errors.Is(cause, bus.ErrBadSignature) {
		// Not the gateway's task: the job it names is not ours to fail.
		return
	}
	var task exportv1.ExportTask
	if err := proto.Unmarshal(msg.Data(), &task); err != nil || bus.Token(task.GetJobId()) != nil {
		// Nothing tells which job this was; the consume loop logged it.
		return
	}
	r.Fail(ctx, &task, cause)
}

// Fail ends a task that will not run again: it discards what attempts
// left of its part (objects under objects.PartPrefix, the checkpoint, and
// what the kind's Discarder frees) and publishes ExportFailed, marked
// rejected for a Reject. The event's reason is cause's worded sentence
// (bus.ReasonFor: a Reject's message, bus.Worded, else
// bus.DefaultReason) with the trace id; cause's own text, which names
// hosts, buckets and upload ids, goes to the log only. Terminated calls
// it; so may a caller that runs Export without a consume loop.
func (r *Runner) Fail(ctx context.Context, task *exportv1.ExportTask, cause error) {
	ctx = context.WithoutCancel(ctx)
	t := r.newTask(task)
	kept := r.finished(ctx, t)
	r.discard(ctx, t, objects.PartPrefix(task.GetJobId(), task.GetPart()), kept)
	ev := &exportv1.ExportFailed{
		JobId:        task.GetJobId(),
		OccurredAt:   timestamppb.New(r.opts.Now()),
		Reason:       bus.ReasonFor(ctx, cause),
		Rejected:     IsRejected(cause),
		OwnerId:      task.GetOwnerId(),
		PartialFiles: kept,
	}
	if err := r.opts.Publisher.PublishStatus(ctx, bus.EventFailed, task.GetJobId(), "", ev); err != nil {
		t.Log.ErrorContext(ctx, "could not fail job of terminated task", "error", err, "cause", cause)
		return
	}
	t.Log.WarnContext(ctx, "job failed", "reason", ev.GetReason(), "rejected", ev.GetRejected(), "error", cause)
}

// Export runs a decoded task: validation, dispatch by part kind, scope,
// cancellation, the kind's Run, and the announcement with PartUploaded.
// Its verdict is Handle's, before the last-delivery rule: nil when the
// part is announced, when its job ended without it (canceled, or failed by
// another part: see ended), or when the job completed before or while
// this repeated run of the part ran (completedMeanwhile); a bus.Permanent
// error (Reject for rejections) the caller should terminate and Fail, any
// other error for a retry, which keeps the part's checkpoint.
func (r *Runner) Export(ctx context.Context, task *exportv1.ExportTask) (err error) {
	start := r.opts.Now()
	t := r.newTask(task)
	ctx, span := r.tracer.Start(ctx, r.opts.Name+".Export", trace.WithAttributes(
		attribute.String("dataport.job_id", task.GetJobId()),
		attribute.Int("dataport.part", int(task.GetPart())),
		attribute.String("dataport.part_kind", EnumWord(t.Kind.String(), "PART_KIND_")),
	))
	outcome := "ok"
	defer func() {
		switch {
		case errors.Is(err, jobview.ErrCanceled):
			outcome, err = "canceled", r.ended(ctx, t, jobview.ErrCanceled)
		case errors.Is(err, jobview.ErrFailed):
			outcome, err = "stopped", r.ended(ctx, t, jobview.ErrFailed)
		case bus.IsPermanent(err):
			outcome = "terminated"
		case err != nil:
			outcome = "retry"
		}
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.SetAttributes(attribute.String("dataport.outcome", outcome))
		span.End()
		r.duration.Record(context.WithoutCancel(ctx), r.opts.Now().Sub(start).Seconds(),
			metric.WithAttributes(attribute.String("exporter", r.opts.Name), attribute.String("outcome", outcome)))
	}()

	return r.attempts(ctx, t, start)
}

// attempts runs attempt until it succeeds or fails for a reason of its
// own. While the object store or NATS is unavailable it waits with a
// capped backoff and tries again, in the same delivery, from the part's
// checkpoint; the consume loop's in-progress acks keep the lease
// meanwhile. An outage longer than Options.DependencyWait fails the job.
func (r *Runner) attempts(ctx context.Context, t *Task, start time.Time) error {
	var down time.Time // when the current outage began; zero while none
	backoff := firstDependencyBackoff
	// An outage is measured on the real clock, not Options.Now: the
	// backoff waits in real time, and a clock a test holds still would
	// otherwise make the outage never last long enough to give up.
	for {
		began := time.Now()
		err := r.attempt(ctx, t, start)
		what := unavailable(err)
		if what == "" || ctx.Err() != nil {
			return err
		}
		now := time.Now()
		if down.IsZero() || now.Sub(began) >= outageReset {
			down, backoff = began, firstDependencyBackoff
		}
		waited := now.Sub(down)
		if waited >= r.opts.DependencyWait {
			t.Log.ErrorContext(ctx, "dependency unavailable for too long; giving up", "dependency", what,
				"waited", waited.String(), "error", err)
			return bus.Permanent(bus.Worded(fmt.Sprintf(
				"The export stopped because %s was unavailable for more than %s; please try again.",
				what, words(r.opts.DependencyWait)), err))
		}
		wait := min(backoff, r.opts.DependencyWait-waited)
		t.Log.WarnContext(ctx, "dependency unavailable; retrying after a wait", "dependency", what,
			"waited", waited.String(), "retry_in", wait.String(), "error", err)
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return err
		case <-timer.C:
		}
		backoff = min(backoff*2, maxDependencyBackoff)
	}
}

// unavailable names the dependency err says is down, in the words of a
// job's reason, or returns "" when err is the task's own failure.
func unavailable(err error) string {
	switch {
	case err == nil || bus.IsPermanent(err) || errors.Is(err, jobview.ErrCanceled) || errors.Is(err, jobview.ErrFailed):
		return ""
	case errors.Is(err, blob.ErrUnavailable):
		return "the file storage"
	case bus.Unavailable(err):
		return "the messaging service"
	}
	return ""
}

// words spells a duration for a reason: "30 minutes", not "30m0s".
func words(d time.Duration) string {
	unit := func(n int64, one string) string {
		if n == 1 {
			return "1 " + one
		}
		return strconv.FormatInt(n, 10) + " " + one + "s"
	}
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return unit(int64(d/time.Hour), "hour")
	case d >= time.Minute && d%time.Minute == 0:
		return unit(int64(d/time.Minute), "minute")
	}
	return unit(int64(d.Round(time.Second)/time.Second), "second")
}

// attempt is one try at the task: prepare, run, announce. A part already
// run (t.done) is only announced.
func (r *Runner) attempt(ctx context.Context, t *Task, start time.Time) error {
	task := t.Task
	if t.done == nil {
		k, err := r.prepare(ctx, t)
		if err != nil {
			return err
		}
		if err := jobview.Ended(t.Job); err != nil {
			t.Log.InfoContext(ctx, "job ended before its part started", "ended", err.Error())
			return err
		}
		if t.Job.GetState() == exportv1.JobState_JOB_STATE_COMPLETED {
			// Every part was reported and delivered: this is a repeated
			// delivery of a task already done, and what it would write the
			// archiver may already have cleaned up.
			t.Log.InfoContext(ctx, "job already completed; part not run again")
			return nil
		}
		if t.done, err = r.run(ctx, t, k); err != nil {
			return r.completedMeanwhile(ctx, t, err)
		}
	}
	res := t.done
	// Once more before announcing: a part finished after its job ended
	// (and a watch that broke) is not announced as a part of it.
	cause, err := r.jobs.Ended(ctx, task.GetJobId())
	if err != nil {
		return err
	}
	if cause != nil {
		t.Log.InfoContext(ctx, "job ended after its part was uploaded", "ended", cause.Error())
		return cause
	}
	if res.Handoff {
		t.Log.InfoContext(ctx, "part handed off", append([]any{"duration", r.opts.Now().Sub(start).String()}, res.Log...)...)
		return nil
	}
	if err := r.announce(ctx, t, res); err != nil {
		return err
	}
	// Only now: a crash before the announcement resumes (or redoes) the
	// part; once announced nothing needs the checkpoint.
	t.DeleteCheckpoint(ctx)
	// Counted once announced, so failed attempts count nothing; only a
	// crash between the announcement and the ack counts a part twice.
	counted := metric.WithAttributes(
		attribute.String("part_kind", EnumWord(t.Kind.String(), "PART_KIND_")),
		attribute.String("format", EnumWord(task.GetFormat().String(), "FORMAT_")))
	r.records.Add(context.WithoutCancel(ctx), int64(res.Records), counted)
	r.bytes.Add(context.WithoutCancel(ctx), int64(res.Bytes), counted)
	attrs := append([]any{"records", res.Records, "bytes", res.Bytes, "files", len(res.Files),
		"duration", r.opts.Now().Sub(start).String()}, res.Log...)
	t.Log.InfoContext(ctx, "part uploaded", attrs...)
	return nil
}

// completedMeanwhile is the verdict on a run that failed with err: nil
// when the job completed while it ran. Only a repeated run of a part can
// see that (the job completes once every part is reported), and the
// archiver deletes a split export's state, which a repeated range reads,
// once the job is completed; failing, or retrying until the last delivery
// fails the job, would undo a job that is done.
func (r *Runner) completedMeanwhile(ctx context.Context, t *Task, err error) error {
	if errors.Is(err, jobview.ErrCanceled) || errors.Is(err, jobview.ErrFailed) {
		return err
	}
	job, jerr := r.jobs.Get(ctx, t.Task.GetJobId())
	if jerr != nil || job.GetState() != exportv1.JobState_JOB_STATE_COMPLETED {
		return err
	}
	t.Log.InfoContext(ctx, "job completed while its part ran again; nothing left to do", "error", err)
	return nil
}

// prepare validates the task, finds its kind and checks its scope; it
// reads the job record into t.Job.
func (r *Runner) prepare(ctx context.Context, t *Task) (Kind, error) {
	task := t.Task
	if err := bus.Token(task.GetJobId()); err != nil {
		return nil, bus.Permanent(fmt.Errorf("task has no usable job id: %w", err))
	}
	if task.GetPartsTotal() > 0 && task.GetPart() >= task.GetPartsTotal() {
		return nil, bus.Permanent(fmt.Errorf("part %d of a job with %d parts", task.GetPart(), task.GetPartsTotal()))
	}
	k, ok := r.kinds[t.Kind]
	switch {
	case !ok && task.GetPartKind() == exportv1.PartKind_PART_KIND_UNSPECIFIED:
		return nil, Reject("export kind %s not supported yet", EnumWord(task.GetKind().String(), "JOB_KIND_"))
	case !ok:
		return nil, Reject("part kind %s not supported", EnumWord(t.Kind.String(), "PART_KIND_"))
	}
	if v, ok := k.(Validator); ok {
		if err := v.Validate(t); err != nil {
			return nil, err
		}
	}
	g, err := r.dir.ResolveTask(ctx, task)
	switch {
	case errors.Is(err, access.ErrDenied):
		return nil, Reject("%s", r.opts.NotAllowed)
	case err != nil:
		return nil, fmt.Errorf("resolve scope: %w", err)
	}
	t.Grant = g
	if a, ok := k.(Authorizer); ok {
		if err := a.Authorize(ctx, t); err != nil {
			return nil, err
		}
	}
	if t.Job, err = r.jobs.Get(ctx, task.GetJobId()); err != nil {
		return nil, err
	}
	return k, nil
}

// run runs the kind under a watch of the job: a cancellation, or the
// job's failure in another part, ends the run's context at once instead
// of at the next poll.
func (r *Runner) run(ctx context.Context, t *Task, k Kind) (*Result, error) {
	wctx, stop, err := r.jobs.Watch(ctx, t.Task.GetJobId())
	if err != nil {
		return nil, err
	}
	t.Progress(wctx, 0, 0, 0)
	res, err := k.Run(wctx, t)
	// Read before stop, which ends wctx with a cause of its own.
	ended := context.Cause(wctx)
	stop()
	switch {
	case errors.Is(ended, jobview.ErrCanceled) || errors.Is(ended, jobview.ErrFailed):
		t.Log.InfoContext(ctx, "job ended; export stopped", "ended", ended.Error(), "error", err)
		if err != nil {
			res = nil
		}
		// A run that finished all the same is returned: a failed job
		// keeps it as partial results (ended).
		return res, ended
	case err != nil:
		return nil, err
	case res == nil || len(res.Files) == 0 && !res.FileList && !res.Handoff:
		return nil, bus.Permanent(fmt.Errorf("part kind %s produced no file", EnumWord(t.Kind.String(), "PART_KIND_")))
	}
	return res, nil
}

// partUploaded is the PartUploaded of t, without what its run produced.
func (r *Runner) partUploaded(t *Task) *exportv1.PartUploaded {
	task := t.Task
	return &exportv1.PartUploaded{
		JobId:      task.GetJobId(),
		OccurredAt: timestamppb.New(r.opts.Now()),
		Part:       task.GetPart(),
		PartsTotal: partsTotal(task),
		Kind:       task.GetKind(),
		OwnerId:    task.GetOwnerId(),
		PartKind:   t.Kind,
	}
}

// announce publishes the final progress and PartUploaded.
func (r *Runner) announce(ctx context.Context, t *Task, res *Result) error {
	task := t.Task
	t.Progress(ctx, 100, res.Records, res.Bytes)
	ev := r.partUploaded(t)
	ev.HiddenUsernames, ev.HiddenUsernamesTruncated = res.HiddenUsernames, res.HiddenUsernamesTruncated
	if len(res.Files) == 1 && !res.FileList {
		ev.File, ev.Files = res.Files[0], res.Attachments
		switch {
		case res.AttachmentList != nil:
			ev.Files, ev.AttachmentList = nil, res.AttachmentList
		case len(res.Attachments) > MaxInlineAttachments:
			list, err := r.attachmentList(ctx, t, res.Attachments)
			if err != nil {
				return err
			}
			ev.Files, ev.AttachmentList = nil, list
		}
	} else {
		ev.Files = append(res.Files, res.Attachments...)
	}
	ev.Piece = res.Piece
	disc := strconv.FormatUint(uint64(task.GetPart()), 10)
	if err := r.opts.Publisher.PublishStatus(ctx, bus.EventPart, task.GetJobId(), disc, ev); err != nil {
		return fmt.Errorf("announce part %d: %w", task.GetPart(), err)
	}
	return nil
}

// ended cleans up after a task whose job ended without it: canceled
// (why is jobview.ErrCanceled), or failed in another part or by the
// watchdog (jobview.ErrFailed), so nothing it would still produce completes the job.
// Each part deletes only its own objects: another part's task may still
// be running and keeps its own finished files, which a job-wide delete
// would remove before that part could report them. Failing to delete is
// retried like any transient failure.
//
// What the part finished is kept as the job's partial results, announced
// in a partial PartUploaded; retention deletes them with the job: a
// Keeper's finished files, and for a failed job the whole part when it
// was done but not yet announced. A canceled job also loses the objects
// of the parts its record shows completed: their tasks are done, so no
// one else deletes them (a failed job keeps them for retention).
func (r *Runner) ended(ctx context.Context, t *Task, why error) error {
	ctx = context.WithoutCancel(ctx)
	task := t.Task
	kept := r.finished(ctx, t)
	if why == jobview.ErrFailed && t.done != nil && !t.done.Handoff {
		kept = t.done.Files
	}
	if err := r.discard(ctx, t, objects.PartPrefix(task.GetJobId(), task.GetPart()), kept); err != nil {
		return err
	}
	if why == jobview.ErrCanceled {
		if err := r.deleteCompleted(ctx, t); err != nil {
			return err
		}
	}
	if len(kept) == 0 {
		return nil
	}
	ev := r.partUploaded(t)
	ev.Files, ev.Partial = kept, true
	disc := "partial." + strconv.FormatUint(uint64(task.GetPart()), 10)
	if err := r.opts.Publisher.PublishStatus(ctx, bus.EventPart, task.GetJobId(), disc, ev); err != nil {
		// The checkpoint is gone, so a retry would find nothing to keep;
		// the objects stay until retention.
		t.Log.WarnContext(ctx, "partial results of ended job not announced", "ended", why.Error(), "files", len(kept), "error", err)
		return nil
	}
	t.Log.InfoContext(ctx, "kept partial results of ended job", "ended", why.Error(), "files", len(kept))
	return nil
}

// deleteCompleted deletes the objects of the canceled job's other parts
// that its record shows completed (announced). A part announced after
// the record was read is left to retention, as is one the projection has
// not marked yet.
func (r *Runner) deleteCompleted(ctx context.Context, t *Task) error {
	job, err := r.jobs.Get(ctx, t.Task.GetJobId())
	if err != nil {
		return err
	}
	for _, p := range job.GetParts() {
		if p.GetPart() == t.Task.GetPart() || p.GetState() != exportv1.PartState_PART_STATE_COMPLETED {
			continue
		}
		prefix := objects.PartPrefix(t.Task.GetJobId(), p.GetPart())
		n, err := r.deletePrefix(ctx, prefix, nil)
		if err != nil {
			t.Log.WarnContext(ctx, "export objects not deleted", "prefix", prefix, "error", err)
			return err
		}
		if n > 0 {
			t.Log.InfoContext(ctx, "deleted export objects of a completed part", "prefix", prefix, "objects", n)
		}
	}
	return nil
}

// finished asks a Keeper for the part's finished files; nil for other
// kinds, and when it cannot tell (logged: the files are then deleted).
func (r *Runner) finished(ctx context.Context, t *Task) []*exportv1.File {
	k, ok := r.kinds[t.Kind].(Keeper)
	if !ok {
		return nil
	}
	files, err := k.Finished(ctx, t)
	if err != nil {
		t.Log.WarnContext(ctx, "finished files of the part unknown; not kept", "error", err)
		return nil
	}
	return files
}

// discard frees what attempts at the task left (the kind's Discarder,
// the checkpoint) and deletes the objects under prefix but those of keep.
func (r *Runner) discard(ctx context.Context, t *Task, prefix string, keep []*exportv1.File) error {
	if d, ok := r.kinds[t.Kind].(Discarder); ok {
		d.Discard(ctx, t)
	}
	t.DeleteCheckpoint(ctx)
	n, err := r.deletePrefix(ctx, prefix, keep)
	if err != nil {
		t.Log.WarnContext(ctx, "export objects not deleted", "prefix", prefix, "error", err)
		return err
	}
	if n > 0 {
		t.Log.InfoContext(ctx, "deleted export objects", "prefix", prefix, "objects", n)
	}
	return nil
}

// deletePrefix deletes the exports bucket's objects under prefix, but
// the objects of keep, and returns how many it deleted.
func (r *Runner) deletePrefix(ctx context.Context, prefix string, keep []*exportv1.File) (int, error) {
	objs, err := r.opts.Store.List(ctx, r.opts.Bucket, prefix)
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", prefix, err)
	}
	kept := make(map[string]bool, len(keep))
	for _, f := range keep {
		kept[f.GetObjectKey()] = true
	}
	n := 0
	for _, o := range objs {
		if kept[o.Key] {
			continue
		}
		if err := r.opts.Store.Delete(ctx, r.opts.Bucket, o.Key); err != nil && !errors.Is(err, blob.ErrNotFound) {
			return n, fmt.Errorf("delete %s: %w", o.Key, err)
		}
		n++
	}
	return n, nil
}

// partsTotal treats a task without a plan size as a one-part job.
func partsTotal(task *exportv1.ExportTask) uint32 {
	return max(task.GetPartsTotal(), 1)
}
