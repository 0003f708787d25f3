package native_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/dialect"
	"dataport.dev/services/gateway/internal/dialect/native"
	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/links"
)

// sseEvent is one server-sent event, or a comment (Comment set).
type sseEvent struct {
	ID, Event, Data, Comment string
}

func (ev sseEvent) rev(t *testing.T) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(ev.ID, 10, 64)
	require.NoError(t, err, "event id %q", ev.ID)
	return n
}

func (ev sseEvent) job(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(ev.Data), &v), "%s", ev.Data)
	return v
}

// sseStream is an open event stream read by a goroutine of its own.
type sseStream struct {
	resp   *http.Response
	events chan sseEvent
	// ended is closed when the server ends the answer.
	ended chan struct{}
	err   error
}

// openEvents opens url as c, resuming from lastID unless it is "", and
// fails unless the answer is a 200 event stream.
func openEvents(t *testing.T, url string, c gatewaytest.Creds, lastID string) *sseStream {
	t.Helper()
	s, resp := tryEvents(t, url, c, lastID)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	return s
}

func tryEvents(t *testing.T, url string, c gatewaytest.Creds, lastID string) (*sseStream, *http.Response) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("X-User-Id", c.User)
	req.Header.Set("X-Auth-Token", c.Token)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	s := &sseStream{resp: resp, events: make(chan sseEvent, 100), ended: make(chan struct{})}
	t.Cleanup(func() { cancel(); _ = resp.Body.Close(); <-s.ended })
	if resp.StatusCode != http.StatusOK {
		close(s.ended)
		return s, resp
	}
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	assert.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
	go func() {
		defer close(s.ended)
		lines := bufio.NewScanner(resp.Body)
		lines.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for lines.Scan() {
			line := lines.Text()
			switch {
			case line == "":
				if ev != (sseEvent{}) {
					s.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
				ev.Comment = strings.TrimSpace(line[1:])
			default:
				k, v, _ := strings.Cut(line, ":")
				v = strings.TrimPrefix(v, " ")
				switch k {
				case "id":
					ev.ID = v
				case "event":
					ev.Event = v
				case "data":
					ev.Data = v
				}
			}
		}
		s.err = lines.Err()
	}()
	return s, resp
}

// next returns the next job event, skipping the retry hint and comments.
func (s *sseStream) next(t *testing.T) sseEvent {
	t.Helper()
	for {
		select {
		case ev := <-s.events:
			if ev.Comment != "" || ev.Data == "" {
				continue
			}
			assert.Equal(t, native.EventJob, ev.Event)
			return ev
		case <-s.ended:
			if ev, ok := s.drained(); ok {
				return ev
			}
			t.Fatalf("the stream ended (%v) while an event was expected", s.err)
		case <-time.After(10 * time.Second):
			t.Fatal("no event within 10s")
		}
	}
}

// drained returns a job event the reader queued before the stream
// ended, which a select may see after the end.
func (s *sseStream) drained() (sseEvent, bool) {
	for {
		select {
		case ev := <-s.events:
			if ev.Data != "" {
				return ev, true
			}
		default:
			return sseEvent{}, false
		}
	}
}

// quiet asserts that no job event arrives for a while.
func (s *sseStream) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case ev := <-s.events:
			if ev.Data != "" {
				t.Fatalf("unexpected event %s: %s", ev.ID, ev.Data)
			}
		case <-deadline:
			return
		}
	}
}

// waitEnd asserts that the server ends the stream.
func (s *sseStream) waitEnd(t *testing.T) {
	t.Helper()
	for {
		select {
		case ev := <-s.events:
			if ev.Data != "" {
				t.Fatalf("unexpected event %s: %s", ev.ID, ev.Data)
			}
		case <-s.ended:
			if ev, ok := s.drained(); ok {
				t.Fatalf("unexpected event %s: %s", ev.ID, ev.Data)
			}
			return
		case <-time.After(10 * time.Second):
			t.Fatal("the stream is still open")
		}
	}
}

func progress(id string, percent uint32, records uint64) *exportv1.ExportProgress {
	return &exportv1.ExportProgress{JobId: id, OccurredAt: timestamppb.Now(), Part: 1, PartsTotal: 1,
		Progress: &exportv1.Progress{Percent: percent, Records: records, Bytes: records * 100}}
}

