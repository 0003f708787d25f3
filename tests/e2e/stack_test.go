package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/infra/infratest"
)

// repoRoot is where go.work lives; the binaries and tools are found from it.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(root, "go.work"))
	require.NoError(t, err, "tests/e2e must sit two levels below the repository root")
	return root
}

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// buildBinaries compiles the five services and the seeder once per test
// run, each inside its own module as a Docker build would.
func buildBinaries(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "dataport-e2e-bin-")
		if buildErr != nil {
			return
		}
		targets := []struct{ name, dir, pkg string }{
			{"gateway", "services/gateway", "."},
			{"room-exporter", "services/room-exporter", "."},
			{"record-exporter", "services/record-exporter", "."},
			{"archiver", "services/archiver", "."},
			{"notifier", "services/notifier", "."},
			{"seed", "shared", "./cmd/dataport-seed"},
		}
		for _, tg := range targets {
			cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, tg.name), tg.pkg)
			cmd.Dir = filepath.Join(root, tg.dir)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", tg.name, err, out)
				return
			}
		}
	})
	require.NoError(t, buildErr)
	return buildDir
}

func tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(repoRoot(t), "bin", name)
	if _, err := os.Stat(p); err == nil {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s not found in bin/ or PATH: run `make tools`", name)
	return ""
}

// process is a child process whose output goes to a log file that is shown
// when the test fails. It can be killed and started again with the same
// command; every run appends to the same log.
type process struct {
	name string
	bin  string
	env  []string
	args []string
	log  string
	// ready, when set, is the URL that answers 200 once the process is
	// ready (its /readyz); waitReady polls it.
	ready string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func startProcess(t testing.TB, name, bin string, env []string, args ...string) *process {
	t.Helper()
	p := &process{name: name, bin: bin, env: env, args: args, log: filepath.Join(t.TempDir(), name+".log")}
	p.start(t)
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("---- %s log (tail) ----\n%s", name, b)
		}
	})
	return p
}

func (p *process) start(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	require.NoError(t, err)
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	require.NoError(t, cmd.Start(), "start %s", p.name)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	p.mu.Lock()
	p.cmd, p.done = cmd, done
	p.mu.Unlock()
}

// kill sends SIGKILL, as a crash or an OOM kill would, and waits for the
// process to be gone.
func (p *process) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	_ = cmd.Process.Kill()
	<-done
}

// restart starts the process again after kill or stop.
func (p *process) restart(t testing.TB) {
	t.Helper()
	p.stop()
	p.start(t)
}

// waitReady waits until the process answers its readiness URL.
func (p *process) waitReady(t testing.TB) {
	t.Helper()
	require.NotEmpty(t, p.ready, "%s has no readiness URL", p.name)
	waitHTTP(t, p.ready)
}

// logText is everything the process wrote so far, over all its runs.
func (p *process) logText(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(p.log)
	require.NoError(t, err)
	return string(b)
}

// stop sends SIGTERM, as Kubernetes does, and kills after a grace period.
func (p *process) stop() { p.stopWithin(15 * time.Second) }

// stopWithin sends SIGTERM and kills after grace; it reports whether the
// process exited by itself within grace.
func (p *process) stopWithin(grace time.Duration) bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	select {
	case <-done:
		return true
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
		return true
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
		return false
	}
}

func waitHTTP(t testing.TB, url string) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		resp, err := http.Get(url)
		if !assert.NoError(c, err) {
			return
		}
		resp.Body.Close()
		assert.Equal(c, http.StatusOK, resp.StatusCode)
	}, 60*time.Second, 100*time.Millisecond, "waiting for %s", url)
}

// stack is a running Dataport with its infrastructure.
type stack struct {
	gatewayURL  string
	mailpitURL  string
	devDir      string
	credentials []credential
	seed        seedCounts
	// taskSecret signs tasks, so a test can act as a gateway that queues
	// a bad one.
	taskSecret string

	// nats is nil when the stack runs on a cluster (stackOptions.natsURL)
	// or on a nats-server process (natsProc).
	nats *bustest.Server
	// natsProc is the nats-server process of stackOptions.natsProcess.
	natsProc *process
	natsURL  string
	minio    *blobtest.Server
	gateway  *process
	// gateways are every gateway replica, gateway first; gatewayURLs
	// their base URLs in the same order.
	gateways    []*process
	gatewayURLs []string
	// exporters are the room-exporter processes (room, user-data and mail
	// tasks), recordExporters the record-exporter ones (record tasks).
	exporters       []*process
	recordExporters []*process
	archiver        *process
	notifier        *process
	// httpAddrs maps each service process's name to the address of its
	// HTTP server (the gateway's API, the others' probes; /metrics on all).
	httpAddrs map[string]string
}

