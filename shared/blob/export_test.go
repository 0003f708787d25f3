package blob

import (
	"context"

	"github.com/minio/minio-go/v7"
)

// StartUploadForTest begins a multipart upload and leaves it unfinished, as
// an uploader that died would, so tests can check AbortIncompleteUploads.
func (s *Store) StartUploadForTest(ctx context.Context, bucket, key string) (string, error) {
	return s.core.NewMultipartUpload(ctx, bucket, key, minio.PutObjectOptions{})
}
