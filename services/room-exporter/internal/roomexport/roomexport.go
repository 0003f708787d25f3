// Package roomexport turns export tasks into files: it replays a room's
// chat history from JetStream, renders the messages in the requested format
// and streams the document straight into a multipart upload, reporting
// progress and the finished part as status events.
//
// Memory per task is flat: messages are encoded one at a time into a part
// buffer that is uploaded as one part of a multipart upload whenever it
// reaches Options.PartSize, so the largest buffers are that part and the
// replay's batch of messages. After each part a checkpoint lets a
// redelivered task continue where the last attempt stopped (resume.go).
package roomexport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
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
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/objects"
)

const instrumentation = "dataport.dev/services/room-exporter/internal/roomexport"

// Defaults of Options.
const (
	DefaultProgressInterval = time.Second
	DefaultProgressRecords  = 1000
	DefaultCancelInterval   = time.Second
	DefaultPartSize         = 8 << 20
)

// Options configure an Exporter. JS, Store, Publisher and Bucket are
// required.
type Options struct {
	JS        jetstream.JetStream
	Store     *blob.Store
	Publisher *bus.Publisher
	// Bucket receives the parts (the exports bucket).
	Bucket string
	// Signer verifies that tasks come from the gateway; required.
	Signer *bus.TaskSigner
	// AssetBucket holds the files users uploaded (source assets); a
	// user-data download's assets part points into it. Defaults to
	// config.DefaultAssetBucket.
	AssetBucket string
	// MaxDeliver is the task consumer's MaxDeliver. A transient failure on
	// the last delivery is reported as permanent, so the job fails with a
	// reason instead of its task silently running out of deliveries.
	// Zero disables that.
	MaxDeliver int
	// ProgressInterval and ProgressRecords: an ExportProgress event goes out
	// when either this much time or this many messages passed since the
	// last one.
	ProgressInterval time.Duration
	ProgressRecords  int
	// CancelInterval is how often a running export checks whether its job
	// was canceled.
	CancelInterval time.Duration
	Logger         *slog.Logger
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// PartSize is the size of the parts a room document is uploaded in
	// and checkpointed at (DefaultPartSize when zero; at least
	// blob.MinPartSize). A part is cut at the first message boundary at or
	// after it, so memory per task is about one part.
	PartSize int

	// Test seams, set through export_test.go: onReplay sees every message
	// read from the chat stream, afterCheckpoint runs after each saved
	// checkpoint and may fail the attempt as a crash would.
	onReplay        func(seq uint64)
	afterCheckpoint func(part int) error
}

// Exporter handles export tasks. It is safe for concurrent use: every task
// keeps its state on its own stack.
type Exporter struct {
	js      jetstream.JetStream
	chat    jetstream.Stream
	rooms   jetstream.KeyValue
	jobs    jetstream.KeyValue
	users   jetstream.KeyValue
	members jetstream.KeyValue
	// checkpoints holds how far long room exports got; see resume.go.
	checkpoints jetstream.KeyValue
	// dir bounds what a task reads by its scope.
	dir     *access.Directory
	store   *blob.Store
	pub     *bus.Publisher
	bucket  string
	formats map[exportv1.Format]Format
	opts    Options
	log     *slog.Logger
	now     func() time.Time
	tracer  trace.Tracer

	exported metric.Int64Counter
	duration metric.Float64Histogram
}

