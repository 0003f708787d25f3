package roomexport

import (
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"os"
	"slices"
	"strconv"
	"time"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/taskrun"
)

// A room document is uploaded part by part (Options.PartSize) through the
// resumable multipart API of shared/blob. After each part, a checkpoint
// in the export_checkpoints bucket under <jobId>.<part> records the
// upload, its parts, and everything the export pass needs to go on from
// the last message whose bytes are all in those parts: its stream
// sequence, counters, the SHA-256 state, the renderer's state and the
// republished ids placed already whose later versions are still to come. A redelivered task (the
// exporter was killed, or the attempt failed on a transient error) checks
// the checkpoint against the parts MinIO holds and continues after that
// message; the bytes are the same as a clean run's, because parts are cut
// at message boundaries and everything that shapes the next byte is
// restored. See the "Resume" section of docs/RELIABILITY.md.

// checkpointVersion changes when the checkpoint's meaning does; an
// unknown version is discarded and the part starts over. A speculative
// render's checkpoint (speculate.go) has a version of its own, so that an
// exporter that does not know it starts over rather than resume it as a
// planned one: its bytes are final only if the window resolves every
// republished id of the whole history, which its resume reads again to
// find out. The window's bounds shape those bytes, so a change of
// windowVersions or windowBytes needs a new version (2 was the render
// without a window). 4 and 5 name the room's attachments by the segments
// of the list (collectorState) where 1 and 3 carried the list inline:
// this exporter still resumes those, and one that predates segments
// starts a 4 or 5 over rather than resume it without the attachments
// before it.
const (
	checkpointVersion            = 4
	speculativeCheckpointVersion = 5

	inlineListCheckpointVersion            = 1
	inlineListSpeculativeCheckpointVersion = 3
)

// checkpoint is how far a room part's export got. It is JSON: it is the
// exporter's private state, read only by the exporter that wrote it or a
// replica of the same version, stored by the runner
// (taskrun.Task.SaveCheckpoint). One over taskrun.MaxCheckpointBytes is
// not saved: the previous checkpoint stays valid (later parts are simply
// uploaded again), only less useful.
type checkpoint struct {
	Version int                  `json:"v"`
	Key     string               `json:"key"`
	Format  string               `json:"format"`
	Upload  blob.MultipartUpload `json:"upload"`
	Parts   []blob.Part          `json:"parts"`
	// Seq is the stream sequence of the last message the uploaded parts
	// cover; the export pass resumes at Seq+1.
	Seq     uint64 `json:"seq"`
	Scanned uint64 `json:"scanned"`
	Records uint64 `json:"records"`
	Skipped uint64 `json:"skipped,omitempty"`
	Bytes   uint64 `json:"bytes"`
	// Hash is the SHA-256 state over the uploaded bytes
	// (encoding.BinaryMarshaler of crypto/sha256).
	Hash     []byte          `json:"hash"`
	Renderer json.RawMessage `json:"renderer"`
	// Generated is the time the document prints; a resumed attempt
	// prints the first attempt's.
	Generated time.Time `json:"generated"`
	// Count and LastSeq are the history as of the first attempt, so a
	// resumed replay ends where a clean one would.
	Count   uint64 `json:"count"`
	LastSeq uint64 `json:"last_seq"`
	// Dups are the ids placed up to Seq whose later versions come after
	// Seq: the resumed pass skips those versions (see spool.go).
	Dups []dupEntry `json:"dups,omitempty"`
	// Subject is derived from the task, not stored.
	subject string
}

// dupEntry is one republished id: where its last version is and whether
// it was already rendered at its first position (always, since the
// one-pass exporter; checkpoints of the two-pass one also list ids still
// to come).
type dupEntry struct {
	ID      []byte `json:"id"`
	Latest  uint64 `json:"latest"`
	Emitted bool   `json:"emitted,omitempty"`
}

