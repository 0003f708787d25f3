package native

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/infra"
)

// DefaultHeartbeat is how often an idle event stream sends a comment, well
// under the minute after which common proxies close a silent response.
const DefaultHeartbeat = 15 * time.Second

// EventJob is the name of every event of the streams: each carries the
// whole job, so a client replaces what it holds instead of merging
// deltas. (A name per kind of change, "error" among them, would also
// collide with EventSource's own error event.)
const EventJob = "job"

// retryMillis is the reconnection delay the streams suggest to
// EventSource clients.
const retryMillis = 2000

// jobEvents implements GET /v1/exports/{id}/events: the job's changes as
// server-sent events, ending after the event that shows it terminal.
func (a *API) jobEvents(w http.ResponseWriter, r *http.Request) {
	after, ok := lastEventID(w, r)
	if !ok {
		return
	}
	job := a.ownJob(w, r)
	if job == nil {
		return
	}
	if after > 0 && jobstore.Terminal(job.GetState()) {
		// The client has seen the last event when the record is no newer
		// than its position: 204 tells EventSource not to reconnect.
		_, rev, err := a.Jobs.GetRevision(r.Context(), job.GetId())
		if err != nil {
			a.internalError(w, r, "get job", err, "job_id", job.GetId())
			return
		}
		if rev <= after {
			w.WriteHeader(http.StatusNoContent)
			return
		}
	}
	feed, err := a.Jobs.Follow(r.Context(), job.GetId(), after)
	if err != nil {
		a.internalError(w, r, "follow job", err, "job_id", job.GetId())
		return
	}
	defer feed.Stop()
	a.stream(w, r, feed, job.GetOwnerId(), true)
}

// allEvents implements GET /v1/exports/events: the changes of every job of
// the caller as server-sent events, beginning with the current state of
// the unfinished ones (or, resumed, with every change after Last-Event-ID).
func (a *API) allEvents(w http.ResponseWriter, r *http.Request) {
	after, ok := lastEventID(w, r)
	if !ok {
		return
	}
	u := a.user(w, r)
	if u == nil {
		return
	}
	feed, err := a.Jobs.FollowOwner(r.Context(), u.GetId(), after)
	if err != nil {
		a.internalError(w, r, "follow jobs", err, "user_id", u.GetId())
		return
	}
	defer feed.Stop()
	a.stream(w, r, feed, u.GetId(), false)
}

// lastEventID reads the position a client resumes from: the
// Last-Event-ID header EventSource sends on reconnecting, or the
// lastEventId query parameter for a first connection that knows it.
func lastEventID(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	v := r.Header.Get("Last-Event-ID")
	if v == "" {
		v = r.URL.Query().Get("lastEventId")
	}
	if v == "" {
		return 0, true
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		WriteError(w, http.StatusBadRequest, "Last-Event-ID must be the id of an event of this API")
		return 0, false
	}
	return n, true
}

// stream writes feed's changes of owner's jobs until the client goes
// away, the server begins to shut down, the feed ends (the client
// reconnects with Last-Event-ID), or, with untilTerminal, a change shows
// the job terminal. Every write gets a fresh write deadline: the
// server's WriteTimeout would otherwise cut the stream a minute after it
// began.
func (a *API) stream(w http.ResponseWriter, r *http.Request, feed *jobstore.Feed, owner string, untilTerminal bool) {
	ctx := r.Context()
	rc := http.NewResponseController(w)
	write := func(s string) bool {
		if err := rc.SetWriteDeadline(time.Now().Add(a.WriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return false
		}
		if _, err := w.Write([]byte(s)); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	// nginx buffers responses unless told not to.
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if !write(fmt.Sprintf("retry: %d\n\n", retryMillis)) {
		return
	}
	heartbeat := time.NewTicker(a.Heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-infra.Draining(ctx):
			// The client reconnects, to this gateway's successor or
			// another replica, from its last event.
			return
		case <-heartbeat.C:
			if !write(": heartbeat\n\n") {
				return
			}
		case ch, open := <-feed.Changes():
			if !open {
				return
			}
			// Index entries are hints: a change may name another
			// owner's job, which this caller must not see.
			if ch.Job.GetOwnerId() != owner {
				continue
			}
			data, err := json.Marshal(a.view(ch.Job))
			if err != nil {
				a.log.ErrorContext(ctx, "encode job event", "job_id", ch.Job.GetId(), "error", err)
				return
			}
			if !write(fmt.Sprintf("id: %d\nevent: %s\ndata: %s\n\n", ch.Revision, EventJob, data)) {
				return
			}
			heartbeat.Reset(a.Heartbeat)
			if untilTerminal && jobstore.Terminal(ch.Job.GetState()) {
				return
			}
		}
	}
}

// eventRoutes registers the streams; the list's path is static, so chi
// matches it before /v1/exports/{id}.
func (a *API) eventRoutes(r chi.Router) {
	r.Get("/v1/exports/events", a.allEvents)
	r.Get("/v1/exports/{id}/events", a.jobEvents)
}
