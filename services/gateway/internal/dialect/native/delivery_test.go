package native_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
)

// stored uploads content under the job's files and returns its record.
func stored(t *testing.T, e *gatewaytest.Env, id, name string, content []byte, records uint64) *exportv1.File {
	t.Helper()
	key := "jobs/" + id + "/files/" + name
	_, err := e.MinIO.Store.Upload(t.Context(), gatewaytest.ExportBucket, key, bytes.NewReader(content), "application/octet-stream")
	require.NoError(t, err)
	sum := sha256.Sum256(content)
	return &exportv1.File{Name: name, ObjectKey: key, Size: uint64(len(content)), Records: records, Sha256: hex.EncodeToString(sum[:])}
}

type deliveredFile struct {
	Name    string `json:"name"`
	Size    uint64 `json:"size"`
	Records uint64 `json:"records"`
	SHA256  string `json:"sha256"`
	URL     string `json:"url"`
}

type deliveredJob struct {
	State        string          `json:"state"`
	Files        []deliveredFile `json:"files"`
	Manifest     *deliveredFile  `json:"manifest"`
	Archive      *deliveredFile  `json:"archive"`
	PartialFiles []deliveredFile `json:"partialFiles"`
}

func getDelivered(t *testing.T, e *gatewaytest.Env, id string) deliveredJob {
	t.Helper()
	r := e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "")
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	var j deliveredJob
	require.NoError(t, json.Unmarshal(r.Body, &j))
	return j
}

// downloadsAs checks that f's signed link serves exactly want.
func downloadsAs(t *testing.T, e *gatewaytest.Env, f deliveredFile, want []byte) {
	t.Helper()
	require.NotEmpty(t, f.URL, "%s has a link", f.Name)
	r := e.Send(t, http.MethodGet, f.URL, gatewaytest.Anonymous, nil, "")
	require.Equal(t, http.StatusOK, r.Status, "%s: %s", f.Name, r.Body)
	assert.Equal(t, want, r.Body, f.Name)
	sum := sha256.Sum256(r.Body)
	assert.Equal(t, f.SHA256, hex.EncodeToString(sum[:]), "%s: the listed SHA-256 is the bytes'", f.Name)
	assert.EqualValues(t, len(want), f.Size)
}

// TestCompletedExportAnswersManifestAndArchive: a completed job's manifest
// and archive are answered beside its files (which stay the data files)
// and download through signed links like them.
func TestCompletedExportAnswersManifestAndArchive(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{MinIO: true})
	id := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)
	doc, manifest, zipped := []byte(`{"messages":[]}`), []byte(`{"version":1}`+"\n"), []byte("PK zip bytes")
	apply(t, e, &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.New(e.Clock.Now()),
		Files:    []*exportv1.File{stored(t, e, id, "general.json", doc, 0)},
		Manifest: stored(t, e, id, "manifest.json", manifest, 0),
		Archive:  stored(t, e, id, "general.zip", zipped, 1),
	})
	j := getDelivered(t, e, id)
	require.Len(t, j.Files, 1, "the manifest and the archive are not among the files")
	downloadsAs(t, e, j.Files[0], doc)
	require.NotNil(t, j.Manifest)
	assert.Equal(t, "manifest.json", j.Manifest.Name)
	downloadsAs(t, e, *j.Manifest, manifest)
	require.NotNil(t, j.Archive)
	assert.Equal(t, "general.zip", j.Archive.Name)
	downloadsAs(t, e, *j.Archive, zipped)
	assert.Empty(t, j.PartialFiles)
}

// TestEndedExportAnswersPartialResults: what a failed or canceled job kept
// (ExportFailed.partial_files, a canceled part's partial PartUploaded) is
// answered as partialFiles with signed links, once each; a completed job
// has none, and partial files of an unfinished job are not downloadable.
func TestEndedExportAnswersPartialResults(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{MinIO: true})
	chunk := func(id, name string) ([]byte, *exportv1.File) {
		content := []byte("id,amount\n1,2\n" + name + "\n")
		return content, stored(t, e, id, name, content, 2)
	}

	t.Run("failed", func(t *testing.T) {
		id := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)
		c0, f0 := chunk(id, "tx.0.csv")
		c1, f1 := chunk(id, "tx.1.csv")
		link := gatewaytest.SignedLink(e.URL, id, "tx.0.csv")
		assert.Equal(t, http.StatusNotFound, e.Send(t, http.MethodGet, link, gatewaytest.Anonymous, nil, "").Status,
			"nothing is downloadable before the job ends")
		apply(t, e, &exportv1.ExportFailed{JobId: id, OccurredAt: timestamppb.New(e.Clock.Now()), Reason: "Too much export data",
			Rejected: true, PartialFiles: []*exportv1.File{f0, f1}})
		j := getDelivered(t, e, id)
		assert.Equal(t, "rejected", j.State)
		assert.Empty(t, j.Files)
		assert.Nil(t, j.Manifest)
		require.Len(t, j.PartialFiles, 2)
		downloadsAs(t, e, j.PartialFiles[0], c0)
		downloadsAs(t, e, j.PartialFiles[1], c1)
	})

	t.Run("canceled", func(t *testing.T) {
		id := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)
		c0, f0 := chunk(id, "tx.0.csv")
		apply(t, e, &exportv1.ExportCanceled{JobId: id, OccurredAt: timestamppb.New(e.Clock.Now()), Reason: "Canceled by user"})
		part := &exportv1.PartUploaded{JobId: id, OccurredAt: timestamppb.New(e.Clock.Now()), PartsTotal: 1,
			Files: []*exportv1.File{f0}, Partial: true}
		apply(t, e, part)
		apply(t, e, part) // announced again: listed once
		j := getDelivered(t, e, id)
		assert.Equal(t, "canceled", j.State)
		require.Len(t, j.PartialFiles, 1)
		downloadsAs(t, e, j.PartialFiles[0], c0)
	})
}