func TestJobEventsFollowTheJobInOrderAndEndWhenItDoes(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	id := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)
	s := openEvents(t, e.URL+"/v1/exports/"+id+"/events", gatewaytest.AsAdmin, "")

	first := s.next(t)
	assert.Equal(t, e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "").JSON(t), first.job(t),
		"an event's data is the job as GET /v1/exports/{id} answers it")
	assert.Equal(t, "pending", first.job(t)["state"])

	// Each change is awaited before the next is made: a record replaced
	// before the watch delivers it is folded into its successor.
	steps := []jobstore.Event{&exportv1.ExportQueued{JobId: id, OccurredAt: timestamppb.Now()}}
	for _, p := range []uint32{10, 40, 90} {
		steps = append(steps, progress(id, p, uint64(p)*10))
	}
	steps = append(steps, &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.Now(), Files: []*exportv1.File{
		{Name: "export.json", Size: 5, Records: 900, Sha256: strings.Repeat("ab", 32)},
	}})
	last := first.rev(t)
	var seen []string
	for _, step := range steps {
		apply(t, e, step)
		ev := s.next(t)
		require.Greater(t, ev.rev(t), last, "ids only grow")
		last = ev.rev(t)
		j := ev.job(t)
		seen = append(seen, j["state"].(string)+"/"+strconv.Itoa(int(j["progress"].(map[string]any)["percent"].(float64))))
		if j["state"] == "completed" {
			files := j["files"].([]any)
			require.Len(t, files, 1)
			assert.Equal(t, strings.Repeat("ab", 32), files[0].(map[string]any)["sha256"])
		}
	}
	assert.Equal(t, []string{"queued/0", "processing/10", "processing/40", "processing/90", "completed/100"}, seen)
	s.waitEnd(t)

	// Resumed after its last event, a finished job's stream answers 204,
	// which stops EventSource from reconnecting.
	_, resp := tryEvents(t, e.URL+"/v1/exports/"+id+"/events", gatewaytest.AsAdmin, strconv.FormatUint(last, 10))
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	// Resumed before it, the stream sends the final state and ends.
	s = openEvents(t, e.URL+"/v1/exports/"+id+"/events", gatewaytest.AsAdmin, strconv.FormatUint(first.rev(t), 10))
	ev := s.next(t)
	assert.Equal(t, last, ev.rev(t))
	assert.Equal(t, "completed", ev.job(t)["state"])
	s.waitEnd(t)
}

func TestJobEventsResumeWithoutGapsOrRepeats(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	id := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)
	url := e.URL + "/v1/exports/" + id + "/events"

	s := openEvents(t, url, gatewaytest.AsAdmin, "")
	s.next(t)
	apply(t, e, &exportv1.ExportQueued{JobId: id, OccurredAt: timestamppb.Now()})
	apply(t, e, progress(id, 20, 200))
	s.next(t)
	seen := s.next(t)
	require.Equal(t, 20.0, seen.job(t)["progress"].(map[string]any)["percent"])
	require.NoError(t, s.resp.Body.Close())

	// While the client is away the job moves on twice; the bucket keeps
	// its latest record, which holds both.
	apply(t, e, progress(id, 30, 300))
	apply(t, e, progress(id, 50, 500))

	s = openEvents(t, url, gatewaytest.AsAdmin, seen.ID)
	ev := s.next(t)
	assert.Greater(t, ev.rev(t), seen.rev(t))
	assert.Equal(t, 50.0, ev.job(t)["progress"].(map[string]any)["percent"], "the current state, nothing older")
	apply(t, e, progress(id, 70, 700))
	ev2 := s.next(t)
	assert.Greater(t, ev2.rev(t), ev.rev(t))
	assert.Equal(t, 70.0, ev2.job(t)["progress"].(map[string]any)["percent"])
	s.quiet(t, 300*time.Millisecond)

	// Resumed at the current position: nothing is repeated, and the next
	// change arrives.
	s = openEvents(t, url, gatewaytest.AsAdmin, ev2.ID)
	s.quiet(t, 300*time.Millisecond)
	apply(t, e, progress(id, 80, 800))
	assert.Equal(t, 80.0, s.next(t).job(t)["progress"].(map[string]any)["percent"])
}

