package roomexport

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/taskrun"
)

// A split HTML page (split.go) needs two things from the ranges before
// its own that a JSON document does not:
//
//   - a reply names its thread root by an excerpt when the root is among
//     the last maxThreadRoots roots shown before it (htmlRenderer.roots),
//     and that root may lie in an earlier range;
//   - the footer counts every message of the page.
//
// So the index stage of an HTML range also writes its root list (every
// thread root it shows: position, id, excerpt, in page order) and its
// miss list (every reply whose root it did not keep: the root's id, the
// number of the range's own roots before it, and the offset in the piece
// of the unkeptRootWords it shows instead), and the last range's piece
// leaves out the page's closing bytes. The render stage of range j then
// rebuilds, from the earlier ranges' reports, root lists and cross lists
// (an id in a cross list is skipped there, or shown there in a later
// version read from the stream), what one exporter would hold when it
// reached range j: the ring of the last maxThreadRoots roots and, for the
// last range, the number of messages shown. A range with cross ids
// renders again with that ring and count. Otherwise, when a reply on its
// miss list finds its root in the ring, or it is the last range, its
// piece is copied with only those bytes changed (patchPiece): the ring
// and the count are the renderer's only state that spans messages. Any
// other range's index piece stands as it is. Nothing waits for another
// range's render stage: everything read is written by index stages,
// which have all finished.

// Object names of an HTML range's lists (see split.go's names).
const (
	splitRootsName  = "split/roots"
	splitMissesName = "split/misses"
)

// seqObserver is a Renderer that is told, just before each Message, the
// stream sequence of the position the message is shown at.
type seqObserver interface{ atSeq(seq uint64) }

// threadRoot is a thread root as its replies name it.
type threadRoot struct {
	seq         uint64
	id, excerpt string
}

// isThreadRoot reports whether the page keeps m's excerpt for replies
// (htmlRenderer.Message).
func isThreadRoot(m *sourcev1.ChatMessage) bool {
	return m.GetSystemType() == "" && m.GetThreadCount() > 0
}

// htmlPiece is what a stage of an HTML range adds to its renderer.
type htmlPiece struct {
	// record makes the renderer record its root and miss lists (index
	// stage); recs holds a recorder per renderer made, the last one the
	// render's (a speculative render may be abandoned for another).
	record bool
	recs   []*rootRecorder
	// seed is the ring of roots at the range's start, oldest first, and
	// before the messages shown before it (render stage).
	seed   []threadRoot
	before uint64
}

func (p *htmlPiece) recorder() *rootRecorder {
	if p == nil || len(p.recs) == 0 {
		return nil
	}
	return p.recs[len(p.recs)-1]
}

func (p *htmlPiece) close() {
	for _, r := range p.recs {
		r.close()
	}
}

// observeSeqs wraps format's renderers so that the sequences
// renderMessages passes reach the renderer's recorder; it wraps the
// outermost renderer, which is the one renderMessages asks.
func observeSeqs(format Format, p *htmlPiece) Format {
	inner := format.New
	format.New = func(w io.Writer, meta Meta) Renderer {
		r := inner(w, meta)
		rec := p.recorder()
		if rec == nil {
			return r
		}
		return &seqRenderer{Renderer: r, rec: rec}
	}
	return format
}

type seqRenderer struct {
	Renderer
	rec *rootRecorder
}

func (s *seqRenderer) atSeq(seq uint64) { s.rec.seq = seq }

// rootRecorder writes an index stage's root and miss lists to local
// files as the range is rendered; memory stays flat.
type rootRecorder struct {
	seq           uint64 // of the message being rendered
	kept          uint64 // roots recorded so far
	roots, misses *os.File
	rw, mw        *bufio.Writer
	err           error
	buf           []byte
}

func newRootRecorder() *rootRecorder {
	r := &rootRecorder{}
	if r.roots, r.err = createUnlinked(os.TempDir(), "roomexport-roots-*"); r.err != nil {
		return r
	}
	if r.misses, r.err = createUnlinked(os.TempDir(), "roomexport-misses-*"); r.err != nil {
		return r
	}
	r.rw, r.mw = bufio.NewWriterSize(r.roots, 64<<10), bufio.NewWriterSize(r.misses, 64<<10)
	return r
}

func (r *rootRecorder) root(id, excerpt string) {
	if r.err != nil {
		return
	}
	b := binary.AppendUvarint(r.buf[:0], r.seq)
	b = appendBytes(b, id)
	b = appendBytes(b, excerpt)
	r.buf = b
	_, r.err = r.rw.Write(b)
	r.kept++
}

