// Package roomexport turns export tasks into files: it replays a room's
// chat history from JetStream, renders the messages in the requested format
// and streams the document straight into a multipart upload. Its parts
// (room documents, room mails, user-data parts) are kinds of the shared
// task runner (shared/taskrun), which owns their lifecycle: scope,
// cancellation, progress and part events, checkpoint storage, cleanup.
//
// Memory per task is flat: the history is read once onto local disk
// (spool.go, which also plans where republished messages go) while it is
// rendered speculatively (speculate.go), or, when a message was
// republished, rendered after the read from there; messages are encoded
// one at a time into a part file on local disk that is uploaded as one
// part of a multipart upload whenever it reaches Options.PartSize, while
// the next part fills a second file (upload.go). The largest buffers are
// the spool's and its Bloom filters; local disk holds about the room's
// encoded size plus two parts while the part runs. After each
// part a checkpoint lets a redelivered task continue where the last
// attempt stopped (resume.go).
package roomexport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/config"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/taskrun"
)

const instrumentation = "dataport.dev/services/room-exporter/internal/roomexport"

// Defaults of Options.
const (
	// DefaultPartSize is the smallest part S3 takes: the exporter holds
	// two of them per task, and a bigger part only saves requests, which
	// cost nothing measurable at this size (docs/BENCHMARKS.md).
	DefaultPartSize = blob.MinPartSize
)

// Options configure an Exporter. JS, Store and Bucket are required.
type Options struct {
	JS    jetstream.JetStream
	Store *blob.Store
	// Bucket receives the parts (the exports bucket).
	Bucket string
	// AssetBucket holds the files users uploaded (source assets); a
	// user-data download's assets part points into it. Defaults to
	// config.DefaultAssetBucket.
	AssetBucket   string
	Logger        *slog.Logger
	MeterProvider metric.MeterProvider
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// PartSize is the size of the parts a room document is uploaded in
	// and checkpointed at (DefaultPartSize when zero; at least
	// blob.MinPartSize). A part is cut at the first message boundary at or
	// after it, so memory per task is about two parts (one uploading).
	// Past the first 5,000 parts the size doubles every 1,000 parts
	// (partSize), so a document always fits blob.MaxParts parts.
	PartSize int

	// Publisher and Signer publish a split room export's render stage
	// (split.go); only range tasks need them.
	Publisher *bus.Publisher
	Signer    *bus.TaskSigner

	// Test seams, set through export_test.go: onReplay sees every message
	// read from the chat stream, afterCheckpoint runs after each saved
	// checkpoint and may fail the attempt as a crash would.
	onReplay        func(seq uint64)
	afterCheckpoint func(part int) error
	// noSpeculation makes every part render from the spool after the
	// read, as a part whose history holds republished ids does;
	// recentIDs, when not zero, replaces the size of the table that
	// confirms a republished id during the read, windowVersions and
	// windowBytes the bounds of the window that applies later versions
	// (window.go).
	noSpeculation                          bool
	recentIDs, windowVersions, windowBytes int
	// bloomMaxIDs, when not zero, replaces the size of the largest room
	// whose spool builds its Bloom filters (spool.go).
	bloomMaxIDs int
}

// Exporter produces the room exporter's parts: it is the taskrun.Kind of
// room documents, room mails and the user-data parts (Register). It is
// safe for concurrent use: every task keeps its state on its own stack.
type Exporter struct {
	js      jetstream.JetStream
	chat    jetstream.Stream
	rooms   jetstream.KeyValue
	users   jetstream.KeyValue
	members jetstream.KeyValue
	store   *blob.Store
	bucket  string
	formats map[exportv1.Format]Format
	opts    Options
	log     *slog.Logger
	now     func() time.Time

	exported metric.Int64Counter
}

