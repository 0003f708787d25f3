package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// S3 headers of the SHA-256 checksums Upload sends. The store computes the
// same checksum over the bytes it received and refuses the request when
// they differ, so a stored object's checksum is one the uploader vouched
// for, and reading it back (Stat) verifies the object without its bytes.
const (
	headerChecksumSHA256 = "X-Amz-Checksum-Sha256"
	headerChecksumAlgo   = "X-Amz-Checksum-Algorithm"
	headerChecksumType   = "X-Amz-Checksum-Type"
)

// ErrChecksumMismatch is returned (wrapped) by Upload when the checksum
// the store reports for the completed object is not the one of the bytes
// Upload sent. It does not happen with a store that verifies checksums
// (MinIO, S3); it guards against one that silently ignores them.
var ErrChecksumMismatch = errors.New("blob: stored checksum differs from the uploaded bytes'")

// Upload streams r, of unknown length, into bucket/key and returns what was
// stored, with the SHA-256 of the bytes (Info.SHA256) and the checksum the
// store verified and kept (Info.ChecksumSHA256), both computed as the bytes
// pass, so neither the caller nor a later verifier reads the object again.
// An empty contentType stores application/octet-stream.
//
// An object up to PartSize goes up in one request; a larger one as a
// multipart upload of parts PartSizeAt(PartSize, n) long, of which one is
// uploaded while the next is read. The parts wait on local disk, in two
// unlinked PartFiles (in os.TempDir()) reused for every other part, not
// on the heap: memory is a read buffer per call whatever the object size,
// and local disk holds at most two parts. An object that ends within the
// first read buffer goes up from memory without touching the disk.
//
// On any error, including a read error from r or cancellation of ctx, the
// multipart upload is aborted and no object becomes visible; an object
// previously stored under key is left as it was. The one exception is
// inherent to S3: if ctx ends after the server completed the upload but
// before its answer arrived, the object exists although Upload reports an
// error. Keys derived from job ids make a retry overwrite it.
func (s *Store) Upload(ctx context.Context, bucket, key string, r io.Reader, contentType string) (Info, error) {
	if err := checkObject(bucket, key); err != nil {
		return Info{}, err
	}
	if contentType == "" {
		contentType = defaultContentType
	}
	// Checking ctx on every read stops a long read of a slow producer as
	// soon as the job is cancelled, not only between requests.
	cr := &ctxReader{ctx: ctx, r: r}
	buf := make([]byte, uploadReadBuffer)
	n, err := io.ReadFull(cr, buf)
	var info Info
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		info, err = s.putSingle(ctx, bucket, key, bytes.NewReader(buf[:n]), int64(n), sha256.Sum256(buf[:n]), contentType)
	case err != nil:
		err = cr.readError(err)
	default:
		info, err = s.putFromFiles(ctx, bucket, key, &spool{r: cr, buf: buf, whole: sha256.New(), part: sha256.New()}, contentType)
	}
	if err != nil {
		return Info{}, fmt.Errorf("upload %s/%s: %w", bucket, key, err)
	}
	return info, nil
}

// Put stores data, an object already in memory, as Upload would: in one
// request with its SHA-256 checksum when it is at most PartSize, so that
// Stat gives its SHA-256 (Info.ObjectSHA256), without Upload's copy into
// a part file; a bigger one goes through Upload.
func (s *Store) Put(ctx context.Context, bucket, key string, data []byte, contentType string) (Info, error) {
	if len(data) > PartSize {
		return s.Upload(ctx, bucket, key, bytes.NewReader(data), contentType)
	}
	if err := checkObject(bucket, key); err != nil {
		return Info{}, err
	}
	if contentType == "" {
		contentType = defaultContentType
	}
	info, err := s.putSingle(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), sha256.Sum256(data), contentType)
	if err != nil {
		return Info{}, fmt.Errorf("put %s/%s: %w", bucket, key, err)
	}
	return info, nil
}

// uploadReadBuffer is the size of Upload's reads from its source, and the
// biggest object it uploads from memory.
const uploadReadBuffer = 64 << 10

// spool copies Upload's source into part files, hashing the bytes of the
// part and of the whole object as they pass.
type spool struct {
	r     *ctxReader
	buf   []byte // full of the source's first bytes until the first fill
	whole hash.Hash
	part  hash.Hash
	ended bool // the source returned io.EOF
}

// fill appends the source's next bytes to p until p holds want bytes or
// the source ends.
func (sp *spool) fill(p *PartFile, want int) error {
	for !sp.ended && p.Len() < want {
		chunk := sp.buf[:min(len(sp.buf), want-p.Len())]
		n, err := sp.r.Read(chunk)
		if n > 0 {
			if _, werr := p.Write(chunk[:n]); werr != nil {
				return werr
			}
			sp.part.Write(chunk[:n])
			sp.whole.Write(chunk[:n])
		}
		switch {
		case err == io.EOF:
			sp.ended = true
		case err != nil:
			return sp.r.readError(err)
		}
	}
	return nil
}