// stackOptions change how startStackWith runs Dataport.
type stackOptions struct {
	// exporters is how many room-exporter processes run; 0 means 1.
	exporters int
	// recordExporters is how many record-exporter processes run; 0 means 1.
	recordExporters int
	// env is added to every service's environment (later values win).
	env []string
	// natsURL points the services at an existing NATS (e.g. a cluster);
	// empty starts a single embedded server.
	natsURL string
	// natsProcess runs bin/nats-server as a child process instead of the
	// embedded server, so a test can SIGTERM or kill -9 it.
	natsProcess bool
	// gateways is how many gateway replicas run; 0 means 1.
	gateways int
	// defaults drops the suite's test settings (short ack wait, quotas
	// off): the services run with what a deployment gets.
	defaults bool
}

// testSettings are what the suite changes from the defaults so that
// redeliveries take seconds and one user may create many jobs quickly.
var testSettings = []string{
	"DATAPORT_TASK_ACK_WAIT=5s",
	// Quotas are exercised by their own test; the others create many
	// jobs quickly as one user.
	"DATAPORT_MAX_CONCURRENT_EXPORTS_PER_USER=0",
	"DATAPORT_CREATE_RATE_PER_MINUTE=0",
}

type credential struct {
	Username  string   `json:"username"`
	Email     string   `json:"email"`
	UserID    string   `json:"userId"`
	AuthToken string   `json:"authToken"`
	APIKey    string   `json:"apiKey"`
	Roles     []string `json:"roles"`
}

type seedCounts struct {
	Rooms   map[string]struct{ Messages int } `json:"rooms"`
	Records map[string]int                    `json:"records"`
}

func (s *stack) user(t testing.TB, username string) credential {
	t.Helper()
	for _, c := range s.credentials {
		if c.Username == username {
			return c
		}
	}
	t.Fatalf("no demo user %q", username)
	return credential{}
}

// startStack runs NATS, MinIO, Mailpit, the five services and the seeder.
func startStack(t *testing.T) *stack {
	t.Helper()
	return startStackWith(t, stackOptions{})
}

// startStackWith is startStack with knobs for the fault tests.
func startStackWith(t *testing.T, o stackOptions) *stack {
	t.Helper()
	bins := buildBinaries(t)
	var nats *bustest.Server
	var natsProc *process
	natsURL := o.natsURL
	switch {
	case natsURL != "":
	case o.natsProcess:
		natsProc, natsURL = startNATSProcess(t)
	default:
		nats = bustest.StartBare(t)
		natsURL = nats.URL
	}
	minio := blobtest.Start(t)
	// MinIO and the embedded NATS are stopped and started again on their
	// ports by the fault tests.
	reservePort(t, minio.Config.Endpoint)
	if nats != nil {
		reservePort(t, nats.URL)
	}

	smtpAddr, mailpitAddr := freeAddr(t), freeAddr(t)
	startProcess(t, "mailpit", tool(t, "mailpit"), nil,
		"--smtp", smtpAddr, "--listen", mailpitAddr, "--database", filepath.Join(t.TempDir(), "mailpit.db"))
	waitHTTP(t, "http://"+mailpitAddr+"/livez")

	gatewayAddr := freeAddr(t)
	_, smtpPort, _ := net.SplitHostPort(smtpAddr)
	taskSecret := randomKey(t)
	common := []string{
		"DATAPORT_NATS_URL=" + natsURL,
		"DATAPORT_S3_ENDPOINT=" + minio.Config.Endpoint,
		"DATAPORT_S3_ACCESS_KEY=" + minio.Config.AccessKey,
		"DATAPORT_S3_SECRET_KEY=" + minio.Config.SecretKey,
		"DATAPORT_PUBLIC_URL=http://" + gatewayAddr,
		// Fresh keys of the length a deployment must use: the stack runs
		// as production (DATAPORT_ENV unset), which refuses weaker ones.
		"DATAPORT_ENV=production",
		"DATAPORT_LINK_SECRET=" + randomKey(t),
		"DATAPORT_WEBHOOK_SECRET=" + randomKey(t),
		"DATAPORT_TASK_SECRET=" + taskSecret,
		"DATAPORT_SMTP_HOST=127.0.0.1",
		"DATAPORT_SMTP_PORT=" + smtpPort,
		"DATAPORT_LOG_LEVEL=debug",
	}
	if !o.defaults {
		common = append(common, testSettings...)
	}
	common = append(common, o.env...)
	env := func(extra ...string) []string { return append(append([]string{}, common...), extra...) }

	s := &stack{nats: nats, natsProc: natsProc, natsURL: natsURL, minio: minio, taskSecret: taskSecret, httpAddrs: map[string]string{"gateway": gatewayAddr}}
	var health []string
	service := func(name, bin string) *process {
		addr := freeAddr(t)
		health = append(health, addr)
		s.httpAddrs[name] = addr
		p := startProcess(t, name, filepath.Join(bins, bin), env("DATAPORT_HEALTH_ADDR="+addr))
		p.ready = "http://" + addr + "/readyz"
		return p
	}
	for i := range max(o.exporters, 1) {
		name := "room-exporter"
		if i > 0 {
			name = fmt.Sprintf("room-exporter-%d", i+1)
		}
		s.exporters = append(s.exporters, service(name, "room-exporter"))
	}
	for i := range max(o.recordExporters, 1) {
		name := "record-exporter"
		if i > 0 {
			name = fmt.Sprintf("record-exporter-%d", i+1)
		}
		s.recordExporters = append(s.recordExporters, service(name, "record-exporter"))
	}
	s.archiver = service("archiver", "archiver")
	s.notifier = service("notifier", "notifier")
	for i := range max(o.gateways, 1) {
		name, addr := "gateway", gatewayAddr
		if i > 0 {
			name, addr = fmt.Sprintf("gateway-%d", i+1), freeAddr(t)
			s.httpAddrs[name] = addr
		}
		g := startProcess(t, name, filepath.Join(bins, "gateway"), env("DATAPORT_HTTP_ADDR="+addr))
		g.ready = "http://" + addr + "/readyz"
		s.gateways = append(s.gateways, g)
		s.gatewayURLs = append(s.gatewayURLs, "http://"+addr)
		waitHTTP(t, "http://"+addr+"/readyz")
	}
	s.gateway = s.gateways[0]
	for _, addr := range health {
		waitHTTP(t, "http://"+addr+"/readyz")
	}

	devDir := t.TempDir()
	seed := exec.Command(filepath.Join(bins, "seed"))
	seed.Env = append(os.Environ(), env("DATAPORT_DEV_DIR="+devDir)...)
	out, err := seed.CombinedOutput()
	require.NoError(t, err, "seeder: %s", out)

	s.gatewayURL, s.mailpitURL, s.devDir = "http://"+gatewayAddr, "http://"+mailpitAddr, devDir
	readJSON(t, filepath.Join(devDir, "credentials.json"), &s.credentials)
	readJSON(t, filepath.Join(devDir, "seed.json"), &s.seed)
	return s
}

