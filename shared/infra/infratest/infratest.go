// Package infratest runs a service's run function for the tests of its
// main package: against a real NATS server and the real MinIO binary, in
// the background, until the test stops it as a signal would.
package infratest

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bustest"
)

// RunFunc is a service's run.
type RunFunc func(ctx context.Context, getenv func(string) string, stdout io.Writer) error

// Getenv is a getenv that reads env.
func Getenv(env map[string]string) func(string) string {
	return func(k string) string { return env[k] }
}

// FreeAddr returns a loopback address no one listens on, for a service's
// HTTP server.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// Stack is what a service connects to: NATS with Dataport's streams and
// buckets declared, and MinIO.
type Stack struct {
	NATS  *bustest.Server
	MinIO *blobtest.Server
}

// StartStack starts NATS and MinIO for one test.
func StartStack(t testing.TB) *Stack {
	t.Helper()
	return &Stack{NATS: bustest.Start(t), MinIO: blobtest.Start(t)}
}

// Env is the environment that points a service at the stack, with a
// shutdown budget short enough for tests, plus vars (which win).
func (s *Stack) Env(vars map[string]string) map[string]string {
	env := map[string]string{
		"DATAPORT_NATS_URL":         s.NATS.URL,
		"DATAPORT_S3_ENDPOINT":      s.MinIO.Config.Endpoint,
		"DATAPORT_S3_ACCESS_KEY":    s.MinIO.Config.AccessKey,
		"DATAPORT_S3_SECRET_KEY":    s.MinIO.Config.SecretKey,
		"DATAPORT_SHUTDOWN_TIMEOUT": "5s",
	}
	for k, v := range vars {
		env[k] = v
	}
	return env
}

// RejectsConfig runs run with env and checks that it fails at once, names
// every one of vars in its error and prints nothing: nothing starts on a
// bad configuration.
func RejectsConfig(t *testing.T, run RunFunc, env map[string]string, vars ...string) {
	t.Helper()
	var out strings.Builder
	err := run(t.Context(), Getenv(env), &out)
	require.Error(t, err)
	for _, v := range vars {
		assert.Contains(t, err.Error(), v, "the message names the variable")
	}
	assert.Empty(t, out.String(), "nothing starts on bad config")
}

// Process is a run in the background.
type Process struct {
	stop context.CancelFunc
	done chan struct{}
	err  error
	// out is run's stdout: a file, which run's goroutines may write to
	// while the test reads it.
	out string
	// addr is the address WaitReady probed.
	addr string
}

// Start runs run with env in the background. When the test ends, the
// process is stopped if the test has not stopped it.
func Start(t *testing.T, run RunFunc, env map[string]string) *Process {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "stdout"))
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.WithoutCancel(t.Context()))
	p := &Process{stop: stop, done: make(chan struct{}), out: f.Name()}
	go func() {
		defer close(p.done)
		defer f.Close()
		p.err = run(ctx, Getenv(env), f)
	}()
	t.Cleanup(func() {
		stop()
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			t.Error("run did not return after cancellation")
		}
	})
	return p
}

// Output is what run has printed so far: its configuration, then its logs.
func (p *Process) Output(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(p.out)
	require.NoError(t, err)
	return string(b)
}

// WaitReady waits until the process answers 200 on http://addr/readyz.
func (p *Process) WaitReady(t testing.TB, addr string) {
	t.Helper()
	p.addr = addr
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if !assert.NoError(c, err) {
			return
		}
		resp.Body.Close()
		assert.Equal(c, http.StatusOK, resp.StatusCode)
	}, 30*time.Second, 50*time.Millisecond, "run gets ready")
}

// Interrupt tells the process to stop, as SIGTERM would, and returns at
// once.
func (p *Process) Interrupt() { p.stop() }

// Stop stops the process as SIGTERM would and checks that run returns
// nil in time and that its HTTP server (the one WaitReady probed) is
// closed.
func (p *Process) Stop(t testing.TB) {
	t.Helper()
	p.Interrupt()
	select {
	case <-p.done:
		assert.NoError(t, p.err, "a signal-style stop is a clean exit")
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after cancellation")
	}
	if p.addr != "" {
		_, err := http.Get("http://" + p.addr + "/healthz")
		assert.Error(t, err, "the HTTP server is closed")
	}
}

// AssertMasked checks that out shows each variable of secrets as "****"
// and nowhere holds its value.
func AssertMasked(t testing.TB, out string, secrets map[string]string) {
	t.Helper()
	for name, value := range secrets {
		assert.Contains(t, out, name+"=****\n")
		assert.NotContains(t, out, value, "%s is never printed", name)
	}
}

// Put stores m under key in the KV bucket, as the host platform or another
// service would have.
func (s *Stack) Put(t testing.TB, bucket, key string, m proto.Message) {
	t.Helper()
	bustest.Put(t, s.NATS.JS, bucket, key, m)
}