// New returns an Exporter. It looks up the chat stream and the rooms,
// users and memberships buckets, which must exist (bus.EnsureTopology).
func New(ctx context.Context, o Options) (*Exporter, error) {
	if o.JS == nil || o.Store == nil || o.Bucket == "" {
		return nil, errors.New("roomexport: JS, Store and Bucket are required")
	}
	if o.AssetBucket == "" {
		o.AssetBucket = config.DefaultAssetBucket
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
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
	users, err := o.JS.KeyValue(ctx, bus.BucketUsers)
	if err != nil {
		return nil, fmt.Errorf("roomexport: bucket %s: %w", bus.BucketUsers, err)
	}
	members, err := o.JS.KeyValue(ctx, bus.BucketMemberships)
	if err != nil {
		return nil, fmt.Errorf("roomexport: bucket %s: %w", bus.BucketMemberships, err)
	}
	exported, err := o.MeterProvider.Meter(instrumentation).Int64Counter("dataport.roomexport.messages",
		metric.WithUnit("{message}"), metric.WithDescription("Chat messages written into export files."))
	if err != nil {
		return nil, fmt.Errorf("roomexport: counter: %w", err)
	}
	return &Exporter{
		js: o.JS, chat: chat, rooms: rooms, users: users, members: members,
		store: o.Store, bucket: o.Bucket,
		formats: formats(), opts: o, log: o.Logger, now: o.Now,
		exported: exported,
	}, nil
}

// Register makes e the runner's kind of every part the room exporter
// produces: a room's messages (an unset part kind of a room job is a
// room part, as tasks were before parts had kinds), a room mail body, and
// a user's profile, channel list and assets. Parts are stored under
// jobs/<jobId>/parts/<part>/<file>; running a task again overwrites the
// same objects with the same bytes.
func (e *Exporter) Register(r *taskrun.Runner) {
	r.Register(exportv1.PartKind_PART_KIND_ROOM, roomPart{part{e, e.exportRoom}})
	r.Register(exportv1.PartKind_PART_KIND_ROOM_MAIL, part{e, e.exportMail})
	r.Register(exportv1.PartKind_PART_KIND_USER_PROFILE, part{e, e.exportProfile})
	r.Register(exportv1.PartKind_PART_KIND_CHANNELS, part{e, e.exportChannels})
	r.Register(exportv1.PartKind_PART_KIND_ASSETS, part{e, e.exportAssets})
}

// part is one kind of the room exporter: the checks all its kinds share
// around the run of one.
type part struct {
	e   *Exporter
	run func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error)
}

func (p part) Run(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("dataport.room_id", t.Task.GetRoom().GetRoomId()))
	return p.run(ctx, t)
}

func (p part) Validate(t *taskrun.Task) error { return p.e.validateTask(t.Task, t.Kind) }

func (p part) Authorize(ctx context.Context, t *taskrun.Task) error { return p.e.authorize(ctx, t) }

// roomPart is the room document kind, whose checkpoint names a multipart
// upload to abort when the part will not be resumed, and whose ranges of
// a split export leave state for each other.
type roomPart struct{ part }

func (p roomPart) Discard(ctx context.Context, t *taskrun.Task) {
	p.e.abortCheckpointed(ctx, t)
	p.e.discardSplit(ctx, t) // a split room export's ranges (split.go)
}

