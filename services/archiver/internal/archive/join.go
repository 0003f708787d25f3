package archive

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/objects"
)

// A split record export (recordexport's split.go), or a split room export
// (roomexport's split.go, through RoomArchive), arrives as parts that
// each carry one piece of one file (PartUploaded.piece): the first with
// the format's header, the last with its closing bytes. Joiner joins them
// into that file under the job's files prefix:
//
//   - server-side with S3 compose (blob.Compose) when every piece but the
//     last holds at least blob.MinPartSize bytes, the S3 rule for parts;
//     no byte of the file passes through the archiver on the way in, but
//     the store keeps no whole-file SHA-256 of a composed object, so the
//     joiner reads the file once to compute the one the manifest carries;
//   - otherwise by streaming the pieces in order through blob.Upload,
//     which computes the SHA-256 on the way (pieces under 5 MiB make a
//     small file, whose one pass costs little).
//
// Either way the pieces are verified by the checksums the store kept for
// them (verifyObject, without reading them) and the file's SHA-256 is
// computed from the joined bytes themselves. A join repeated (a
// redelivered last part) finds the file with its expected size and reads
// it for its SHA-256 again, so it ends well whether or not the pieces are
// still there. They and everything else the ranges left under the job's
// parts prefix go once the job's completion is stored (Clean), not before:
// until then a crash or a repeated range may still need them.

// Composer joins objects server-side; *blob.Store implements it. Compose
// makes the object visible only once complete. A Joiner composes when its
// Objects implement Composer, and deletes pieces and split state when they
// implement Deleter.
type Composer interface {
	Compose(ctx context.Context, bucket, key string, srcs []blob.ComposeSource, contentType string) (blob.Info, error)
}

// Deleter lists and deletes objects; *blob.Store implements it. List
// returns the objects under prefix; deleting a missing key succeeds.
type Deleter interface {
	List(ctx context.Context, bucket, prefix string) ([]blob.Info, error)
	Delete(ctx context.Context, bucket, key string) error
}

// Cleaner is a Packager whose packaging leaves objects that the delivered
// files no longer need. The Archiver calls Clean once the job's
// ExportCompleted is stored, and again whenever it handles one of the
// job's part events after that (a redelivered last part, a range that ran
// twice reporting again), so Clean must be idempotent. It is best effort:
// what it cannot delete is left to the retention sweep, which deletes
// everything under the job's prefix.
type Cleaner interface {
	Clean(ctx context.Context, job Job, parts []*exportv1.PartUploaded)
}

// Rejection reasons of a split record export over its caps, in the words
// the record exporter uses for an unsplit one (recordexport.ReasonTooManyRows
// and ReasonTooMuchData): a range can check a cap only for its own rows.
const (
	ReasonTooManyRows = "Too many lines in one export"
	ReasonTooMuchData = "Too much export data"
)

// Joiner packages jobs whose parts are pieces of one file, and hands
// every other job to Then.
type Joiner struct {
	Objects Objects
	// Bucket is the exports bucket.
	Bucket string
	// Then packages jobs without pieces.
	Then Packager
	// Logger defaults to discarding.
	Logger *slog.Logger
	// ClosingLead makes the last piece leave out its lead, too, when no
	// piece held a row, even if it holds none itself: a split room
	// document's closing bytes differ by whether any message came before
	// them (JSON's "\n]}\n" after messages, "]}\n" after none).
	ClosingLead bool
}

// rejectedError is a join refused for good because the export is over
// its caps: the job ends rejected, as the exporter's own refusal would.
type rejectedError struct{ sentence string }

func (e *rejectedError) Error() string  { return e.sentence }
func (e *rejectedError) Reason() string { return e.sentence }

// Rejected marks the job rejected rather than failed (ExportFailed.rejected).
func (e *rejectedError) Rejected() bool { return true }

// isRejected reports whether the finaliser's cause is a rejection.
func isRejected(err error) bool {
	var r interface{ Rejected() bool }
	return errors.As(err, &r) && r.Rejected()
}

// segment is the bytes one piece adds to the file.
type segment struct {
	piece        *exportv1.File
	offset, size int64
}

