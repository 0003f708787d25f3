package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestErrorsAreTheProblemDetails(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.Equal(t, "u1", r.Header.Get("X-User-Id"))
		assert.Equal(t, "tok", r.Header.Get("X-Auth-Token"))
		switch r.URL.Path {
		case "/v1/exports":
			assert.Equal(t, "key-1", r.Header.Get("Idempotency-Key"))
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusUnprocessableEntity)
			fmt.Fprint(w, `{"type":"https://dataport.dev/problems/invalid-request","title":"Invalid request","status":422,"detail":"format: must be one of csv","errors":[{"field":"format","message":"must be one of csv"}]}`)
		case "/v1/exports/x":
			w.WriteHeader(http.StatusBadGateway)
			fmt.Fprint(w, "upstream down")
		}
	}))
	t.Cleanup(srv.Close)
	c := &Client{BaseURL: srv.URL, User: "u1", Token: "tok"}

	_, err := c.Create(t.Context(), map[string]string{"kind": "records"}, "key-1")
	var ae *APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, 422, ae.Status)
	assert.Equal(t, []FieldError{{Field: "format", Message: "must be one of csv"}}, ae.Errors)
	assert.Equal(t, "Invalid request: format: must be one of csv (HTTP 422)", err.Error())

	_, err = c.Get(t.Context(), "x")
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, "Bad Gateway: upstream down (HTTP 502)", err.Error())
	assert.True(t, IsStatus(err, http.StatusBadGateway))
}

func TestReadEventsParsesTheFormat(t *testing.T) {
	t.Parallel()
	in := "retry: 1500\n\n: heartbeat\n\nid: 7\nevent: job\ndata: {\"a\":\ndata: 1}\n\nid:8\ndata:x\n\n"
	var got []frame
	require.NoError(t, readEvents(strings.NewReader(in), func(f frame) error { got = append(got, f); return nil }))
	require.Len(t, got, 3)
	assert.Equal(t, 1500, int(got[0].retry.Milliseconds()))
	assert.Equal(t, frame{id: "7", event: "job", data: "{\"a\":\n1}"}, got[1])
	assert.Equal(t, frame{id: "8", data: "x"}, got[2])
}

// eventServer serves a job's changes as the gateway does, dropping the
// connection after dropAfter events of the first connection; it records
// the Last-Event-ID of each connection.
type eventServer struct {
	mu        sync.Mutex
	states    []string
	dropAfter int
	resumed   []string
}

func (s *eventServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	last := r.Header.Get("Last-Event-ID")
	s.resumed = append(s.resumed, last)
	first := len(s.resumed) == 1
	s.mu.Unlock()
	from := 0
	if last != "" {
		n, _ := strconv.Atoi(last)
		from = n
		if from >= len(s.states) {
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprint(w, "retry: 10\n\n: heartbeat\n\n")
	for i := from; i < len(s.states); i++ {
		if first && i == s.dropAfter {
			return // the connection drops before the export ends
		}
		fmt.Fprintf(w, "id: %d\nevent: job\ndata: {\"id\":\"j\",\"state\":%q,\"progress\":{\"percent\":%d}}\n\n", i+1, s.states[i], i*20)
	}
}

func TestFollowResumesAfterADroppedStream(t *testing.T) {
	t.Parallel()
	es := &eventServer{states: []string{"pending", "queued", "processing", "processing", "completed"}, dropAfter: 2}
	srv := httptest.NewServer(es)
	t.Cleanup(srv.Close)
	c := &Client{BaseURL: srv.URL}
	var seen []string
	require.NoError(t, c.Follow(t.Context(), "j", func(ev Event) error {
		seen = append(seen, ev.ID+":"+ev.Export.State)
		return nil
	}))
	assert.Equal(t, []string{"1:pending", "2:queued", "3:processing", "4:processing", "5:completed"}, seen, "every change once, in order")
	assert.Equal(t, []string{"", "2"}, es.resumed)

	// The callback's error ends the follow as it is.
	boom := errors.New("boom")
	err := c.Follow(t.Context(), "j", func(Event) error { return boom })
	assert.ErrorIs(t, err, boom)
}

func TestFollowStopsOnAnAPIError(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprint(w, `{"title":"Not Found","status":404,"detail":"export not found"}`)
	}))
	t.Cleanup(srv.Close)
	err := (&Client{BaseURL: srv.URL}).Follow(context.Background(), "j", func(Event) error { return nil })
	assert.True(t, IsStatus(err, http.StatusNotFound), "%v", err)
}

