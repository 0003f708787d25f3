package e2e

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/config"
	"dataport.dev/shared/demo"
)

// deliveredFile is a file as the native API lists it.
type deliveredFile struct {
	Name    string `json:"name"`
	Size    int64  `json:"size"`
	Records int    `json:"records"`
	SHA256  string `json:"sha256"`
	URL     string `json:"url"`
}

// deliveredJob is what the native API says of a job's deliverables.
type deliveredJob struct {
	ID           string                `json:"id"`
	State        string                `json:"state"`
	Error        string                `json:"error"`
	Progress     struct{ Records int } `json:"progress"`
	Files        []deliveredFile       `json:"files"`
	Manifest     *deliveredFile        `json:"manifest"`
	Archive      *deliveredFile        `json:"archive"`
	PartialFiles []deliveredFile       `json:"partialFiles"`
}

// jobManifest is manifest.json as a client reads it.
type jobManifest struct {
	Version int    `json:"version"`
	JobID   string `json:"jobId"`
	Kind    string `json:"kind"`
	Files   []struct {
		Name    string `json:"name"`
		Size    int64  `json:"size"`
		Records int    `json:"records"`
		SHA256  string `json:"sha256"`
	} `json:"files"`
	Archive *struct {
		Name   string `json:"name"`
		SHA256 string `json:"sha256"`
	} `json:"archive"`
	Parts []struct {
		Files []struct {
			Name    string `json:"name"`
			SHA256  string `json:"sha256"`
			Records int    `json:"records"`
			Missing bool   `json:"missing"`
		} `json:"files"`
	} `json:"parts"`
}

func getDelivered(t *testing.T, s *stack, who credential, id string) deliveredJob {
	t.Helper()
	var j deliveredJob
	require.Equal(t, http.StatusOK, call(t, http.MethodGet, s.gatewayURL+"/v1/exports/"+id, &who, nil, &j))
	return j
}

func waitDelivered(t *testing.T, s *stack, who credential, id string, states ...string) deliveredJob {
	t.Helper()
	var j deliveredJob
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		j = getDelivered(t, s, who, id)
		assert.Contains(c, states, j.State, "job error: %q", j.Error)
	}, 120*time.Second, 100*time.Millisecond)
	return j
}

// fetch downloads f through its signed link and checks its bytes against
// the listed size and SHA-256.
func fetch(t *testing.T, f deliveredFile) []byte {
	t.Helper()
	require.NotEmpty(t, f.URL, "%s has a link", f.Name)
	body := download(t, f.URL)
	assert.EqualValues(t, f.Size, len(body), "%s size", f.Name)
	sum := sha256.Sum256(body)
	assert.Equal(t, f.SHA256, hex.EncodeToString(sum[:]), "%s sha256", f.Name)
	return body
}

// readManifest downloads the job's manifest and checks that it names
// every file as listed, with the bytes' SHA-256.
func readManifest(t *testing.T, j deliveredJob) jobManifest {
	t.Helper()
	require.NotNil(t, j.Manifest, "a completed export carries a manifest")
	var m jobManifest
	require.NoError(t, json.Unmarshal(fetch(t, *j.Manifest), &m))
	assert.Equal(t, 1, m.Version)
	assert.Equal(t, j.ID, m.JobID)
	require.Len(t, m.Files, len(j.Files))
	for i, f := range j.Files {
		assert.Equal(t, f.Name, m.Files[i].Name)
		assert.Equal(t, f.SHA256, m.Files[i].SHA256)
		assert.Equal(t, f.Size, m.Files[i].Size)
		assert.Equal(t, f.Records, m.Files[i].Records)
	}
	return m
}

func jsonLines(b []byte) int { return strings.Count(string(b), "\n") }