// Package joins the job's pieces into one file, or hands a job without
// pieces to Then.
func (j *Joiner) Package(ctx context.Context, job Job, parts []*exportv1.PartUploaded) ([]*exportv1.File, error) {
	if !isSplit(parts) {
		return j.Then.Package(ctx, job, parts)
	}
	log := j.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	segs, f, err := layout(parts, j.ClosingLead)
	if err != nil {
		return nil, err
	}
	f.ObjectKey = objects.FileKey(job.ID, f.GetName())
	limits := parts[0].GetPiece()
	switch {
	case limits.GetMaxRows() > 0 && f.GetRecords() > limits.GetMaxRows():
		j.deletePieces(ctx, log, parts)
		return nil, bus.Permanent(&rejectedError{ReasonTooManyRows})
	case limits.GetMaxBytes() > 0 && f.GetSize() > limits.GetMaxBytes():
		j.deletePieces(ctx, log, parts)
		return nil, bus.Permanent(&rejectedError{ReasonTooMuchData})
	}
	start := time.Now()
	if done, err := j.joinedBefore(ctx, f); done || err != nil {
		return []*exportv1.File{f}, err
	}
	for _, p := range parts {
		pf := p.GetFile()
		problem, err := verifyObject(ctx, j.Objects, j.Bucket, pf)
		if err != nil {
			return nil, fmt.Errorf("verify piece %d (%s): %w", p.GetPart(), pf.GetName(), err)
		}
		if problem != "" {
			return nil, verifyFailed(p, pf, problem)
		}
	}
	verified := time.Now()
	method, hashed := "stream", time.Time{}
	composer, ok := j.Objects.(Composer)
	if ok && composable(segs) {
		method = "compose"
		err = j.compose(ctx, composer, segs, f, &hashed)
	} else {
		err = j.stream(ctx, segs, f)
	}
	if err != nil {
		return nil, err
	}
	// The phases say what a join costs: verifying by checksums, writing
	// the file (compose or stream), and for a composed file the read that
	// hashes it (docs/BENCHMARKS.md).
	done := time.Now()
	hashMs := int64(0)
	if !hashed.IsZero() {
		hashMs = done.Sub(hashed).Milliseconds()
	} else {
		hashed = done
	}
	log.InfoContext(ctx, "pieces joined", "job_id", job.ID, "method", method, "pieces", len(parts),
		"size", f.GetSize(), "records", f.GetRecords(), "join_ms", done.Sub(start).Milliseconds(),
		"verify_ms", verified.Sub(start).Milliseconds(), "write_ms", hashed.Sub(verified).Milliseconds(), "hash_ms", hashMs)
	return []*exportv1.File{f}, nil
}

// isSplit reports whether the parts are pieces of one file.
func isSplit(parts []*exportv1.PartUploaded) bool {
	for _, p := range parts {
		if p.GetPiece() != nil {
			return true
		}
	}
	return false
}

// layout checks that every part is one piece and returns the segments of
// the file in part order and the file's record (without key and
// SHA-256). A piece other than the first leaves out its lead when no
// earlier piece held a row: its first row is then the file's first.
func layout(parts []*exportv1.PartUploaded, closingLead bool) ([]segment, *exportv1.File, error) {
	first := parts[0].GetFile()
	f := &exportv1.File{Name: first.GetName(), ContentType: first.GetContentType()}
	var segs []segment
	rows := false
	for i, p := range parts {
		pf := p.GetFile()
		if p.GetPiece() == nil || pf == nil || len(p.GetFiles()) > 0 {
			return nil, nil, bus.Permanent(bus.Worded(fmt.Sprintf("part %d is not a piece of the export's file", p.GetPart()),
				fmt.Errorf("job %s: parts mix pieces and files", p.GetJobId())))
		}
		var skip uint64
		if i > 0 && !rows && (pf.GetRecords() > 0 || closingLead && i == len(parts)-1) {
			skip = uint64(p.GetPiece().GetLead())
		}
		if skip > pf.GetSize() {
			return nil, nil, verifyFailed(p, pf, fmt.Sprintf("piece of %d bytes cannot leave out %d", pf.GetSize(), skip))
		}
		rows = rows || pf.GetRecords() > 0
		if n := pf.GetSize() - skip; n > 0 {
			segs = append(segs, segment{piece: pf, offset: int64(skip), size: int64(n)})
		}
		f.Size += pf.GetSize() - skip
		f.Records += pf.GetRecords()
	}
	return segs, f, nil
}