// miss records a reply whose root the range did not keep, and the
// offset in the piece of the words that say so (unkeptRootWords). Past
// maxThreadRoots roots of the range's own, no root of an earlier range
// can be kept for a reply any more.
func (r *rootRecorder) miss(root string, offset uint64) {
	if r.err != nil || r.kept >= maxThreadRoots {
		return
	}
	b := binary.AppendUvarint(r.buf[:0], r.kept)
	b = appendBytes(b, root)
	b = binary.AppendUvarint(b, offset)
	r.buf = b
	_, r.err = r.mw.Write(b)
}

func (r *rootRecorder) close() {
	for _, f := range []*os.File{r.roots, r.misses} {
		if f != nil {
			f.Close()
		}
	}
}

func appendBytes(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// writeRootLists uploads the recorded lists of an HTML range (empty ones
// when nothing was rendered).
func (e *Exporter) writeRootLists(ctx context.Context, task *exportv1.ExportTask, rec *rootRecorder) error {
	if rec == nil {
		rec = newRootRecorder()
		defer rec.close()
	}
	if rec.err != nil {
		return fmt.Errorf("root list: %w", rec.err)
	}
	if err := e.putFile(ctx, rec.roots, rec.rw, splitKey(task.GetJobId(), task.GetPart(), splitRootsName)); err != nil {
		return err
	}
	return e.putFile(ctx, rec.misses, rec.mw, splitKey(task.GetJobId(), task.GetPart(), splitMissesName))
}

// listReader reads the uvarints and strings of a root or miss list.
type listReader struct {
	r   *bufio.Reader
	buf []byte
}

func (l *listReader) uvarint() (uint64, bool, error) {
	v, err := binary.ReadUvarint(l.r)
	if errors.Is(err, io.EOF) {
		return 0, false, nil
	}
	return v, err == nil, err
}

func (l *listReader) str() (string, error) {
	n, err := binary.ReadUvarint(l.r)
	if err != nil {
		return "", io.ErrUnexpectedEOF
	}
	if n > 1<<20 {
		return "", errors.New("string too long")
	}
	l.buf = l.buf[:0]
	l.buf = append(l.buf, make([]byte, n)...)
	if _, err := io.ReadFull(l.r, l.buf); err != nil {
		return "", io.ErrUnexpectedEOF
	}
	return string(l.buf), nil
}

// nextRoot reads a root list's next entry.
func (l *listReader) nextRoot() (threadRoot, bool, error) {
	seq, ok, err := l.uvarint()
	if !ok || err != nil {
		return threadRoot{}, false, err
	}
	id, err := l.str()
	if err != nil {
		return threadRoot{}, false, err
	}
	ex, err := l.str()
	if err != nil {
		return threadRoot{}, false, err
	}
	return threadRoot{seq: seq, id: id, excerpt: ex}, true, nil
}

// openList opens one of part's lists.
func (e *Exporter) openList(ctx context.Context, jobID string, part uint32, name string) (io.ReadCloser, *listReader, error) {
	body, _, err := e.store.Open(ctx, e.bucket, splitKey(jobID, part, name))
	if err != nil {
		return nil, nil, fmt.Errorf("%s of part %d: %w", name, part, err)
	}
	return body, &listReader{r: bufio.NewReaderSize(body, 64<<10)}, nil
}

// rootTail keeps the last maxThreadRoots roots added, in order.
type rootTail struct {
	ring []threadRoot
	next int
}

func (t *rootTail) add(r threadRoot) {
	if len(t.ring) < maxThreadRoots {
		t.ring = append(t.ring, r)
		return
	}
	t.ring[t.next] = r
	t.next = (t.next + 1) % maxThreadRoots
}

func (t *rootTail) list() []threadRoot {
	return append(append([]threadRoot(nil), t.ring[t.next:]...), t.ring[:t.next]...)
}

// htmlContext is the render stage's view of the ranges before the task's:
// the ring of roots and the count of messages at its start, and whether a
// reply of its index piece would find its root in that ring.
func (e *Exporter) htmlContext(ctx context.Context, task *exportv1.ExportTask) (*htmlPiece, bool, error) {
	hp := &htmlPiece{}
	j := task.GetPart()
	last := j+1 >= task.GetPartsTotal()
	var tails [][]threadRoot
	have := 0
	for i := int(j) - 1; i >= 0; i-- {
		wantRoots := have < maxThreadRoots
		if !wantRoots && !last {
			break
		}
		roots, count, err := e.finalRange(ctx, task, uint32(i), wantRoots, last)
		if err != nil {
			return nil, false, err
		}
		tails = append(tails, roots)
		have += len(roots)
		if last {
			hp.before += count
		}
	}
	for i := len(tails) - 1; i >= 0; i-- {
		hp.seed = append(hp.seed, tails[i]...)
	}
	hp.seed = hp.seed[max(0, len(hp.seed)-maxThreadRoots):]
	hit, err := e.seedHit(ctx, task, hp.seed)
	if err != nil {
		return nil, false, err
	}
	return hp, hit, nil
}

// finalRange is what range i shows in the joined page: the last
// maxThreadRoots of its roots (with wantRoots) and its number of
// messages (with wantCount), its index stage's with its cross list
// applied.
func (e *Exporter) finalRange(ctx context.Context, task *exportv1.ExportTask, i uint32, wantRoots, wantCount bool) ([]threadRoot, uint64, error) {
	_, part, err := e.readReport(ctx, task.GetJobId(), i)
	if err != nil {
		return nil, 0, fmt.Errorf("range report of part %d: %w", i, err)
	}
	count := int64(part.GetFile().GetRecords())
	plan, err := e.readCross(ctx, splitKey(task.GetJobId(), i, splitCrossName))
	if err != nil {
		return nil, 0, err
	}
	defer plan.close()
	it, err := plan.sorted()
	if err != nil {
		return nil, 0, err
	}
	var roots *listReader
	if wantRoots {
		body, lr, err := e.openList(ctx, task.GetJobId(), i, splitRootsName)
		if err != nil {
			return nil, 0, err
		}
		defer body.Close()
		roots = lr
	}
	nextRoot := func() (threadRoot, bool, error) {
		if roots == nil {
			return threadRoot{}, false, nil
		}
		r, ok, err := roots.nextRoot()
		if err != nil {
			return r, ok, fmt.Errorf("root list of part %d: %w", i, err)
		}
		return r, ok, nil
	}
	var tail rootTail
	c, cok, err := it.next()
	if err != nil {
		return nil, 0, err
	}
	r, rok, err := nextRoot()
	if err != nil {
		return nil, 0, err
	}
	for cok || rok {
		if !cok || rok && r.seq < c[0] {
			tail.add(r)
			if r, rok, err = nextRoot(); err != nil {
				return nil, 0, err
			}
			continue
		}
		// An id of the cross list: its index stage's version is replaced.
		if rok && r.seq == c[0] {
			if r, rok, err = nextRoot(); err != nil {
				return nil, 0, err
			}
		}
		if wantCount {
			_, shown, err := e.shownVersion(ctx, task, c[3])
			if err != nil {
				return nil, 0, err
			}
			if shown {
				count--
			}
		}
		if c[1] == crossLatest && (wantCount || wantRoots) {
			m, shown, err := e.shownVersion(ctx, task, c[2])
			if err != nil {
				return nil, 0, err
			}
			if shown {
				count++
				if isThreadRoot(m) {
					tail.add(threadRoot{seq: c[0], id: m.GetId(), excerpt: rootExcerpt(m)})
				}
			}
		}
		if c, cok, err = it.next(); err != nil {
			return nil, 0, err
		}
	}
	return tail.list(), uint64(max(count, 0)), nil
}

// shownVersion reads the version at seq and reports whether the export
// shows it (renderMessages: decodable, within the task's dates).
func (e *Exporter) shownVersion(ctx context.Context, task *exportv1.ExportTask, seq uint64) (*sourcev1.ChatMessage, bool, error) {
	msg, err := e.chat.GetMsg(ctx, seq)
	if err != nil {
		return nil, false, fmt.Errorf("message at %d: %w", seq, err)
	}
	var m sourcev1.ChatMessage
	if err := proto.Unmarshal(msg.Data, &m); err != nil {
		return nil, false, nil
	}
	ts := m.GetTs().AsTime()
	if from := task.GetRoom().GetFrom(); from != nil && ts.Before(from.AsTime()) {
		return &m, false, nil
	}
	if to := task.GetRoom().GetTo(); to != nil && ts.After(to.AsTime()) {
		return &m, false, nil
	}
	return &m, true, nil
}

// seedHits finds, on a range's miss list, the replies whose root is in
// the ring seed a range starts with: the joined page names those roots
// by their excerpts where the index piece has unkeptRootWords.
type seedHits struct {
	seed []threadRoot
	at   map[string]int
	list *listReader
}

func newSeedHits(seed []threadRoot, list *listReader) *seedHits {
	h := &seedHits{seed: seed, at: make(map[string]int, len(seed)), list: list}
	for i, r := range seed {
		h.at[r.id] = i
	}
	return h
}

// next returns the next hit: the offset of its words in the piece and
// the root's excerpt.
func (h *seedHits) next() (uint64, string, bool, error) {
	for {
		ownBefore, ok, err := h.list.uvarint()
		if !ok || err != nil {
			return 0, "", false, err
		}
		root, err := h.list.str()
		if err != nil {
			return 0, "", false, err
		}
		offset, ok, err := h.list.uvarint()
		if !ok || err != nil {
			return 0, "", false, cmp.Or(err, io.ErrUnexpectedEOF)
		}
		// Kept when fewer than maxThreadRoots roots came after it.
		if s, ok := h.at[root]; ok && uint64(len(h.seed)-1-s)+ownBefore < maxThreadRoots {
			return offset, h.seed[s].excerpt, true, nil
		}
	}
}

// seedHit reports whether the task's miss list has a hit in seed.
func (e *Exporter) seedHit(ctx context.Context, task *exportv1.ExportTask, seed []threadRoot) (bool, error) {
	if len(seed) == 0 {
		return false, nil
	}
	body, lr, err := e.openList(ctx, task.GetJobId(), task.GetPart(), splitMissesName)
	if err != nil {
		return false, err
	}
	defer body.Close()
	_, _, hit, err := newSeedHits(seed, lr).next()
	if err != nil {
		return false, fmt.Errorf("miss list of part %d: %w", task.GetPart(), err)
	}
	return hit, nil
}

// patchPiece announces the range's index piece as the joined page has
// it: each reply on its miss list whose root is in the ring the range
// starts with names the root by its excerpt, and the last range's piece
// ends with the page's closing bytes, counting every range's messages.
// Only those bytes differ from what the index stage rendered (the
// ring and the count are the renderer's only state that spans
// messages), so the piece is copied through the exporter with them
// changed: the range is not read or rendered again.
func (e *Exporter) patchPiece(ctx context.Context, t *taskrun.Task, indexed *exportv1.PartUploaded, hp *htmlPiece,
	key string, closing bool,
) (*taskrun.Result, error) {
	task := t.Task
	f := indexed.GetFile()
	body, _, err := e.store.Open(ctx, e.bucket, f.GetObjectKey())
	if err != nil {
		return nil, fmt.Errorf("piece of part %d: %w", task.GetPart(), err)
	}
	defer body.Close()
	misses, lr, err := e.openList(ctx, task.GetJobId(), task.GetPart(), splitMissesName)
	if err != nil {
		return nil, err
	}
	defer misses.Close()
	pr, pw := io.Pipe()
	patched := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		var err error
		patched, err = writePatched(pw, io.LimitReader(body, int64(f.GetSize())), f.GetSize(), newSeedHits(hp.seed, lr))
		if err == nil && closing {
			_, err = pw.Write(appendHTMLClosing(nil, hp.before+f.GetRecords()))
		}
		pw.CloseWithError(err)
	}()
	info, err := e.store.Upload(ctx, e.bucket, key, pr, f.GetContentType())
	pr.CloseWithError(errors.New("upload ended")) // ends the writer if the upload stopped early
	<-done
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", key, err)
	}
	file := &exportv1.File{Name: f.GetName(), ObjectKey: key, Size: uint64(info.Size), Records: f.GetRecords(), Sha256: info.SHA256,
		ChecksumSha256: info.ChecksumSHA256, ContentType: f.GetContentType()}
	return &taskrun.Result{Files: []*exportv1.File{file}, Attachments: indexed.GetFiles(), Piece: indexed.GetPiece(),
		Records: file.GetRecords(), Bytes: file.GetSize(),
		Log: []any{"object_key", key, "rendered", false, "excerpts_added", patched, "closed", closing}}, nil
}

