package blob_test

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
)

// A stopped server is unavailable, on every kind of request; a missing
// object on a running one is not.
func TestUnavailableServer(t *testing.T) {
	srv := blobtest.Start(t)
	const bucket = "outage"
	require.NoError(t, srv.Store.EnsureBucket(t.Context(), bucket))
	_, err := srv.Store.Upload(t.Context(), bucket, "a.txt", strings.NewReader("hello"), "")
	require.NoError(t, err)
	_, err = srv.Store.Stat(t.Context(), bucket, "missing.txt")
	require.ErrorIs(t, err, blob.ErrNotFound)
	assert.NotErrorIs(t, err, blob.ErrUnavailable, "a missing object is an answer")

	srv.Stop()
	_, err = srv.Store.Stat(t.Context(), bucket, "a.txt")
	assert.ErrorIs(t, err, blob.ErrUnavailable, "stat")
	_, err = srv.Store.List(t.Context(), bucket, "")
	assert.ErrorIs(t, err, blob.ErrUnavailable, "list")
	_, err = srv.Store.Upload(t.Context(), bucket, "b.txt", bytes.NewReader([]byte("x")), "")
	assert.ErrorIs(t, err, blob.ErrUnavailable, "upload")

	srv.Restart(t)
	body, _, err := srv.Store.Open(t.Context(), bucket, "a.txt")
	require.NoError(t, err)
	defer body.Close()
	b, err := io.ReadAll(body)
	require.NoError(t, err)
	assert.Equal(t, "hello", string(b))
}
