// Package recordexport runs record exports: tasks of part kind RECORDS
// (Rebilly data-exports, myTracker raw exports). It reads a resource's
// records (record streams, the chat stream, or the rooms and users
// buckets), keeps those in the task's date range that match its filter and
// text search, optionally sorts them with an external merge sort, projects
// them onto the requested columns and streams them in the requested format
// into one file or numbered, optionally gzip-compressed chunk files in
// MinIO. Chunked exports of stream sources checkpoint after every chunk
// and resume from there when their task is redelivered (resume.go).
//
// Exporter is one taskrun.Kind: the shared runner (shared/taskrun)
// verifies, scopes and announces the task, watches its job for a
// cancellation and cleans up after it.
package recordexport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/record-exporter/internal/recordrender"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/recordquery"
	"dataport.dev/shared/resources"
	"dataport.dev/shared/taskrun"
)

// Rejection reasons of an export over max_rows and max_bytes, in
// myTracker's words; every dialect shows them as the job's error.
const (
	ReasonTooManyRows = "Too many lines in one export"
	ReasonTooMuchData = "Too much export data"
)

// ReasonNotAllowed is the rejection of a task whose scope reads nothing:
// its user is gone, left the organization, or the task names none. It is
// the record exporter's taskrun.Options.NotAllowed.
const ReasonNotAllowed = "You are not allowed to export this data."

// Defaults of Options.
const (
	// DefaultProgressRecords is the record exporter's
	// taskrun.Options.ProgressRecords: records are small, so a progress
	// event every 5,000 of them.
	DefaultProgressRecords = 5000
	// DefaultSortMemory bounds the records a sorted export holds in memory
	// before spilling a sorted run to disk.
	DefaultSortMemory = 32 << 20
	// DefaultCheckpointInterval spaces the checkpoints of chunked exports:
	// with small chunks, one per chunk would rewrite an ever longer file
	// list thousands of times.
	DefaultCheckpointInterval = time.Second
)

// Options configure an Exporter. JS, Store and Bucket are required.
type Options struct {
	JS    jetstream.JetStream
	Store *blob.Store
	// Bucket receives the files (the exports bucket).
	Bucket string
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
	// Now is the clock; time.Now when nil.
	Now func() time.Time

	// Test seams, set through export_test.go: onRead sees the stream
	// sequence of every record read from a stream source,
	// afterCheckpoint runs after each saved checkpoint with the number of
	// finished chunks and may fail the attempt as a crash would.
	onRead          func(seq uint64)
	afterCheckpoint func(chunks int) error
}

// Exporter is the taskrun.Kind of records parts
// (exportv1.PartKind_PART_KIND_RECORDS); safe for concurrent use. The
// task's lifecycle around it (scope, cancellation, progress, checkpoint
// storage, announcement, cleanup) is the taskrun.Runner's.
type Exporter struct {
	js      jetstream.JetStream
	records jetstream.Stream
	chat    jetstream.Stream
	rooms   jetstream.KeyValue
	users   jetstream.KeyValue
	// registry defines the resources; read at every run, so a resource
	// the host registers is exportable at once.
	registry *resources.Registry
	store    *blob.Store
	bucket   string
	opts     Options
	log      *slog.Logger
	now      func() time.Time
}

// New returns an Exporter; the streams and buckets must exist.
func New(ctx context.Context, o Options) (*Exporter, error) {
	if o.JS == nil || o.Store == nil || o.Bucket == "" {
		return nil, errors.New("recordexport: JS, Store and Bucket are required")
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
	if o.Now == nil {
		o.Now = time.Now
	}
	e := &Exporter{js: o.JS, store: o.Store, bucket: o.Bucket, opts: o, log: o.Logger, now: o.Now}
	var err error
	if e.records, err = o.JS.Stream(ctx, bus.StreamRecords); err != nil {
		return nil, fmt.Errorf("recordexport: stream %s: %w", bus.StreamRecords, err)
	}
	if e.chat, err = o.JS.Stream(ctx, bus.StreamChatMessages); err != nil {
		return nil, fmt.Errorf("recordexport: stream %s: %w", bus.StreamChatMessages, err)
	}
	for name, kv := range map[string]*jetstream.KeyValue{bus.BucketRooms: &e.rooms, bus.BucketUsers: &e.users} {
		if *kv, err = o.JS.KeyValue(ctx, name); err != nil {
			return nil, fmt.Errorf("recordexport: bucket %s: %w", name, err)
		}
	}
	if e.registry, err = resources.Open(ctx, o.JS); err != nil {
		return nil, fmt.Errorf("recordexport: %w", err)
	}
	// Tasks of an installation that predates the registry name built-in
	// resources; whichever service starts first registers them.
	if err := e.registry.EnsureBuiltins(ctx); err != nil {
		return nil, fmt.Errorf("recordexport: %w", err)
	}
	return e, nil
}

// Register makes e the runner's kind of records parts.
func (e *Exporter) Register(r *taskrun.Runner) {
	r.Register(exportv1.PartKind_PART_KIND_RECORDS, e)
}

// plan is a validated task.
type plan struct {
	task *exportv1.ExportTask
	// grant is what the task may read.
	grant *access.Grant
	// def is the resource's definition in the registry, as the task's
	// organization sees it.
	def       recordquery.Resource
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

func canonicalAll(def recordquery.Resource, fs []string) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = def.Canonical(f)
	}
	return out
}