// history is the history as of the first attempt, with the ids already
// placed whose later versions the resumed pass must skip. (Entries not
// emitted, from checkpoints of the exporter's two-pass version, are
// found again by the resumed pass's own planning.)
func (cp *checkpoint) history() *history {
	h := &history{subject: cp.subject, count: cp.Count, lastSeq: cp.LastSeq, emitted: make(map[string]struct{}, len(cp.Dups))}
	for _, d := range cp.Dups {
		if d.Emitted && d.Latest > cp.Seq {
			h.emitted[string(d.ID)] = struct{}{}
		}
	}
	return h
}

// resumable is a Renderer whose state between two messages can be saved
// and restored, so a document can be continued by another process.
type resumable interface {
	saveState() ([]byte, error)
	restoreState([]byte) error
}

// resumePoint returns the task's checkpoint if it can be trusted: same
// object key and format, and MinIO still holds the upload with exactly the
// parts it lists. Otherwise the checkpoint (and its upload) is discarded
// and resumePoint returns nil: the part starts over. Only failing to read
// the checkpoint or list the parts is an error (retried).
func (e *Exporter) resumePoint(ctx context.Context, t *taskrun.Task, key string) (*checkpoint, error) {
	cp := new(checkpoint)
	if found, err := t.LoadCheckpoint(ctx, cp); err != nil || !found {
		return nil, err
	}
	task, log := t.Task, t.Log
	discard := func(why string) (*checkpoint, error) {
		log.WarnContext(ctx, "checkpoint not usable; starting the part over", "reason", why)
		e.discardCheckpoint(ctx, t)
		return nil, nil
	}
	// The inline list is all that changed (collectorState.Assets reads it).
	switch cp.Version {
	case inlineListCheckpointVersion:
		cp.Version = checkpointVersion
	case inlineListSpeculativeCheckpointVersion:
		cp.Version = speculativeCheckpointVersion
	}
	switch {
	case cp.Version != checkpointVersion && cp.Version != speculativeCheckpointVersion:
		return discard("version " + strconv.Itoa(cp.Version))
	case cp.Key != key || cp.Upload.Bucket != e.bucket || cp.Upload.Key != key:
		return discard("object key changed")
	case cp.Format != task.GetFormat().String():
		return discard("format changed")
	}
	held, err := e.store.ListParts(ctx, cp.Upload)
	if errors.Is(err, blob.ErrUploadGone) {
		return discard("upload gone")
	}
	if err != nil {
		return nil, fmt.Errorf("check checkpoint of part %d: %w", task.GetPart(), err)
	}
	byNumber := make(map[int]blob.Part, len(held))
	for _, p := range held {
		byNumber[p.Number] = p
	}
	for _, p := range cp.Parts {
		if byNumber[p.Number] != p {
			return discard(fmt.Sprintf("part %d differs on the server", p.Number))
		}
	}
	cp.subject, _ = bus.ChatSubject(task.GetRoom().GetRoomId())
	log.InfoContext(ctx, fmt.Sprintf("resuming from message %d", cp.Seq+1),
		"stream_seq", cp.Seq+1, "records_done", cp.Records, "parts_done", len(cp.Parts), "bytes_done", cp.Bytes)
	return cp, nil
}

// abortCheckpointed aborts the multipart upload the part's checkpoint
// names: the part will not be resumed (its job failed or was canceled, or
// the checkpoint is stale). The caller deletes the checkpoint.
func (e *Exporter) abortCheckpointed(ctx context.Context, t *taskrun.Task) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var cp checkpoint
	if found, err := t.LoadCheckpoint(ctx, &cp); err != nil || !found {
		return
	}
	if err := e.store.Abort(ctx, cp.Upload); err != nil {
		t.Log.WarnContext(ctx, "upload of discarded checkpoint not aborted", "upload_id", cp.Upload.UploadID, "error", err)
	}
}

// discardCheckpoint aborts the checkpoint's upload and deletes it.
func (e *Exporter) discardCheckpoint(ctx context.Context, t *taskrun.Task) {
	e.abortCheckpointed(ctx, t)
	t.DeleteCheckpoint(ctx)
}

