// Package recordexport runs record exports: tasks of part kind RECORDS
// (Rebilly data-exports, myTracker raw exports). It reads a resource's
// records (record streams, the chat stream, or the rooms and users
// buckets), keeps those in the task's date range that match its filter and
// text search, optionally sorts them with an external merge sort, projects
// them onto the requested columns and streams them in the requested format
// into one file or numbered, optionally gzip-compressed chunk files in
// MinIO, then announces the part with PartUploaded. Chunked exports of
// stream sources checkpoint after every chunk and resume from there when
// their task is redelivered (resume.go).
package recordexport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/record-exporter/internal/recordrender"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/recordquery"
)

const instrumentation = "dataport.dev/services/record-exporter/internal/recordexport"

// Rejection reasons of an export over max_rows and max_bytes, in
// myTracker's words; every dialect shows them as the job's error.
const (
	ReasonTooManyRows = "Too many lines in one export"
	ReasonTooMuchData = "Too much export data"
)

// Defaults of Options.
const (
	DefaultProgressInterval = time.Second
	DefaultProgressRecords  = 5000
	DefaultCancelInterval   = 500 * time.Millisecond
	// DefaultSortMemory bounds the records a sorted export holds in memory
	// before spilling a sorted run to disk.
	DefaultSortMemory = 32 << 20
	// DefaultCheckpointInterval spaces the checkpoints of chunked exports:
	// with small chunks, one per chunk would rewrite an ever longer file
	// list thousands of times.
	DefaultCheckpointInterval = time.Second
)

// Options configure an Exporter. JS, Store, Publisher and Bucket are
// required.
type Options struct {
	JS        jetstream.JetStream
	Store     *blob.Store
	Publisher *bus.Publisher
	// Bucket receives the files (the exports bucket).
	Bucket string
	// Signer verifies that tasks come from the gateway; required.
	Signer *bus.TaskSigner
	// MaxDeliver is the task consumer's MaxDeliver: a transient failure on
	// the last delivery becomes permanent, so the job fails with a reason.
	MaxDeliver int
	// ProgressInterval and ProgressRecords: an ExportProgress event goes out
	// when either this much time or this many records passed.
	ProgressInterval time.Duration
	ProgressRecords  int
	// CancelInterval is how often a running export reads its job's state.
	CancelInterval time.Duration
	// SortMemory is the in-memory budget of a sorted export, in bytes
	// (estimated); beyond it sorted runs are spilled to TempDir.
	SortMemory int64
	// TempDir holds sort runs; os.TempDir() when empty.
	TempDir string
	// CheckpointInterval is the least time between two checkpoints of a
	// chunked export (DefaultCheckpointInterval when zero; negative: after
	// every chunk). A resumed task redoes at most this much work.
	CheckpointInterval time.Duration
	Logger             *slog.Logger
	TracerProvider     trace.TracerProvider
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	// Test seams, set through export_test.go: onRead sees the stream
	// sequence of every record read from a stream source,
	// afterCheckpoint runs after each saved checkpoint with the number of
	// finished chunks and may fail the attempt as a crash would.
	onRead          func(seq uint64)
	afterCheckpoint func(chunks int) error
}

// Exporter handles record export tasks; safe for concurrent use.
type Exporter struct {
	js      jetstream.JetStream
	records jetstream.Stream
	chat    jetstream.Stream
	rooms   jetstream.KeyValue
	users   jetstream.KeyValue
	jobs    jetstream.KeyValue
	// checkpoints holds how far chunked exports got; see resume.go.
	checkpoints jetstream.KeyValue
	// dir bounds what a task reads by its scope.
	dir    *access.Directory
	store  *blob.Store
	pub    *bus.Publisher
	bucket string
	opts   Options
	log    *slog.Logger
	now    func() time.Time
	tracer trace.Tracer
}

