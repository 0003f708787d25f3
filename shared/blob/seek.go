package blob

import (
	"context"
	"fmt"
	"io"

	"github.com/minio/minio-go/v7"
)

// OpenSeeker opens bucket/key for reading at any offset, as http.ServeContent
// needs to answer Range requests: each Seek followed by a Read issues a GET
// from that offset, so a resumed download fetches only what it still
// lacks. The object is stated up front, so a missing object or bucket is
// reported here, as ErrNotFound. Reads after an overwrite of the object
// fail instead of mixing two versions (minio-go sends If-Match with the
// ETag it stated). The caller must Close the reader; reading stops when ctx
// ends.
func (s *Store) OpenSeeker(ctx context.Context, bucket, key string) (io.ReadSeekCloser, Info, error) {
	if err := checkObject(bucket, key); err != nil {
		return nil, Info{}, err
	}
	obj, err := s.client.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, Info{}, fmt.Errorf("open %s/%s: %w", bucket, key, translate(err))
	}
	oi, err := obj.Stat()
	if err != nil {
		_ = obj.Close()
		return nil, Info{}, fmt.Errorf("open %s/%s: %w", bucket, key, translate(err))
	}
	return translatedObject{obj}, infoOf(oi), nil
}

// translatedObject translates the errors of reads and seeks, which may be
// the first requests that reach the server.
type translatedObject struct{ *minio.Object }

func (o translatedObject) Read(p []byte) (int, error) {
	n, err := o.Object.Read(p)
	if err != nil && err != io.EOF {
		err = translate(err)
	}
	return n, err
}

func (o translatedObject) Seek(offset int64, whence int) (int64, error) {
	n, err := o.Object.Seek(offset, whence)
	if err != nil {
		err = translate(err)
	}
	return n, err
}