// TestEveryDeliveryCarriesAManifest: a room export of type file and a
// chunked record export each carry manifest.json beside their files; the
// room's attachments come zipped with its document under assets/, and an
// attachment whose file was deleted is listed as missing, not a broken
// entry or a failed export.
func TestEveryDeliveryCarriesAManifest(t *testing.T) {
	s := startStack(t)
	admin := s.user(t, "admin")

	// One of #general's attached files is deleted before the export.
	var gone, goneName string
	for _, m := range demo.Generate().Messages[demo.GeneralRoomID] {
		if len(m.GetAttachments()) > 0 {
			a := m.GetAttachments()[0]
			gone, goneName = a.GetObjectKey(), "assets/"+a.GetFileId()
			break
		}
	}
	require.NotEmpty(t, gone, "the demo's #general has attachments")
	require.NoError(t, s.minio.Store.Delete(t.Context(), config.DefaultAssetBucket, gone))

	var created struct {
		ExportID string `json:"exportId"`
	}
	require.Equal(t, http.StatusOK, call(t, http.MethodPost, s.gatewayURL+"/api/v1/rooms.export", &admin,
		map[string]string{"rid": "GENERAL", "type": "file", "format": "json"}, &created))
	room := waitDelivered(t, s, admin, created.ExportID, "completed")
	require.Len(t, room.Files, 1, "the room document stays the export's one file")
	doc := fetch(t, room.Files[0])
	m := readManifest(t, room)
	assert.Equal(t, "room", m.Kind)

	require.NotNil(t, room.Archive, "a room with attachments comes zipped with them")
	zipped := fetch(t, *room.Archive)
	require.NotNil(t, m.Archive)
	assert.Equal(t, room.Archive.SHA256, m.Archive.SHA256)
	zr, err := zip.NewReader(bytes.NewReader(zipped), int64(len(zipped)))
	require.NoError(t, err)
	entries := map[string][]byte{}
	for _, zf := range zr.File {
		rc, err := zf.Open()
		require.NoError(t, err)
		b, err := io.ReadAll(rc)
		require.NoError(t, err)
		rc.Close()
		entries[zf.Name] = b
	}
	assert.Equal(t, doc, entries["general.json"], "the zip holds the same document")
	require.Contains(t, entries, "manifest.json")

	// Every assets/ link of the document is an entry whose bytes the
	// manifest vouches for, or listed as missing.
	var body struct {
		Messages []struct {
			Attachments []struct {
				TitleLink string `json:"title_link"`
			} `json:"attachments"`
		} `json:"messages"`
	}
	require.NoError(t, json.Unmarshal(doc, &body))
	listed := map[string]bool{} // name -> missing
	for _, p := range m.Parts {
		for _, f := range p.Files {
			listed[f.Name] = f.Missing
			if !f.Missing {
				sum := sha256.Sum256(entries[f.Name])
				assert.Equal(t, f.SHA256, hex.EncodeToString(sum[:]), "manifest sha256 of %s", f.Name)
			}
		}
	}
	links, missing := 0, 0
	for _, msg := range body.Messages {
		for _, a := range msg.Attachments {
			if !strings.HasPrefix(a.TitleLink, "assets/") {
				continue
			}
			links++
			isMissing, ok := listed[a.TitleLink]
			require.True(t, ok, "%s is listed in the manifest", a.TitleLink)
			if isMissing {
				missing++
				assert.True(t, strings.HasPrefix(a.TitleLink, goneName), "only the deleted file is missing: %s", a.TitleLink)
				assert.NotContains(t, entries, a.TitleLink)
			} else {
				assert.Contains(t, entries, a.TitleLink)
			}
		}
	}
	assert.Positive(t, links)
	assert.Positive(t, missing, "the deleted file is listed as missing")

	// A chunked record export: every chunk in the manifest, byte-checked.
	var rec deliveredJob
	require.Equal(t, http.StatusCreated, call(t, http.MethodPost, s.gatewayURL+"/v1/exports", &admin, map[string]any{
		"kind": "records", "format": "jsonl",
		"records": map[string]any{"resource": "events", "chunking": map[string]any{"maxRows": 1000}},
	}, &rec))
	rec = waitDelivered(t, s, admin, rec.ID, "completed")
	require.Greater(t, len(rec.Files), 1, "chunked")
	m = readManifest(t, rec)
	assert.Equal(t, "records", m.Kind)
	total := 0
	for _, f := range rec.Files {
		assert.Equal(t, f.Records, jsonLines(fetch(t, f)), "%s holds as many lines as it says", f.Name)
		total += f.Records
	}
	assert.Equal(t, rec.Progress.Records, total)
}

