// Package blobtest runs the real MinIO server for tests of code that uses
// package blob. There is deliberately no fake S3: the traps that matter
// (multipart buffering, aborts, presigning) only show against the server.
package blobtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"dataport.dev/shared/blob"
	"dataport.dev/shared/logtest"
)

// EnvBinary names the environment variable that overrides where the MinIO
// binary is looked for.
const EnvBinary = "DATAPORT_MINIO_BIN"

const (
	accessKey = "dataport-test"
	secretKey = "dataport-test-secret"
	region    = "us-east-1" // MinIO's default; set so no location lookups happen

	// startTimeout is generous because a cold start on a loaded CI machine
	// (many packages testing in parallel) can take several seconds.
	startTimeout = 30 * time.Second
	pollInterval = 50 * time.Millisecond
	// attempts covers the window between picking a free port and MinIO
	// binding it, in which another process may take it.
	attempts = 3
)

const notFoundMsg = "minio binary not found: run `make tools` (installs it into bin/) or set " + EnvBinary

// Server is a running MinIO server owned by one test.
type Server struct {
	// Config reaches the server with its root credentials.
	Config blob.Config
	// Store is connected to the server; it has no buckets yet.
	Store *blob.Store
	// Dir is the server's data directory, removed after the test.
	Dir string

	proc *proc
}

// proc is the running MinIO process; Stop and Restart swap it.
type proc struct {
	mu              sync.Mutex
	bin, addr, cons string
	dir             string
	out             *logtest.Buffer
	stop            func()
}

// Stop kills the server as a crash or an outage would (SIGKILL: no
// graceful shutdown). The data directory stays; Restart brings the server
// back on the same address. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.proc.mu.Lock()
	defer s.proc.mu.Unlock()
	if s.proc.stop != nil {
		s.proc.stop()
		s.proc.stop = nil
	}
}

// Restart starts a stopped server again on the same address and data
// directory and waits until it serves requests.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.proc.mu.Lock()
	defer s.proc.mu.Unlock()
	if s.proc.stop != nil {
		s.proc.stop()
	}
	m, err := launch(s.proc.bin, s.proc.addr, s.proc.cons, s.proc.dir, s.proc.out)
	if err != nil {
		tb.Fatalf("blobtest: restart: %v", err)
	}
	s.proc.stop = m.kill
	if err := waitReady(tb.Context(), s.proc.addr, s.Store, m.exited); err != nil {
		tb.Fatalf("blobtest: restart: %v; output:\n%s", err, s.proc.out.String())
	}
}

// launched is one MinIO process.
type launched struct {
	cmd *exec.Cmd
	// exited is closed once the process has exited.
	exited chan struct{}
	// err is how the process exited; read it only after exited is closed.
	err error
}

// kill kills the process and waits for it to exit.
func (m *launched) kill() {
	_ = m.cmd.Process.Kill()
	<-m.exited
}

// launch starts MinIO with out as its stdout and stderr.
func launch(bin, addr, console, dir string, out *logtest.Buffer) (*launched, error) {
	cmd := exec.Command(bin, "server", "--address", addr, "--console-address", console, dir)
	cmd.Env = append(minioFreeEnv(),
		"MINIO_ROOT_USER="+accessKey,
		"MINIO_ROOT_PASSWORD="+secretKey,
		"MINIO_BROWSER=off", // no console: faster start, one port fewer in use
		"MINIO_UPDATE=off",  // never phone home from a test
	)
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	m := &launched{cmd: cmd, exited: make(chan struct{})}
	go func() {
		m.err = cmd.Wait()
		close(m.exited)
	}()
	return m, nil
}

