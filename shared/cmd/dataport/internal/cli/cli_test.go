package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/cmd/dataport/internal/client"
)

// gateway answers the few native routes the tests use; created receives
// each create body.
func gateway(t *testing.T, created chan<- map[string]any) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		problem := func(status int, detail string) {
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(status)
			fmt.Fprintf(w, `{"type":"about:blank","title":%q,"status":%d,"detail":%q}`, http.StatusText(status), status, detail)
		}
		if name, ok := strings.CutPrefix(r.URL.Path, "/dl/"); ok {
			// A signed link: no credentials.
			fmt.Fprint(w, fileContent[name])
			return
		}
		if r.Header.Get("X-Auth-Token") != "tok" {
			problem(http.StatusUnauthorized, "missing or invalid credentials")
			return
		}
		switch r.Method + " " + r.URL.Path {
		case "POST /v1/exports":
			b, _ := io.ReadAll(r.Body)
			var body map[string]any
			require.NoError(t, json.Unmarshal(b, &body))
			if body["format"] == "docx" {
				w.Header().Set("Content-Type", "application/problem+json")
				w.WriteHeader(http.StatusUnprocessableEntity)
				fmt.Fprint(w, `{"type":"https://dataport.dev/problems/invalid-request","title":"Invalid request","status":422,"detail":"format: must be one of csv, json","errors":[{"field":"format","message":"must be one of csv, json"}]}`)
				return
			}
			created <- body
			w.WriteHeader(http.StatusCreated)
			fmt.Fprint(w, `{"id":"j1","kind":"records","format":"csv","state":"queued","progress":{"percent":0,"records":0,"bytes":0},"files":[]}`)
		case "GET /v1/exports/j1/events":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "id: 1\nevent: job\ndata: {\"id\":\"j1\",\"kind\":\"records\",\"state\":\"processing\",\"progress\":{\"percent\":40,\"records\":400,\"bytes\":4000}}\n\n")
			fmt.Fprint(w, "id: 2\nevent: job\ndata: {\"id\":\"j1\",\"kind\":\"records\",\"state\":\"failed\",\"error\":\"the source went away\",\"progress\":{\"percent\":40}}\n\n")
		case "GET /v1/exports/j2":
			fmt.Fprintf(w, `{"id":"j2","kind":"room","format":"html","state":"completed","progress":{"percent":100,"records":3,"bytes":30},
				"files":[%s],"archive":%s,"manifest":%s}`, fileJSON(r, "general.html", 3), fileJSON(r, "general.zip", 0), fileJSON(r, "manifest.json", 0))
		case "GET /v1/exports/j3":
			fmt.Fprintf(w, `{"id":"j3","kind":"records","format":"csv","state":"canceled","error":"Canceled by user","progress":{"percent":40},
				"files":[],"partialFiles":[%s,%s]}`, fileJSON(r, "events.0.csv", 100), fileJSON(r, "events.1.csv", 100))
		case "POST /v1/exports/j1/cancel":
			problem(http.StatusConflict, "the export has already ended")
		default:
			problem(http.StatusNotFound, "export not found")
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// fileContent is what the fake gateway's signed links serve.
var fileContent = map[string]string{
	"general.html": "<html>general</html>", "general.zip": "PK zip bytes", "manifest.json": `{"files":[]}`,
	"events.0.csv": "id\n1\n", "events.1.csv": "id\n2\n",
}

// fileJSON is the native answer's entry of a file the fake gateway serves.
func fileJSON(r *http.Request, name string, records int) string {
	sum := sha256.Sum256([]byte(fileContent[name]))
	return fmt.Sprintf(`{"name":%q,"size":%d,"records":%d,"sha256":%q,"url":"http://%s/dl/%s"}`,
		name, len(fileContent[name]), records, hex.EncodeToString(sum[:]), r.Host, name)
}