func TestEventsAreTheCallersOnly(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	mine := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)

	r := e.Do(t, http.MethodGet, "/v1/exports/"+mine+"/events", gatewaytest.AsAdmin2, "")
	nativeError(t, r, http.StatusNotFound, msgNotFound)
	r = e.Do(t, http.MethodGet, "/v1/exports/nosuchjob/events", gatewaytest.AsAdmin, "")
	nativeError(t, r, http.StatusNotFound, msgNotFound)
	r = e.Do(t, http.MethodGet, "/v1/exports/"+mine+"/events", gatewaytest.Anonymous, "")
	nativeError(t, r, http.StatusUnauthorized, msgUnauthorized)
	r = e.Do(t, http.MethodGet, "/v1/exports/events", gatewaytest.Anonymous, "")
	nativeError(t, r, http.StatusUnauthorized, msgUnauthorized)
	_, resp := tryEvents(t, e.URL+"/v1/exports/"+mine+"/events", gatewaytest.AsAdmin, "not-a-position")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)
	assert.Equal(t, native.ProblemType, resp.Header.Get("Content-Type"))

	// The list stream starts with the caller's unfinished jobs and then
	// follows new ones; another user's never appear.
	s := openEvents(t, e.URL+"/v1/exports/events", gatewaytest.AsAdmin, "")
	assert.Equal(t, mine, s.next(t).job(t)["id"])
	theirs := roomExport(t, e, gatewaytest.AsAdmin2, gatewaytest.RoomGeneral)
	apply(t, e, progress(theirs, 10, 1))
	s.quiet(t, 300*time.Millisecond)
	newer := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)
	ev := s.next(t)
	assert.Equal(t, newer, ev.job(t)["id"])
	assert.Equal(t, "pending", ev.job(t)["state"])
	apply(t, e, progress(mine, 30, 3))
	apply(t, e, progress(theirs, 30, 3))
	apply(t, e, progress(newer, 60, 6))
	ev1, ev2 := s.next(t), s.next(t)
	assert.Equal(t, []any{mine, newer}, []any{ev1.job(t)["id"], ev2.job(t)["id"]})
	assert.Greater(t, ev2.rev(t), ev1.rev(t))
	s.quiet(t, 300*time.Millisecond)
	require.NoError(t, s.resp.Body.Close())

	// Resumed, the list stream replays every change after the position
	// for the caller's jobs (a job created meanwhile among them), in
	// order, once each.
	apply(t, e, progress(newer, 80, 8))
	apply(t, e, progress(theirs, 80, 8))
	third := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)
	apply(t, e, progress(mine, 90, 9))
	s = openEvents(t, e.URL+"/v1/exports/events", gatewaytest.AsAdmin, ev2.ID)
	var ids []any
	last := ev2.rev(t)
	for range 3 {
		ev := s.next(t)
		require.Greater(t, ev.rev(t), last)
		last = ev.rev(t)
		ids = append(ids, ev.job(t)["id"])
	}
	assert.Equal(t, []any{newer, third, mine}, ids)
	s.quiet(t, 300*time.Millisecond)
}

// A stream sends heartbeats while idle, and the server's shutdown ends
// it at once instead of waiting for the client to leave.
func TestEventStreamsHeartbeatAndEndOnShutdown(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	id := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)

	mux := chi.NewRouter()
	mux.Use(dialect.Authenticate(e.Auth, e.Keys))
	native.New(native.Config{
		Jobs: e.Jobs, Links: links.New("http://example.test", gatewaytest.LinkSecret(), time.Hour, nil),
		Heartbeat: 50 * time.Millisecond,
	}).Routes(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	// A write timeout far below the stream's life: every write renews it.
	srv := &http.Server{Handler: mux, WriteTimeout: 300 * time.Millisecond}
	infra.DrainOnShutdown(srv)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	base := "http://" + ln.Addr().String()

	job := openEvents(t, base+"/v1/exports/"+id+"/events", gatewaytest.AsAdmin, "")
	all := openEvents(t, base+"/v1/exports/events", gatewaytest.AsAdmin, "")
	job.next(t)
	all.next(t)
	beats := 0
	for beats < 10 {
		select {
		case ev := <-job.events:
			if ev.Comment == "heartbeat" {
				beats++
			}
		case <-job.ended:
			t.Fatalf("the stream ended (%v) after %d heartbeats", job.err, beats)
		case <-time.After(5 * time.Second):
			t.Fatal("no heartbeat")
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	require.NoError(t, srv.Shutdown(ctx), "shutdown waited for the open streams")
	assert.Less(t, time.Since(start), 5*time.Second)
	job.waitEnd(t)
	all.waitEnd(t)
	assert.True(t, errors.Is(<-served, http.ErrServerClosed))
	_, err = io.Copy(io.Discard, job.resp.Body)
	assert.NoError(t, err, "the stream ended cleanly, not cut")
}