// Start launches MinIO on free loopback ports with a fresh data directory
// and returns once it answers its liveness check and accepts requests. The
// server is killed when the test ends; its output is logged only if the
// test failed. Start fails the test, never skips it, when MinIO is missing:
// a skipped storage suite looks like a passing one. The buckets named are
// created before Start returns.
//
// The binary is $DATAPORT_MINIO_BIN if set, else bin/minio in the
// repository root (found by walking up from the working directory), else
// minio on $PATH.
func Start(tb testing.TB, buckets ...string) *Server {
	tb.Helper()
	bin, err := findBinary()
	if err != nil {
		tb.Fatal(err)
	}
	dir := tb.TempDir()

	var lastErr error
	for range attempts {
		srv, retry, err := start(tb, bin, dir)
		if err == nil {
			for _, b := range buckets {
				if err := srv.Store.EnsureBucket(tb.Context(), b); err != nil {
					tb.Fatalf("blobtest: bucket %s: %v", b, err)
				}
			}
			return srv
		}
		lastErr = err
		if !retry {
			break
		}
	}
	tb.Fatalf("blobtest: start %s: %v", bin, lastErr)
	return nil
}

// start makes one attempt. retry reports whether the server exited early,
// most likely because a port was taken between picking and binding it.
func start(tb testing.TB, bin, dir string) (srv *Server, retry bool, err error) {
	tb.Helper()
	ports, err := freePorts(2)
	if err != nil {
		return nil, false, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	console := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))

	out := &logtest.Buffer{}
	m, err := launch(bin, addr, console, dir, out)
	if err != nil {
		return nil, false, err
	}
	stop := m.kill

	cfg := blob.Config{Endpoint: addr, AccessKey: accessKey, SecretKey: secretKey, Region: region}
	store, err := blob.New(cfg)
	if err != nil {
		stop()
		return nil, false, err
	}
	if err := waitReady(tb.Context(), addr, store, m.exited); err != nil {
		stop()
		if errors.Is(err, errExited) {
			err = fmt.Errorf("%w (%v); output:\n%s", err, m.err, out.String())
			return nil, true, err
		}
		return nil, false, fmt.Errorf("%w; output:\n%s", err, out.String())
	}

	p := &proc{bin: bin, addr: addr, cons: console, dir: dir, out: out, stop: stop}
	srv = &Server{Config: cfg, Store: store, Dir: dir, proc: p}
	tb.Cleanup(func() {
		srv.Stop()
		if tb.Failed() {
			tb.Logf("minio output (%s):\n%s", addr, out.String())
		}
	})
	return srv, false, nil
}

var errExited = errors.New("minio exited before becoming ready")

// waitReady polls until the liveness endpoint answers 200 and an
// authenticated request succeeds: MinIO reports live slightly before its
// object layer serves S3 requests.
func waitReady(ctx context.Context, addr string, store *blob.Store, exited <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	liveURL := "http://" + addr + "/minio/health/live"
	for {
		last := probe(ctx, client, liveURL)
		if last == nil {
			if last = store.Ping(ctx); last == nil {
				return nil
			}
		}
		select {
		case <-exited:
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("not ready within %v: %w", startTimeout, last)
		case <-time.After(pollInterval):
		}
	}
}

func probe(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// findBinary applies the documented lookup order.
func findBinary() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvBinary, p, err)
		}
		return p, nil
	}
	if root, ok := repoRoot(); ok {
		p := filepath.Join(root, "bin", "minio")
		if executable(p) == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	return "", errors.New(notFoundMsg)
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
}

// repoRoot walks up from the working directory (the package directory
// under go test) to the directory holding go.work, or Makefile and shared/
// for checkouts used without the workspace file.
func repoRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if exists(filepath.Join(dir, "go.work")) ||
			(exists(filepath.Join(dir, "Makefile")) && exists(filepath.Join(dir, "shared"))) {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// freePorts reserves n distinct loopback ports and releases them for MinIO
// to bind. Holding all listeners open until the end keeps them distinct.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// minioFreeEnv is the test process's environment without MINIO_* variables,
// so a developer's own MinIO settings cannot change the test server.
func minioFreeEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MINIO_") {
			env = append(env, kv)
		}
	}
	return env
}

// Keys lists the keys under prefix in bucket of store, in the store's
// order; nil if there are none.
func Keys(tb testing.TB, store *blob.Store, bucket, prefix string) []string {
	tb.Helper()
	objs, err := store.List(tb.Context(), bucket, prefix)
	if err != nil {
		tb.Fatalf("blobtest: list %s/%s: %v", bucket, prefix, err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}