// gunzipLines counts the lines of a gzip-compressed chunk.
func gunzipLines(t *testing.T, b []byte) int {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	require.NoError(t, err)
	raw, err := io.ReadAll(zr)
	require.NoError(t, err)
	return jsonLines(raw)
}

// TestCanceledChunkedExportKeepsFinishedChunks: canceling a chunked
// record export mid-way keeps the chunks it finished, answered as
// partialFiles with signed links; each holds whole records.
func TestCanceledChunkedExportKeepsFinishedChunks(t *testing.T) {
	s := startStack(t)
	admin := s.user(t, "admin")
	var j deliveredJob
	require.Equal(t, http.StatusCreated, call(t, http.MethodPost, s.gatewayURL+"/v1/exports", &admin, map[string]any{
		"kind": "records", "format": "jsonl",
		// Every chat message in gzip chunks of the fewest rows allowed:
		// hundreds of uploads, seconds of work.
		"records": map[string]any{"resource": "messages", "chunking": map[string]any{"maxRows": 100, "gzip": true}},
	}, &j))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		cur := getDelivered(t, s, admin, j.ID)
		assert.GreaterOrEqual(c, cur.Progress.Records, 300, "state %s", cur.State)
		assert.NotEqual(c, "completed", cur.State, "the export must still run when it is canceled")
	}, 60*time.Second, 5*time.Millisecond)
	require.Equal(t, http.StatusOK, call(t, http.MethodPost, s.gatewayURL+"/v1/exports/"+j.ID+"/cancel", &admin, nil, nil))
	var ended deliveredJob
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ended = getDelivered(t, s, admin, j.ID)
		assert.Equal(c, "canceled", ended.State)
		assert.NotEmpty(c, ended.PartialFiles, "finished chunks are announced")
	}, 60*time.Second, 100*time.Millisecond)
	assert.Empty(t, ended.Files)
	for _, f := range ended.PartialFiles {
		assert.Equal(t, 100, f.Records, f.Name)
		assert.Equal(t, 100, gunzipLines(t, fetch(t, f)), "%s holds its records", f.Name)
	}
}

// TestByteCapKeepsFinishedChunks: a chunked record export that goes over
// the byte cap is rejected ("Too much export data") and keeps the chunks
// finished under the cap as partial results.
func TestByteCapKeepsFinishedChunks(t *testing.T) {
	s := startStackWith(t, stackOptions{env: []string{"DATAPORT_RECORD_MAX_BYTES=65536"}})
	admin := s.user(t, "admin")
	var j deliveredJob
	require.Equal(t, http.StatusCreated, call(t, http.MethodPost, s.gatewayURL+"/v1/exports", &admin, map[string]any{
		"kind": "records", "format": "jsonl",
		"records": map[string]any{"resource": "events", "chunking": map[string]any{"maxRows": 100}},
	}, &j))
	ended := waitDelivered(t, s, admin, j.ID, "rejected", "failed")
	assert.Equal(t, "rejected", ended.State)
	assert.Contains(t, ended.Error, "Too much export data")
	require.NotEmpty(t, ended.PartialFiles)
	var size int64
	for _, f := range ended.PartialFiles {
		assert.Equal(t, 100, f.Records, f.Name)
		assert.Equal(t, 100, jsonLines(fetch(t, f)), f.Name)
		size += f.Size
	}
	assert.LessOrEqual(t, size, int64(65536), "the kept chunks fit under the cap")
}
