package httpapi_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
)

// TestEveryDialectsDownloadResumes: whichever dialect hands out the link
// (Rebilly through its download redirect), a download cut off after some
// bytes is resumed with Range and If-Range and the pieces are the file.
func TestEveryDialectsDownloadResumes(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{MinIO: true})
	content := []byte(strings.Repeat("a line of an export, long enough to cut in two\n", 5000))
	complete := func(t *testing.T, id, name string) {
		t.Helper()
		key := "jobs/" + id + "/parts/0/" + name
		_, err := e.MinIO.Store.Upload(t.Context(), gatewaytest.ExportBucket, key, bytes.NewReader(content), "application/octet-stream")
		require.NoError(t, err)
		_, err = e.Jobs.Apply(t.Context(), &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.Now(), Files: []*exportv1.File{
			{Name: name, ObjectKey: key, Size: uint64(len(content)), Sha256: strings.Repeat("5e", 32)},
		}})
		require.NoError(t, err)
	}
	rebillyKey := gatewaytest.APIKey(gatewaytest.UserAPIKey)
	trackerKey := gatewaytest.Bearer(gatewaytest.UserAPIKey)

	cases := []struct {
		name string
		// link creates and completes an export and returns the URL the
		// dialect gives for its file, and the credentials it needs.
		link func(t *testing.T) (string, gatewaytest.Creds)
	}{
		{"native", func(t *testing.T) (string, gatewaytest.Creds) {
			r := e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "json"}`)
			require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
			id := r.JSON(t)["exportId"].(string)
			complete(t, id, "general.json")
			v := e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "").JSON(t)
			return v["files"].([]any)[0].(map[string]any)["url"].(string), gatewaytest.Anonymous
		}},
		{"rocketchat", func(t *testing.T) (string, gatewaytest.Creds) {
			r := e.Do(t, http.MethodGet, "/api/v1/users.requestDataDownload", gatewaytest.AsUser, "")
			require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
			id := r.JSON(t)["exportOperation"].(map[string]any)["_id"].(string)
			complete(t, id, "data.zip")
			v := e.Do(t, http.MethodGet, "/api/v1/users.requestDataDownload", gatewaytest.AsUser, "").JSON(t)
			return v["url"].(string), gatewaytest.Anonymous
		}},
		{"rebilly", func(t *testing.T) (string, gatewaytest.Creds) {
			r := e.Do(t, http.MethodPost, "/data-exports", rebillyKey, `{"name": "n", "resource": "transactions", "format": "csv"}`)
			require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
			id := r.JSON(t)["id"].(string)
			complete(t, id, "export.csv")
			return e.URL + "/data-exports/" + id + "/download", rebillyKey
		}},
		{"mytracker", func(t *testing.T) (string, gatewaytest.Creds) {
			form := url.Values{"event": {"payments"}, "selectors": {"id,appId"}, "dateFrom": {"2026-05-01"}, "dateTo": {"2026-05-31"}}
			h := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
			r := e.Send(t, http.MethodPost, e.URL+"/api/raw/v1/export/create.json", trackerKey, h, form.Encode())
			require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
			n := r.JSON(t)["data"].(map[string]any)["idRawExport"].(string)
			jobs, err := e.Jobs.List(t.Context(), gatewaytest.UserID)
			require.NoError(t, err)
			var id string
			for _, j := range jobs {
				if fmt.Sprint(j.GetNumber()) == n {
					id = j.GetId()
				}
			}
			require.NotEmpty(t, id)
			complete(t, id, "export.csv.gz")
			v := e.Do(t, http.MethodGet, "/api/raw/v1/export/get.json?idRawExport="+n, trackerKey, "").JSON(t)
			return v["data"].(map[string]any)["files"].([]any)[0].(map[string]any)["link"].(string), gatewaytest.Anonymous
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			link, creds := tc.link(t)
			cut := len(content) / 3
			// The client follows redirects here, as browsers and curl -L
			// do, carrying Range and If-Range along.
			get := func(h http.Header) *http.Response {
				req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, link, nil)
				require.NoError(t, err)
				req.Header = h
				if creds.APIKey != "" {
					req.Header.Set("REB-APIKEY", creds.APIKey)
				}
				resp, err := http.DefaultClient.Do(req)
				require.NoError(t, err)
				t.Cleanup(func() { resp.Body.Close() })
				return resp
			}
			first := get(http.Header{"Range": {fmt.Sprintf("bytes=0-%d", cut-1)}})
			require.Equal(t, http.StatusPartialContent, first.StatusCode)
			var got bytes.Buffer
			_, err := got.ReadFrom(first.Body)
			require.NoError(t, err)
			etag := first.Header.Get("ETag")
			require.NotEmpty(t, etag)

			rest := get(http.Header{"Range": {fmt.Sprintf("bytes=%d-", cut)}, "If-Range": {etag}})
			require.Equal(t, http.StatusPartialContent, rest.StatusCode)
			assert.Equal(t, fmt.Sprintf("bytes %d-%d/%d", cut, len(content)-1, len(content)), rest.Header.Get("Content-Range"))
			_, err = got.ReadFrom(rest.Body)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(content, got.Bytes()), "the resumed download is the file")
		})
	}
}