// exportRoom renders one room's messages in range: a room export's only
// part, or one room of a user-data download.
func (e *Exporter) exportRoom(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
	task := t.Task
	if task.GetRoomRange() != nil {
		return e.exportRange(ctx, t) // a range of a split room export (split.go)
	}
	format := e.formats[task.GetFormat()]
	// The attempt's records name the room; the runner's logger is put back
	// after it, or an attempt retried after an outage would name it twice.
	defer func(log *slog.Logger) { t.Log = log }(t.Log)
	t.Log = t.Log.With("room_id", task.GetRoom().GetRoomId())
	room, err := e.loadTaskRoom(ctx, task)
	if err != nil {
		return nil, err
	}
	var names *pseudonyms
	if task.GetKind() == exportv1.JobKind_JOB_KIND_USER_DATA {
		user, err := e.loadUser(ctx, task.GetUserId())
		if err != nil {
			return nil, err
		}
		format, names = personalFormat(format, task.GetFormat() == exportv1.Format_FORMAT_JSON, task.GetJobId(), user.GetUsername())
	}
	name := fileName(room.GetName(), room.GetId(), format.Ext)
	if task.GetTargetFile() != "" {
		name = objects.CleanFileName(task.GetTargetFile(), name)
	}
	key := objects.PartKey(task.GetJobId(), task.GetPart(), name)
	cp, err := e.resumePoint(ctx, t, key)
	if err != nil {
		return nil, err
	}
	var (
		h     *history
		start uint64 // the subject's first message
	)
	meta := Meta{Generated: e.now()}
	if cp != nil {
		// The checkpoint carries the history as of the first attempt, the
		// ids it placed that have versions still to come, and the time it
		// printed; the messages it covers are not read again.
		h, meta.Generated, start = cp.history(), cp.Generated, cp.Seq+1
	} else if h, err = e.lookupTaskHistory(ctx, task); err != nil {
		return nil, err
	}
	defer h.close()
	if f := task.GetRoom().GetFrom(); f != nil {
		meta.From = f.AsTime()
	}
	if to := task.GetRoom().GetTo(); to != nil {
		meta.To = to.AsTime()
	}
	var linked *assetCollector // a room export delivers its attachments (assets.go)
	if task.GetKind() == exportv1.JobKind_JOB_KIND_ROOM {
		format = e.collectAssets(ctx, task, format, &linked)
		defer func() { linked.close() }()
	}
	var res uploadResult
	if cp == nil && !e.opts.noSpeculation || cp.speculative() {
		// A fresh part renders while it reads (speculate.go), and so
		// does one that continues a speculative render.
		res, err = e.speculate(ctx, t, format, meta, room, h, key, cp)
	} else {
		// A resumed part continues a planned render, whose checkpoint
		// holds the ids it placed.
		spoolStart := time.Now()
		if h.spool, err = e.spoolHistory(ctx, h, start, nil); err != nil {
			return nil, err
		}
		t.Log.DebugContext(ctx, "history spooled", "from_seq", start, "last_seq", h.lastSeq, "spool_bytes", h.spool.size,
			"planned", h.spool.planned, "filtered", h.spool.filtered, "plan_duration", h.spool.planTook.String(), "speculative", false,
			"duration", time.Since(spoolStart).String())
		res, err = e.upload(ctx, t, format, meta, room, h, key, cp, h.spool.each, false)
	}
	if err != nil {
		return nil, err
	}
	file := &exportv1.File{
		Name:        name,
		ObjectKey:   key,
		Size:        res.size,
		Records:     res.records,
		Sha256:      res.sha256,
		ContentType: format.ContentType,
	}
	result := &taskrun.Result{Files: []*exportv1.File{file}, Records: res.records, Bytes: res.size,
		Log: []any{"object_key", key, "skipped", res.skipped, "parts", res.parts, "resumed", cp != nil}}
	if task.GetKind() == exportv1.JobKind_JOB_KIND_ROOM {
		assets, err := e.roomAssets(ctx, t, linked)
		if err != nil {
			return nil, err
		}
		defer assets.close()
		if err := announceAssets(ctx, t, result, assets); err != nil {
			return nil, err
		}
	}
	if names != nil {
		// Only this part read the room's messages: the gateway's
		// userNameTable learns whom the file hid from its announcement.
		result.HiddenUsernames, result.HiddenUsernamesTruncated = names.hidden()
	}
	return result, nil
}

// prepareRoom loads the task's room and reads its history onto local
// disk; the caller closes the history.
func (e *Exporter) prepareRoom(ctx context.Context, task *exportv1.ExportTask) (*sourcev1.Room, *history, error) {
	room, err := e.loadTaskRoom(ctx, task)
	if err != nil {
		return nil, nil, err
	}
	h, err := e.lookupTaskHistory(ctx, task)
	if err != nil {
		return nil, nil, err
	}
	if h.spool, err = e.spoolHistory(ctx, h, 0, nil); err != nil {
		return nil, nil, err
	}
	return room, h, nil
}

// loadTaskRoom loads the task's room.
func (e *Exporter) loadTaskRoom(ctx context.Context, task *exportv1.ExportTask) (*sourcev1.Room, error) {
	if _, err := bus.ChatSubject(task.GetRoom().GetRoomId()); err != nil {
		return nil, taskrun.Reject("invalid room id %q", task.GetRoom().GetRoomId())
	}
	return e.loadRoom(ctx, task.GetRoom().GetRoomId())
}

// lookupTaskHistory looks up the size and end of the task room's history.
func (e *Exporter) lookupTaskHistory(ctx context.Context, task *exportv1.ExportTask) (*history, error) {
	subject, err := bus.ChatSubject(task.GetRoom().GetRoomId())
	if err != nil {
		return nil, taskrun.Reject("invalid room id %q", task.GetRoom().GetRoomId())
	}
	return e.lookupHistory(ctx, subject)
}