// pendingPart is a part being uploaded.
type pendingPart struct {
	done chan struct{} // closed when the upload ended
	file *partFile
	cp   *checkpoint
	part blob.Part
	err  error
}

// partWriter collects the document's bytes for the next part (in a
// partFile, upload.go) and keeps the SHA-256 and the byte count of the
// whole document.
type partWriter struct {
	part  *partFile
	sum   hash.Hash
	count countingWriter
}

func (w *partWriter) Write(p []byte) (int, error) {
	n, err := w.part.Write(p)
	w.sum.Write(p[:n])
	w.count.n.Add(uint64(n))
	return n, err
}

// upload streams the document src yields into a multipart upload of key,
// one part per Options.PartSize bytes (cut at message boundaries), saving
// a checkpoint after each part (a speculative one when provisional: the
// render of a speculate, whose bytes are final only with its verdict);
// with cp it continues cp's upload instead. An errSpeculationFailed from
// src aborts the upload and deletes its checkpoint.
// A permanent failure aborts the upload; a transient failure (a
// cancellation too, whose cleanup is the runner's: roomPart.Discard)
// keeps it and the checkpoint for the redelivered task.
func (e *Exporter) upload(ctx context.Context, t *taskrun.Task, format Format,
	meta Meta, room *sourcev1.Room, h *history, key string, cp *checkpoint, src versions, provisional bool,
) (res uploadResult, err error) {
	task, log := t.Task, t.Log
	var files []*partFile
	defer func() {
		// Runs last: the deferred wait below has seen the upload end.
		for _, f := range files {
			f.close()
		}
	}()
	newPart := func() (*partFile, error) {
		f, err := newPartFile(os.TempDir())
		if err == nil {
			files = append(files, f)
		}
		return f, err
	}
	w := &partWriter{sum: sha256.New()}
	if w.part, err = newPart(); err != nil {
		return uploadResult{}, err
	}
	r := format.New(w, meta)
	state, canSave := r.(resumable)
	ender, _ := r.(memberEnder)
	pos := newPosition()
	var (
		up    blob.MultipartUpload
		parts []blob.Part
		saved bool // a checkpoint names up, so a transient failure keeps it
	)
	if cp != nil {
		if err := e.restore(cp, w, r, &res, pos); err != nil {
			// Not worth a retry: the next attempt would fail the same way.
			e.discardCheckpoint(ctx, t)
			return uploadResult{}, fmt.Errorf("restore checkpoint of part %d: %w", task.GetPart(), err)
		}
		up, parts, saved = cp.Upload, cp.Parts, true
	} else {
		if up, err = e.store.Begin(ctx, e.bucket, key, format.ContentType); err != nil {
			return uploadResult{}, fmt.Errorf("export part %d: %w", task.GetPart(), err)
		}
		if err := r.Begin(room); err != nil {
			return uploadResult{}, errors.Join(err, e.store.Abort(context.WithoutCancel(ctx), up))
		}
	}
	// One part uploads while the next is rendered into the other buffer:
	// the encoder does not wait for MinIO, nor MinIO for the encoder.
	// inflight is that upload; settle waits for it and then saves the
	// checkpoint taken when it was cut, so a checkpoint never names a
	// part MinIO has not acknowledged.
	var (
		inflight *pendingPart
		spare    *partFile
		issued   = len(parts) // part numbers handed out
	)
	settle := func() error {
		if inflight == nil {
			return nil
		}
		p := inflight
		<-p.done
		inflight, spare = nil, p.file
		spare.reset()
		if p.err != nil {
			return fmt.Errorf("export part %d: %w", task.GetPart(), p.err)
		}
		parts = append(parts, p.part)
		if p.cp == nil {
			return nil
		}
		p.cp.Parts = slices.Clone(parts)
		if t.SaveCheckpoint(ctx, p.cp) {
			saved = true
			log.DebugContext(ctx, "checkpoint saved", "part_number", len(parts), "stream_seq", p.cp.Seq, "records", p.cp.Records)
			if e.opts.afterCheckpoint != nil {
				return e.opts.afterCheckpoint(len(parts))
			}
		}
		return nil
	}
	defer func() {
		if inflight != nil {
			<-inflight.done // the upload is ours until it ends
		}
		switch {
		case err == nil:
		case errors.Is(err, errSpeculationFailed):
			// The speculative document is not the answer: neither its
			// upload nor its checkpoint may outlive it.
			if saved {
				t.DeleteCheckpoint(ctx)
			}
			if aerr := e.store.Abort(context.WithoutCancel(ctx), up); aerr != nil {
				log.WarnContext(ctx, "speculative upload not aborted", "upload_id", up.UploadID, "error", aerr)
			}
		case bus.IsPermanent(err) || errors.Is(err, blob.ErrUploadGone):
			e.discardCheckpoint(ctx, t)
			fallthrough
		case !saved:
			if aerr := e.store.Abort(context.WithoutCancel(ctx), up); aerr != nil {
				log.WarnContext(ctx, "multipart upload not aborted", "upload_id", up.UploadID, "error", aerr)
			}
		}
	}()

	// send starts uploading the part file; cp, when not nil, is the
	// checkpoint to save once MinIO has it.
	send := func(cp *checkpoint) error {
		if err := settle(); err != nil {
			return err
		}
		body, err := w.part.contents()
		if err != nil {
			return err
		}
		if spare == nil {
			if spare, err = newPart(); err != nil {
				return err
			}
		}
		issued++
		p := &pendingPart{done: make(chan struct{}), file: w.part, cp: cp}
		go func(n int) {
			defer close(p.done)
			p.part, p.err = e.store.PutPart(ctx, up, n, body, body.Size())
		}(issued)
		inflight = p
		w.part, spare = spare, nil
		return nil
	}
	after := func(pos *position) error {
		if w.part.len() < partSize(e.opts.PartSize, issued+1) {
			return nil
		}
		if ender != nil {
			// The part ends with the compressed stream's member, so the
			// state at the cut is one a checkpoint can hold.
			if err := ender.endMember(); err != nil {
				return err
			}
		}
		var next *checkpoint
		if canSave {
			// Taken now, while the state is the cut's; saved by settle.
			var err error
			if next, err = e.snapshot(key, task, meta, up, w, state, &res, pos, h, provisional); err != nil {
				log.WarnContext(ctx, "checkpoint not taken", "error", err)
			}
		}
		return send(next)
	}
	if err := e.renderMessages(ctx, t, r, src, h.count, &w.count, &res, nil, pos, after); err != nil {
		return uploadResult{}, err
	}
	if err := r.End(); err != nil {
		return uploadResult{}, err
	}
	if w.part.len() > 0 || issued == 0 {
		if err := send(nil); err != nil {
			return uploadResult{}, err
		}
	}
	if err := settle(); err != nil {
		return uploadResult{}, err
	}
	info, err := e.store.Complete(ctx, up, parts)
	if err != nil {
		return uploadResult{}, fmt.Errorf("export part %d: %w", task.GetPart(), err)
	}
	res.size, res.parts = w.count.n.Load(), len(parts)
	if uint64(info.Size) != res.size {
		return uploadResult{}, fmt.Errorf("export part %d: stored %d bytes, wrote %d", task.GetPart(), info.Size, res.size)
	}
	res.sha256 = hex.EncodeToString(w.sum.Sum(nil))
	return res, nil
}

