package roomexport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/taskrun"
)

// A split room export is one big room exported into one file by several
// parts at once: the gateway plans each part as a range of the chat
// stream's sequences (ExportTask.room_range), in stream order, and the
// archiver joins the parts' pieces as it joins a split record export's
// (PartUploaded.piece: the document's header only in the first piece, its
// closing bytes only in the last, and in every other piece its messages
// as messages after others, with JSON's comma as the lead).
//
// Unlike records, messages are republished: the export shows each id
// once, at its first version's position, in its last version (spool.go).
// A range alone knows that only for the ids all of whose versions it
// holds. So a range runs in two stages, each a task of its own, neither
// waiting for another range:
//
//  1. Index (room_render unset, planned by the gateway): the range is read
//     once onto local disk and rendered as one exporter would render a
//     room made of only its messages (speculate.go, falling back to the
//     spool's plan for ids republished inside the range), into a piece
//     object of its own; while it is read, its id table is collected (one
//     record per distinct id: 128-bit hash of the id, first and last
//     sequence in the range; sorted by hash with bounded memory). Then
//     it writes the table and its report (the piece's File, its
//     attachments, its range). The range that, once its report is
//     written, finds every range's report is the last: it merges the
//     tables (a k-way merge by hash, streaming, memory flat) into one
//     cross list per range, the ids whose versions lie in more than one
//     range, and publishes the render stage. Several ranges finishing at
//     once may each find all reports; they write the same lists and
//     publish the same tasks under the same Nats-Msg-Id.
//  2. Render (room_render set): a range whose cross list is empty
//     announces its index stage's piece as it is: nothing is read
//     again. That is every range of a room whose edits stay within a
//     range, the common case, so a split room reads its history once. A
//     range with cross ids reads its range again and renders it, under
//     the part's own key, with the cross list applied on top of its own
//     plan: a version of an id an
//     earlier range holds is skipped; an id first seen here is rendered
//     in its last version over all ranges, read from the stream by
//     sequence when it lies in a later range.
//
// The index stage's report is the whole hand-off between the stages, so a
// range retried at either stage (crash, redelivery) does its stage again
// from the start and writes the same bytes. An HTML page also carries
// thread excerpts and its message count from range to range; its ranges
// hand off root and miss lists besides (splithtml.go).

// Object names of a range's split state, under the part's prefix; a
// cleaned file name never holds a "/", so none can be a piece's.
const (
	splitTableName  = "split/ids"
	splitReportName = "split/report.json"
	splitCrossName  = "split/cross"
	// splitPiecePrefix holds the index stage's piece: never the render
	// stage's key, so an index stage that runs again (a redelivery) can
	// only replace its own piece, with the same bytes, and never a piece
	// the render stage rendered again.
	splitPiecePrefix = "split/pieces/"
)

// Cross list record kinds (word 1; word 0 is the id's first sequence in
// the range).
const (
	crossLatest = iota // render the version at the sequence in word 2, in a later range
	crossSkip          // an earlier range holds the id: skip it here
)

// rangeReport is what a range's index stage leaves for the render stage
// and for the range that publishes it.
type rangeReport struct {
	First uint64 `json:"first"`
	Last  uint64 `json:"last"`
	// Part is the announcement the piece gets when no cross id touches
	// it (protojson of PartUploaded: file, files, piece).
	Part json.RawMessage `json:"part"`
}

// splittable reports whether rooms in format f can be split. HTML's
// thread excerpts and footer span ranges; splithtml.go carries them.
func splittable(f exportv1.Format) bool {
	switch f {
	case exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_JSONL, exportv1.Format_FORMAT_CSV, exportv1.Format_FORMAT_HTML:
		return true
	}
	return false
}

// checkRoomRange rejects a range task that cannot be a split room
// export's part; the gateway plans none, the check keeps a hand-made task
// from producing a wrong file.
func (e *Exporter) checkRoomRange(task *exportv1.ExportTask) error {
	rr := task.GetRoomRange()
	switch {
	case rr == nil:
		if task.GetRoomRender() {
			return taskrun.Reject("a room render task needs a room range")
		}
		return nil
	case rr.GetFirstSeq() == 0 || rr.GetLastSeq() < rr.GetFirstSeq():
		return taskrun.Reject("invalid room range %d-%d", rr.GetFirstSeq(), rr.GetLastSeq())
	case task.GetKind() != exportv1.JobKind_JOB_KIND_ROOM:
		return taskrun.Reject("only room exports can be split into ranges")
	case !splittable(task.GetFormat()):
		return taskrun.Reject("a %s room export cannot be split into ranges", taskrun.EnumWord(task.GetFormat().String(), "FORMAT_"))
	case task.GetPartsTotal() < 2:
		return taskrun.Reject("a room range needs a split export of at least two parts")
	}
	return nil
}