// validateTask rejects tasks that no retry can fix; the runner checked
// the job id and the part number.
func (e *Exporter) validateTask(task *exportv1.ExportTask, kind exportv1.PartKind) error {
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
		return taskrun.Reject("export kind %s not supported yet", taskrun.EnumWord(task.GetKind().String(), "JOB_KIND_"))
	}
	switch kind {
	case exportv1.PartKind_PART_KIND_ROOM, exportv1.PartKind_PART_KIND_ROOM_MAIL:
		scope := task.GetRoom()
		if scope.GetFrom() != nil && scope.GetTo() != nil && scope.GetTo().AsTime().Before(scope.GetFrom().AsTime()) {
			return taskrun.Reject("date range ends before it starts")
		}
		if _, err := bus.ChatSubject(scope.GetRoomId()); err != nil {
			return taskrun.Reject("invalid room id %q", scope.GetRoomId())
		}
	default:
		if err := bus.Token(task.GetUserId()); err != nil {
			return taskrun.Reject("invalid user id %q", task.GetUserId())
		}
	}
	switch kind {
	case exportv1.PartKind_PART_KIND_ROOM:
		if _, ok := e.formats[task.GetFormat()]; !ok {
			return taskrun.Reject("format %s not supported yet", taskrun.EnumWord(task.GetFormat().String(), "FORMAT_"))
		}
		// A user's data download has its own JSON and HTML room files
		// (personal.go); the other room formats are room exports'.
		if f := task.GetFormat(); task.GetKind() == exportv1.JobKind_JOB_KIND_USER_DATA && f != exportv1.Format_FORMAT_JSON && f != exportv1.Format_FORMAT_HTML {
			return taskrun.Reject("format %s not supported for a user's data", taskrun.EnumWord(f.String(), "FORMAT_"))
		}
		if err := e.checkRoomRange(task); err != nil {
			return err
		}
	case exportv1.PartKind_PART_KIND_USER_PROFILE:
		if f := task.GetFormat(); f != exportv1.Format_FORMAT_JSON && f != exportv1.Format_FORMAT_HTML {
			return taskrun.Reject("format %s not supported for a user profile", taskrun.EnumWord(f.String(), "FORMAT_"))
		}
	}
	return nil
}

// ReasonNotAllowed is the rejection of a task its scope does not cover;
// it is the room exporter's taskrun.Options.NotAllowed too.
const ReasonNotAllowed = "You are not allowed to export this room or user's data."

// authorize checks the task against the scope the runner resolved (a
// task is its owner's), as the directory stands now, whatever the gateway
// checked when it accepted the request: a room export or room mail needs
// mail-messages; every room part needs a room the user may read
// (Rocket.Chat's rule); a user-data part exports only the scope's own
// user.
func (e *Exporter) authorize(ctx context.Context, t *taskrun.Task) error {
	task, g := t.Task, t.Grant
	switch t.Kind {
	case exportv1.PartKind_PART_KIND_ROOM, exportv1.PartKind_PART_KIND_ROOM_MAIL:
		if task.GetKind() != exportv1.JobKind_JOB_KIND_USER_DATA && !g.Has(access.PermMailMessages) {
			return taskrun.Reject(ReasonNotAllowed)
		}
		if task.GetKind() == exportv1.JobKind_JOB_KIND_USER_DATA && task.GetUserId() != "" && task.GetUserId() != g.User.GetId() {
			return taskrun.Reject(ReasonNotAllowed)
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
			return taskrun.Reject(ReasonNotAllowed)
		}
	default:
		if task.GetUserId() != g.User.GetId() {
			return taskrun.Reject(ReasonNotAllowed)
		}
	}
	return nil
}