// snapshot captures the state right after a part was cut, when every
// byte written is in the parts uploaded or uploading; parts are filled in
// once they are all acknowledged.
func (e *Exporter) snapshot(key string, task *exportv1.ExportTask, meta Meta, up blob.MultipartUpload,
	w *partWriter, state resumable, res *uploadResult, pos *position, h *history, speculative bool,
) (*checkpoint, error) {
	sum, err := w.sum.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("hash state: %w", err)
	}
	rs, err := state.saveState()
	if err != nil {
		return nil, fmt.Errorf("renderer state: %w", err)
	}
	cp := &checkpoint{
		Version: checkpointVersion, Key: key, Format: task.GetFormat().String(),
		Upload: up,
		Seq:    pos.seq, Scanned: pos.scanned, Records: res.records, Skipped: res.skipped, Bytes: w.count.n.Load(),
		Hash: sum, Renderer: rs, Generated: meta.Generated,
		Count: h.count, LastSeq: h.lastSeq,
	}
	if speculative {
		cp.Version = speculativeCheckpointVersion
	}
	if pos.untracked {
		return nil, fmt.Errorf("more than %d republished messages span the part boundary", maxOpenIDs)
	}
	for _, o := range pos.openIDsAfter() {
		cp.Dups = append(cp.Dups, dupEntry{ID: []byte(o.id), Latest: o.latest, Emitted: true})
	}
	return cp, nil
}