// writePatched copies the piece (size bytes) to w with each hit's
// unkeptRootWords replaced by the root's excerpt, formatted as a reply
// shows it, and returns the number of hits.
func writePatched(w io.Writer, piece io.Reader, size uint64, hits *seedHits) (int, error) {
	var pos uint64
	var b, tmp []byte
	n := 0
	for {
		offset, ex, ok, err := hits.next()
		if err != nil {
			return n, fmt.Errorf("miss list: %w", err)
		}
		if !ok {
			break
		}
		if offset < pos || offset+uint64(len(unkeptRootWords)) > size {
			return n, fmt.Errorf("miss list: offset %d out of the piece", offset)
		}
		if _, err := io.CopyN(w, piece, int64(offset-pos)); err != nil {
			return n, fmt.Errorf("copy piece: %w", err)
		}
		if _, err := io.CopyN(io.Discard, piece, int64(len(unkeptRootWords))); err != nil {
			return n, fmt.Errorf("copy piece: %w", err)
		}
		b, tmp = appendExcerptFormatted(b[:0], tmp, ex)
		if _, err := w.Write(b); err != nil {
			return n, err
		}
		pos = offset + uint64(len(unkeptRootWords))
		n++
	}
	if _, err := io.CopyN(w, piece, int64(size-pos)); err != nil {
		return n, fmt.Errorf("copy piece: %w", err)
	}
	return n, nil
}