func run(t *testing.T, url string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cfg := filepath.Join(t.TempDir(), "config.json")
	env := map[string]string{"DATAPORT_CONFIG": cfg, "DATAPORT_URL": url, "DATAPORT_USER": "u1", "DATAPORT_TOKEN": "tok"}
	code := Run(t.Context(), args, App{Getenv: func(k string) string { return env[k] }, Stdout: &out, Stderr: &errOut, Version: "test"})
	return code, out.String(), errOut.String()
}

func TestExportRecordsSendsEveryOption(t *testing.T) {
	t.Parallel()
	created := make(chan map[string]any, 1)
	srv := gateway(t, created)
	code, out, errOut := run(t, srv.URL, "export", "records", "transactions", "--format", "csv", "--org", "acme",
		"--fields", "id,amount", "--filter", "status:approved", "--sort", "-createdTime", "--q", "card",
		"--start", "-7 days", "--end", "now", "--date-field", "updatedTime", "--max-rows", "1000", "--max-bytes", "65536", "--gzip",
		"--every", "FREQ=DAILY", "--every-start", "2030-01-01T06:00:00Z",
		"--email", "ops@example.com", "--webhook", "https://hooks.example.com/x", "--name", "daily", "--idempotency-key", "k1")
	require.Equal(t, ExitOK, code, errOut)
	assert.Contains(t, out, "Export j1 created")
	want := map[string]any{
		"kind": "records", "format": "csv", "name": "daily",
		"records": map[string]any{
			"organizationId": "acme", "resource": "transactions", "fields": []any{"id", "amount"},
			"filter": "status:approved", "sort": "-createdTime", "q": "card",
			"dateRange": map[string]any{"start": "-7 days", "end": "now", "field": "updatedTime"},
			"chunking":  map[string]any{"maxRows": 1000.0, "maxBytes": 65536.0, "gzip": true},
		},
		"recurring": map[string]any{"instruction": "FREQ=DAILY", "start": "2030-01-01T06:00:00Z"},
		"notify":    map[string]any{"emails": []any{"ops@example.com"}, "webhooks": []any{"https://hooks.example.com/x"}},
	}
	assert.Equal(t, want, <-created)

	code, _, _ = run(t, srv.URL, "export", "room", "GENERAL", "--from", "2024-01-01", "--to", "2024-01-31", "--format", "html")
	require.Equal(t, ExitOK, code)
	assert.Equal(t, map[string]any{"kind": "room", "format": "html", "room": map[string]any{"id": "GENERAL", "from": "2024-01-01", "to": "2024-01-31"}}, <-created)
	code, _, _ = run(t, srv.URL, "export", "my-data", "--full", "--format", "json")
	require.Equal(t, ExitOK, code)
	assert.Equal(t, map[string]any{"kind": "user-data", "format": "json", "userData": map[string]any{"fullExport": true}}, <-created)
}

func TestExitCodesTellFailuresApart(t *testing.T) {
	t.Parallel()
	srv := gateway(t, make(chan map[string]any, 10))
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"invalid request", []string{"export", "records", "events", "--format", "docx"}, ExitInvalid, "  format: must be one of csv, json"},
		{"not found", []string{"status", "nope"}, ExitNotFound, "export not found"},
		{"conflict", []string{"cancel", "j1"}, ExitConflict, "already ended"},
		{"bad credentials", []string{"status", "j1", "--token", "wrong"}, ExitAuth, "DATAPORT_TOKEN"},
		{"export failed", []string{"status", "j1", "--watch", "--no-progress"}, ExitFailed, "export j1 failed: the source went away"},
		{"usage", []string{"status"}, ExitUsage, "accepts 1 arg"},
		{"unknown flag", []string{"list", "--nope"}, ExitUsage, "unknown flag"},
		{"bad output", []string{"list", "-o", "yaml"}, ExitUsage, "--output must be text or json"},
		{"unreachable", []string{"list", "--url", "http://127.0.0.1:1"}, ExitError, "connect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			code, _, errOut := run(t, srv.URL, tc.args...)
			assert.Equal(t, tc.code, code, errOut)
			assert.Contains(t, errOut, tc.stderr)
		})
	}
}