// restore puts the writer, renderer, counters and position back where cp
// says they were.
func (e *Exporter) restore(cp *checkpoint, w *partWriter, r Renderer, res *uploadResult, pos *position) error {
	state, ok := r.(resumable)
	if !ok {
		return errors.New("renderer cannot resume")
	}
	if err := w.sum.(encoding.BinaryUnmarshaler).UnmarshalBinary(cp.Hash); err != nil {
		return fmt.Errorf("hash state: %w", err)
	}
	if err := state.restoreState(cp.Renderer); err != nil {
		return fmt.Errorf("renderer state: %w", err)
	}
	w.count.n.Store(cp.Bytes)
	res.records, res.skipped = cp.Records, cp.Skipped
	pos.seq, pos.scanned = cp.Seq, cp.Scanned
	for _, d := range cp.Dups {
		if d.Emitted && d.Latest > cp.Seq {
			pos.open.push(openID{id: string(d.ID), latest: d.Latest})
		}
	}
	return nil
}

// jsonState is the JSON renderer's state between messages.
type jsonState struct {
	N int `json:"n"`
}

func (r *jsonRenderer) saveState() ([]byte, error) { return json.Marshal(jsonState{N: r.n}) }

func (r *jsonRenderer) restoreState(data []byte) error {
	var s jsonState
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	r.n = s.N
	return nil
}

// htmlState is the HTML renderer's state between messages: the message
// count and the remembered thread roots, oldest first, so eviction goes on
// in the same order.
type htmlState struct {
	N     int        `json:"n"`
	Roots []htmlRoot `json:"roots,omitempty"`
}

type htmlRoot struct {
	ID      string `json:"id"`
	Excerpt string `json:"ex"`
}

func (r *htmlRenderer) saveState() ([]byte, error) {
	s := htmlState{N: r.n, Roots: make([]htmlRoot, 0, len(r.rootRing))}
	ring := append(r.rootRing[r.rootNext:len(r.rootRing):len(r.rootRing)], r.rootRing[:r.rootNext]...)
	for _, id := range ring {
		s.Roots = append(s.Roots, htmlRoot{ID: id, Excerpt: r.roots[id]})
	}
	return json.Marshal(s)
}

func (r *htmlRenderer) restoreState(data []byte) error {
	var s htmlState
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	if len(s.Roots) > maxThreadRoots {
		return fmt.Errorf("%d thread roots, at most %d kept", len(s.Roots), maxThreadRoots)
	}
	r.n = s.N
	r.roots = make(map[string]string, len(s.Roots))
	r.rootRing = r.rootRing[:0]
	r.rootNext = 0 // the oldest root is first, where eviction starts
	for _, root := range s.Roots {
		r.rootRing = append(r.rootRing, root.ID)
		r.roots[root.ID] = root.Excerpt
	}
	return nil
}
