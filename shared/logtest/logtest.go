// Package logtest holds what a logger or a child process writes while the
// test that started it reads it: the writer runs on other goroutines, so
// a plain bytes.Buffer would race.
package logtest

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// Buffer is an io.Writer that any number of goroutines may write to while
// the test reads it. The zero value is ready to use; a Buffer must not be
// copied after first use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Records decodes the slog JSON records written so far whose msg starts
// with msgPrefix and, if jobID is not empty, whose job_id is jobID. A line
// that is not JSON fails the test: everything written must be a record.
func (b *Buffer) Records(t testing.TB, msgPrefix, jobID string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for line := range strings.Lines(b.String()) {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &rec), "log line is JSON: %s", line)
		if msg, _ := rec["msg"].(string); strings.HasPrefix(msg, msgPrefix) && (jobID == "" || rec["job_id"] == jobID) {
			out = append(out, rec)
		}
	}
	return out
}

// Warnings returns a handler that writes records of level Warn and above
// to t's log, so a test that hangs or fails shows why the code under test
// was retrying. Records logged after t's cleanups began are dropped:
// t.Log panics once the test is over.
func Warnings(t testing.TB) slog.Handler {
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})
}

type testWriter struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}
