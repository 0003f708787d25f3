package blob_test

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
)

// TestPartSizeAtFitsTheBiggestObject checks that MaxParts parts hold what
// the doc says, and that parts only grow past the first PartsAtBase.
func TestPartSizeAtFitsTheBiggestObject(t *testing.T) {
	t.Parallel()
	var total int64
	for n := 1; n <= blob.MaxParts; n++ {
		size := blob.PartSizeAt(blob.PartSize, n)
		if n <= blob.PartsAtBase {
			require.Equal(t, blob.PartSize, size, "part %d", n)
		}
		require.GreaterOrEqual(t, size, blob.PartSizeAt(blob.PartSize, max(n-1, 1)), "part %d shrinks", n)
		total += int64(size)
	}
	assert.Greater(t, total, int64(327)<<30, "10,000 parts hold at least 327 GiB")
}

// Upload's parts wait in unlinked files of its part directory while they
// go up, and every file is closed (its disk given back) when Upload
// returns, whether it stored the object or not.
func TestUploadPartFiles(t *testing.T) {
	srv := blobtest.Start(t, "parts")

	t.Run("UnlinkedWhileUploadingClosedAfter", func(t *testing.T) {
		dir := t.TempDir()
		s := srv.Store.WithPartDirForTest(dir)
		var seen atomic.Int64
		size := int64(2*blob.PartSize + mib)
		r := &onRead{r: newGen(11, size), after: blob.PartSize + mib, fn: func() {
			entries, err := os.ReadDir(dir)
			assert.NoError(t, err)
			assert.Empty(t, entries, "part files have no name")
			seen.Store(int64(openFilesIn(t, dir)))
		}}
		info, err := s.Upload(t.Context(), "parts", "three-parts", r, "")
		require.NoError(t, err)
		assert.Equal(t, size, info.Size)
		assert.Equal(t, int64(2), seen.Load(), "one part uploading, the next filling")
		assert.Zero(t, openFilesIn(t, dir), "part files left open")
		assert.Equal(t, digest(t, newGen(11, size)), digest(t, openObject(t, srv.Store, "parts", "three-parts")))
	})

	t.Run("ClosedAfterAFailedRead", func(t *testing.T) {
		dir := t.TempDir()
		s := srv.Store.WithPartDirForTest(dir)
		boom := errors.New("renderer failed")
		_, err := s.Upload(t.Context(), "parts", "failed", io.MultiReader(newGen(12, blob.PartSize+mib), failingReader{boom}), "")
		require.ErrorIs(t, err, boom)
		assert.Zero(t, openFilesIn(t, dir), "part files left open")
		_, err = s.Stat(t.Context(), "parts", "failed")
		assert.ErrorIs(t, err, blob.ErrNotFound)
	})

	t.Run("NoPartDirectory", func(t *testing.T) {
		s := srv.Store.WithPartDirForTest(filepath.Join(t.TempDir(), "missing"))
		_, err := s.Upload(t.Context(), "parts", "big", newGen(13, mib), "")
		require.Error(t, err, "a part too big for memory needs its file")
		_, err = s.Stat(t.Context(), "parts", "big")
		assert.ErrorIs(t, err, blob.ErrNotFound)

		// An object within Upload's first read goes up from memory.
		info, err := s.Upload(t.Context(), "parts", "small", strings.NewReader("id,amount\n1,2\n"), "text/csv")
		require.NoError(t, err)
		assert.Equal(t, int64(14), info.Size)
	})
}

// openFilesIn counts this process's open files that are (or were) in dir.
func openFilesIn(t *testing.T, dir string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			n++
		}
	}
	return n
}

func openObject(t *testing.T, s *blob.Store, bucket, key string) io.Reader {
	t.Helper()
	rc, _, err := s.Open(t.Context(), bucket, key)
	require.NoError(t, err)
	t.Cleanup(func() { rc.Close() })
	return rc
}

// onRead calls fn once, after more than after bytes were read.
type onRead struct {
	r     io.Reader
	after int64
	fn    func()
	done  bool
}

func (o *onRead) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	o.after -= int64(n)
	if o.after < 0 && !o.done {
		o.done = true
		o.fn()
	}
	return n, err
}
