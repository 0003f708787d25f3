package blobtest

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStart(t *testing.T) {
	srv := Start(t)
	require.NotNil(t, srv.Store)
	assert.DirExists(t, srv.Dir)
	require.NoError(t, srv.Store.Ping(t.Context()))

	resp, err := http.Get("http://" + srv.Config.Endpoint + "/minio/health/live")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
}

func TestStartCreatesBuckets(t *testing.T) {
	srv := Start(t, "first", "second")
	for _, b := range []string{"first", "second"} {
		_, err := srv.Store.List(t.Context(), b, "")
		assert.NoError(t, err, "bucket %s exists", b)
	}
	_, err := srv.Store.List(t.Context(), "third", "")
	assert.Error(t, err, "only the named buckets are created")
}

func TestStartTwiceIsolated(t *testing.T) {
	a, b := Start(t), Start(t)
	assert.NotEqual(t, a.Config.Endpoint, b.Config.Endpoint)
	assert.NotEqual(t, a.Dir, b.Dir)
	require.NoError(t, a.Store.EnsureBucket(t.Context(), "only-in-a"))
	got, err := b.Store.List(t.Context(), "only-in-a", "")
	assert.Error(t, err, "bucket of one server visible in the other")
	assert.Empty(t, got)
}

// fatalRecorder captures Fatal instead of failing the real test, and stops
// the calling goroutine the way testing.T does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatal(args ...any) {
	r.msg = fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func startExpectingFatal(t *testing.T) string {
	t.Helper()
	rec := &fatalRecorder{TB: t}
	done := make(chan *Server)
	go func() {
		defer close(done)
		done <- Start(rec)
	}()
	srv := <-done
	require.Nil(t, srv, "Start returned a server")
	return rec.msg
}

func TestStartFailsWithoutBinary(t *testing.T) {
	t.Setenv(EnvBinary, "")
	t.Setenv("PATH", "")
	t.Chdir(t.TempDir()) // outside any repository: no bin/minio to find

	assert.Equal(t, notFoundMsg, startExpectingFatal(t))
}

func TestStartFailsOnBadOverride(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "minio")
	t.Setenv(EnvBinary, missing)

	msg := startExpectingFatal(t)
	assert.Contains(t, msg, EnvBinary)
	assert.Contains(t, msg, missing)
}

func TestRepoRoot(t *testing.T) {
	t.Run("GoWork", func(t *testing.T) {
		root := t.TempDir()
		deep := filepath.Join(root, "shared", "blobtest")
		require.NoError(t, os.MkdirAll(deep, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, "go.work"), []byte("go 1.26\n"), 0o644))
		t.Chdir(deep)

		got, ok := repoRoot()
		require.True(t, ok)
		assert.Equal(t, evalPath(t, root), evalPath(t, got))
	})
	t.Run("MakefileAndShared", func(t *testing.T) {
		root := t.TempDir()
		deep := filepath.Join(root, "shared", "blob")
		require.NoError(t, os.MkdirAll(deep, 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(root, "Makefile"), nil, 0o644))
		t.Chdir(deep)

		got, ok := repoRoot()
		require.True(t, ok)
		assert.Equal(t, evalPath(t, root), evalPath(t, got))
	})
	t.Run("BinMinioInRoot", func(t *testing.T) {
		root := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(root, "go.work"), []byte("go 1.26\n"), 0o644))
		require.NoError(t, os.Mkdir(filepath.Join(root, "bin"), 0o755))
		bin := filepath.Join(root, "bin", "minio")
		require.NoError(t, os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755))
		t.Setenv(EnvBinary, "")
		t.Chdir(root)

		got, err := findBinary()
		require.NoError(t, err)
		assert.Equal(t, evalPath(t, bin), evalPath(t, got))
	})
}

func evalPath(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	require.NoError(t, err)
	return r
}

func TestStopAndRestartKeepData(t *testing.T) {
	srv := Start(t)
	ctx := t.Context()
	require.NoError(t, srv.Store.EnsureBucket(ctx, "keep"))
	_, err := srv.Store.Upload(ctx, "keep", "a.txt", strings.NewReader("still here"), "text/plain")
	require.NoError(t, err)

	srv.Stop()
	assert.Error(t, srv.Store.Ping(ctx), "a stopped server does not answer")
	srv.Stop() // stopping twice is harmless

	srv.Restart(t)
	rc, _, err := srv.Store.Open(ctx, "keep", "a.txt")
	require.NoError(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	assert.Equal(t, "still here", string(b), "same address, same data")
}

func TestKeys(t *testing.T) {
	srv := Start(t, "keys")
	assert.Nil(t, Keys(t, srv.Store, "keys", ""), "an empty bucket has no keys")
	for _, k := range []string{"jobs/j1/a", "jobs/j1/b", "jobs/j2/a"} {
		_, err := srv.Store.Upload(t.Context(), "keys", k, strings.NewReader("x"), "text/plain")
		require.NoError(t, err)
	}
	assert.ElementsMatch(t, []string{"jobs/j1/a", "jobs/j1/b"}, Keys(t, srv.Store, "keys", "jobs/j1/"))
}