// fileServer serves content with or without Range support, counting
// requests.
func fileServer(t *testing.T, content []byte, ranges bool) (*httptest.Server, *[]string) {
	var (
		mu   sync.Mutex
		seen []string
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Range"))
		mu.Unlock()
		assert.Empty(t, r.Header.Get("X-Auth-Token"), "a signed link needs no token")
		rg := r.Header.Get("Range")
		if !ranges || rg == "" {
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(content)
			return
		}
		from, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"))
		if from >= len(content) {
			w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
			return
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", from, len(content)-1, len(content)))
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(content[from:])
	}))
	t.Cleanup(srv.Close)
	return srv, &seen
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestDownloadResumesAndVerifies(t *testing.T) {
	t.Parallel()
	content := []byte(strings.Repeat("0123456789", 1000))
	for _, tc := range []struct {
		name    string
		ranges  bool
		part    []byte
		resumed int64
		want    []string
	}{
		{name: "fresh", ranges: true, want: []string{""}},
		{name: "resumed with 206", ranges: true, part: content[:4000], resumed: 4000, want: []string{"bytes=4000-"}},
		{name: "range ignored, 200 rewrites", ranges: false, part: content[:4000], want: []string{"bytes=4000-"}},
		{name: "part complete, 416", ranges: true, part: content, resumed: int64(len(content)), want: []string{"bytes=10000-"}},
		{name: "bad part, retried whole", ranges: true, part: []byte("garbage!"), want: []string{"bytes=8-", ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, seen := fileServer(t, content, tc.ranges)
			dir := t.TempDir()
			if tc.part != nil {
				require.NoError(t, os.WriteFile(filepath.Join(dir, "f.csv.part"), tc.part, 0o644))
			}
			c := &Client{}
			f := File{Name: "f.csv", Size: uint64(len(content)), SHA256: hexSum(content), URL: srv.URL + "/f"}
			d, err := c.Download(t.Context(), f, dir, nil)
			require.NoError(t, err)
			assert.Equal(t, tc.resumed, d.Resumed)
			assert.Equal(t, tc.want, *seen)
			got, err := os.ReadFile(filepath.Join(dir, "f.csv"))
			require.NoError(t, err)
			assert.Equal(t, content, got)
			assert.NoFileExists(t, filepath.Join(dir, "f.csv.part"))

			d, err = c.Download(t.Context(), f, dir, nil)
			require.NoError(t, err)
			assert.True(t, d.Skipped, "a complete, matching file is not fetched again")
		})
	}
}

func TestDownloadRefusesAMismatch(t *testing.T) {
	t.Parallel()
	srv, _ := fileServer(t, []byte("tampered"), true)
	dir := t.TempDir()
	f := File{Name: "f.csv", SHA256: hexSum([]byte("original")), URL: srv.URL + "/f"}
	_, err := (&Client{}).Download(t.Context(), f, dir, nil)
	require.ErrorIs(t, err, ErrChecksum)
	assert.NoFileExists(t, filepath.Join(dir, "f.csv"))
	assert.NoFileExists(t, filepath.Join(dir, "f.csv.part"))

	_, err = (&Client{}).Download(t.Context(), File{Name: "../evil", URL: srv.URL}, dir, nil)
	assert.ErrorContains(t, err, "refusing file name")
}