// check rejects what no retry can fix and needs no definition of the
// resource: the format, the filter's and the sort's syntax.
func check(task *exportv1.ExportTask) (recordrender.Format, error) {
	sc := task.GetRecords()
	format, ok := recordrender.Lookup(task.GetFormat())
	if !ok {
		return format, taskrun.Reject("format %s is not available for record exports", strings.ToLower(strings.TrimPrefix(task.GetFormat().String(), "FORMAT_")))
	}
	if _, err := recordquery.ParseFilter(sc.GetFilter()); err != nil {
		return format, taskrun.Reject("%v", err)
	}
	if _, err := recordquery.ParseSort(sc.GetSort()); err != nil {
		return format, taskrun.Reject("%v", err)
	}
	return format, nil
}

// validate turns a task into a plan against def, the resource's
// definition, rejecting what no retry can fix. The gateway validates the
// same things; checking again keeps a bad task (or one whose resource
// changed since) from producing a wrong file. The runner checked the job
// id, the part number and the part kind.
func validate(task *exportv1.ExportTask, def recordquery.Resource) (*plan, error) {
	sc := task.GetRecords()
	p := &plan{task: task, def: def, resource: sc.GetResource(), q: sc.GetQ()}
	var err error
	if p.format, err = check(task); err != nil {
		return nil, err
	}
	p.headers = sc.GetFields()
	if len(p.headers) == 0 {
		p.headers = def.Defaults()
	}
	if err := def.ValidateFields(p.headers); err != nil {
		return nil, taskrun.Reject("fields: %v", err)
	}
	p.fields = canonicalAll(def, p.headers)
	p.filter, _ = recordquery.ParseFilter(sc.GetFilter())
	if err := def.ValidateFields(p.filter.Fields()); err != nil {
		return nil, taskrun.Reject("filter: %v", err)
	}
	for i := range p.filter.Conds {
		p.filter.Conds[i].Field = def.Canonical(p.filter.Conds[i].Field)
	}
	p.sort, _ = recordquery.ParseSort(sc.GetSort())
	if err := def.ValidateFields(recordquery.SortFields(p.sort)); err != nil {
		return nil, taskrun.Reject("sort: %v", err)
	}
	for i := range p.sort {
		p.sort[i].Field = def.Canonical(p.sort[i].Field)
	}
	p.text = def.Text()
	dr := sc.GetDateRange()
	p.dateField = def.TimeField()
	if f := dr.GetField(); f != "" {
		if err := def.ValidateDateField(f); err != nil {
			return nil, taskrun.Reject("dateRange: %v", err)
		}
		p.dateField = def.Canonical(f)
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
		return nil, taskrun.Reject("dateRange ends before it starts")
	}
	if err := checkRange(p); err != nil {
		return nil, err
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

// Validate rejects a task no retry can fix before its scope is resolved;
// what depends on the resource's definition is checked in Run, against
// the registry as the task's organization sees it.
func (e *Exporter) Validate(t *taskrun.Task) error {
	_, err := check(t.Task)
	return err
}

// definition reads the task's resource from the registry. A resource that
// is not registered, or registered for another organization than the
// task's, is unknown: a retry cannot make the task readable.
func (e *Exporter) definition(ctx context.Context, t *taskrun.Task) (recordquery.Resource, error) {
	name := t.Task.GetRecords().GetResource()
	org := ""
	if t.Grant != nil {
		org = t.Grant.Organization
	}
	def, err := e.registry.Get(ctx, org, name)
	switch {
	case errors.Is(err, resources.ErrNotFound):
		return def, taskrun.Reject("unknown resource %q", name)
	case err != nil:
		return def, err
	}
	return def, nil
}

// Run produces the task's file(s). An export over max_rows or max_bytes
// is rejected (ReasonTooManyRows, ReasonTooMuchData); the runner then
// deletes what it uploaded. A transient failure keeps the finished chunks
// and the checkpoint, so the redelivered task resumes after them.
func (e *Exporter) Run(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
	task := t.Task
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("dataport.resource", task.GetRecords().GetResource()))
	t.Log = t.Log.With("resource", task.GetRecords().GetResource())
	def, err := e.definition(ctx, t)
	if err != nil {
		return nil, err
	}
	p, err := validate(task, def)
	if err != nil {
		return nil, err
	}
	p.grant = t.Grant
	res, err := e.run(ctx, t, p)
	switch {
	case errors.Is(err, errTooMany):
		t.Log.InfoContext(ctx, "export rejected: too many rows", "max_rows", task.GetRecords().GetMaxRows())
		return nil, taskrun.Reject(ReasonTooManyRows)
	case errors.Is(err, errTooMuch):
		t.Log.InfoContext(ctx, "export rejected: too much data", "max_bytes", task.GetRecords().GetMaxBytes())
		return nil, taskrun.Reject(ReasonTooMuchData)
	case err != nil:
		return nil, err
	}
	sc := task.GetRecords()
	return &taskrun.Result{
		Files: res.files, Records: res.rows, Bytes: res.bytes,
		FileList: sc.GetMaxRowsPerChunk() > 0 || sc.GetMaxBytesPerChunk() > 0,
		Piece:    filePiece(res.piece, sc),
		Log:      append([]any{"scanned", res.scanned, "skipped", res.skipped, "resumed", res.resumed}, rangeLog(task)...),
	}, nil
}

var (
	errTooMany = errors.New("too many rows")
	errTooMuch = errors.New("too many bytes")
)

type result struct {
	files            []*exportv1.File
	rows, bytes      uint64
	scanned, skipped uint64
	resumed          bool
	piece            *piece
}

// run streams the records through filter, (sort) and renderer into the
// sink.
func (e *Exporter) run(ctx context.Context, t *taskrun.Task, p *plan) (*result, error) {
	task, log := p.task, t.Log
	sc := task.GetRecords()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	title := t.Job.GetName()
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
		piece: pieceOf(task),
	}
	defer s.abort(errors.New("export stopped"))

	res := &result{}
	var (
		done bool // the sink finished every file
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
		if cp, err = e.resumePoint(ctx, t, fp); err != nil {
			return nil, err
		}
	}
	switch {
	case task.GetRecordRange() != nil:
		// A range replays its own range only. Its one piece is not
		// cleared first: a redelivered range (a task that waited in a
		// consumer's buffer past its ack wait runs twice) writes the
		// same bytes under the same key, and the upload replaces the
		// object only once complete, so the piece an earlier attempt
		// announced stays readable while the archiver may be joining it.
		from = rangeStart(task)
	case cp == nil:
		// A fresh start: what an earlier attempt left under the part's
		// prefix goes, so the part holds exactly the files announced.
		if err := t.ClearPart(ctx); err != nil {
			return nil, err
		}
	default:
		from = &resumeAt{seq: cp.Seq, lastSeq: cp.LastSeq, total: cp.Total}
		s.meta.Generated = cp.Generated
		s.resume(cp.files(s.contentType()), cp.Rows)
		res.scanned, res.skipped, res.resumed = cp.Scanned, cp.Skipped, true
	}
	src, err := e.source(ctx, p.def, p.grant, &res.skipped, from)
	if err != nil {
		return nil, err
	}
	var srt *sorter
	if len(p.sort) > 0 {
		srt = newSorter(p.sort, e.opts.TempDir, e.opts.SortMemory)
		defer srt.close()
	}
	var (
		matched   uint64
		maxRows   = sc.GetMaxRows()
		rowValues = make([]any, len(p.fields))
	)
	if cp != nil {
		matched = cp.Matched
	}
	if resumable && src.stream {
		// Right after a chunk was stored, before the row at src.seq opens
		// the next one: that row is already counted, not yet written.
		var lastSaved time.Time
		// A rotation the interval skipped is saved when the run ends
		// without finishing: a retry then resumes from the latest chunk,
		// and a canceled or failed part keeps every finished chunk as a
		// partial result (Finished).
		var unsaved *checkpoint
		defer func() {
			if unsaved != nil && !done {
				t.SaveCheckpoint(context.WithoutCancel(ctx), unsaved)
			}
		}()
		s.rotated = func() error {
			next := &checkpoint{
				Version: checkpointVersion, Task: fp, Seq: src.seq, LastSeq: src.lastSeq, Total: src.total,
				Scanned: res.scanned - 1, Skipped: res.skipped, Matched: matched - 1, Rows: s.rows,
				Generated: s.meta.Generated,
			}
			for _, f := range s.files {
				next.Files = append(next.Files, chunkFile{Name: f.GetName(), Key: f.GetObjectKey(), Size: f.GetSize(),
					Records: f.GetRecords(), Sha256: f.GetSha256(), Checksum: f.GetChecksumSha256()})
			}
			now := e.now()
			if e.opts.CheckpointInterval > 0 && now.Sub(lastSaved) < e.opts.CheckpointInterval {
				unsaved = next
				return nil
			}
			lastSaved, unsaved = now, nil
			if !t.SaveCheckpoint(ctx, next) {
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
		return t.Tick(ctx, done, records, s.progressBytes())
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
			// The row over the cap is counted as the one that would
			// open the next chunk, as when a chunk rotates.
			if err := s.rotateIfFull(); err != nil {
				return err
			}
			return errTooMany
		}
		if srt == nil && !p.format.KeepsRows {
			// The renderer is done with the row when Write returns.
			for i, f := range p.fields {
				rowValues[i], _ = get(f)
			}
			return s.write(recordrender.Row{ID: id, Values: rowValues})
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
	res.rows, res.bytes, res.piece = s.rows, s.bytes, s.piece
	done = true
	return res, nil
}

// pct is done/total scaled to share percent.
func pct(done, total, share uint64) uint32 {
	if total == 0 {
		return 0
	}
	return uint32(min(done*share/total, share))
}