func TestWatchAsJSONPrintsEachChange(t *testing.T) {
	t.Parallel()
	srv := gateway(t, nil)
	code, out, _ := run(t, srv.URL, "status", "j1", "--watch", "-o", "json")
	assert.Equal(t, ExitFailed, code)
	assert.Equal(t, `{"id":"j1","kind":"records","state":"processing","progress":{"percent":40,"records":400,"bytes":4000}}`+"\n"+
		`{"id":"j1","kind":"records","state":"failed","error":"the source went away","progress":{"percent":40}}`+"\n", out)
}

func TestDescribeShowsRateAndETA(t *testing.T) {
	t.Parallel()
	e := &client.Export{State: "processing"}
	e.Progress.Percent, e.Progress.Records, e.Progress.Bytes = 50, 5000, 5_000_000
	assert.Equal(t, "processing · 5000 records · 5.0 MB · 1.0 MB/s · ETA 4s", describe(e, 4e9, 0, 0, 1_000_000))
}

// TestStatusAndDownloadShowArchiveManifestAndPartialFiles: status lists
// what the native answer holds beside the files, and download fetches
// each on request, verified.
func TestStatusAndDownloadShowArchiveManifestAndPartialFiles(t *testing.T) {
	t.Parallel()
	srv := gateway(t, nil)

	code, out, errOut := run(t, srv.URL, "status", "j2")
	require.Equal(t, ExitOK, code, errOut)
	assert.Regexp(t, `Files +general\.html  20 B  3 records`, out)
	assert.Regexp(t, `Archive +general\.zip  12 B  sha256 [0-9a-f]{64}`, out)
	assert.Regexp(t, `Manifest +manifest\.json  12 B  sha256 [0-9a-f]{64}`, out)

	code, out, errOut = run(t, srv.URL, "status", "j3")
	require.Equal(t, ExitOK, code, errOut)
	assert.Regexp(t, `Partial files +events\.0\.csv  5 B  100 records`, out)
	assert.Contains(t, out, "events.1.csv")
	assert.Contains(t, out, "dataport download j3 --partial")

	downloaded := func(t *testing.T, dir string) []string {
		entries, err := os.ReadDir(dir)
		require.NoError(t, err)
		var names []string
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			require.NoError(t, err)
			assert.Equal(t, fileContent[e.Name()], string(b), e.Name())
			names = append(names, e.Name())
		}
		return names
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"files", []string{"j2"}, []string{"general.html"}},
		{"archive and manifest", []string{"j2", "--archive", "--manifest"}, []string{"general.zip", "manifest.json"}},
		{"files and manifest", []string{"j2", "--manifest"}, []string{"general.html", "manifest.json"}},
		{"one by name", []string{"j2", "--file", "manifest.json"}, []string{"manifest.json"}},
		{"partial", []string{"j3", "--partial"}, []string{"events.0.csv", "events.1.csv"}},
		{"one partial", []string{"j3", "--partial", "--file", "events.1.csv"}, []string{"events.1.csv"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			code, out, errOut := run(t, srv.URL, append([]string{"download", "--no-progress", "--dir", dir}, tc.args...)...)
			require.Equal(t, ExitOK, code, errOut)
			assert.Equal(t, tc.want, downloaded(t, dir))
			assert.Contains(t, out, "verified (downloaded)")
		})
	}

	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"canceled without --partial", []string{"j3"}, ExitFailed, "kept 2 partial files: dataport download j3 --partial"},
		{"partial of a completed export", []string{"j2", "--partial"}, ExitNotFound, "not partial ones"},
		{"partial and archive", []string{"j3", "--partial", "--archive"}, ExitUsage, "none of the others can be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errOut := run(t, srv.URL, append([]string{"download", "--no-progress", "--dir", t.TempDir()}, tc.args...)...)
			assert.Equal(t, tc.code, code, errOut)
			assert.Contains(t, errOut, tc.stderr)
		})
	}
}
