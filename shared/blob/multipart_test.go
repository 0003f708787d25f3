package blob_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
)

// TestMultipart is the contract of the resumable multipart API: an upload
// begun by one Store is continued and completed by another (as a
// redelivered task in another process would), ListParts reports what the
// server holds, and Abort leaves nothing behind.
func TestMultipart(t *testing.T) {
	srv := blobtest.Start(t)
	ctx := t.Context()
	// One bucket per subtest: assertNoObject checks the whole bucket.
	newBucket := func(t *testing.T, name string) string {
		require.NoError(t, srv.Store.EnsureBucket(ctx, name))
		return name
	}

	// Three distinct parts: two of the minimum size and a short last one.
	payload := func(seed byte, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i%251)
		}
		return b
	}
	chunks := [][]byte{payload(1, blob.MinPartSize), payload(2, blob.MinPartSize), payload(3, 12345)}

	t.Run("ResumeFromAnotherStore", func(t *testing.T) {
		bucket := newBucket(t, "multipart-resume")
		key := "jobs/j1/parts/0/doc.json"
		first := srv.Store
		up, err := first.Begin(ctx, bucket, key, "application/json")
		require.NoError(t, err)
		p1, err := first.PutPart(ctx, up, 1, bytes.NewReader(chunks[0]), int64(len(chunks[0])))
		require.NoError(t, err)
		assert.Equal(t, blob.Part{Number: 1, ETag: p1.ETag, Size: int64(len(chunks[0]))}, p1)
		assert.NotEmpty(t, p1.ETag)

		// The checkpoint travels as JSON; a second client continues.
		saved, err := json.Marshal(struct {
			Up    blob.MultipartUpload
			Parts []blob.Part
		}{up, []blob.Part{p1}})
		require.NoError(t, err)
		var cp struct {
			Up    blob.MultipartUpload
			Parts []blob.Part
		}
		require.NoError(t, json.Unmarshal(saved, &cp))

		second, err := blob.New(srv.Config)
		require.NoError(t, err)
		listed, err := second.ListParts(ctx, cp.Up)
		require.NoError(t, err)
		assert.Equal(t, cp.Parts, listed, "the server holds what the checkpoint says")
		_, err = second.Stat(ctx, bucket, key)
		require.ErrorIs(t, err, blob.ErrNotFound, "nothing is visible before Complete")

		parts := cp.Parts
		for i, c := range chunks[1:] {
			p, err := second.PutPart(ctx, cp.Up, i+2, bytes.NewReader(c), int64(len(c)))
			require.NoError(t, err)
			parts = append(parts, p)
		}
		// Repeating a part (a resume from an older checkpoint) replaces it.
		p3, err := second.PutPart(ctx, cp.Up, 3, bytes.NewReader(chunks[2]), int64(len(chunks[2])))
		require.NoError(t, err)
		assert.Equal(t, parts[2], p3)

		info, err := second.Complete(ctx, cp.Up, parts)
		require.NoError(t, err)
		want := bytes.Join(chunks, nil)
		assert.Equal(t, int64(len(want)), info.Size)
		r, stat, err := first.Open(ctx, bucket, key)
		require.NoError(t, err)
		defer r.Close()
		assert.Equal(t, sha256.Sum256(want), digest(t, r))
		assert.Equal(t, "application/json", stat.ContentType)

		_, err = second.ListParts(ctx, cp.Up)
		require.ErrorIs(t, err, blob.ErrUploadGone, "a completed upload is gone")
		_, err = second.PutPart(ctx, cp.Up, 4, bytes.NewReader([]byte("x")), 1)
		require.ErrorIs(t, err, blob.ErrUploadGone)
		ups, err := first.ListIncompleteUploads(ctx, bucket, "jobs/j1/")
		require.NoError(t, err)
		assert.Empty(t, ups)
	})

	t.Run("AbortLeavesNothing", func(t *testing.T) {
		bucket := newBucket(t, "multipart-abort")
		key := "jobs/j2/parts/0/doc.json"
		up, err := srv.Store.Begin(ctx, bucket, key, "")
		require.NoError(t, err)
		_, err = srv.Store.PutPart(ctx, up, 1, bytes.NewReader(chunks[0]), int64(len(chunks[0])))
		require.NoError(t, err)
		ups, err := srv.Store.ListIncompleteUploads(ctx, bucket, "jobs/j2/")
		require.NoError(t, err)
		require.Len(t, ups, 1)
		assert.Equal(t, up.UploadID, ups[0].UploadID)

		require.NoError(t, srv.Store.Abort(ctx, up))
		require.NoError(t, srv.Store.Abort(ctx, up), "aborting twice is fine")
		ups, err = srv.Store.ListIncompleteUploads(ctx, bucket, "jobs/j2/")
		require.NoError(t, err)
		assert.Empty(t, ups)
		_, err = srv.Store.ListParts(ctx, up)
		require.ErrorIs(t, err, blob.ErrUploadGone)
		_, err = srv.Store.Complete(ctx, up, []blob.Part{{Number: 1, ETag: "x", Size: 1}})
		require.ErrorIs(t, err, blob.ErrUploadGone)
		assertNoObject(t, srv.Store, bucket, key)
	})

	t.Run("SmallPartBeforeLastIsRefused", func(t *testing.T) {
		bucket := newBucket(t, "multipart-small")
		key := "jobs/j3/parts/0/doc.json"
		up, err := srv.Store.Begin(ctx, bucket, key, "")
		require.NoError(t, err)
		t.Cleanup(func() { _ = srv.Store.Abort(ctx, up) })
		var parts []blob.Part
		for i, c := range [][]byte{[]byte("tiny"), chunks[2]} {
			p, err := srv.Store.PutPart(ctx, up, i+1, bytes.NewReader(c), int64(len(c)))
			require.NoError(t, err)
			parts = append(parts, p)
		}
		_, err = srv.Store.Complete(ctx, up, parts)
		require.Error(t, err, "S3 requires MinPartSize for every part but the last")
		_, err = srv.Store.Stat(ctx, bucket, key)
		require.ErrorIs(t, err, blob.ErrNotFound)
	})

	t.Run("InvalidArguments", func(t *testing.T) {
		const bucket = "multipart-invalid"
		up := blob.MultipartUpload{Bucket: bucket, Key: "k"}
		_, err := srv.Store.ListParts(ctx, up)
		require.ErrorIs(t, err, blob.ErrInvalidArgument, "empty upload id")
		up.UploadID = "x"
		_, err = srv.Store.PutPart(ctx, up, 0, bytes.NewReader(nil), 0)
		require.ErrorIs(t, err, blob.ErrInvalidArgument, "part numbers start at 1")
		_, err = srv.Store.Complete(ctx, up, nil)
		require.ErrorIs(t, err, blob.ErrInvalidArgument)
	})
}