// exportRange runs one stage of a split room export's range.
func (e *Exporter) exportRange(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
	task := t.Task
	format := e.formats[task.GetFormat()]
	rr := task.GetRoomRange()
	// Put back after the attempt, as exportRoom does: a retried attempt
	// must not name the room twice.
	defer func(log *slog.Logger) { t.Log = log }(t.Log)
	t.Log = t.Log.With("room_id", task.GetRoom().GetRoomId(), "room_range", fmt.Sprintf("%d-%d", rr.GetFirstSeq(), rr.GetLastSeq()),
		"render_stage", task.GetRoomRender())
	room, err := e.loadTaskRoom(ctx, task)
	if err != nil {
		return nil, err
	}
	name := fileName(room.GetName(), room.GetId(), format.Ext)
	if task.GetTargetFile() != "" {
		name = objects.CleanFileName(task.GetTargetFile(), name)
	}
	key := objects.PartKey(task.GetJobId(), task.GetPart(), name)
	meta := Meta{Generated: e.now()}
	if f := task.GetRoom().GetFrom(); f != nil {
		meta.From = f.AsTime()
	}
	if to := task.GetRoom().GetTo(); to != nil {
		meta.To = to.AsTime()
	}
	if task.GetRoomRender() {
		return e.renderRange(ctx, t, format, meta, room, name, key)
	}
	return e.indexRange(ctx, t, format, meta, room, name)
}

// rangeHistory is the history of the task's range: from the subject's
// first message at or after the range's first sequence to the range's
// last. A range that holds none of the subject's messages has lastSeq 0.
func (e *Exporter) rangeHistory(ctx context.Context, task *exportv1.ExportTask) (*history, error) {
	subject, err := bus.ChatSubject(task.GetRoom().GetRoomId())
	if err != nil {
		return nil, taskrun.Reject("invalid room id %q", task.GetRoom().GetRoomId())
	}
	rr := task.GetRoomRange()
	h := &history{subject: subject}
	first, err := e.chat.GetMsg(ctx, rr.GetFirstSeq(), jetstream.WithGetMsgSubject(subject))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return h, nil
	case err != nil:
		return nil, fmt.Errorf("first message of %s from %d: %w", subject, rr.GetFirstSeq(), err)
	case first.Sequence > rr.GetLastSeq():
		return h, nil
	}
	h.firstSeq, h.lastSeq = first.Sequence, rr.GetLastSeq()
	h.count = h.lastSeq - h.firstSeq + 1
	return h, nil
}

// pieceFormat is f writing one piece of a split document (see
// pieceRenderer).
func pieceFormat(f Format, spec pieceSpec) Format {
	inner := f.New
	f.New = func(w io.Writer, meta Meta) Renderer {
		p := &pieceRenderer{r: inner(w, meta), pieceSpec: spec}
		if h, ok := p.r.(*htmlRenderer); ok && spec.html != nil && spec.html.record {
			h.rec = newRootRecorder()
			spec.html.recs = append(spec.html.recs, h.rec)
		}
		return p
	}
	return f
}

// pieceSpec is which piece of the document a renderer writes.
type pieceSpec struct {
	first, last bool
	// open leaves out the last piece's closing bytes (an HTML page's
	// index stage: its footer counts the messages of every range).
	open bool
	// html is an HTML range's context (splithtml.go); nil in other
	// formats.
	html *htmlPiece
}

// pieceLead is the lead of a piece in format f: JSON's comma before the
// piece's first message, which the joined file leaves out when no earlier
// piece held a message. The closing bytes of the last piece of a JSON
// document ("\n]}\n" after messages, "]}\n" after none) start with a
// byte it leaves out the same way (archive's Joiner, ClosingLead).
func pieceLead(f exportv1.Format, first bool) uint32 {
	if f == exportv1.Format_FORMAT_JSON && !first {
		return 1
	}
	return 0
}

// pieceRenderer writes the header only in the first piece and the closing
// bytes only in the last; a later piece's messages are written as
// messages after others (JSON's leading comma). A compressed piece ends
// its last member, so pieces are whole gzip members.
type pieceRenderer struct {
	r Renderer
	pieceSpec
}

