package blob

import (
	"bytes"
	"context"

	"github.com/minio/minio-go/v7"
)

// StartUploadForTest begins a multipart upload and leaves it unfinished, as
// an uploader that died would, so tests can check AbortIncompleteUploads.
func (s *Store) StartUploadForTest(ctx context.Context, bucket, key string) (string, error) {
	return s.core.NewMultipartUpload(ctx, bucket, key, minio.PutObjectOptions{})
}

// PutWithChecksumForTest stores data in one PUT that declares checksum as
// its x-amz-checksum-sha256, right or wrong, so tests can check that the
// store refuses bytes that do not match what the uploader vouched for.
func (s *Store) PutWithChecksumForTest(ctx context.Context, bucket, key string, data []byte, checksum string) error {
	_, err := s.core.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), "", "",
		minio.PutObjectOptions{UserMetadata: map[string]string{headerChecksumSHA256: checksum}})
	return translate(err)
}

// WithPartDirForTest returns a Store like s whose Upload keeps its part
// files in dir, so tests can see where the parts wait.
func (s *Store) WithPartDirForTest(dir string) *Store {
	c := *s
	c.partDir = dir
	return &c
}