func (e *Exporter) loadRoom(ctx context.Context, roomID string) (*sourcev1.Room, error) {
	entry, err := e.rooms.Get(ctx, roomID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, taskrun.Reject("room %s not found", roomID)
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
func (e *Exporter) render(ctx context.Context, t *taskrun.Task, r Renderer,
	room *sourcev1.Room, h *history, counter *countingWriter, res *uploadResult, sel selector,
) error {
	if err := r.Begin(room); err != nil {
		return err
	}
	if err := e.renderMessages(ctx, t, r, h.spool.each, h.count, counter, res, sel, newPosition(), nil); err != nil {
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
	// open holds the ids placed already whose later versions come after
	// seq: a resumed attempt must skip those versions. It is bounded by
	// maxOpenIDs; past that the pass goes on without checkpoints
	// (untracked), which would be too big to save anyway.
	open      openIDs
	untracked bool
}

func newPosition() *position { return &position{} }

// maxOpenIDs bounds position.open; a checkpoint holding that many ids
// is over taskrun.MaxCheckpointBytes.
const maxOpenIDs = 1 << 16

// placed records that the message with id data's was placed at its first
// position and that its last version is at stream sequence latest.
func (p *position) placed(data []byte, latest uint64) {
	if p.untracked {
		return
	}
	if len(p.open) >= maxOpenIDs {
		p.open, p.untracked = nil, true
		return
	}
	id, _ := messageID(data)
	p.open.push(openID{id: string(id), latest: latest})
}

// openIDsAfter returns the ids of p.open whose last version comes after
// p.seq, forgetting the others.
func (p *position) openIDsAfter() []openID {
	for len(p.open) > 0 && p.open[0].latest <= p.seq {
		p.open.popMin()
	}
	return p.open
}

// openID is a placed id and the stream sequence of its last version.
type openID struct {
	id     string
	latest uint64
}

// openIDs is a min-heap by latest, written out rather than through
// container/heap: its interface boxed every pushed id (an allocation per
// placed message, a twelfth of an edited room's allocations).
type openIDs []openID

func (h *openIDs) push(o openID) {
	*h = append(*h, o)
	s := *h
	for i := len(s) - 1; i > 0; {
		parent := (i - 1) / 2
		if s[parent].latest <= s[i].latest {
			break
		}
		s[parent], s[i] = s[i], s[parent]
		i = parent
	}
}

func (h *openIDs) popMin() {
	s := *h
	last := len(s) - 1
	s[0] = s[last]
	s[last] = openID{}
	s = s[:last]
	for i := 0; ; {
		small, l, r := i, 2*i+1, 2*i+2
		if l < len(s) && s[l].latest < s[small].latest {
			small = l
		}
		if r < len(s) && s[r].latest < s[small].latest {
			small = r
		}
		if small == i {
			break
		}
		s[i], s[small] = s[small], s[i]
		i = small
	}
	*h = s
}

// versions is how a render gets a history's versions, in stream order:
// spool.each (planned) or feed.each (speculative).
type versions func(f func(seq uint64, data []byte, latest uint64) (bool, error)) error

// renderMessages renders the history src yields (which starts after
// pos.seq; total is its size, for progress) and feeds the messages in
// range to r, advancing pos. after, when not nil, runs after each message
// the replay goes on from; an error from it ends the pass.
func (e *Exporter) renderMessages(ctx context.Context, t *taskrun.Task, r Renderer, src versions, total uint64,
	counter *countingWriter, res *uploadResult, sel selector, pos *position, after func(*position) error,
) error {
	task, log := t.Task, t.Log
	var from, to time.Time
	hasFrom, hasTo := task.GetRoom().GetFrom() != nil, task.GetRoom().GetTo() != nil
	if hasFrom {
		from = task.GetRoom().GetFrom().AsTime()
	}
	if hasTo {
		to = task.GetRoom().GetTo().AsTime()
	}

	var (
		m       sourcev1.ChatMessage
		counted = res.records // in the exported-messages counter
		// A split HTML range records where its thread roots are (splithtml.go).
		seqs, _ = r.(seqObserver)
	)
	message := func(seq uint64, data []byte, latest uint64) (bool, error) {
		// Checks come before the message, so they report work done (see
		// taskrun.Task.Tick).
		if err := t.Tick(ctx, percent(pos.scanned, total), res.records, counter.n.Load()); err != nil {
			return false, err
		}
		if res.records-counted >= countBatch {
			e.exported.Add(ctx, int64(res.records-counted))
			counted = res.records
		}

		pos.scanned++
		if data == nil {
			return true, nil // an older version's place was taken
		}
		if latest != 0 {
			pos.placed(data, latest)
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
			if seqs != nil {
				seqs.atSeq(seq)
			}
			if err := r.Message(&m); err != nil {
				return false, err
			}
			res.records++
		}
		return sel == nil || !sel.done(), nil
	}
	err := src(func(seq uint64, data []byte, latest uint64) (bool, error) {
		more, err := message(seq, data, latest)
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
	e.exported.Add(ctx, int64(res.records-counted))
	return nil
}

// countBatch is how many written messages are added to the
// exported-messages counter at once.
const countBatch = 1000

// percent of the subject scanned so far; 100 is kept for the finished part.
func percent(scanned, total uint64) uint32 {
	if total == 0 {
		return 0
	}
	return uint32(min(scanned*100/total, 99))
}
