package blob_test

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
)

// TestCompose joins objects server-side, taking byte ranges, and refuses
// a source whose ETag changed.
func TestCompose(t *testing.T) {
	srv := blobtest.Start(t)
	ctx := t.Context()
	const bucket = "compose"
	require.NoError(t, srv.Store.EnsureBucket(ctx, bucket))
	fill := func(seed byte, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = seed + byte(i%249)
		}
		return b
	}
	parts := [][]byte{fill(1, blob.MinPartSize+7), fill(2, blob.MinPartSize+1), fill(3, 1000)}
	var infos []blob.Info
	for i, p := range parts {
		info, err := srv.Store.Upload(ctx, bucket, "piece/"+string(rune('a'+i)), bytes.NewReader(p), "")
		require.NoError(t, err)
		infos = append(infos, info)
	}
	srcs := []blob.ComposeSource{
		{Key: infos[0].Key, ETag: infos[0].ETag},
		// The first byte left out, as a joined JSON piece's comma is.
		{Key: infos[1].Key, Offset: 1, Size: int64(len(parts[1])) - 1, ETag: infos[1].ETag},
		{Key: infos[2].Key, ETag: infos[2].ETag},
	}
	info, err := srv.Store.Compose(ctx, bucket, "joined", srcs, "text/csv")
	require.NoError(t, err)
	want := append(append(append([]byte{}, parts[0]...), parts[1][1:]...), parts[2]...)
	assert.Equal(t, int64(len(want)), info.Size)
	body, stat, err := srv.Store.Open(ctx, bucket, "joined")
	require.NoError(t, err)
	got, err := io.ReadAll(body)
	require.NoError(t, body.Close())
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got), "composed bytes differ")
	assert.Equal(t, "text/csv", stat.ContentType)

	t.Run("ChangedSource", func(t *testing.T) {
		_, err := srv.Store.Upload(ctx, bucket, infos[2].Key, bytes.NewReader(fill(9, 10)), "")
		require.NoError(t, err)
		_, err = srv.Store.Compose(ctx, bucket, "joined2", srcs, "")
		require.Error(t, err)
		_, err = srv.Store.Stat(ctx, bucket, "joined2")
		assert.True(t, errors.Is(err, blob.ErrNotFound), "no object after a refused compose: %v", err)
	})
	t.Run("NoSources", func(t *testing.T) {
		_, err := srv.Store.Compose(ctx, bucket, "joined3", nil, "")
		assert.ErrorIs(t, err, blob.ErrInvalidArgument)
	})
}
