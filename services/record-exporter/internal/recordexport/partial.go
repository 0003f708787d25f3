package recordexport

import (
	"context"
	"errors"
	"fmt"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/taskrun"
)

// Finished implements taskrun.Keeper: the chunk files a chunked export
// stored before its job was canceled or it failed (over its byte cap, say)
// are the job's partial results. They are the files of the part's
// checkpoint, which the run saves at its last finished chunk when it ends
// unfinished, checked against the store as a resume checks them: a chunk
// that is gone or of another size is left out. Unchunked and
// non-resumable exports (sorted, or of key-value sources) have no
// checkpoint and keep nothing.
func (e *Exporter) Finished(ctx context.Context, t *taskrun.Task) ([]*exportv1.File, error) {
	task := t.Task
	var cp checkpoint
	if found, err := t.LoadCheckpoint(ctx, &cp); err != nil || !found {
		return nil, err
	}
	fp, err := fingerprint(task)
	if err != nil {
		return nil, err
	}
	if cp.Version != checkpointVersion || cp.Task != fp {
		return nil, nil
	}
	format, err := check(task)
	if err != nil {
		return nil, nil
	}
	ct := (&sink{format: format, gzip: task.GetRecords().GetGzipChunks()}).contentType()
	var kept []*exportv1.File
	for _, f := range cp.files(ct) {
		info, err := e.store.Stat(ctx, e.bucket, f.GetObjectKey())
		switch {
		case errors.Is(err, blob.ErrNotFound):
			continue
		case err != nil:
			return nil, fmt.Errorf("check finished chunk %s: %w", f.GetName(), err)
		case uint64(info.Size) != f.GetSize():
			continue
		}
		kept = append(kept, f)
	}
	return kept, nil
}