// putSingle stores size bytes of body (a seeker, so minio-go can retry)
// in one PUT carrying their SHA-256 twice: as the signed payload hash and
// as the checksum the store keeps.
func (s *Store) putSingle(ctx context.Context, bucket, key string, body io.ReadSeeker, size int64, sum [sha256.Size]byte, contentType string) (Info, error) {
	checksum := base64.StdEncoding.EncodeToString(sum[:])
	up, err := s.core.PutObject(ctx, bucket, key, body, size, "", hex.EncodeToString(sum[:]),
		minio.PutObjectOptions{
			ContentType:          contentType,
			DisableContentSha256: true, // the payload hash is given: no streaming signature pass over the bytes
			UserMetadata:         map[string]string{headerChecksumSHA256: checksum},
		})
	if err != nil {
		return Info{}, translate(err)
	}
	if up.ChecksumSHA256 != "" && up.ChecksumSHA256 != checksum {
		return Info{}, fmt.Errorf("%w: %s, sent %s", ErrChecksumMismatch, up.ChecksumSHA256, checksum)
	}
	return Info{
		Key:            key,
		Size:           size,
		ContentType:    contentType,
		ETag:           up.ETag,
		LastModified:   up.LastModified.UTC(),
		SHA256:         hex.EncodeToString(sum[:]),
		ChecksumSHA256: checksum,
	}, nil
}

// putFromFiles uploads what sp's source holds beyond its first read
// buffer: in one PUT from a part file if it ends within the first part,
// as a multipart upload otherwise.
func (s *Store) putFromFiles(ctx context.Context, bucket, key string, sp *spool, contentType string) (Info, error) {
	var files [2]*PartFile
	defer func() {
		// Runs last: putMultipart has seen every part's upload end.
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	first, err := NewPartFile(s.partDir)
	if err != nil {
		return Info{}, err
	}
	files[0] = first
	if _, err := first.Write(sp.buf); err != nil {
		return Info{}, err
	}
	sp.part.Write(sp.buf)
	sp.whole.Write(sp.buf)
	if err := sp.fill(first, PartSizeAt(PartSize, 1)); err != nil {
		return Info{}, err
	}
	if sp.ended {
		body, err := first.Contents()
		if err != nil {
			return Info{}, err
		}
		return s.putSingle(ctx, bucket, key, body, body.Size(), [sha256.Size]byte(sp.part.Sum(nil)), contentType)
	}
	return s.putMultipart(ctx, bucket, key, sp, &files, contentType)
}

// putMultipart uploads the first part file (full) and the rest of sp's
// source as parts with SHA-256 checksums, and completes the upload with
// their composite checksum, which the store checks against the parts it
// holds. One part uploads from one file while the next fills the other.
func (s *Store) putMultipart(ctx context.Context, bucket, key string, sp *spool, files *[2]*PartFile, contentType string) (info Info, err error) {
	id, err := s.core.NewMultipartUpload(ctx, bucket, key, minio.PutObjectOptions{
		ContentType:  contentType,
		UserMetadata: map[string]string{headerChecksumAlgo: "SHA256"},
	})
	if err != nil {
		return Info{}, translate(err)
	}
	// The part in flight stops with the first failure, whoever sees it.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer func() {
		if err != nil {
			cancel()
			actx, acancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer acancel()
			_ = s.core.AbortMultipartUpload(actx, bucket, key, id)
		}
	}()

	var (
		parts    []minio.CompletePart
		sums     []byte // the parts' raw SHA-256s, for the composite
		size     int64
		inFlight chan partResult
	)
	// wait collects the part in flight, if any; after it the file that
	// part was read from may be refilled.
	wait := func() error {
		if inFlight == nil {
			return nil
		}
		res := <-inFlight
		inFlight = nil
		if res.err == nil {
			parts[res.num-1].ETag = res.etag
		}
		return res.err
	}
	defer func() {
		if err != nil {
			cancel() // do not finish uploading a part that will be aborted
		}
		_ = wait()
	}()
	cur := files[0]
	for num := 1; ; num++ {
		if num > MaxParts {
			return Info{}, fmt.Errorf("%w: object larger than %d parts hold", ErrInvalidArgument, MaxParts)
		}
		sum := [sha256.Size]byte(sp.part.Sum(nil))
		sums = append(sums, sum[:]...)
		checksum := base64.StdEncoding.EncodeToString(sum[:])
		parts = append(parts, minio.CompletePart{PartNumber: num, ChecksumSHA256: checksum})
		size += int64(cur.Len())
		if err := wait(); err != nil {
			return Info{}, err
		}
		body, err := cur.Contents()
		if err != nil {
			return Info{}, err
		}
		inFlight = make(chan partResult, 1)
		go func(num int, body *io.SectionReader, sumHex, checksum string, done chan<- partResult) {
			op, err := s.core.PutObjectPart(ctx, bucket, key, id, num, body, body.Size(), minio.PutObjectPartOptions{
				Sha256Hex:            sumHex,
				DisableContentSha256: true,
				CustomHeader:         map[string][]string{headerChecksumSHA256: {checksum}},
			})
			if err != nil {
				err = fmt.Errorf("part %d: %w", num, translate(err))
			}
			done <- partResult{num: num, etag: op.ETag, err: err}
		}(num, body, hex.EncodeToString(sum[:]), checksum, inFlight)

		// The other file's part, if any, was collected by wait above.
		next := files[num%2]
		if next == nil {
			if next, err = NewPartFile(s.partDir); err != nil {
				return Info{}, err
			}
			files[num%2] = next
		}
		next.Reset()
		sp.part.Reset()
		if err := sp.fill(next, PartSizeAt(PartSize, num+1)); err != nil {
			return Info{}, err
		}
		if next.Len() == 0 {
			break
		}
		cur = next
	}
	if err := wait(); err != nil {
		return Info{}, err
	}
	composite := compositeSHA256(sums, len(parts))
	raw, _, _ := strings.Cut(composite, "-")
	ui, err := s.core.CompleteMultipartUpload(ctx, bucket, key, id, parts, minio.PutObjectOptions{
		UserMetadata: map[string]string{headerChecksumSHA256: raw, headerChecksumType: "COMPOSITE"},
	})
	if err != nil {
		return Info{}, translate(err)
	}
	if got := ui.ChecksumSHA256; got != "" && got != composite && got != raw {
		return Info{}, fmt.Errorf("%w: %s, sent %s", ErrChecksumMismatch, got, composite)
	}
	return Info{
		Key:            key,
		Size:           size,
		ContentType:    contentType,
		ETag:           ui.ETag,
		LastModified:   ui.LastModified.UTC(),
		SHA256:         hex.EncodeToString(sp.whole.Sum(nil)),
		ChecksumSHA256: composite,
	}, nil
}