// New returns an Exporter; the streams and buckets must exist.
func New(ctx context.Context, o Options) (*Exporter, error) {
	if o.JS == nil || o.Store == nil || o.Publisher == nil || o.Bucket == "" || o.Signer == nil {
		return nil, errors.New("recordexport: JS, Store, Publisher, Bucket and Signer are required")
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
	if o.SortMemory <= 0 {
		o.SortMemory = DefaultSortMemory
	}
	if o.TempDir == "" {
		o.TempDir = os.TempDir()
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TracerProvider == nil {
		o.TracerProvider = tracenoop.NewTracerProvider()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	e := &Exporter{js: o.JS, store: o.Store, pub: o.Publisher, bucket: o.Bucket, opts: o, log: o.Logger, now: o.Now,
		tracer: o.TracerProvider.Tracer(instrumentation)}
	var err error
	if e.records, err = o.JS.Stream(ctx, bus.StreamRecords); err != nil {
		return nil, fmt.Errorf("recordexport: stream %s: %w", bus.StreamRecords, err)
	}
	if e.chat, err = o.JS.Stream(ctx, bus.StreamChatMessages); err != nil {
		return nil, fmt.Errorf("recordexport: stream %s: %w", bus.StreamChatMessages, err)
	}
	for name, kv := range map[string]*jetstream.KeyValue{bus.BucketRooms: &e.rooms, bus.BucketUsers: &e.users, bus.BucketJobs: &e.jobs, bus.BucketCheckpoints: &e.checkpoints} {
		if *kv, err = o.JS.KeyValue(ctx, name); err != nil {
			return nil, fmt.Errorf("recordexport: bucket %s: %w", name, err)
		}
	}
	if e.dir, err = access.OpenDirectory(ctx, o.JS); err != nil {
		return nil, fmt.Errorf("recordexport: %w", err)
	}
	return e, nil
}

// rejectedError marks a task that can never succeed as asked: its job ends
// rejected with the message as reason.
type rejectedError struct{ msg string }

func (e *rejectedError) Error() string { return e.msg }

func reject(format string, args ...any) error {
	return bus.Permanent(&rejectedError{msg: fmt.Sprintf(format, args...)})
}

var (
	errCanceled = errors.New("job canceled")
	errTooMany  = errors.New("too many rows")
	errTooMuch  = errors.New("too many bytes")
)

// Handle is the bus.Handler for record tasks: nil once the part is
// announced, or the job was canceled or rejected for its size (all acked);
// a bus.Permanent error for tasks no retry can fix; any other error for
// transient failures.
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

// Terminated is the consume loop's OnTerminated hook: it fails the job.
func (e *Exporter) Terminated(ctx context.Context, msg jetstream.Msg, cause error) {
	var task exportv1.ExportTask
	if err := proto.Unmarshal(msg.Data(), &task); err != nil || bus.Token(task.GetJobId()) != nil {
		return
	}
	if errors.Is(cause, bus.ErrBadSignature) {
		// Not the gateway's task: the job it names is not its to fail.
		return
	}
	reason := bus.Reason(cause)
	// No redelivery will resume it: the chunks an attempt kept go now.
	e.discard(ctx, e.log.With("job_id", task.GetJobId(), "part", task.GetPart()), &task)
	var rej *rejectedError
	e.fail(ctx, &task, reason, errors.As(cause, &rej))
}

// discard deletes what attempts at the task left: its part's objects and
// its checkpoint. Best effort: a leftover object is overwritten or
// swept, a leftover checkpoint expires.
func (e *Exporter) discard(ctx context.Context, log *slog.Logger, task *exportv1.ExportTask) {
	if err := e.cleanup(ctx, log, objects.PartPrefix(task.GetJobId(), task.GetPart())); err != nil {
		log.WarnContext(ctx, "objects of the part not deleted", "error", err)
	}
	e.deleteCheckpoint(ctx, log, task)
}

func (e *Exporter) fail(ctx context.Context, task *exportv1.ExportTask, reason string, rejected bool) {
	ev := &exportv1.ExportFailed{JobId: task.GetJobId(), OccurredAt: timestamppb.New(e.now()),
		Reason: reason, Rejected: rejected, OwnerId: task.GetOwnerId()}
	if err := e.pub.PublishStatus(ctx, bus.EventFailed, task.GetJobId(), "", ev); err != nil {
		e.log.ErrorContext(ctx, "could not fail job", "job_id", task.GetJobId(), "error", err)
	}
}

// plan is a validated task.
type plan struct {
	task *exportv1.ExportTask
	// grant is what the task may read.
	grant     *access.Grant
	resource  string
	format    recordrender.Format
	fields    []string // canonical column names, output order
	headers   []string // column names as requested
	filter    recordquery.Filter
	sort      []recordquery.SortKey
	q         string
	text      []string
	dateField string
	from, to  *time.Time
}

func canonicalAll(resource string, fs []string) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = recordquery.Canonical(resource, f)
	}
	return out
}

// validate turns a task into a plan, rejecting what no retry can fix. The
// gateway validates the same things; checking again keeps a bad task from
// producing a wrong file.
func validate(task *exportv1.ExportTask) (*plan, error) {
	if err := bus.Token(task.GetJobId()); err != nil {
		return nil, bus.Permanent(fmt.Errorf("task has no usable job id: %w", err))
	}
	if k := task.GetPartKind(); k != exportv1.PartKind_PART_KIND_RECORDS && k != exportv1.PartKind_PART_KIND_UNSPECIFIED {
		return nil, reject("part kind %s is not a records part", strings.ToLower(strings.TrimPrefix(k.String(), "PART_KIND_")))
	}
	if task.GetPartsTotal() > 0 && task.GetPart() >= task.GetPartsTotal() {
		return nil, bus.Permanent(fmt.Errorf("part %d of a job with %d parts", task.GetPart(), task.GetPartsTotal()))
	}
	sc := task.GetRecords()
	p := &plan{task: task, resource: sc.GetResource(), q: sc.GetQ()}
	if _, ok := recordquery.Fields(p.resource); !ok {
		return nil, reject("unknown resource %q", p.resource)
	}
	var ok bool
	if p.format, ok = recordrender.Lookup(task.GetFormat()); !ok {
		return nil, reject("format %s is not available for record exports", strings.ToLower(strings.TrimPrefix(task.GetFormat().String(), "FORMAT_")))
	}
	p.headers = sc.GetFields()
	if len(p.headers) == 0 {
		p.headers = recordquery.DefaultFields(p.resource)
	}
	if err := recordquery.ValidateFields(p.resource, p.headers); err != nil {
		return nil, reject("fields: %v", err)
	}
	p.fields = canonicalAll(p.resource, p.headers)
	var err error
	if p.filter, err = recordquery.ParseFilter(sc.GetFilter()); err != nil {
		return nil, reject("%v", err)
	}
	if err := recordquery.ValidateFields(p.resource, p.filter.Fields()); err != nil {
		return nil, reject("filter: %v", err)
	}
	for i := range p.filter.Conds {
		p.filter.Conds[i].Field = recordquery.Canonical(p.resource, p.filter.Conds[i].Field)
	}
	if p.sort, err = recordquery.ParseSort(sc.GetSort()); err != nil {
		return nil, reject("%v", err)
	}
	if err := recordquery.ValidateFields(p.resource, recordquery.SortFields(p.sort)); err != nil {
		return nil, reject("sort: %v", err)
	}
	for i := range p.sort {
		p.sort[i].Field = recordquery.Canonical(p.resource, p.sort[i].Field)
	}
	p.text = recordquery.TextFields(p.resource)
	dr := sc.GetDateRange()
	p.dateField = recordquery.TimeField(p.resource)
	if f := dr.GetField(); f != "" {
		if err := recordquery.ValidateFields(p.resource, []string{f}); err != nil {
			return nil, reject("dateRange: %v", err)
		}
		p.dateField = recordquery.Canonical(p.resource, f)
	}
	if dr.GetFrom() != nil {
		t := dr.GetFrom().AsTime()
		p.from = &t
	}
	if dr.GetTo() != nil {
		t := dr.GetTo().AsTime()
		p.to = &t
	}
	if p.from != nil && p.to != nil && p.to.Before(*p.from) {
		return nil, reject("dateRange ends before it starts")
	}
	return p, nil
}

// inRange applies the date range (inclusive) to the plan's date field; a
// record without a readable time is outside any range.
func (p *plan) inRange(get getter) bool {
	if p.from == nil && p.to == nil {
		return true
	}
	v, ok := get(p.dateField)
	if !ok {
		return false
	}
	var t time.Time
	switch x := v.(type) {
	case time.Time:
		t = x
	case string:
		var err error
		if t, err = time.Parse(time.RFC3339Nano, x); err != nil {
			return false
		}
	default:
		return false
	}
	return (p.from == nil || !t.Before(*p.from)) && (p.to == nil || !t.After(*p.to))
}

// filterLines describe the selection for the PDF report.
func (p *plan) filterLines() []string {
	var out []string
	sc := p.task.GetRecords()
	if p.from != nil || p.to != nil {
		from, to := "the beginning", "now"
		if p.from != nil {
			from = recordquery.FormatTime(*p.from)
		}
		if p.to != nil {
			to = recordquery.FormatTime(*p.to)
		}
		out = append(out, fmt.Sprintf("Date range: %s from %s to %s", p.dateField, from, to))
	}
	if sc.GetFilter() != "" {
		out = append(out, "Filter: "+sc.GetFilter())
	}
	if sc.GetQ() != "" {
		out = append(out, "Search: "+sc.GetQ())
	}
	if sc.GetSort() != "" {
		out = append(out, "Sort: "+sc.GetSort())
	}
	return out
}

// Export produces the task's file(s) and announces them. A canceled job
// deletes the job's part objects and returns nil; an export over max_rows
// or max_bytes deletes what it uploaded, fails the job as rejected and
// returns nil. A
// permanent failure deletes the part's objects and checkpoint; a
// transient one keeps both, so the redelivered task resumes after the
// finished chunks.
func (e *Exporter) Export(ctx context.Context, task *exportv1.ExportTask) (err error) {
	start := e.now()
	ctx, span := e.tracer.Start(ctx, "recordexport.Export", trace.WithAttributes(
		attribute.String("dataport.job_id", task.GetJobId()),
		attribute.String("dataport.resource", task.GetRecords().GetResource()),
		attribute.Int("dataport.part", int(task.GetPart())),
	))
	log := e.log.With("job_id", task.GetJobId(), "part", task.GetPart(), "resource", task.GetRecords().GetResource())
	defer func() {
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	p, err := validate(task)
	if err != nil {
		return err
	}
	if p.grant, err = e.authorize(ctx, task); err != nil {
		return err
	}
	job, err := e.readJob(ctx, task.GetJobId())
	if err != nil {
		return err
	}
	if job.GetState() == exportv1.JobState_JOB_STATE_CANCELED {
		log.InfoContext(ctx, "job canceled before its part started")
		e.deleteCheckpoint(ctx, log, task)
		return e.cleanup(ctx, log, objects.PartsPrefix(task.GetJobId()))
	}
	e.publishProgress(ctx, log, task, 0, 0, 0)

	res, err := e.run(ctx, log, p, job)
	switch {
	case errors.Is(err, errCanceled):
		log.InfoContext(ctx, "job canceled; export stopped")
		e.deleteCheckpoint(ctx, log, task)
		return e.cleanup(ctx, log, objects.PartsPrefix(task.GetJobId()))
	case errors.Is(err, errTooMany):
		log.InfoContext(ctx, "export rejected: too many rows", "max_rows", task.GetRecords().GetMaxRows())
		e.deleteCheckpoint(ctx, log, task)
		if cerr := e.cleanup(ctx, log, objects.PartPrefix(task.GetJobId(), task.GetPart())); cerr != nil {
			return cerr
		}
		e.fail(ctx, task, ReasonTooManyRows, true)
		return nil
	case errors.Is(err, errTooMuch):
		log.InfoContext(ctx, "export rejected: too much data", "max_bytes", task.GetRecords().GetMaxBytes())
		e.deleteCheckpoint(ctx, log, task)
		if cerr := e.cleanup(ctx, log, objects.PartPrefix(task.GetJobId(), task.GetPart())); cerr != nil {
			return cerr
		}
		e.fail(ctx, task, ReasonTooMuchData, true)
		return nil
	case err != nil && bus.IsPermanent(err):
		e.discard(ctx, log, task)
		return err
	case err != nil:
		// Transient: the finished chunks and the checkpoint stay for the
		// redelivered task (Terminated deletes them if none comes).
		return err
	}
	if err := e.announce(ctx, log, task, res); err != nil {
		if errors.Is(err, errCanceled) {
			e.deleteCheckpoint(ctx, log, task)
			return e.cleanup(ctx, log, objects.PartsPrefix(task.GetJobId()))
		}
		return err
	}
	// Only now: a crash before the announcement resumes the part; once
	// announced nothing needs the checkpoint.
	e.deleteCheckpoint(ctx, log, task)
	log.InfoContext(ctx, "records exported", "records", res.rows, "bytes", res.bytes, "files", len(res.files),
		"scanned", res.scanned, "skipped", res.skipped, "resumed", res.resumed, "duration", e.now().Sub(start).String())
	return nil
}

// ReasonNotAllowed is the rejection of a task whose scope reads nothing:
// its user is gone, left the organization, or the task names none.
const ReasonNotAllowed = "You are not allowed to export this data."

// authorize resolves the task's scope against the directory as it stands
// now; the task must be its owner's.
func (e *Exporter) authorize(ctx context.Context, task *exportv1.ExportTask) (*access.Grant, error) {
	g, err := e.dir.ResolveTask(ctx, task)
	switch {
	case errors.Is(err, access.ErrDenied):
		return nil, reject(ReasonNotAllowed)
	case err != nil:
		return nil, fmt.Errorf("resolve scope: %w", err)
	}
	return g, nil
}

type result struct {
	files            []*exportv1.File
	rows, bytes      uint64
	scanned, skipped uint64
	resumed          bool
}

// run streams the records through filter, (sort) and renderer into the
// sink.
func (e *Exporter) run(ctx context.Context, log *slog.Logger, p *plan, job *exportv1.Job) (*result, error) {
	task := p.task
	sc := task.GetRecords()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	title := job.GetName()
	if title == "" {
		title = strings.ToUpper(p.resource[:1]) + p.resource[1:] + " export"
	}
	base, single := fileNames(task.GetTargetFile(), p.resource, p.format.Ext, sc.GetGzipChunks())
	s := &sink{
		ctx: ctx, store: e.store, bucket: e.bucket, jobID: task.GetJobId(), part: task.GetPart(), format: p.format,
		meta: recordrender.Meta{Title: title, Resource: p.resource, Fields: p.headers,
			Filters: p.filterLines(), Generated: e.now()},
		base: base, single: single, gzip: sc.GetGzipChunks(),
		maxRows: sc.GetMaxRowsPerChunk(), maxBytes: sc.GetMaxBytesPerChunk(), maxTotal: sc.GetMaxBytes(),
	}
	defer s.abort(errors.New("export stopped"))

	res := &result{}
	var (
		cp   *checkpoint
		from *resumeAt
		fp   string
	)
	resumable := p.resumable()
	if resumable {
		var err error
		if fp, err = fingerprint(task); err != nil {
			return nil, err
		}
		if cp, err = e.resumePoint(ctx, log, task, fp); err != nil {
			return nil, err
		}
	}
	if cp == nil {
		// A fresh start: what an earlier attempt left under the part's
		// prefix goes, so the part holds exactly the files announced.
		if err := e.cleanup(ctx, log, objects.PartPrefix(task.GetJobId(), task.GetPart())); err != nil {
			return nil, err
		}
	} else {
		from = &resumeAt{seq: cp.Seq, lastSeq: cp.LastSeq, total: cp.Total}
		s.meta.Generated = cp.Generated
		s.resume(cp.files(s.contentType()), cp.Rows)
		res.scanned, res.skipped, res.resumed = cp.Scanned, cp.Skipped, true
	}
	src, err := e.source(ctx, p.resource, p.grant, &res.skipped, from)
	if err != nil {
		return nil, err
	}
	var srt *sorter
	if len(p.sort) > 0 {
		srt = newSorter(p.sort, e.opts.TempDir, e.opts.SortMemory)
		defer srt.close()
	}
	var (
		matched      uint64
		lastCheck    = e.now()
		lastProgress = lastCheck
		lastRecords  uint64
		maxRows      = sc.GetMaxRows()
	)
	if cp != nil {
		matched = cp.Matched
	}
	if resumable && src.stream {
		// Right after a chunk was stored, before the row at src.seq opens
		// the next one: that row is already counted, not yet written.
		var lastSaved time.Time
		s.rotated = func() error {
			now := e.now()
			if e.opts.CheckpointInterval > 0 && now.Sub(lastSaved) < e.opts.CheckpointInterval {
				return nil
			}
			lastSaved = now
			next := &checkpoint{
				Version: checkpointVersion, Task: fp, Seq: src.seq, LastSeq: src.lastSeq, Total: src.total,
				Scanned: res.scanned - 1, Skipped: res.skipped, Matched: matched - 1, Rows: s.rows,
				Generated: s.meta.Generated,
			}
			for _, f := range s.files {
				next.Files = append(next.Files, chunkFile{Name: f.GetName(), Key: f.GetObjectKey(), Size: f.GetSize(),
					Records: f.GetRecords(), Sha256: f.GetSha256()})
			}
			if !e.saveCheckpoint(ctx, log, task, next) {
				return nil
			}
			log.DebugContext(ctx, "checkpoint saved", "chunks", len(next.Files), "stream_seq", next.Seq, "records", next.Rows)
			if e.opts.afterCheckpoint != nil {
				return e.opts.afterCheckpoint(len(next.Files))
			}
			return nil
		}
	}
	// tick runs the periodic checks: cancellation and progress. done is
	// the share of the work finished, in percent.
	tick := func(records uint64, done uint32) error {
		now := e.now()
		if now.Sub(lastCheck) >= e.opts.CancelInterval {
			lastCheck = now
			if err := e.checkCanceled(ctx, task.GetJobId()); err != nil {
				return err
			}
		}
		if records != lastRecords && (now.Sub(lastProgress) >= e.opts.ProgressInterval || records-lastRecords >= uint64(e.opts.ProgressRecords)) {
			lastProgress, lastRecords = now, records
			e.publishProgress(ctx, log, task, done, records, s.progressBytes())
		}
		return nil
	}
	scanShare := uint64(99)
	if srt != nil {
		scanShare = 50
	}
	err = src.each(ctx, func(id string, get getter) error {
		shown := s.rows
		if srt != nil {
			shown = matched
		}
		if err := tick(shown, pct(res.scanned, src.total, scanShare)); err != nil {
			return err
		}
		res.scanned++
		if !p.inRange(get) || !p.filter.Match(get) || !recordquery.MatchQ(p.q, get, p.text) {
			return nil
		}
		matched++
		if maxRows > 0 && matched > maxRows {
			return errTooMany
		}
		it := item{id: id, values: make([]any, len(p.fields))}
		for i, f := range p.fields {
			it.values[i], _ = get(f)
		}
		if srt == nil {
			return s.write(recordrender.Row{ID: it.id, Values: it.values})
		}
		it.keys = make([]any, len(p.sort))
		for i, k := range p.sort {
			it.keys[i], _ = get(k.Field)
		}
		return srt.add(it)
	})
	if err != nil {
		return nil, err
	}
	if srt != nil {
		err = srt.finish(func(it *item) error {
			if err := tick(s.rows, 50+pct(s.rows, matched, 49)); err != nil {
				return err
			}
			return s.write(recordrender.Row{ID: it.id, Values: it.values})
		})
		if err != nil {
			return nil, err
		}
	}
	if res.files, err = s.finish(); err != nil {
		return nil, err
	}
	res.rows, res.bytes = s.rows, s.bytes
	return res, nil
}

// pct is done/total scaled to share percent.
func pct(done, total, share uint64) uint32 {
	if total == 0 {
		return 0
	}
	return uint32(min(done*share/total, share))
}

// announce publishes the final progress and PartUploaded: a single file in
// file, chunk files in files. The job is checked once more, so a part
// finished after a cancel is deleted instead of announced.
func (e *Exporter) announce(ctx context.Context, log *slog.Logger, task *exportv1.ExportTask, res *result) error {
	if err := e.checkCanceled(ctx, task.GetJobId()); err != nil {
		return err
	}
	e.publishProgress(ctx, log, task, 100, res.rows, res.bytes)
	ev := &exportv1.PartUploaded{
		JobId: task.GetJobId(), OccurredAt: timestamppb.New(e.now()),
		Part: task.GetPart(), PartsTotal: max(task.GetPartsTotal(), 1),
		Kind: task.GetKind(), OwnerId: task.GetOwnerId(),
	}
	sc := task.GetRecords()
	if sc.GetMaxRowsPerChunk() > 0 || sc.GetMaxBytesPerChunk() > 0 {
		ev.Files = res.files
	} else {
		ev.File = res.files[0]
	}
	disc := strconv.FormatUint(uint64(task.GetPart()), 10)
	if err := e.pub.PublishStatus(ctx, bus.EventPart, task.GetJobId(), disc, ev); err != nil {
		return fmt.Errorf("announce part %d: %w", task.GetPart(), err)
	}
	return nil
}

// cleanup deletes the objects under prefix (a canceled job's parts, or a
// rejected part's chunks).
func (e *Exporter) cleanup(ctx context.Context, log *slog.Logger, prefix string) error {
	ctx = context.WithoutCancel(ctx)
	objs, err := e.store.List(ctx, e.bucket, prefix)
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	for _, o := range objs {
		if err := e.store.Delete(ctx, e.bucket, o.Key); err != nil && !errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("delete %s: %w", o.Key, err)
		}
	}
	if len(objs) > 0 {
		log.InfoContext(ctx, "deleted export objects", "prefix", prefix, "objects", len(objs))
	}
	return nil
}

// readJob returns the job's record; a job without one (tasks may run
// before, or without, the gateway's projection) is an empty Job.
func (e *Exporter) readJob(ctx context.Context, jobID string) (*exportv1.Job, error) {
	entry, err := e.jobs.Get(ctx, jobID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return &exportv1.Job{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read job %s: %w", jobID, err)
	}
	var job exportv1.Job
	if err := proto.Unmarshal(entry.Value(), &job); err != nil {
		e.log.WarnContext(ctx, "undecodable job record", "job_id", jobID, "error", err)
		return &exportv1.Job{}, nil
	}
	return &job, nil
}

func (e *Exporter) checkCanceled(ctx context.Context, jobID string) error {
	job, err := e.readJob(ctx, jobID)
	if err != nil {
		return err
	}
	if job.GetState() == exportv1.JobState_JOB_STATE_CANCELED {
		return errCanceled
	}
	return nil
}

// publishProgress is informative: failures are logged, the export goes on.
func (e *Exporter) publishProgress(ctx context.Context, log *slog.Logger, task *exportv1.ExportTask, percent uint32, records, size uint64) {
	ev := &exportv1.ExportProgress{
		JobId: task.GetJobId(), OccurredAt: timestamppb.New(e.now()),
		Part: task.GetPart(), PartsTotal: max(task.GetPartsTotal(), 1),
		Progress: &exportv1.Progress{Percent: percent, Records: records, Bytes: size},
	}
	disc := strconv.FormatUint(uint64(task.GetPart()), 10) + "." + strconv.FormatUint(records, 10)
	if err := e.pub.PublishStatus(ctx, bus.EventProgress, task.GetJobId(), disc, ev); err != nil && ctx.Err() == nil {
		log.WarnContext(ctx, "progress not published", "error", err)
	}
}