func (p *pieceRenderer) Begin(room *sourcev1.Room) error {
	if p.first {
		return p.r.Begin(room)
	}
	switch r := p.r.(type) {
	case *jsonRenderer:
		r.n = 1
	case *htmlRenderer:
		// The page as one exporter holds it when it reaches this range.
		if p.html != nil {
			for _, root := range p.html.seed {
				r.keepRoot(root.id, root.excerpt)
			}
			r.n = int(p.html.before)
		}
	}
	return nil
}

func (p *pieceRenderer) Message(m *sourcev1.ChatMessage) error { return p.r.Message(m) }

func (p *pieceRenderer) End() error {
	if p.last && !p.open {
		return p.r.End()
	}
	if m, ok := p.r.(memberEnder); ok {
		return m.endMember()
	}
	return nil
}

func (p *pieceRenderer) endMember() error {
	if m, ok := p.r.(memberEnder); ok {
		return m.endMember()
	}
	return nil
}

func (p *pieceRenderer) saveState() ([]byte, error) {
	s, ok := p.r.(resumable)
	if !ok {
		return nil, errNotResumable
	}
	return s.saveState()
}

func (p *pieceRenderer) restoreState(data []byte) error {
	s, ok := p.r.(resumable)
	if !ok {
		return errNotResumable
	}
	return s.restoreState(data)
}

// rangePiece is the task's piece of the document, with hp an HTML
// range's context (nil in other formats): its format and the FilePiece
// its announcement carries.
func rangePiece(task *exportv1.ExportTask, format Format, hp *htmlPiece) (Format, *exportv1.FilePiece) {
	spec := pieceSpec{first: task.GetPart() == 0, last: task.GetPart()+1 >= task.GetPartsTotal(), html: hp}
	spec.open = spec.last && hp != nil && hp.record
	return pieceFormat(format, spec), &exportv1.FilePiece{Lead: pieceLead(task.GetFormat(), spec.first)}
}

// indexRange is the index stage: render the range's piece as if its
// messages were the room's, write its id table and report, and publish
// the render stage when it is the last range to report.
func (e *Exporter) indexRange(ctx context.Context, t *taskrun.Task, format Format, meta Meta,
	room *sourcev1.Room, name string,
) (*taskrun.Result, error) {
	task := t.Task
	key := splitKey(task.GetJobId(), task.GetPart(), splitPiecePrefix+name)
	h, err := e.rangeHistory(ctx, task)
	if err != nil {
		return nil, err
	}
	defer h.close()
	table := newIDTable()
	defer table.close()
	h.onVersion = table.add
	var hp *htmlPiece
	if task.GetFormat() == exportv1.Format_FORMAT_HTML {
		hp = &htmlPiece{record: true}
		defer hp.close()
	}
	pf, piece := rangePiece(task, format, hp)
	var linked *assetCollector
	pf = e.collectAssets(ctx, task, pf, &linked)
	defer func() { linked.close() }()
	if hp != nil {
		pf = observeSeqs(pf, hp)
	}
	var res uploadResult
	if e.opts.noSpeculation {
		if h.spool, err = e.spoolHistory(ctx, h, 0, nil); err != nil {
			return nil, err
		}
		res, err = e.upload(ctx, t, pf, meta, room, h, key, nil, h.spool.each, false)
	} else {
		res, err = e.speculate(ctx, t, pf, meta, room, h, key, nil)
	}
	if err != nil {
		return nil, err
	}
	listing, err := e.roomAssets(ctx, t, linked)
	if err != nil {
		return nil, err
	}
	defer listing.close()
	// The report holds the range's list: what the render stage
	// announces.
	assets, err := listing.files()
	if err != nil {
		return nil, err
	}
	ids, err := e.writeTable(ctx, task, table)
	if err != nil {
		return nil, err
	}
	if hp != nil {
		if err := e.writeRootLists(ctx, task, hp.recorder()); err != nil {
			return nil, err
		}
	}
	part := &exportv1.PartUploaded{
		File: &exportv1.File{Name: name, ObjectKey: key, Size: res.size, Records: res.records, Sha256: res.sha256,
			ContentType: format.ContentType},
		Files: assets,
		Piece: piece,
	}
	if err := e.writeReport(ctx, task, part); err != nil {
		return nil, err
	}
	// The upload's checkpoints name a completed upload now, and a range
	// is never resumed: the report is what the render stage reads.
	t.DeleteCheckpoint(ctx)
	published, err := e.publishRenderStage(ctx, t)
	if err != nil {
		return nil, err
	}
	return &taskrun.Result{Handoff: true, Records: res.records, Bytes: res.size,
		Log: []any{"object_key", key, "ids", ids, "skipped", res.skipped, "render_stage_published", published}}, nil
}