// New returns an Exporter. It looks up the chat stream and the rooms and
// jobs buckets, which must exist (bus.EnsureTopology).
func New(ctx context.Context, o Options) (*Exporter, error) {
	if o.JS == nil || o.Store == nil || o.Publisher == nil || o.Bucket == "" || o.Signer == nil {
		return nil, errors.New("roomexport: JS, Store, Publisher, Bucket and Signer are required")
	}
	if o.AssetBucket == "" {
		o.AssetBucket = config.DefaultAssetBucket
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = DefaultProgressInterval
	}
	if o.ProgressRecords <= 0 {
		o.ProgressRecords = DefaultProgressRecords
	}
	if o.CancelInterval <= 0 {
		o.CancelInterval = DefaultCancelInterval
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
	if o.PartSize <= 0 {
		o.PartSize = DefaultPartSize
	}
	o.PartSize = max(o.PartSize, blob.MinPartSize)
	chat, err := o.JS.Stream(ctx, bus.StreamChatMessages)
	if err != nil {
		return nil, fmt.Errorf("roomexport: stream %s: %w", bus.StreamChatMessages, err)
	}
	rooms, err := o.JS.KeyValue(ctx, bus.BucketRooms)
	if err != nil {
		return nil, fmt.Errorf("roomexport: bucket %s: %w", bus.BucketRooms, err)
	}
	jobs, err := o.JS.KeyValue(ctx, bus.BucketJobs)
	if err != nil {
		return nil, fmt.Errorf("roomexport: bucket %s: %w", bus.BucketJobs, err)
	}
	users, err := o.JS.KeyValue(ctx, bus.BucketUsers)
	if err != nil {
		return nil, fmt.Errorf("roomexport: bucket %s: %w", bus.BucketUsers, err)
	}
	members, err := o.JS.KeyValue(ctx, bus.BucketMemberships)
	if err != nil {
		return nil, fmt.Errorf("roomexport: bucket %s: %w", bus.BucketMemberships, err)
	}
	checkpoints, err := o.JS.KeyValue(ctx, bus.BucketCheckpoints)
	if err != nil {
		return nil, fmt.Errorf("roomexport: bucket %s: %w", bus.BucketCheckpoints, err)
	}
	dir, err := access.OpenDirectory(ctx, o.JS)
	if err != nil {
		return nil, fmt.Errorf("roomexport: %w", err)
	}
	meter := o.MeterProvider.Meter(instrumentation)
	exported, err := meter.Int64Counter("dataport.roomexport.messages",
		metric.WithUnit("{message}"), metric.WithDescription("Chat messages written into export files."))
	if err != nil {
		return nil, fmt.Errorf("roomexport: counter: %w", err)
	}
	duration, err := meter.Float64Histogram("dataport.roomexport.task.duration",
		metric.WithUnit("s"), metric.WithDescription("Time spent on one export task, by outcome."))
	if err != nil {
		return nil, fmt.Errorf("roomexport: histogram: %w", err)
	}
	return &Exporter{
		js: o.JS, chat: chat, rooms: rooms, jobs: jobs, users: users, members: members, checkpoints: checkpoints, dir: dir,
		store: o.Store, pub: o.Publisher, bucket: o.Bucket,
		formats: formats(), opts: o, log: o.Logger, now: o.Now,
		tracer:   o.TracerProvider.Tracer(instrumentation),
		exported: exported, duration: duration,
	}, nil
}

// rejectedError marks a task that can never succeed as asked (unknown room,
// unsupported format): its job ends as rejected with the message as reason.
type rejectedError struct{ msg string }

func (e *rejectedError) Error() string { return e.msg }

func reject(format string, args ...any) error {
	return bus.Permanent(&rejectedError{msg: fmt.Sprintf(format, args...)})
}

// Handle is the bus.Handler for export tasks. It returns nil once the part
// is uploaded and announced (or the job turned out to be canceled), a
// bus.Permanent error for tasks no retry can fix, and any other error for
// transient failures (NATS, MinIO), which the consume loop retries.
func (e *Exporter) Handle(ctx context.Context, msg jetstream.Msg) error {
	if err := e.opts.Signer.VerifyMsg(msg); err != nil {
		return err
	}
	var task exportv1.ExportTask
	if err := bus.Decode(msg, &task); err != nil {
		return err
	}
	return bus.GiveUpOnLastDelivery(ctx, msg, e.opts.MaxDeliver, e.Export(ctx, &task))
}

// Terminated is the consume loop's OnTerminated hook: it fails the task's
// job with ExportFailed, so a task that cannot be done ends its job with a
// reason instead of vanishing. Rejections (unknown room, unsupported
// format) are marked as such.
func (e *Exporter) Terminated(ctx context.Context, msg jetstream.Msg, cause error) {
	var task exportv1.ExportTask
	if err := proto.Unmarshal(msg.Data(), &task); err != nil || bus.Token(task.GetJobId()) != nil {
		// Nothing tells which job this was; the consume loop logged it.
		return
	}
	if errors.Is(cause, bus.ErrBadSignature) {
		// Not the gateway's task: the job it names is not its to fail.
		return
	}
	reason := bus.Reason(cause)
	// No redelivery will resume it: free the unfinished upload now.
	e.discardCheckpoint(ctx, e.log.With("job_id", task.GetJobId(), "part", task.GetPart()), &task)
	var rej *rejectedError
	rejected := errors.As(cause, &rej)
	ev := &exportv1.ExportFailed{
		JobId:      task.GetJobId(),
		OccurredAt: timestamppb.New(e.now()),
		Reason:     reason,
		Rejected:   rejected,
		OwnerId:    task.GetOwnerId(),
	}
	if err := e.pub.PublishStatus(ctx, bus.EventFailed, task.GetJobId(), "", ev); err != nil {
		e.log.ErrorContext(ctx, "could not fail job of terminated task", "job_id", task.GetJobId(), "error", err)
	}
}

// errCanceled ends a stream whose job was canceled; it never leaves Export.
var errCanceled = errors.New("job canceled")

// Export produces the task's part and announces it with PartUploaded. What
// it produces depends on the task's part kind (an unset part kind is a room
// part, as tasks were before parts had kinds): a room's messages, a user's
// profile, channel list or assets, or a room mail body. Parts are stored
// under jobs/<jobId>/parts/<part>/<file>; running a task again overwrites
// the same objects with the same bytes and republishes events under the
// same dedup ids.
//
// A canceled job ends the task without error (the task is acked) and
// deletes the job's part objects, so nothing of a canceled job stays in
// the bucket; see cleanupCanceled.
func (e *Exporter) Export(ctx context.Context, task *exportv1.ExportTask) (err error) {
	start := e.now()
	kind := partKind(task)
	ctx, span := e.tracer.Start(ctx, "roomexport.Export", trace.WithAttributes(
		attribute.String("dataport.job_id", task.GetJobId()),
		attribute.String("dataport.room_id", task.GetRoom().GetRoomId()),
		attribute.Int("dataport.part", int(task.GetPart())),
		attribute.String("dataport.part_kind", enumWord(kind.String(), "PART_KIND_")),
	))
	outcome := "ok"
	log := e.log.With("job_id", task.GetJobId(), "part", task.GetPart(), "part_kind", enumWord(kind.String(), "PART_KIND_"))
	defer func() {
		switch {
		case errors.Is(err, errCanceled):
			outcome, err = "canceled", e.cleanupCanceled(ctx, log, task.GetJobId())
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
		e.duration.Record(context.WithoutCancel(ctx), e.now().Sub(start).Seconds(),
			metric.WithAttributes(attribute.String("outcome", outcome)))
	}()

	if err := e.validateTask(task, kind); err != nil {
		return err
	}
	if err := e.authorize(ctx, task, kind); err != nil {
		return err
	}
	if err := e.checkCanceled(ctx, task.GetJobId()); err != nil {
		if errors.Is(err, errCanceled) {
			log.InfoContext(ctx, "job canceled before its part started")
		}
		return err
	}
	switch kind {
	case exportv1.PartKind_PART_KIND_ROOM:
		return e.exportRoom(ctx, log, task)
	case exportv1.PartKind_PART_KIND_ROOM_MAIL:
		return e.exportMail(ctx, log, task)
	case exportv1.PartKind_PART_KIND_USER_PROFILE:
		return e.exportProfile(ctx, log, task)
	case exportv1.PartKind_PART_KIND_CHANNELS:
		return e.exportChannels(ctx, log, task)
	case exportv1.PartKind_PART_KIND_ASSETS:
		return e.exportAssets(ctx, log, task)
	}
	return reject("part kind %s not supported", enumWord(kind.String(), "PART_KIND_"))
}

// partKind is the task's part kind, derived from the job kind for tasks
// that do not say.
func partKind(task *exportv1.ExportTask) exportv1.PartKind {
	if k := task.GetPartKind(); k != exportv1.PartKind_PART_KIND_UNSPECIFIED {
		return k
	}
	switch task.GetKind() {
	case exportv1.JobKind_JOB_KIND_ROOM:
		return exportv1.PartKind_PART_KIND_ROOM
	case exportv1.JobKind_JOB_KIND_ROOM_MAIL:
		return exportv1.PartKind_PART_KIND_ROOM_MAIL
	}
	return exportv1.PartKind_PART_KIND_UNSPECIFIED
}

// exportRoom renders one room's messages in range: a room export's only
// part, or one room of a user-data download.
func (e *Exporter) exportRoom(ctx context.Context, log *slog.Logger, task *exportv1.ExportTask) error {
	start := e.now()
	format, ok := e.formats[task.GetFormat()]
	if !ok {
		return reject("format %s not supported yet", enumWord(task.GetFormat().String(), "FORMAT_"))
	}
	log = log.With("room_id", task.GetRoom().GetRoomId())
	e.publishProgress(ctx, log, task, 0, 0, 0)

	room, err := e.loadTaskRoom(ctx, task)
	if err != nil {
		return err
	}
	name := fileName(room.GetName(), room.GetId(), format.Ext)
	if task.GetTargetFile() != "" {
		name = objects.CleanFileName(task.GetTargetFile(), name)
	}
	key := objects.PartKey(task.GetJobId(), task.GetPart(), name)
	cp, err := e.resumePoint(ctx, log, task, key)
	if err != nil {
		return err
	}
	var h *history
	meta := Meta{Generated: e.now()}
	if cp != nil {
		// The index pass is not repeated: the checkpoint carries what is
		// left of it, and the time the first attempt printed.
		h, meta.Generated = cp.history(), cp.Generated
	} else if h, err = e.indexRoom(ctx, log, task); err != nil {
		return err
	}
	if f := task.GetRoom().GetFrom(); f != nil {
		meta.From = f.AsTime()
	}
	if t := task.GetRoom().GetTo(); t != nil {
		meta.To = t.AsTime()
	}
	res, err := e.upload(ctx, log, task, format, meta, room, h, key, cp)
	if err != nil {
		if errors.Is(err, errCanceled) {
			log.InfoContext(ctx, "job canceled; upload aborted", "object_key", key)
		}
		return err
	}
	file := &exportv1.File{
		Name:        name,
		ObjectKey:   key,
		Size:        res.size,
		Records:     res.records,
		Sha256:      res.sha256,
		ContentType: format.ContentType,
	}
	if err := e.announce(ctx, log, task, res.records, res.size, file); err != nil {
		return err
	}
	// Only now: a crash before the announcement resumes (or, after the
	// upload completed, redoes) the part; once announced nothing needs it.
	e.deleteCheckpoint(ctx, log, task)
	log.InfoContext(ctx, "part uploaded", "object_key", key, "records", res.records, "bytes", res.size,
		"skipped", res.skipped, "parts", res.parts, "resumed", cp != nil, "duration", e.now().Sub(start).String())
	return nil
}

// prepareRoom loads the task's room and indexes its history.
func (e *Exporter) prepareRoom(ctx context.Context, log *slog.Logger, task *exportv1.ExportTask) (*sourcev1.Room, *history, error) {
	room, err := e.loadTaskRoom(ctx, task)
	if err != nil {
		return nil, nil, err
	}
	h, err := e.indexRoom(ctx, log, task)
	if err != nil {
		return nil, nil, err
	}
	return room, h, nil
}

// loadTaskRoom loads the task's room.
func (e *Exporter) loadTaskRoom(ctx context.Context, task *exportv1.ExportTask) (*sourcev1.Room, error) {
	if _, err := bus.ChatSubject(task.GetRoom().GetRoomId()); err != nil {
		return nil, reject("invalid room id %q", task.GetRoom().GetRoomId())
	}
	return e.loadRoom(ctx, task.GetRoom().GetRoomId())
}

// indexRoom looks up the task room's history and indexes it.
func (e *Exporter) indexRoom(ctx context.Context, log *slog.Logger, task *exportv1.ExportTask) (*history, error) {
	subject, err := bus.ChatSubject(task.GetRoom().GetRoomId())
	if err != nil {
		return nil, reject("invalid room id %q", task.GetRoom().GetRoomId())
	}
	h, err := e.lookupHistory(ctx, subject)
	if err != nil {
		return nil, err
	}
	// The index pass reads the whole subject too, so it checks for
	// cancellation like the export pass does.
	lastCheck := e.now()
	err = e.indexRepublished(ctx, h, func() error {
		if now := e.now(); now.Sub(lastCheck) >= e.opts.CancelInterval {
			lastCheck = now
			return e.checkCanceled(ctx, task.GetJobId())
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, errCanceled) {
			log.InfoContext(ctx, "job canceled while indexing the room")
		}
		return nil, err
	}
	return h, nil
}

// announce publishes the final progress and PartUploaded for the part's
// files: one file goes into PartUploaded.file, several into files. The job
// is checked once more first, so a part finished after its job was
// canceled is deleted rather than announced.
func (e *Exporter) announce(ctx context.Context, log *slog.Logger, task *exportv1.ExportTask, records, size uint64, files ...*exportv1.File) error {
	if err := e.checkCanceled(ctx, task.GetJobId()); err != nil {
		if errors.Is(err, errCanceled) {
			log.InfoContext(ctx, "job canceled after its part was uploaded")
		}
		return err
	}
	e.publishProgress(ctx, log, task, 100, records, size)
	ev := &exportv1.PartUploaded{
		JobId:      task.GetJobId(),
		OccurredAt: timestamppb.New(e.now()),
		Part:       task.GetPart(),
		PartsTotal: partsTotal(task),
		Kind:       task.GetKind(),
		OwnerId:    task.GetOwnerId(),
	}
	if len(files) == 1 && partKind(task) != exportv1.PartKind_PART_KIND_ASSETS {
		ev.File = files[0]
	} else {
		ev.Files = files
	}
	disc := strconv.FormatUint(uint64(task.GetPart()), 10)
	if err := e.pub.PublishStatus(ctx, bus.EventPart, task.GetJobId(), disc, ev); err != nil {
		return fmt.Errorf("announce part %d: %w", task.GetPart(), err)
	}
	return nil
}

// cleanupCanceled deletes every part object of a canceled job: the ones
// this task may have uploaded and those of the job's other tasks, done
// here or by other replicas. Whichever task of the job notices the
// cancellation first removes them; later ones find little or nothing, so
// the job's remaining tasks are acked at once. Failing to delete is
// retried like any transient failure.
func (e *Exporter) cleanupCanceled(ctx context.Context, log *slog.Logger, jobID string) error {
	ctx = context.WithoutCancel(ctx)
	prefix := objects.PartsPrefix(jobID)
	objs, err := e.store.List(ctx, e.bucket, prefix)
	if err != nil {
		return fmt.Errorf("list parts of canceled job %s: %w", jobID, err)
	}
	for _, o := range objs {
		if err := e.store.Delete(ctx, e.bucket, o.Key); err != nil && !errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("delete part of canceled job %s: %w", jobID, err)
		}
	}
	if len(objs) > 0 {
		log.InfoContext(ctx, "deleted parts of canceled job", "objects", len(objs))
	}
	return nil
}

// enumWord turns FORMAT_HTML into "html" for reasons people read.
func enumWord(name, prefix string) string {
	return strings.ToLower(strings.TrimPrefix(name, prefix))
}

// partsTotal treats a task without a plan size as a one-part job.
func partsTotal(task *exportv1.ExportTask) uint32 {
	return max(task.GetPartsTotal(), 1)
}

// validateTask rejects tasks that no retry can fix.
func (e *Exporter) validateTask(task *exportv1.ExportTask, kind exportv1.PartKind) error {
	if err := bus.Token(task.GetJobId()); err != nil {
		return bus.Permanent(fmt.Errorf("task has no usable job id: %w", err))
	}
	var kindOK bool
	switch kind {
	case exportv1.PartKind_PART_KIND_ROOM:
		kindOK = task.GetKind() == exportv1.JobKind_JOB_KIND_ROOM || task.GetKind() == exportv1.JobKind_JOB_KIND_USER_DATA
	case exportv1.PartKind_PART_KIND_ROOM_MAIL:
		kindOK = task.GetKind() == exportv1.JobKind_JOB_KIND_ROOM_MAIL
	case exportv1.PartKind_PART_KIND_USER_PROFILE, exportv1.PartKind_PART_KIND_CHANNELS, exportv1.PartKind_PART_KIND_ASSETS:
		kindOK = task.GetKind() == exportv1.JobKind_JOB_KIND_USER_DATA
	}
	if !kindOK {
		return reject("export kind %s not supported yet", enumWord(task.GetKind().String(), "JOB_KIND_"))
	}
	if task.GetPartsTotal() > 0 && task.GetPart() >= task.GetPartsTotal() {
		return bus.Permanent(fmt.Errorf("part %d of a job with %d parts", task.GetPart(), task.GetPartsTotal()))
	}
	switch kind {
	case exportv1.PartKind_PART_KIND_ROOM, exportv1.PartKind_PART_KIND_ROOM_MAIL:
		scope := task.GetRoom()
		if scope.GetFrom() != nil && scope.GetTo() != nil && scope.GetTo().AsTime().Before(scope.GetFrom().AsTime()) {
			return reject("date range ends before it starts")
		}
		if _, err := bus.ChatSubject(scope.GetRoomId()); err != nil {
			return reject("invalid room id %q", scope.GetRoomId())
		}
	default:
		if err := bus.Token(task.GetUserId()); err != nil {
			return reject("invalid user id %q", task.GetUserId())
		}
	}
	return nil
}

// ReasonNotAllowed is the rejection of a task its scope does not cover.
const ReasonNotAllowed = "You are not allowed to export this room or user's data."

// authorize checks the task against its scope as the directory stands
// now, whatever the gateway checked when it accepted the request: a task
// is its owner's; a room export or room mail needs mail-messages; every
// room part needs a room the user may read (Rocket.Chat's rule); a
// user-data part exports only the scope's own user.
func (e *Exporter) authorize(ctx context.Context, task *exportv1.ExportTask, kind exportv1.PartKind) error {
	g, err := e.dir.ResolveTask(ctx, task)
	switch {
	case errors.Is(err, access.ErrDenied):
		return reject(ReasonNotAllowed)
	case err != nil:
		return fmt.Errorf("resolve scope: %w", err)
	}
	switch kind {
	case exportv1.PartKind_PART_KIND_ROOM, exportv1.PartKind_PART_KIND_ROOM_MAIL:
		if task.GetKind() != exportv1.JobKind_JOB_KIND_USER_DATA && !g.Has(access.PermMailMessages) {
			return reject(ReasonNotAllowed)
		}
		if task.GetKind() == exportv1.JobKind_JOB_KIND_USER_DATA && task.GetUserId() != "" && task.GetUserId() != g.User.GetId() {
			return reject(ReasonNotAllowed)
		}
		room, err := e.loadRoom(ctx, task.GetRoom().GetRoomId())
		if err != nil {
			return err
		}
		ok, err := g.CanReadRoom(ctx, room)
		if err != nil {
			return fmt.Errorf("room access: %w", err)
		}
		if !ok {
			return reject(ReasonNotAllowed)
		}
	default:
		if task.GetUserId() != g.User.GetId() {
			return reject(ReasonNotAllowed)
		}
	}
	return nil
}

func (e *Exporter) loadRoom(ctx context.Context, roomID string) (*sourcev1.Room, error) {
	entry, err := e.rooms.Get(ctx, roomID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, reject("room %s not found", roomID)
	}
	if err != nil {
		return nil, fmt.Errorf("load room %s: %w", roomID, err)
	}
	var room sourcev1.Room
	if err := proto.Unmarshal(entry.Value(), &room); err != nil {
		return nil, bus.Permanent(fmt.Errorf("decode room %s: %w", roomID, err))
	}
	if room.GetId() == "" {
		room.Id = roomID
	}
	return &room, nil
}

// checkCanceled returns errCanceled when the job's record says canceled.
// A job without a record is not canceled: tasks may run before, or
// without, the gateway's projection.
func (e *Exporter) checkCanceled(ctx context.Context, jobID string) error {
	entry, err := e.jobs.Get(ctx, jobID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read job %s: %w", jobID, err)
	}
	var job exportv1.Job
	if err := proto.Unmarshal(entry.Value(), &job); err != nil {
		// The gateway's record is its business; a bad one must not stop
		// the export.
		e.log.WarnContext(ctx, "undecodable job record", "job_id", jobID, "error", err)
		return nil
	}
	if job.GetState() == exportv1.JobState_JOB_STATE_CANCELED {
		return errCanceled
	}
	return nil
}

// publishProgress reports progress. It is informative only: a failure is
// logged and the export goes on, since the part event that matters is
// published (and checked) at the end.
func (e *Exporter) publishProgress(ctx context.Context, log *slog.Logger, task *exportv1.ExportTask, percent uint32, records, size uint64) {
	e.publishProgressAt(ctx, log, task, percent, records, size, "")
}

// publishProgressAt is publishProgress with a step appended to the dedup
// id, for parts whose intermediate events may repeat the final record
// count (the assets part reports after each room): the final event keeps
// the plain <part>.<records> id, which no intermediate one then takes.
func (e *Exporter) publishProgressAt(ctx context.Context, log *slog.Logger, task *exportv1.ExportTask, percent uint32, records, size uint64, step string) {
	ev := &exportv1.ExportProgress{
		JobId:      task.GetJobId(),
		OccurredAt: timestamppb.New(e.now()),
		Part:       task.GetPart(),
		PartsTotal: partsTotal(task),
		Progress:   &exportv1.Progress{Percent: percent, Records: records, Bytes: size},
	}
	disc := strconv.FormatUint(uint64(task.GetPart()), 10) + "." + strconv.FormatUint(records, 10)
	if step != "" {
		disc += "." + step
	}
	if err := e.pub.PublishStatus(ctx, bus.EventProgress, task.GetJobId(), disc, ev); err != nil && ctx.Err() == nil {
		log.WarnContext(ctx, "progress not published", "error", err)
	}
}

// uploadResult describes a finished object.
type uploadResult struct {
	parts   int
	size    uint64
	records uint64
	skipped uint64
	sha256  string
}

// countingWriter counts bytes; the count is read by the progress reporter
// on the same goroutine and by Export after the upload, hence atomic only
// for the race detector's peace of mind across the errgroup.
type countingWriter struct{ n atomic.Uint64 }

func (c *countingWriter) Write(p []byte) (int, error) {
	c.n.Add(uint64(len(p)))
	return len(p), nil
}

// render replays the room and feeds the messages in range to r, between
// r.Begin and r.End.
//
// sel, when not nil, picks the messages to render (a mail's selection) and
// ends the replay once it has them all; records then counts only those.
func (e *Exporter) render(ctx context.Context, log *slog.Logger, task *exportv1.ExportTask, r Renderer,
	room *sourcev1.Room, h *history, counter *countingWriter, res *uploadResult, sel selector,
) error {
	if err := r.Begin(room); err != nil {
		return err
	}
	if err := e.renderMessages(ctx, log, task, r, h, counter, res, sel, newPosition(), nil); err != nil {
		return err
	}
	return r.End()
}

// position is how far the export pass got: every message up to stream
// sequence seq has been looked at. It is what a checkpoint needs, besides
// the bytes, to continue the pass exactly where it stopped.
type position struct {
	seq     uint64
	scanned uint64
	// emitted holds the republished ids (h.latest) already rendered, at
	// their first position; later versions are skipped.
	emitted map[string]struct{}
}

func newPosition() *position { return &position{emitted: make(map[string]struct{})} }

// renderMessages replays the room from after pos.seq and feeds the
// messages in range to r, advancing pos. after, when not nil, runs after
// each message the replay goes on from; an error from it ends the pass.
func (e *Exporter) renderMessages(ctx context.Context, log *slog.Logger, task *exportv1.ExportTask, r Renderer,
	h *history, counter *countingWriter, res *uploadResult, sel selector, pos *position, after func(*position) error,
) error {
	var from, to time.Time
	hasFrom, hasTo := task.GetRoom().GetFrom() != nil, task.GetRoom().GetTo() != nil
	if hasFrom {
		from = task.GetRoom().GetFrom().AsTime()
	}
	if hasTo {
		to = task.GetRoom().GetTo().AsTime()
	}

	var (
		m            sourcev1.ChatMessage
		lastProgress = e.now()
		lastCheck    = lastProgress
		lastRecords  = res.records
	)
	message := func(seq uint64, data []byte) (bool, error) {
		// Checks come before the message, so they report work done: the
		// last progress event is then always the final one, whose dedup
		// id (<part>.<records>) no periodic event has taken.
		now := e.now()
		if now.Sub(lastCheck) >= e.opts.CancelInterval {
			lastCheck = now
			if err := e.checkCanceled(ctx, task.GetJobId()); err != nil {
				return false, err
			}
		}
		if res.records != lastRecords &&
			(now.Sub(lastProgress) >= e.opts.ProgressInterval || res.records-lastRecords >= uint64(e.opts.ProgressRecords)) {
			e.exported.Add(ctx, int64(res.records-lastRecords))
			lastProgress, lastRecords = now, res.records
			e.publishProgress(ctx, log, task, percent(pos.scanned, h.count), res.records, counter.n.Load())
		}

		pos.scanned++
		id, ok := messageID(data)
		if ok {
			if latest, dup := h.latest[string(id)]; dup {
				if _, done := pos.emitted[string(id)]; done {
					return true, nil // an older version's place was taken
				}
				pos.emitted[string(id)] = struct{}{}
				if latest != seq {
					raw, err := e.chat.GetMsg(ctx, latest)
					if err != nil {
						return false, fmt.Errorf("latest version of message %s: %w", id, err)
					}
					data = raw.Data
				}
			}
		}
		if err := proto.Unmarshal(data, &m); err != nil {
			// One corrupt message must not make the room unexportable.
			res.skipped++
			log.WarnContext(ctx, "skipping undecodable chat message", "seq", seq, "error", err)
			return true, nil
		}
		ts := m.GetTs().AsTime()
		if hasTo && ts.After(to) {
			// A room's messages are in ts order: nothing later can match.
			return false, nil
		}
		if sel != nil && !sel.keep(&m) {
			return true, nil
		}
		if !hasFrom || !ts.Before(from) {
			if err := r.Message(&m); err != nil {
				return false, err
			}
			res.records++
		}
		return sel == nil || !sel.done(), nil
	}
	var start uint64 // the subject's first message
	if pos.seq > 0 {
		start = pos.seq + 1
	}
	err := e.replayFrom(ctx, h, start, func(seq uint64, data []byte) (bool, error) {
		more, err := message(seq, data)
		if err != nil {
			return false, err
		}
		pos.seq = seq
		if more && after != nil {
			if err := after(pos); err != nil {
				return false, err
			}
		}
		return more, nil
	})
	if err != nil {
		return err
	}
	e.exported.Add(ctx, int64(res.records-lastRecords))
	return nil
}

// percent of the subject scanned so far; 100 is kept for the finished part.
func percent(scanned, total uint64) uint32 {
	if total == 0 {
		return 0
	}
	return uint32(min(scanned*100/total, 99))
}