// partResult is the outcome of one part's upload.
type partResult struct {
	num  int
	etag string
	err  error
}

// compositeSHA256 is S3's checksum of a multipart object: the SHA-256 of
// the parts' SHA-256s, base64, with "-<parts>".
func compositeSHA256(partSums []byte, parts int) string {
	sum := sha256.Sum256(partSums)
	return base64.StdEncoding.EncodeToString(sum[:]) + "-" + strconv.Itoa(parts)
}

// HasSHA256 reports whether the store's checksum of the object
// (ChecksumSHA256, as Stat returns it) shows that the object's bytes have
// the SHA-256 sum (lower-case hex). decided is false when the checksum
// cannot tell: there is none, or it is the composite of several parts,
// which only the uploader can tie to the whole object's SHA-256; a
// verifier then compares it with the uploader's ChecksumSHA256 or reads
// the object.
func (i Info) HasSHA256(sum string) (match, decided bool) {
	if i.ChecksumSHA256 == "" {
		return false, false
	}
	raw, err := hex.DecodeString(sum)
	if err != nil || len(raw) != sha256.Size {
		return false, true // no object has that SHA-256
	}
	switch b64, parts, composite := strings.Cut(i.ChecksumSHA256, "-"); {
	case !composite:
		return b64 == base64.StdEncoding.EncodeToString(raw), true
	case parts == "1":
		// One part: the composite is the SHA-256 of the object's SHA-256.
		return i.ChecksumSHA256 == compositeSHA256(raw, 1), true
	}
	return false, false
}

// ObjectSHA256 returns the object's SHA-256 (lower-case hex) from the
// store's checksum (ChecksumSHA256, as Stat returns it), and false when
// the checksum does not give it: there is none, or it is the composite of
// a multipart object's parts, from which the whole object's SHA-256
// cannot be worked out (a describer then reads the object).
func (i Info) ObjectSHA256() (string, bool) {
	if i.ChecksumSHA256 == "" || strings.Contains(i.ChecksumSHA256, "-") {
		return "", false
	}
	raw, err := base64.StdEncoding.DecodeString(i.ChecksumSHA256)
	if err != nil || len(raw) != sha256.Size {
		return "", false
	}
	return hex.EncodeToString(raw), true
}

// ctxReader fails reads once ctx is done and remembers r's own error.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
	err error // first non-EOF error, from ctx or r
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		c.err = err
		return 0, err
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

// readError is the error to report for a failed read: r's own (or ctx's),
// rather than whatever wrapped it.
func (c *ctxReader) readError(err error) error {
	if c.err != nil {
		return c.err
	}
	return err
}