// splitKey is the key of one of a range's split objects.
func splitKey(jobID string, part uint32, name string) string {
	return objects.PartPrefix(jobID, part) + name
}

// tableHash is the id table's hash of a message id: the same in every
// exporter process (unlike the spool's seeded one), 128 bits of SHA-256.
func tableHash(id []byte) (a, b uint64) {
	sum := sha256.Sum256(id)
	return binary.BigEndian.Uint64(sum[0:]), binary.BigEndian.Uint64(sum[8:])
}

// idTable collects the range's id table while the range is read: a
// record (hash, sequence) per version, sorted by hash with bounded
// memory; write groups each id's records into its first and last
// sequence.
type idTable struct{ byHash *sorter }

func newIDTable() *idTable { return &idTable{byHash: newSorter(os.TempDir())} }

// add is a history's onVersion.
func (t *idTable) add(seq uint64, data []byte) error {
	id, ok := messageID(data)
	if !ok {
		return nil // never planned, so never republished
	}
	a, b := tableHash(id)
	return t.byHash.add(record{a, b, seq})
}

func (t *idTable) close() { t.byHash.close() }

// write uploads the table and returns its number of ids.
func (e *Exporter) writeTable(ctx context.Context, task *exportv1.ExportTask, t *idTable) (int, error) {
	it, err := t.byHash.sorted()
	if err != nil {
		return 0, err
	}
	f, err := createUnlinked(os.TempDir(), "roomexport-table-*")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 64<<10)
	ids := 0
	var cur record // a, b, first, last of the id being grouped
	for {
		r, ok, err := it.next()
		if err != nil {
			return 0, err
		}
		if ok && ids > 0 && r[0] == cur[0] && r[1] == cur[1] {
			cur[3] = r[2] // sorted by sequence within an id
			continue
		}
		if ids > 0 {
			if err := writeRecord(w, cur); err != nil {
				return 0, fmt.Errorf("id table: %w", err)
			}
		}
		if !ok {
			break
		}
		cur, ids = record{r[0], r[1], r[2], r[2]}, ids+1
	}
	if err := e.putFile(ctx, f, w, splitKey(task.GetJobId(), task.GetPart(), splitTableName)); err != nil {
		return 0, err
	}
	return ids, nil
}

// putFile flushes w into f and uploads f from its start.
func (e *Exporter) putFile(ctx context.Context, f *os.File, w *bufio.Writer, key string) error {
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("write %s: %w", key, err)
	}
	if _, err := e.store.Upload(ctx, e.bucket, key, f, "application/octet-stream"); err != nil {
		return fmt.Errorf("upload %s: %w", key, err)
	}
	return nil
}

func writeRecord(w io.Writer, r record) error {
	var b [recordBytes]byte
	for i, v := range r {
		binary.BigEndian.PutUint64(b[8*i:], v)
	}
	_, err := w.Write(b[:])
	return err
}

// recordReader reads the records of a table or cross list.
type recordReader struct {
	r   *bufio.Reader
	buf [recordBytes]byte
}

func (rr *recordReader) next() (record, bool, error) {
	if _, err := io.ReadFull(rr.r, rr.buf[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return record{}, false, nil
		}
		return record{}, false, err
	}
	var r record
	for i := range r {
		r[i] = binary.BigEndian.Uint64(rr.buf[8*i:])
	}
	return r, true, nil
}

// writeReport writes the range's report, its index stage's last write.
func (e *Exporter) writeReport(ctx context.Context, task *exportv1.ExportTask, part *exportv1.PartUploaded) error {
	p, err := protojson.Marshal(part)
	if err != nil {
		return fmt.Errorf("range report: %w", err)
	}
	data, err := json.Marshal(rangeReport{First: task.GetRoomRange().GetFirstSeq(), Last: task.GetRoomRange().GetLastSeq(), Part: p})
	if err != nil {
		return fmt.Errorf("range report: %w", err)
	}
	key := splitKey(task.GetJobId(), task.GetPart(), splitReportName)
	if _, err := e.store.Upload(ctx, e.bucket, key, bytes.NewReader(data), "application/json"); err != nil {
		return fmt.Errorf("upload %s: %w", key, err)
	}
	return nil
}

