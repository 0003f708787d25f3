package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
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
// multipart upload of PartSize parts, of which one is uploaded while the
// next is read: memory is two PartSize buffers per call while it runs,
// whatever the object size, and the buffers are reused by later calls.
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
	buf := s.buffer()
	defer s.release(buf)
	n, err := io.ReadFull(cr, *buf)
	var info Info
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		info, err = s.putSingle(ctx, bucket, key, (*buf)[:n], contentType)
	case err != nil:
		err = cr.readError(err)
	default:
		info, err = s.putMultipart(ctx, bucket, key, cr, buf, contentType)
	}
	if err != nil {
		return Info{}, fmt.Errorf("upload %s/%s: %w", bucket, key, err)
	}
	return info, nil
}

// Put stores data, an object already in memory, as Upload would: in one
// request with its SHA-256 checksum when it is at most PartSize, so that
// Stat gives its SHA-256 (Info.ObjectSHA256), without taking one of
// Upload's part buffers; a bigger one goes through Upload.
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
	info, err := s.putSingle(ctx, bucket, key, data, contentType)
	if err != nil {
		return Info{}, fmt.Errorf("put %s/%s: %w", bucket, key, err)
	}
	return info, nil
}

// putSingle stores data in one PUT carrying its SHA-256 twice: as the
// signed payload hash and as the checksum the store keeps.
func (s *Store) putSingle(ctx context.Context, bucket, key string, data []byte, contentType string) (Info, error) {
	sum := sha256.Sum256(data)
	checksum := base64.StdEncoding.EncodeToString(sum[:])
	up, err := s.core.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), "", hex.EncodeToString(sum[:]),
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
		Size:           int64(len(data)),
		ContentType:    contentType,
		ETag:           up.ETag,
		LastModified:   up.LastModified.UTC(),
		SHA256:         hex.EncodeToString(sum[:]),
		ChecksumSHA256: checksum,
	}, nil
}

// putMultipart uploads first (a full buffer already read from r) and the
// rest of r as parts with SHA-256 checksums, and completes the upload with
// their composite checksum, which the store checks against the parts it
// holds.
func (s *Store) putMultipart(ctx context.Context, bucket, key string, r *ctxReader, first *[]byte, contentType string) (info Info, err error) {
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

	second := s.buffer()
	defer s.release(second)
	bufs := [2]*[]byte{first, second}
	var (
		whole    = sha256.New()
		parts    []minio.CompletePart
		sums     []byte // the parts' raw SHA-256s, for the composite
		size     int64
		inFlight chan partResult
	)
	// wait collects the part in flight, if any; after it the buffer that
	// part used may be refilled.
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
	data := *first
	for num := 1; ; num++ {
		if num > MaxParts {
			return Info{}, fmt.Errorf("%w: object larger than %d parts of %d bytes", ErrInvalidArgument, MaxParts, PartSize)
		}
		whole.Write(data)
		sum := sha256.Sum256(data)
		sums = append(sums, sum[:]...)
		checksum := base64.StdEncoding.EncodeToString(sum[:])
		parts = append(parts, minio.CompletePart{PartNumber: num, ChecksumSHA256: checksum})
		size += int64(len(data))
		if err := wait(); err != nil {
			return Info{}, err
		}
		inFlight = make(chan partResult, 1)
		go func(num int, data []byte, sumHex, checksum string, done chan<- partResult) {
			op, err := s.core.PutObjectPart(ctx, bucket, key, id, num, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{
				Sha256Hex:            sumHex,
				DisableContentSha256: true,
				CustomHeader:         map[string][]string{headerChecksumSHA256: {checksum}},
			})
			if err != nil {
				err = fmt.Errorf("part %d: %w", num, translate(err))
			}
			done <- partResult{num: num, etag: op.ETag, err: err}
		}(num, data, hex.EncodeToString(sum[:]), checksum, inFlight)

		next := bufs[num%2]
		n, rerr := io.ReadFull(r, *next)
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			return Info{}, r.readError(rerr)
		}
		if n == 0 {
			break
		}
		data = (*next)[:n]
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
		SHA256:         hex.EncodeToString(whole.Sum(nil)),
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

// buffer returns a PartSize buffer, reused across uploads: a chunked
// export uploads many objects, and a fresh 16 MiB each time is garbage the
// collector must keep finding.
func (s *Store) buffer() *[]byte {
	if b, ok := s.parts.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, PartSize)
	return &b
}

func (s *Store) release(b *[]byte) { s.parts.Put(b) }

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
