package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	cliOnce sync.Once
	cliBin  string
	cliErr  error
)

// buildCLI compiles the dataport CLI from the shared module, as `go
// install dataport.dev/shared/cmd/dataport` would.
func buildCLI(t *testing.T) string {
	t.Helper()
	dir := buildBinaries(t)
	cliOnce.Do(func() {
		cliBin = filepath.Join(dir, "dataport")
		cmd := exec.Command("go", "build", "-o", cliBin, "./cmd/dataport")
		cmd.Dir = filepath.Join(repoRoot(t), "shared")
		if out, err := cmd.CombinedOutput(); err != nil {
			cliErr = errors.New("build dataport: " + err.Error() + "\n" + string(out))
		}
	})
	require.NoError(t, cliErr)
	return cliBin
}

// cli runs the CLI with its config in a temporary file and no other
// DATAPORT_ variables than env.
type cli struct {
	bin    string
	config string
	env    []string
}

type cliResult struct {
	code           int
	stdout, stderr string
}

func (c cli) run(t *testing.T, args ...string) cliResult {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), c.bin, args...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATAPORT_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(append(env, "DATAPORT_CONFIG="+c.config), c.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else {
		require.NoError(t, err)
	}
	return cliResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func (c cli) ok(t *testing.T, args ...string) cliResult {
	t.Helper()
	r := c.run(t, args...)
	require.Equal(t, 0, r.code, "dataport %s\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.stdout, r.stderr)
	return r
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// The CLI against the real services: a context, an export followed live
// to its end with a progress bar fed by the event stream, a download
// verified against the export's SHA-256 (and continued after an
// interruption), and the exit codes of the API's refusals.
func TestCLIExportWatchDownloadVerify(t *testing.T) {
	s := startStack(t)
	bin := buildCLI(t)
	admin := s.user(t, "admin")
	c := cli{bin: bin, config: filepath.Join(t.TempDir(), "config.json")}

	c.ok(t, "context", "set", "e2e", "--url", s.gatewayURL, "--user", admin.UserID, "--token", admin.AuthToken, "--use")
	r := c.ok(t, "context", "list")
	assert.Contains(t, r.stdout, "e2e")
	assert.NotContains(t, r.stdout, admin.AuthToken, "tokens are not shown")

	r = c.ok(t, "export", "room", "GENERAL", "--format", "json", "-o", "json")
	var created struct{ ID, Kind, Format, State string }
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &created), r.stdout)
	require.NotEmpty(t, created.ID)
	assert.Equal(t, "room", created.Kind)

	r = c.ok(t, "status", created.ID, "--watch")
	assert.Contains(t, r.stdout, "completed")
	assert.Contains(t, r.stderr, "records", "the progress bar shows records")
	assert.Contains(t, r.stderr, "100%")

	// The job stream of an ended export sends its final state and ends;
	// as JSON lines, the last is the completed job with its files.
	r = c.ok(t, "status", created.ID, "--watch", "-o", "json")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	var final struct {
		State string
		Files []struct {
			Name   string
			Size   int64
			SHA256 string
		}
	}
	require.NoError(t, json.Unmarshal([]byte(lines[len(lines)-1]), &final))
	require.Equal(t, "completed", final.State)
	require.NotEmpty(t, final.Files)

	dir := t.TempDir()
	r = c.ok(t, "download", created.ID, "--dir", dir, "-o", "json")
	var got []struct {
		Name, Path, SHA256 string
		Size               int64
		Skipped            bool
	}
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &got), r.stdout)
	require.Len(t, got, len(final.Files))
	for i, f := range final.Files {
		assert.Equal(t, f.Name, got[i].Name)
		assert.Equal(t, f.SHA256, sha256File(t, filepath.Join(dir, f.Name)), "the file on disk is the export's")
		assert.Equal(t, f.Size, got[i].Size)
	}
	file := filepath.Join(dir, final.Files[0].Name)
	var doc struct{ Messages []any }
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	require.NoError(t, json.Unmarshal(data, &doc))
	assert.Len(t, doc.Messages, s.seed.Rooms["GENERAL"].Messages)

	// Complete and matching: skipped. Interrupted halfway: continued
	// (a Range request; a gateway that ignores it sends the whole file)
	// and verified. Corrupted: written again.
	r = c.ok(t, "download", created.ID, "--dir", dir)
	assert.Contains(t, r.stdout, "already there")
	require.NoError(t, os.WriteFile(file+".part", data[:len(data)/2], 0o644))
	require.NoError(t, os.Remove(file))
	r = c.ok(t, "download", created.ID, "--dir", dir)
	assert.Contains(t, r.stdout, "verified")
	t.Logf("interrupted download: %s", r.stdout)
	assert.Equal(t, final.Files[0].SHA256, sha256File(t, file))
	assert.NoFileExists(t, file+".part")
	require.NoError(t, os.WriteFile(file, []byte("not the export"), 0o644))
	c.ok(t, "download", created.ID, "--dir", dir)
	assert.Equal(t, final.Files[0].SHA256, sha256File(t, file))

	r = c.ok(t, "list")
	assert.Contains(t, r.stdout, created.ID)

	// Started and followed in one go, with a download at the end.
	r = c.ok(t, "export", "my-data", "--download", filepath.Join(dir, "mine"))
	assert.Contains(t, r.stdout, "verified")

	// The API's refusals: a message from the problem details and an exit
	// code per kind.
	r = c.run(t, "status", "nosuchexport")
	assert.Equal(t, 4, r.code, r.stderr)
	assert.Contains(t, r.stderr, "export not found")
	r = c.run(t, "cancel", created.ID)
	assert.Equal(t, 6, r.code, r.stderr)
	r = c.run(t, "export", "records", "events", "--format", "docx")
	assert.Equal(t, 5, r.code, r.stderr)
	assert.Contains(t, r.stderr, "format")
	r = c.run(t, "status", created.ID, "--token", "wrong")
	assert.Equal(t, 3, r.code, r.stderr)
	r = c.run(t, "status")
	assert.Equal(t, 2, r.code, r.stderr)

	// Environment variables override the context.
	other := cli{bin: bin, config: c.config, env: []string{"DATAPORT_URL=http://127.0.0.1:1"}}
	r = other.run(t, "list")
	assert.Equal(t, 1, r.code, "the unreachable URL of the environment is used: %s", r.stderr)

	// A canceled export ends the watch with exit code 9.
	r = c.ok(t, "export", "room", "GENERAL", "--format", "html", "-o", "json")
	require.NoError(t, json.Unmarshal([]byte(r.stdout), &created))
	if cr := c.run(t, "cancel", created.ID); cr.code == 0 {
		deadline := time.Now().Add(30 * time.Second)
		r = c.run(t, "status", created.ID, "--watch")
		require.True(t, time.Now().Before(deadline))
		assert.Equal(t, 9, r.code, r.stderr)
		assert.Contains(t, r.stderr, "canceled")
	}

	// Completion scripts come from cobra.
	r = c.ok(t, "completion", "bash")
	assert.Contains(t, r.stdout, "dataport")
}