// startNATSProcess runs bin/nats-server with JetStream on free loopback
// ports and waits until its JetStream is healthy. Restarting the process
// reuses the port and the store directory.
func startNATSProcess(t *testing.T) (*process, string) {
	t.Helper()
	_, port, _ := net.SplitHostPort(freeAddr(t))
	monitor := freeAddr(t)
	_, mport, _ := net.SplitHostPort(monitor)
	p := startProcess(t, "nats-server", tool(t, "nats-server"), nil,
		"-a", "127.0.0.1", "-p", port, "-m", mport, "-js", "-sd", t.TempDir(), "--name", "e2e-nats")
	p.ready = "http://" + monitor + "/healthz"
	waitHTTP(t, p.ready)
	return p, "nats://127.0.0.1:" + port
}

// ports are the loopback ports this test binary has handed out or seen
// taken. The fault tests stop processes and start them again on the same
// port; a port free for that moment must not go to another test's stack
// starting meanwhile, which infratest.FreeAddr alone cannot know. It is
// package state because the tests running in parallel share it.
var ports = struct {
	sync.Mutex
	taken map[string]bool
}{taken: map[string]bool{}}

// freeAddr is infratest.FreeAddr that never returns a port handed out
// (or reserved) before in this test binary.
func freeAddr(t testing.TB) string {
	t.Helper()
	for {
		addr := infratest.FreeAddr(t)
		_, port, err := net.SplitHostPort(addr)
		require.NoError(t, err)
		ports.Lock()
		taken := ports.taken[port]
		ports.taken[port] = true
		ports.Unlock()
		if !taken {
			return addr
		}
	}
}

// reservePort keeps freeAddr from handing out the port of addr (a URL or
// host:port a server chose itself), which a restart will bind again.
func reservePort(t testing.TB, addr string) {
	t.Helper()
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		addr = u.Host
	}
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err, "reserve %s", addr)
	ports.Lock()
	ports.taken[port] = true
	ports.Unlock()
}

// randomKey returns 32 random bytes in hex, as `openssl rand -hex 32`.
func randomKey(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return hex.EncodeToString(b)
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(b, v), "%s", path)
}

// call sends a JSON request as user c and decodes the JSON answer.
func call(t testing.TB, method, url string, c *credential, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, rd)
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if c != nil {
		req.Header.Set("X-User-Id", c.UserID)
		req.Header.Set("X-Auth-Token", c.AuthToken)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if out != nil {
		require.NoError(t, json.Unmarshal(b, out), "decode %s %s (status %d): %s", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode
}