// composable tells whether S3 compose takes the segments: all but the
// last at least a part's minimum size, and not too many.
func composable(segs []segment) bool {
	if len(segs) == 0 || len(segs) > blob.MaxParts {
		return false
	}
	for _, s := range segs[:len(segs)-1] {
		if s.size < blob.MinPartSize {
			return false
		}
	}
	return true
}

// joinedBefore finishes f from a file an earlier join left: compose and
// upload make an object visible only complete, and only the joiner writes
// the job's files, so an object of f's size is the join of these pieces.
func (j *Joiner) joinedBefore(ctx context.Context, f *exportv1.File) (bool, error) {
	info, err := j.Objects.Stat(ctx, j.Bucket, f.GetObjectKey())
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look for joined %s: %w", f.GetName(), err)
	case info.Size < 0 || uint64(info.Size) != f.GetSize():
		return false, nil
	}
	f.ChecksumSha256 = info.ChecksumSHA256
	return true, j.hash(ctx, f)
}

// compose joins the segments server-side and reads the file for its
// SHA-256, setting composed when the compose returned.
func (j *Joiner) compose(ctx context.Context, c Composer, segs []segment, f *exportv1.File, composed *time.Time) error {
	srcs := make([]blob.ComposeSource, len(segs))
	for i, s := range segs {
		info, err := j.Objects.Stat(ctx, j.Bucket, s.piece.GetObjectKey())
		if err != nil {
			return fmt.Errorf("stat piece %s: %w", s.piece.GetObjectKey(), err)
		}
		// The ETag ties the compose to the verified object.
		srcs[i] = blob.ComposeSource{Key: s.piece.GetObjectKey(), Offset: s.offset, Size: s.size, ETag: info.ETag}
	}
	info, err := c.Compose(ctx, j.Bucket, f.GetObjectKey(), srcs, f.GetContentType())
	if err != nil {
		return fmt.Errorf("compose %s: %w", f.GetName(), err)
	}
	if info.Size != int64(f.GetSize()) {
		return fmt.Errorf("compose %s: stored %d bytes, %d expected", f.GetName(), info.Size, f.GetSize())
	}
	*composed = time.Now()
	return j.hash(ctx, f)
}

// hash reads the joined file once for its SHA-256.
func (j *Joiner) hash(ctx context.Context, f *exportv1.File) error {
	body, _, err := j.Objects.Open(ctx, j.Bucket, f.GetObjectKey())
	if err != nil {
		return fmt.Errorf("read joined %s: %w", f.GetName(), err)
	}
	defer body.Close()
	h := sha256.New()
	n, err := io.Copy(h, body)
	if err != nil {
		return fmt.Errorf("read joined %s: %w", f.GetName(), err)
	}
	if n != int64(f.GetSize()) {
		return fmt.Errorf("joined %s holds %d bytes, %d expected", f.GetName(), n, f.GetSize())
	}
	f.Sha256 = hex.EncodeToString(h.Sum(nil))
	return nil
}

// stream uploads the segments one after the other; Upload computes the
// SHA-256 and has the store check its checksum.
func (j *Joiner) stream(ctx context.Context, segs []segment, f *exportv1.File) error {
	r := &segmentReader{ctx: ctx, objects: j.Objects, bucket: j.Bucket, segs: segs}
	defer r.close()
	info, err := j.Objects.Upload(ctx, j.Bucket, f.GetObjectKey(), r, f.GetContentType())
	if err != nil {
		return fmt.Errorf("join %s: %w", f.GetName(), err)
	}
	if info.Size != int64(f.GetSize()) {
		return fmt.Errorf("join %s: stored %d bytes, %d expected", f.GetName(), info.Size, f.GetSize())
	}
	f.Sha256, f.ChecksumSha256 = info.SHA256, info.ChecksumSHA256
	return nil
}