// readReport reads part's report; blob.ErrNotFound when it has none yet.
func (e *Exporter) readReport(ctx context.Context, jobID string, part uint32) (*rangeReport, *exportv1.PartUploaded, error) {
	body, _, err := e.store.Open(ctx, e.bucket, splitKey(jobID, part, splitReportName))
	if err != nil {
		return nil, nil, err
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("range report of part %d: %w", part, err)
	}
	var rep rangeReport
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, nil, bus.Permanent(fmt.Errorf("range report of part %d: %w", part, err))
	}
	var p exportv1.PartUploaded
	if err := protojson.Unmarshal(rep.Part, &p); err != nil {
		return nil, nil, bus.Permanent(fmt.Errorf("range report of part %d: %w", part, err))
	}
	return &rep, &p, nil
}

// publishRenderStage publishes the render stage once every range has
// reported, and reports whether it did. A range that finds a report
// missing leaves the publishing to that range, which writes its report
// later and then finds every one: the store reads its own writes.
func (e *Exporter) publishRenderStage(ctx context.Context, t *taskrun.Task) (bool, error) {
	task := t.Task
	n := task.GetPartsTotal()
	reports := make([]*rangeReport, n)
	for i := range n {
		rep, _, err := e.readReport(ctx, task.GetJobId(), i)
		if errors.Is(err, blob.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		reports[i] = rep
	}
	if e.opts.Publisher == nil || e.opts.Signer == nil {
		return false, bus.Permanent(errors.New("roomexport: a split room export needs Options.Publisher and Signer"))
	}
	began := time.Now()
	cross, err := e.mergeTables(ctx, task)
	if err != nil {
		return false, err
	}
	subject, err := bus.TaskSubject(bus.TaskRoom)
	if err != nil {
		return false, err
	}
	for i, rep := range reports {
		rt := proto.CloneOf(task)
		rt.Part = uint32(i)
		rt.RoomRange = &exportv1.RecordRange{FirstSeq: rep.First, LastSeq: rep.Last}
		rt.RoomRender = true
		rt.OccurredAt = timestamppb.New(e.now())
		msgID := task.GetJobId() + ".task." + strconv.Itoa(i) + ".render"
		if err := e.opts.Publisher.PublishTask(ctx, e.opts.Signer, subject, msgID, rt); err != nil {
			return false, fmt.Errorf("publish render stage of part %d: %w", i, err)
		}
	}
	t.Log.InfoContext(ctx, "render stage published", "parts", n, "cross_ids", cross, "merge_ms", time.Since(began).Milliseconds())
	return true, nil
}

// mergeTables merges every range's id table and writes each range's
// cross list: for an id in several ranges, its first range gets the
// sequence of its last version (in the last range holding it) and every
// other range a skip. It returns the number of such ids. Memory is a
// read buffer per range and a write buffer per range.
func (e *Exporter) mergeTables(ctx context.Context, task *exportv1.ExportTask) (int, error) {
	n := int(task.GetPartsTotal())
	tables := make([]*recordReader, n)
	heads := make([]record, n)
	live := make([]bool, n)
	for i := range n {
		body, _, err := e.store.Open(ctx, e.bucket, splitKey(task.GetJobId(), uint32(i), splitTableName))
		if err != nil {
			return 0, fmt.Errorf("id table of part %d: %w", i, err)
		}
		defer body.Close()
		tables[i] = &recordReader{r: bufio.NewReaderSize(body, 64<<10)}
		if heads[i], live[i], err = tables[i].next(); err != nil {
			return 0, fmt.Errorf("id table of part %d: %w", i, err)
		}
	}
	outs := make([]*os.File, n)
	ws := make([]*bufio.Writer, n)
	for i := range n {
		f, err := createUnlinked(os.TempDir(), "roomexport-cross-*")
		if err != nil {
			return 0, err
		}
		defer f.Close()
		outs[i], ws[i] = f, bufio.NewWriterSize(f, 64<<10)
	}
	cross := 0
	group := make([]int, 0, n)
	for k := 0; ; k++ {
		if k%4096 == 0 && ctx.Err() != nil {
			return 0, context.Cause(ctx)
		}
		// The ranges whose head is the smallest hash, in range order.
		group = group[:0]
		var low record
		for i := range n {
			if !live[i] {
				continue
			}
			switch {
			case len(group) == 0 || heads[i][0] < low[0] || heads[i][0] == low[0] && heads[i][1] < low[1]:
				group, low = append(group[:0], i), heads[i]
			case heads[i][0] == low[0] && heads[i][1] == low[1]:
				group = append(group, i)
			}
		}
		if len(group) == 0 {
			break
		}
		if len(group) > 1 {
			cross++
			first, last := group[0], group[len(group)-1]
			// Word 3 is the id's last version in the range, which an HTML
			// range's index stage showed (splithtml.go).
			if err := writeRecord(ws[first], record{heads[first][2], crossLatest, heads[last][3], heads[first][3]}); err != nil {
				return 0, fmt.Errorf("cross list: %w", err)
			}
			for _, i := range group[1:] {
				if err := writeRecord(ws[i], record{heads[i][2], crossSkip, 0, heads[i][3]}); err != nil {
					return 0, fmt.Errorf("cross list: %w", err)
				}
			}
		}
		for _, i := range group {
			var err error
			if heads[i], live[i], err = tables[i].next(); err != nil {
				return 0, fmt.Errorf("id table of part %d: %w", i, err)
			}
		}
	}
	for i := range n {
		if err := e.putFile(ctx, outs[i], ws[i], splitKey(task.GetJobId(), uint32(i), splitCrossName)); err != nil {
			return 0, err
		}
	}
	return cross, nil
}

// renderRange is the render stage: announce the index stage's piece when
// no cross id touches the range, or render the range again with its
// cross list.
func (e *Exporter) renderRange(ctx context.Context, t *taskrun.Task, format Format, meta Meta,
	room *sourcev1.Room, name, key string,
) (*taskrun.Result, error) {
	task := t.Task
	_, indexed, err := e.readReport(ctx, task.GetJobId(), task.GetPart())
	if err != nil {
		return nil, fmt.Errorf("range report of part %d: %w", task.GetPart(), err)
	}
	crossKey := splitKey(task.GetJobId(), task.GetPart(), splitCrossName)
	info, err := e.store.Stat(ctx, e.bucket, crossKey)
	if err != nil {
		return nil, fmt.Errorf("cross list of part %d: %w", task.GetPart(), err)
	}
	var hp *htmlPiece
	again := info.Size > 0
	if task.GetFormat() == exportv1.Format_FORMAT_HTML {
		var hit bool
		if hp, hit, err = e.htmlContext(ctx, task); err != nil {
			return nil, err
		}
		if last := task.GetPart()+1 >= task.GetPartsTotal(); !again && (hit || last) {
			return e.patchPiece(ctx, t, indexed, hp, key, last)
		}
	}
	if !again {
		f := indexed.GetFile()
		stored, err := e.store.Stat(ctx, e.bucket, f.GetObjectKey())
		if err != nil {
			return nil, fmt.Errorf("piece of part %d: %w", task.GetPart(), err)
		}
		if stored.Size != int64(f.GetSize()) {
			return nil, fmt.Errorf("piece of part %d: stored %d bytes, indexed %d", task.GetPart(), stored.Size, f.GetSize())
		}
		f.ChecksumSha256 = stored.ChecksumSHA256
		return &taskrun.Result{Files: []*exportv1.File{f}, Attachments: indexed.GetFiles(), Piece: indexed.GetPiece(),
			Records: f.GetRecords(), Bytes: f.GetSize(), Log: []any{"object_key", f.GetObjectKey(), "rendered", false}}, nil
	}
	plan, err := e.readCross(ctx, crossKey)
	if err != nil {
		return nil, err
	}
	defer plan.close()
	h, err := e.rangeHistory(ctx, task)
	if err != nil {
		return nil, err
	}
	defer h.close()
	if h.spool, err = e.spoolHistory(ctx, h, 0, nil); err != nil {
		return nil, err
	}
	it, err := plan.sorted()
	if err != nil {
		return nil, err
	}
	pf, piece := rangePiece(task, format, hp)
	var linked *assetCollector
	pf = e.collectAssets(ctx, task, pf, &linked)
	defer func() { linked.close() }()
	res, err := e.upload(ctx, t, pf, meta, room, h, key, nil, e.crossVersions(ctx, h.spool.each, it), false)
	if err != nil {
		return nil, err
	}
	assets, err := e.roomAssets(ctx, t, linked)
	if err != nil {
		return nil, err
	}
	defer assets.close()
	file := &exportv1.File{Name: name, ObjectKey: key, Size: res.size, Records: res.records, Sha256: res.sha256,
		ContentType: format.ContentType}
	result := &taskrun.Result{Files: []*exportv1.File{file}, Piece: piece, Records: res.records, Bytes: res.size,
		Log: []any{"object_key", key, "rendered", true, "cross", info.Size / recordBytes, "skipped", res.skipped}}
	if err := announceAssets(ctx, t, result, assets); err != nil {
		return nil, err
	}
	return result, nil
}

// readCross reads a cross list into a sorter by sequence.
func (e *Exporter) readCross(ctx context.Context, key string) (*sorter, error) {
	body, _, err := e.store.Open(ctx, e.bucket, key)
	if err != nil {
		return nil, fmt.Errorf("cross list %s: %w", key, err)
	}
	defer body.Close()
	bySeq := newSorter(os.TempDir())
	rr := &recordReader{r: bufio.NewReaderSize(body, 64<<10)}
	for {
		r, ok, err := rr.next()
		if err != nil {
			bySeq.close()
			return nil, fmt.Errorf("cross list %s: %w", key, err)
		}
		if !ok {
			return bySeq, nil
		}
		if err := bySeq.add(r); err != nil {
			bySeq.close()
			return nil, err
		}
	}
}

// crossVersions is the range's own plan (each) with its cross list (it,
// by sequence) applied: the versions of ids an earlier range holds are
// skipped, and an id whose last version lies in a later range is
// rendered in that version, read from the stream.
func (e *Exporter) crossVersions(ctx context.Context, each versions, it *mergeIter) versions {
	return func(f func(seq uint64, data []byte, latest uint64) (bool, error)) error {
		next, more, err := it.next()
		if err != nil {
			return err
		}
		return each(func(seq uint64, data []byte, latest uint64) (bool, error) {
			for more && next[0] < seq {
				if next, more, err = it.next(); err != nil {
					return false, err
				}
			}
			if more && next[0] == seq {
				switch next[1] {
				case crossSkip:
					data, latest = nil, 0
				case crossLatest:
					if data, err = e.laterVersion(ctx, data, next[2]); err != nil {
						return false, err
					}
					latest = next[2]
				}
				if next, more, err = it.next(); err != nil {
					return false, err
				}
			}
			return f(seq, data, latest)
		})
	}
}

// laterVersion reads the version at seq of the message data is a version
// of; it lies in a later range.
func (e *Exporter) laterVersion(ctx context.Context, data []byte, seq uint64) ([]byte, error) {
	msg, err := e.chat.GetMsg(ctx, seq)
	if err != nil {
		return nil, fmt.Errorf("message at %d: %w", seq, err)
	}
	id, _ := messageID(data)
	if lid, _ := messageID(msg.Data); string(lid) != string(id) {
		return nil, fmt.Errorf("split: message ids %q and %q share a hash", id, lid)
	}
	return msg.Data, nil
}

// discardSplit deletes the split state of every range of the task's
// export (pieces of index stages, id tables, reports, cross lists) when
// the task is canceled or fails for good: a range that handed off has no
// announced part, so the runner, which deletes the canceled part's own
// objects and those of completed parts only, would leave them to the
// retention sweep. Announced pieces are not split state; a range still
// running finds the job canceled itself and deletes its own objects.
func (e *Exporter) discardSplit(ctx context.Context, t *taskrun.Task) {
	task := t.Task
	if task.GetRoomRange() == nil {
		return
	}
	ctx = context.WithoutCancel(ctx)
	deleted := 0
	for i := range task.GetPartsTotal() {
		prefix := objects.PartPrefix(task.GetJobId(), i) + "split/"
		infos, err := e.store.List(ctx, e.bucket, prefix)
		if err != nil {
			t.Log.WarnContext(ctx, "split state not listed", "prefix", prefix, "error", err)
			continue
		}
		for _, info := range infos {
			if err := e.store.Delete(ctx, e.bucket, info.Key); err != nil {
				t.Log.WarnContext(ctx, "split state not deleted", "object_key", info.Key, "error", err)
				continue
			}
			deleted++
		}
	}
	if deleted > 0 {
		t.Log.InfoContext(ctx, "deleted split state", "objects", deleted)
	}
}
