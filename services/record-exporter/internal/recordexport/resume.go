package recordexport

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/recordquery"
	"dataport.dev/shared/taskrun"
)

// A chunked record export of a stream source (transactions, events,
// messages) checkpoints after every chunk file it stored: the files so
// far, the stream sequence of the row that opens the next chunk, and the
// counters. A redelivered task (the exporter was killed, or the attempt
// failed on a transient error) checks that the files are still in MinIO
// with their sizes and replays the stream from that sequence, numbering
// chunks on from there; the files are the same as a clean run's, because
// a chunk's bounds depend only on its own rows and every chunk starts a
// fresh renderer (and gzip stream).
//
// Other record exports start over on redelivery: key-value sources
// (rooms, users) have no sequence to resume at; a sorted export's external
// sort has to see every row before the first one is written; an
// unchunked file would need the renderer's and gzip's state mid-stream.

// checkpointVersion changes when the checkpoint's meaning does; an
// unknown version is discarded and the part starts over.
const checkpointVersion = 1

// checkpoint is how far a chunked record export got. It is JSON, private
// to the exporter, stored by the runner (taskrun.Task.SaveCheckpoint)
// under <jobId>.<part>; its size limit, taskrun.MaxCheckpointBytes, holds
// about 4,000 chunk files.
type checkpoint struct {
	Version int `json:"v"`
	// Task fingerprints what shapes the files (format, target name,
	// records scope): a checkpoint of another task is never used.
	Task  string      `json:"task"`
	Files []chunkFile `json:"files"`
	// Seq is the stream sequence of the first row of the next chunk; the
	// replay resumes there.
	Seq uint64 `json:"seq"`
	// LastSeq and Total are the source as of the first attempt, so a
	// resumed replay ends where a clean one would.
	LastSeq uint64 `json:"last_seq"`
	Total   uint64 `json:"total"`
	// Counters as of Seq (the row at Seq not counted).
	Scanned uint64 `json:"scanned"`
	Skipped uint64 `json:"skipped,omitempty"`
	Matched uint64 `json:"matched"`
	Rows    uint64 `json:"rows"`
	// Generated is the time the files print (PDF); a resumed attempt
	// prints the first attempt's.
	Generated time.Time `json:"generated"`
}

// chunkFile is one finished chunk.
type chunkFile struct {
	Name    string `json:"name"`
	Key     string `json:"key"`
	Size    uint64 `json:"size"`
	Records uint64 `json:"records"`
	Sha256  string `json:"sha256"`
	// Checksum is the store's checksum (File.checksum_sha256); empty in
	// checkpoints written before it was kept, whose files the archiver
	// then reads to verify.
	Checksum string `json:"checksum,omitempty"`
}

// resumable tells whether the plan's export can continue from a
// checkpoint: chunked, unsorted, from a stream.
func (p *plan) resumable() bool {
	sc := p.task.GetRecords()
	if sc.GetMaxRowsPerChunk() == 0 && sc.GetMaxBytesPerChunk() == 0 || len(p.sort) > 0 {
		return false
	}
	switch p.def.SourceOf() {
	case recordquery.SourceRecords, recordquery.SourceChat:
		return true
	}
	return false
}

// fingerprint identifies what shapes a task's files.
func fingerprint(task *exportv1.ExportTask) (string, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&exportv1.ExportTask{
		Format: task.GetFormat(), TargetFile: task.GetTargetFile(), Records: task.GetRecords(),
	})
	if err != nil {
		return "", fmt.Errorf("fingerprint task: %w", err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// resumePoint returns the task's checkpoint if it can be trusted: same
// version and task, and every finished chunk is in MinIO with its size.
// Otherwise the checkpoint is deleted and resumePoint returns nil: the
// part starts over. Only failing to read the checkpoint or to stat a file
// is an error (retried).
func (e *Exporter) resumePoint(ctx context.Context, t *taskrun.Task, fp string) (*checkpoint, error) {
	var cp checkpoint
	if found, err := t.LoadCheckpoint(ctx, &cp); err != nil || !found {
		return nil, err
	}
	task, log := t.Task, t.Log
	discard := func(why string) (*checkpoint, error) {
		log.WarnContext(ctx, "checkpoint not usable; starting the part over", "reason", why)
		t.DeleteCheckpoint(ctx)
		return nil, nil
	}
	switch {
	case cp.Version != checkpointVersion:
		return discard("version " + strconv.Itoa(cp.Version))
	case cp.Task != fp:
		return discard("task changed")
	case len(cp.Files) == 0 || cp.Seq == 0 || cp.Seq > cp.LastSeq:
		return discard("no position")
	}
	for _, f := range cp.Files {
		info, err := e.store.Stat(ctx, e.bucket, f.Key)
		if errors.Is(err, blob.ErrNotFound) {
			return discard("chunk " + f.Name + " is gone")
		}
		if err != nil {
			return nil, fmt.Errorf("check checkpoint of part %d: %w", task.GetPart(), err)
		}
		if uint64(info.Size) != f.Size {
			return discard(fmt.Sprintf("chunk %s holds %d bytes, not %d", f.Name, info.Size, f.Size))
		}
	}
	log.InfoContext(ctx, fmt.Sprintf("resuming from chunk %d at message %d", len(cp.Files), cp.Seq),
		"stream_seq", cp.Seq, "chunks_done", len(cp.Files), "records_done", cp.Rows, "scanned_done", cp.Scanned)
	return &cp, nil
}

// files turns the checkpoint's chunks back into the files of the part.
func (cp *checkpoint) files(contentType string) []*exportv1.File {
	out := make([]*exportv1.File, len(cp.Files))
	for i, f := range cp.Files {
		out[i] = &exportv1.File{Name: f.Name, ObjectKey: f.Key, Size: f.Size, Records: f.Records, Sha256: f.Sha256,
			ChecksumSha256: f.Checksum, ContentType: contentType}
	}
	return out
}