// segmentReader reads the segments in order, opening one piece at a time.
type segmentReader struct {
	ctx     context.Context
	objects Objects
	bucket  string
	segs    []segment
	cur     io.ReadCloser
	left    io.Reader
}

func (r *segmentReader) Read(p []byte) (int, error) {
	for {
		if r.left == nil {
			if len(r.segs) == 0 {
				return 0, io.EOF
			}
			s := r.segs[0]
			r.segs = r.segs[1:]
			body, _, err := r.objects.Open(r.ctx, r.bucket, s.piece.GetObjectKey())
			if err != nil {
				return 0, fmt.Errorf("open piece %s: %w", s.piece.GetObjectKey(), err)
			}
			r.cur = body
			if _, err := io.CopyN(io.Discard, body, s.offset); err != nil {
				return 0, fmt.Errorf("read piece %s: %w", s.piece.GetObjectKey(), err)
			}
			r.left = io.LimitReader(body, s.size)
		}
		n, err := r.left.Read(p)
		if err == io.EOF {
			r.close()
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (r *segmentReader) close() {
	if r.cur != nil {
		_ = r.cur.Close()
	}
	r.cur, r.left = nil, nil
}

// deletePieces removes the pieces of an export that will never be
// delivered (over its caps). A failure only leaves them to the retention
// sweep, which deletes everything under the job's prefix.
func (j *Joiner) deletePieces(ctx context.Context, log *slog.Logger, parts []*exportv1.PartUploaded) {
	d, ok := j.Objects.(Deleter)
	if !ok {
		return
	}
	for _, p := range parts {
		key := p.GetFile().GetObjectKey()
		if key == "" {
			continue
		}
		if err := d.Delete(ctx, j.Bucket, key); err != nil {
			log.WarnContext(ctx, "piece not deleted", "job_id", p.GetJobId(), "part", p.GetPart(), "error", err)
		}
	}
}

// Clean deletes what the parts of a joined split export left under the
// job's parts prefix: the pieces (those announced, and an index stage's
// or a repeated range's that were not) and a split room export's state
// (id tables, reports, cross lists, root and miss lists). The joined
// file, the archive and the manifest are under the files prefix and
// stay; so does a part's attachment list (objects.AttachmentListKey),
// which describes what the archive holds. Jobs whose parts are not pieces
// deliver their parts' objects themselves and lose nothing.
//
// It runs only once the completion is stored: a join repeated before
// that (the archiver crashed after writing the file) still finds what it
// verifies, and a range still running by then finds its job completed
// and ends without needing anything here (taskrun).
func (j *Joiner) Clean(ctx context.Context, job Job, parts []*exportv1.PartUploaded) {
	d, ok := j.Objects.(Deleter)
	if !ok || !isSplit(parts) {
		return
	}
	log := j.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx = context.WithoutCancel(ctx)
	prefix := objects.PartsPrefix(job.ID)
	infos, err := d.List(ctx, j.Bucket, prefix)
	if err != nil {
		log.WarnContext(ctx, "split export's leftovers not listed; left to retention", "job_id", job.ID, "prefix", prefix, "error", err)
		return
	}
	keep := make(map[string]bool, len(parts))
	for i := range parts {
		keep[objects.AttachmentListKey(job.ID, uint32(i))] = true
	}
	deleted, failed := 0, 0
	for _, info := range infos {
		if keep[info.Key] {
			continue
		}
		if err := d.Delete(ctx, j.Bucket, info.Key); err != nil {
			failed++
			log.WarnContext(ctx, "split export's leftover not deleted; left to retention", "job_id", job.ID, "object_key", info.Key, "error", err)
			continue
		}
		deleted++
	}
	if deleted > 0 || failed > 0 {
		log.InfoContext(ctx, "deleted split export's leftovers", "job_id", job.ID, "objects", deleted, "failed", failed)
	}
}
