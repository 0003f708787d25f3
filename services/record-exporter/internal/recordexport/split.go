package recordexport

import (
	"fmt"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/recordquery"
	"dataport.dev/shared/taskrun"
)

// A split record export is one big record stream exported into one file
// by several parts at once: the gateway plans each part as a range of
// stream sequences (ExportTask.record_range), in stream order. Each part
// replays only its range and writes one piece of the file: the format's
// header in the first piece only, its closing bytes in the last only, and
// its rows rendered as rows after others (recordrender.Continuer) when
// the piece is not the first. The archiver joins the pieces
// (services/archiver/internal/archive/join.go) into the file one
// renderer would have written over the whole stream.
//
// Records are never republished under their id, so a range's rows depend
// on its own messages only: ranges need no knowledge of each other, a
// retried range replays the same range and writes the same bytes, and the
// joined file is the unsplit export's byte for byte.

// piece is the part of a split export's file a sink writes.
type piece struct {
	first, last bool
	// lead is set by the sink when it opens the piece
	// (recordrender.Continuer).
	lead int
}

// checkRange rejects a range task whose export cannot be split: what a
// piece holds must depend on its own rows only, so no sort (which orders
// the whole), no chunks (whose numbering runs across the stream), no gzip
// (a gzip stream is not a concatenation), a format of rows, and a
// records-stream source (the chat source's readable rooms are checked per
// message and republished). The gateway plans ranges for such exports
// only; the check keeps a hand-made task from producing a wrong file.
func checkRange(p *plan) error {
	rr := p.task.GetRecordRange()
	if rr == nil {
		return nil
	}
	sc := p.task.GetRecords()
	switch {
	case rr.GetFirstSeq() == 0 || rr.GetLastSeq() < rr.GetFirstSeq():
		return taskrun.Reject("invalid record range %d-%d", rr.GetFirstSeq(), rr.GetLastSeq())
	case len(p.sort) > 0, sc.GetMaxRowsPerChunk() > 0, sc.GetMaxBytesPerChunk() > 0, sc.GetGzipChunks():
		return taskrun.Reject("a sorted, chunked or compressed record export cannot be split into ranges")
	case !p.format.Splittable:
		return taskrun.Reject("a %s record export cannot be split into ranges", p.format.Name)
	case p.def.SourceOf() != recordquery.SourceRecords:
		return taskrun.Reject("%s exports cannot be split into ranges", p.resource)
	}
	return nil
}

// pieceOf is the piece a range task writes, nil for other tasks.
func pieceOf(task *exportv1.ExportTask) *piece {
	if task.GetRecordRange() == nil {
		return nil
	}
	return &piece{first: task.GetPart() == 0, last: task.GetPart()+1 >= max(task.GetPartsTotal(), 1)}
}

// rangeStart is where a range task's replay starts and ends.
func rangeStart(task *exportv1.ExportTask) *resumeAt {
	rr := task.GetRecordRange()
	if rr == nil {
		return nil
	}
	return &resumeAt{seq: rr.GetFirstSeq(), lastSeq: rr.GetLastSeq(), total: rr.GetLastSeq() - rr.GetFirstSeq() + 1}
}

// filePiece is the announcement of a written piece.
func filePiece(pc *piece, sc *exportv1.RecordsScope) *exportv1.FilePiece {
	if pc == nil {
		return nil
	}
	return &exportv1.FilePiece{Lead: uint32(pc.lead), MaxRows: sc.GetMaxRows(), MaxBytes: sc.GetMaxBytes()}
}

// rangeLog is the range for the "part uploaded" log line.
func rangeLog(task *exportv1.ExportTask) []any {
	rr := task.GetRecordRange()
	if rr == nil {
		return nil
	}
	return []any{"record_range", fmt.Sprintf("%d-%d", rr.GetFirstSeq(), rr.GetLastSeq())}
}
