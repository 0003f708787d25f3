package blob

import (
	"context"
	"fmt"

	"github.com/minio/minio-go/v7"
)

// ComposeSource is a byte range of an object in the bucket of the
// composed object.
type ComposeSource struct {
	Key string
	// Offset is the first byte taken; Size how many (0: through the end).
	Offset, Size int64
	// ETag, when set, makes Compose fail unless the object still has it,
	// so an object rewritten meanwhile is not joined half old, half new.
	ETag string
}

// Compose writes bucket/key as the concatenation of srcs, server-side
// (S3 multipart upload with UploadPartCopy): no byte passes through this
// process. Every source but the last must hold at least MinPartSize
// bytes, the rule of S3 parts; at most MaxParts sources. The object is
// visible only once complete, like Upload's.
//
// The store keeps no whole-object checksum of the result (Info.SHA256 and
// ChecksumSHA256 are empty), so a caller that needs its SHA-256 reads it
// once.
func (s *Store) Compose(ctx context.Context, bucket, key string, srcs []ComposeSource, contentType string) (Info, error) {
	if err := checkObject(bucket, key); err != nil {
		return Info{}, err
	}
	switch {
	case len(srcs) == 0:
		return Info{}, fmt.Errorf("compose %s/%s: %w: no sources", bucket, key, ErrInvalidArgument)
	case len(srcs) > MaxParts:
		return Info{}, fmt.Errorf("compose %s/%s: %w: %d sources, at most %d", bucket, key, ErrInvalidArgument, len(srcs), MaxParts)
	}
	if contentType == "" {
		contentType = defaultContentType
	}
	opts := make([]minio.CopySrcOptions, len(srcs))
	for i, src := range srcs {
		if err := checkObject(bucket, src.Key); err != nil {
			return Info{}, err
		}
		o := minio.CopySrcOptions{Bucket: bucket, Object: src.Key, MatchETag: src.ETag}
		if src.Offset > 0 || src.Size > 0 {
			if src.Size <= 0 {
				return Info{}, fmt.Errorf("compose %s/%s: %w: source %s has an offset but no size", bucket, key, ErrInvalidArgument, src.Key)
			}
			o.MatchRange, o.Start, o.End = true, src.Offset, src.Offset+src.Size-1
		}
		opts[i] = o
	}
	ui, err := s.client.ComposeObject(ctx, minio.CopyDestOptions{
		Bucket: bucket, Object: key,
		// ComposeObject sends only UserMetadata with the upload it starts
		// (not ContentType), and standard headers in it go as headers.
		// Replacing also keeps a single source's metadata from being
		// copied.
		UserMetadata: map[string]string{"Content-Type": contentType}, ReplaceMetadata: true,
	}, opts...)
	if err != nil {
		return Info{}, fmt.Errorf("compose %s/%s: %w", bucket, key, translate(err))
	}
	return Info{Key: key, Size: ui.Size, ContentType: contentType, ETag: ui.ETag, LastModified: ui.LastModified}, nil
}
