package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/bus"
	"dataport.dev/shared/demo"
)

type rawAnswer struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    struct {
		IDRawExport   string `json:"idRawExport"`
		Status        string `json:"status"`
		Progress      string `json:"progress"`
		IsCancellable *bool  `json:"isCancellable"`
		ErrorMessage  string `json:"errorMessage"`
		Files         []struct {
			Link             string `json:"link"`
			TimestampExpires string `json:"timestampExpires"`
		} `json:"files"`
	} `json:"data"`
}

func rawCall(t *testing.T, s *stack, who credential, method, endpoint string, params url.Values) rawAnswer {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, s.gatewayURL+"/api/raw/v1/export/"+endpoint+"?"+params.Encode(), nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+who.APIKey)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	var a rawAnswer
	require.NoError(t, json.Unmarshal(b, &a), "%s %s: %s", method, endpoint, b)
	return a
}

// TestRawExportInChunks creates a myTracker raw export small chunks are
// forced on, and checks every row of the demo data arrives exactly once
// across the gzip-compressed chunk files.
func TestRawExportInChunks(t *testing.T) {
	s := startStackWith(t, stackOptions{env: []string{"DATAPORT_RAW_MAX_ROWS_PER_CHUNK=300"}})
	alice := s.user(t, "alice")

	want := 0
	for _, r := range demo.Generate().Records["events"] {
		// alice's raw exports are of her organization's events.
		if r.GetOrganizationId() == "acme" && r.GetFields().GetFields()["eventType"].GetStringValue() == "install" {
			want++
		}
	}
	require.Greater(t, want, 300, "the demo data must need several chunks")

	created := rawCall(t, s, alice, http.MethodPost, "create.json", url.Values{
		"event": {"installs"}, "selectors": {"id,eventType,appId,country,createdTime"},
		"dateFrom": {"2026-01-01"}, "dateTo": {"2026-12-31"},
	})
	require.Equal(t, 200, created.Code, "%+v", created)
	id := created.Data.IDRawExport
	require.NotEmpty(t, id)

	var got rawAnswer
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got = rawCall(t, s, alice, http.MethodGet, "get.json", url.Values{"idRawExport": {id}})
		assert.Equal(c, "Success!", got.Data.Status, "%+v", got.Data)
	}, 120*time.Second, 200*time.Millisecond)
	require.Len(t, got.Data.Files, (want+299)/300, "one file per 300 rows")

	// The record-exporter did the export; the room-exporter never saw its
	// task (the two consumers' filters do not overlap).
	jobID := `"job_id":"raw-` + id + `"`
	assert.Regexp(t, `"msg":"part uploaded"[^\n]*`+regexp.QuoteMeta(jobID), s.recordExporters[0].logText(t))
	assert.NotContains(t, s.exporters[0].logText(t), jobID)

	seen := map[string]bool{}
	chunkName := regexp.MustCompile(`/` + regexp.QuoteMeta(id) + `\.install\.[0-9a-f]{32}\.(\d+)\.csv\.gz\?`)
	for i, f := range got.Data.Files {
		m := chunkName.FindStringSubmatch(f.Link)
		if assert.NotNil(t, m, "chunk link %s", f.Link) {
			assert.Equal(t, strconv.Itoa(i), m[1], "chunks are numbered in order")
		}
		exp, err := strconv.ParseInt(f.TimestampExpires, 10, 64)
		require.NoError(t, err)
		assert.Greater(t, exp, time.Now().Unix(), "links expire in the future")

		zr, err := gzip.NewReader(bytesReader(download(t, f.Link)))
		require.NoError(t, err)
		sc := bufio.NewScanner(zr)
		header := true
		for sc.Scan() {
			if header {
				assert.Equal(t, "id,eventType,appId,country,createdTime", sc.Text())
				header = false
				continue
			}
			cols := strings.Split(sc.Text(), ",")
			assert.Equal(t, "install", cols[1])
			assert.False(t, seen[cols[0]], "row %s appears twice", cols[0])
			seen[cols[0]] = true
		}
		require.NoError(t, sc.Err())
	}
	assert.Len(t, seen, want, "every matching event exported once")
}

// TestRawExportCanceledWhileQueued cancels an export no exporter has
// started (the record-exporter is down): it ends "Canceled by user", and
// the record-exporter that comes back later writes nothing for it.
func TestRawExportCanceledWhileQueued(t *testing.T) {
	s := startStack(t)
	alice := s.user(t, "alice")
	s.recordExporters[0].stop()

	created := rawCall(t, s, alice, http.MethodPost, "create.json", url.Values{
		"event": {"payments"}, "selectors": {"id,revenue"}, "dateFrom": {"2026-01-01"}, "dateTo": {"2026-12-31"},
	})
	require.Equal(t, 200, created.Code)
	id := created.Data.IDRawExport
	status := rawCall(t, s, alice, http.MethodGet, "get.json", url.Values{"idRawExport": {id}})
	require.Equal(t, "In progress", status.Data.Status)
	require.NotNil(t, status.Data.IsCancellable)
	assert.True(t, *status.Data.IsCancellable)

	canceled := rawCall(t, s, alice, http.MethodPost, "cancel.json", url.Values{"idRawExport": {id}})
	assert.Equal(t, 200, canceled.Code, "%+v", canceled)
	status = rawCall(t, s, alice, http.MethodGet, "get.json", url.Values{"idRawExport": {id}})
	assert.Equal(t, "Canceled by user", status.Data.Status)

	s.recordExporters[0].start(t)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		pending, err := s.nats.JS.Consumer(context.Background(), bus.StreamExportTasks, bus.ConsumerRecordExporter)
		if !assert.NoError(c, err) {
			return
		}
		info, err := pending.Info(context.Background())
		if assert.NoError(c, err) {
			assert.Zero(c, info.NumPending+uint64(info.NumAckPending), "the canceled task is settled")
		}
	}, 60*time.Second, 200*time.Millisecond)
	objects, err := s.minio.Store.List(t.Context(), "dataport-exports", fmt.Sprintf("jobs/raw-%s/", id))
	require.NoError(t, err)
	assert.Empty(t, objects, "nothing is written for a canceled export")
	status = rawCall(t, s, alice, http.MethodGet, "get.json", url.Values{"idRawExport": {id}})
	assert.Equal(t, "Canceled by user", status.Data.Status)
}

func bytesReader(b []byte) io.Reader { return strings.NewReader(string(b)) }
