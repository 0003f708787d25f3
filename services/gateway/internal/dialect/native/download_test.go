package native_test

import (
	"bytes"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
)

// completedRoomExport completes a room export of admin's with one file of
// content and returns its id and the file's signed link.
func completedRoomExport(t *testing.T, e *gatewaytest.Env, content []byte, sum string) (string, string) {
	t.Helper()
	id := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)
	key := "jobs/" + id + "/parts/0/general.json"
	_, err := e.MinIO.Store.Upload(t.Context(), gatewaytest.ExportBucket, key, bytes.NewReader(content), "application/json")
	require.NoError(t, err)
	apply(t, e, &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.New(e.Clock.Now()), Files: []*exportv1.File{
		{Name: "general.json", ObjectKey: key, Size: uint64(len(content)), Sha256: sum, ContentType: "application/json"},
	}})
	return id, gatewaytest.SignedLink(e.URL, id, "general.json")
}

// TestDownloadRanges: a download answers Range requests as net/http does
// (RFC 9110 section 14), so a client resumes an interrupted download
// instead of fetching it again, and If-Range makes sure the part it
// already has belongs to the same file.
func TestDownloadRanges(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{MinIO: true})
	content := []byte(strings.Repeat(`{"msg":"a line of a room export"}`+"\n", 2000))
	size := len(content)
	sum := strings.Repeat("ab", 32)
	etag := `"` + sum + `"`
	_, link := completedRoomExport(t, e, content, sum)
	get := func(t *testing.T, header ...string) gatewaytest.Response {
		t.Helper()
		h := http.Header{}
		for i := 0; i+1 < len(header); i += 2 {
			h.Set(header[i], header[i+1])
		}
		return e.Send(t, http.MethodGet, link, gatewaytest.Anonymous, h, "")
	}

	t.Run("whole file says ranges are accepted", func(t *testing.T) {
		r := get(t)
		require.Equal(t, http.StatusOK, r.Status)
		assert.Equal(t, "bytes", r.Header.Get("Accept-Ranges"))
		assert.Equal(t, etag, r.Header.Get("ETag"))
		assert.NotEmpty(t, r.Header.Get("Last-Modified"))
		assert.Equal(t, content, r.Body)
	})

	t.Run("single ranges", func(t *testing.T) {
		for _, tc := range []struct {
			rng        string
			start, end int // inclusive
		}{
			{"bytes=0-0", 0, 0},
			{"bytes=100-199", 100, 199},
			{"bytes=1000-", 1000, size - 1},
			{"bytes=-50", size - 50, size - 1},
			{"bytes=60000-" + strconv.Itoa(size*2), 60000, size - 1},
		} {
			t.Run(tc.rng, func(t *testing.T) {
				r := get(t, "Range", tc.rng)
				require.Equal(t, http.StatusPartialContent, r.Status, "%s", r.Body)
				assert.Equal(t, fmt.Sprintf("bytes %d-%d/%d", tc.start, tc.end, size), r.Header.Get("Content-Range"))
				assert.Equal(t, strconv.Itoa(tc.end-tc.start+1), r.Header.Get("Content-Length"))
				assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
				assert.Equal(t, etag, r.Header.Get("ETag"))
				assert.Equal(t, "private, no-store", r.Header.Get("Cache-Control"))
				assert.Equal(t, "attachment; filename=general.json", r.Header.Get("Content-Disposition"))
				assert.Equal(t, content[tc.start:tc.end+1], r.Body)
			})
		}
	})

	t.Run("several ranges are a multipart answer", func(t *testing.T) {
		r := get(t, "Range", "bytes=0-9,500-519,-5")
		require.Equal(t, http.StatusPartialContent, r.Status)
		mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		require.NoError(t, err)
		assert.Equal(t, "multipart/byteranges", mt)
		mr := multipart.NewReader(bytes.NewReader(r.Body), params["boundary"])
		for _, want := range [][2]int{{0, 9}, {500, 519}, {size - 5, size - 1}} {
			p, err := mr.NextPart()
			require.NoError(t, err)
			assert.Equal(t, fmt.Sprintf("bytes %d-%d/%d", want[0], want[1], size), p.Header.Get("Content-Range"))
			assert.Equal(t, "application/json", p.Header.Get("Content-Type"))
			got, err := io.ReadAll(p)
			require.NoError(t, err)
			assert.Equal(t, content[want[0]:want[1]+1], got)
		}
		_, err = mr.NextPart()
		assert.Equal(t, io.EOF, err)
	})

	t.Run("unsatisfiable range", func(t *testing.T) {
		r := get(t, "Range", "bytes="+strconv.Itoa(size)+"-")
		assert.Equal(t, http.StatusRequestedRangeNotSatisfiable, r.Status)
		assert.Equal(t, "bytes */"+strconv.Itoa(size), r.Header.Get("Content-Range"))
		assert.NotContains(t, string(r.Body), `{"msg"`, "no content")
	})

	t.Run("another range unit is ignored", func(t *testing.T) {
		r := get(t, "Range", "lines=1-2")
		assert.Equal(t, http.StatusOK, r.Status)
		assert.Equal(t, content, r.Body)
	})

	t.Run("malformed byte range", func(t *testing.T) {
		r := get(t, "Range", "bytes=9-1")
		assert.Equal(t, http.StatusRequestedRangeNotSatisfiable, r.Status)
	})

	t.Run("If-Range", func(t *testing.T) {
		r := get(t, "Range", "bytes=10-19", "If-Range", etag)
		require.Equal(t, http.StatusPartialContent, r.Status, "same file: the range")
		assert.Equal(t, content[10:20], r.Body)

		r = get(t, "Range", "bytes=10-19", "If-Range", `"`+strings.Repeat("cd", 32)+`"`)
		assert.Equal(t, http.StatusOK, r.Status, "another file: all of this one")
		assert.Equal(t, content, r.Body)

		r = get(t, "Range", "bytes=10-19", "If-Range", "W/"+etag)
		assert.Equal(t, http.StatusOK, r.Status, "If-Range compares strongly")
	})

	t.Run("conditional requests", func(t *testing.T) {
		r := get(t, "If-None-Match", etag)
		assert.Equal(t, http.StatusNotModified, r.Status)
		assert.Empty(t, r.Body)
		r = get(t, "If-Match", `"other"`)
		assert.Equal(t, http.StatusPreconditionFailed, r.Status)
	})

	t.Run("HEAD", func(t *testing.T) {
		r := e.Send(t, http.MethodHead, link, gatewaytest.Anonymous, nil, "")
		require.Equal(t, http.StatusOK, r.Status)
		assert.Equal(t, strconv.Itoa(size), r.Header.Get("Content-Length"))
		assert.Equal(t, etag, r.Header.Get("ETag"))
		assert.Equal(t, "bytes", r.Header.Get("Accept-Ranges"))
		assert.Empty(t, r.Body)
	})
}

// TestDownloadResumes: a download cut off halfway is completed by asking
// for the rest, If-Range with the ETag of the first answer, and the two
// pieces are the file.
func TestDownloadResumes(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{MinIO: true})
	content := []byte(strings.Repeat("0123456789abcdef", 64<<10)) // 1 MiB, many writes
	_, link := completedRoomExport(t, e, content, strings.Repeat("12", 32))

	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, link, nil)
	require.NoError(t, err)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	etag := resp.Header.Get("ETag")
	first := make([]byte, 300000)
	_, err = io.ReadFull(resp.Body, first)
	require.NoError(t, err)
	resp.Body.Close() // the connection drops mid-file

	h := http.Header{"Range": {"bytes=" + strconv.Itoa(len(first)) + "-"}, "If-Range": {etag}}
	rest := e.Send(t, http.MethodGet, link, gatewaytest.Anonymous, h, "")
	require.Equal(t, http.StatusPartialContent, rest.Status)
	assert.Equal(t, fmt.Sprintf("bytes %d-%d/%d", len(first), len(content)-1, len(content)), rest.Header.Get("Content-Range"))
	assert.True(t, bytes.Equal(content, append(first, rest.Body...)), "the resumed download is the file")
}
