package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/minio/minio-go/v7"
)

// MinPartSize is the smallest part S3 accepts for any part but the last
// of a multipart upload; Complete fails (EntityTooSmall) otherwise.
const MinPartSize = 5 << 20

// MaxParts is the most parts one multipart upload may have.
const MaxParts = 10_000

// ErrUploadGone is returned (wrapped) when a multipart upload no longer
// exists: it was completed or aborted, by us, another replica or a sweeper.
// A resumable writer then starts over with a new upload.
var ErrUploadGone = errors.New("blob: multipart upload not found")

// MultipartUpload names an unfinished multipart upload. The three strings
// are all a process needs to continue it, so they can be saved in a
// checkpoint and used by another Store, in another process.
type MultipartUpload struct {
	Bucket   string `json:"bucket"`
	Key      string `json:"key"`
	UploadID string `json:"upload_id"`
}

// Part is one uploaded part of a multipart upload.
type Part struct {
	// Number is 1 to MaxParts; parts are assembled in number order.
	Number int `json:"number"`
	// ETag is unquoted, as the server reported it for the part.
	ETag string `json:"etag"`
	Size int64  `json:"size"`
}

// Begin starts a multipart upload of bucket/key. Nothing is visible under
// key until Complete; an upload that is never completed stays invisible
// until Abort (or a sweeper, see AbortIncompleteUploads). An empty
// contentType stores application/octet-stream.
func (s *Store) Begin(ctx context.Context, bucket, key, contentType string) (MultipartUpload, error) {
	if err := checkObject(bucket, key); err != nil {
		return MultipartUpload{}, err
	}
	if contentType == "" {
		contentType = defaultContentType
	}
	id, err := s.core.NewMultipartUpload(ctx, bucket, key, minio.PutObjectOptions{ContentType: contentType})
	if err != nil {
		return MultipartUpload{}, fmt.Errorf("begin upload %s/%s: %w", bucket, key, translate(err))
	}
	return MultipartUpload{Bucket: bucket, Key: key, UploadID: id}, nil
}

// PutPart uploads part n (1 to MaxParts) of up: exactly size bytes read
// from r. Every part but the last must be at least MinPartSize; the server
// only checks that on Complete. Uploading a part number again replaces the
// part, so a resumed writer may repeat the parts after its checkpoint. r
// should be an io.Seeker (a bytes.Reader) so a failed request can be
// retried without copying the part.
func (s *Store) PutPart(ctx context.Context, up MultipartUpload, n int, r io.Reader, size int64) (Part, error) {
	if err := checkUpload(up); err != nil {
		return Part{}, err
	}
	if n < 1 || n > MaxParts {
		return Part{}, fmt.Errorf("put part %d of %s/%s: %w: part number not within [1, %d]", n, up.Bucket, up.Key, ErrInvalidArgument, MaxParts)
	}
	op, err := s.core.PutObjectPart(ctx, up.Bucket, up.Key, up.UploadID, n, r, size, minio.PutObjectPartOptions{})
	if err != nil {
		return Part{}, fmt.Errorf("put part %d of %s/%s: %w", n, up.Bucket, up.Key, translateUpload(err))
	}
	return Part{Number: op.PartNumber, ETag: strings.Trim(op.ETag, `"`), Size: op.Size}, nil
}

// ListParts returns the parts the server holds for up, in number order. A
// resumed writer compares them with its checkpoint before trusting it. An
// upload that was completed or aborted is ErrUploadGone.
func (s *Store) ListParts(ctx context.Context, up MultipartUpload) ([]Part, error) {
	if err := checkUpload(up); err != nil {
		return nil, err
	}
	var out []Part
	marker := 0
	for {
		res, err := s.core.ListObjectParts(ctx, up.Bucket, up.Key, up.UploadID, marker, 1000)
		if err != nil {
			return nil, fmt.Errorf("list parts of %s/%s: %w", up.Bucket, up.Key, translateUpload(err))
		}
		for _, p := range res.ObjectParts {
			out = append(out, Part{Number: p.PartNumber, ETag: strings.Trim(p.ETag, `"`), Size: p.Size})
		}
		if !res.IsTruncated || res.NextPartNumberMarker <= marker {
			return out, nil
		}
		marker = res.NextPartNumberMarker
	}
}

// Complete assembles parts, in the order given (ascending numbers), into
// the object up.Key; parts the server holds beyond those listed are
// discarded. It returns what was stored; Size is the sum of the parts.
// Completing an upload that is gone is ErrUploadGone.
func (s *Store) Complete(ctx context.Context, up MultipartUpload, parts []Part) (Info, error) {
	if err := checkUpload(up); err != nil {
		return Info{}, err
	}
	if len(parts) == 0 {
		return Info{}, fmt.Errorf("complete %s/%s: %w: no parts", up.Bucket, up.Key, ErrInvalidArgument)
	}
	cps := make([]minio.CompletePart, len(parts))
	var size int64
	for i, p := range parts {
		cps[i] = minio.CompletePart{PartNumber: p.Number, ETag: p.ETag}
		size += p.Size
	}
	ui, err := s.core.CompleteMultipartUpload(ctx, up.Bucket, up.Key, up.UploadID, cps, minio.PutObjectOptions{})
	if err != nil {
		return Info{}, fmt.Errorf("complete %s/%s: %w", up.Bucket, up.Key, translateUpload(err))
	}
	return Info{Key: up.Key, Size: size, ETag: ui.ETag, LastModified: ui.LastModified.UTC()}, nil
}

// Abort discards up and its parts. Aborting an upload that is already gone
// is not an error, so cleanups may race and repeat.
func (s *Store) Abort(ctx context.Context, up MultipartUpload) error {
	if err := checkUpload(up); err != nil {
		return err
	}
	return s.AbortUpload(ctx, up.Bucket, up.Key, up.UploadID)
}

func checkUpload(up MultipartUpload) error {
	if err := checkObject(up.Bucket, up.Key); err != nil {
		return err
	}
	if up.UploadID == "" {
		return fmt.Errorf("%w: empty upload id for %s/%s", ErrInvalidArgument, up.Bucket, up.Key)
	}
	return nil
}

// translateUpload is translate plus NoSuchUpload, which must not read as a
// missing object: the object may well exist (a completed upload).
func translateUpload(err error) error {
	if errorCode(err) == minio.NoSuchUpload {
		return fmt.Errorf("%w (%s)", ErrUploadGone, minio.NoSuchUpload)
	}
	return translate(err)
}
