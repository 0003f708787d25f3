package httpapi_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
)

// completedJob stores a completed job of admin's with one file of content.
func completedJob(t *testing.T, e *gatewaytest.Env, id, name string, content []byte, contentType string) {
	t.Helper()
	ctx := t.Context()
	key := "jobs/" + id + "/parts/0/" + name
	_, err := e.MinIO.Store.Upload(ctx, gatewaytest.ExportBucket, key, bytes.NewReader(content), contentType)
	require.NoError(t, err)
	job := &exportv1.Job{
		Id: id, OwnerId: gatewaytest.AdminID, Kind: exportv1.JobKind_JOB_KIND_ROOM, Format: exportv1.Format_FORMAT_HTML,
		State: exportv1.JobState_JOB_STATE_PROCESSING, CreatedAt: timestamppb.Now(), UpdatedAt: timestamppb.Now(),
	}
	_, err = e.Jobs.Apply(ctx, &exportv1.ExportRequested{JobId: id, OccurredAt: job.GetCreatedAt(), Job: job})
	require.NoError(t, err)
	f := &exportv1.File{Name: name, ObjectKey: key, Size: uint64(len(content)), ContentType: contentType}
	_, err = e.Jobs.Apply(ctx, &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.Now(), Files: []*exportv1.File{f}})
	require.NoError(t, err)
}

// TestDownloadOutlastsTheServerWriteTimeout: the server's write timeout
// has run out before the handler writes a byte (it is 1ns), so an ordinary
// answer cannot be sent at all; a download still streams in full because
// it renews the deadline before every write.
func TestDownloadOutlastsTheServerWriteTimeout(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{MinIO: true, WriteTimeout: time.Nanosecond})
	content := []byte(strings.Repeat("<p>a line of a big export</p>\n", 20000)) // ~600 KB, many writes
	completedJob(t, e, "BigDownload000001", "big.html", content, "text/html; charset=utf-8")

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.URL+"/v1/exports", nil)
	require.NoError(t, err)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		require.Error(t, err, "precondition: the server's write timeout cuts off an ordinary answer")
	}

	resp, err := http.Get(gatewaytest.SignedLink(e.URL, "BigDownload000001", "big.html"))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.True(t, bytes.Equal(content, body), "the whole file arrives (%d of %d bytes)", len(body), len(content))
	assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
}

// TestSlowBodyIsRefusedBeforeAnyWork: a client that sends its headers and
// part of the body, then stalls, gets a 408 in the route's dialect once
// the body timeout passes, and no job is created. The client never sends
// the rest, so only the server's deadline can end the wait.
func TestSlowBodyIsRefusedBeforeAnyWork(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{BodyTimeout: 100 * time.Millisecond})
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.URL, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "POST "+roomsExport+" HTTP/1.1\r\nHost: gateway\r\n"+
		"X-User-Id: "+gatewaytest.AdminID+"\r\nX-Auth-Token: "+gatewaytest.AdminToken+"\r\n"+
		"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"+`{"rid": "GENERAL", `)
	require.NoError(t, err)
	// A safety net for a broken server, far beyond the timeout under test.
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err, "the server answers instead of waiting for the rest of the body")
	defer resp.Body.Close()
	assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode)
	var body map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	assert.Equal(t, false, body["success"], "Rocket.Chat's error shape")
	assert.Equal(t, "error-request-timeout", body["errorType"])

	jobs, err := e.Jobs.List(t.Context(), gatewaytest.AdminID)
	require.NoError(t, err)
	assert.Empty(t, jobs, "no job was created")
}

func TestOversizedBodyIsRefused(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{MaxBody: 64})
	big := `{"rid": "GENERAL", "type": "file", "format": "json", "pad": "` + strings.Repeat("x", 100) + `"}`
	cases := []struct {
		name    string
		chunked bool
	}{
		{"declared length", false},
		// Without Content-Length the limit applies while reading.
		{"chunked", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var rd io.Reader = strings.NewReader(big)
			if tc.chunked {
				rd = io.MultiReader(rd) // hides the length from net/http
			}
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.URL+roomsExport, rd)
			require.NoError(t, err)
			req.Header.Set("X-User-Id", gatewaytest.AdminID)
			req.Header.Set("X-Auth-Token", gatewaytest.AdminToken)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
			var body map[string]any
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			assert.Equal(t, "error-request-too-large", body["errorType"])
			assert.Contains(t, body["error"], "at most 64 bytes")
		})
	}
	jobs, err := e.Jobs.List(t.Context(), gatewaytest.AdminID)
	require.NoError(t, err)
	assert.Empty(t, jobs)

	// A body within the limit still reaches the handler.
	r := e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "json"}`)
	assert.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
}
