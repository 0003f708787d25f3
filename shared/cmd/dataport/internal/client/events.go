package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Event is one server-sent event of an export stream.
type Event struct {
	// ID is the stream position; a stream resumed with it (Last-Event-ID)
	// continues after this event.
	ID     string
	Export *Export
}

// Follow calls fn with each change of the export id as the gateway pushes
// it (GET /v1/exports/{id}/events), starting with its current state, and
// returns nil once the export has ended. A dropped stream (the gateway
// restarting, a proxy timing out) is reopened from the last event's id,
// so fn sees every change once, in order; a change missed while away
// arrives folded into the export's current state. Errors of fn and API
// errors end the follow; connection failures are retried up to
// maxReconnects times in a row.
func (c *Client) Follow(ctx context.Context, id string, fn func(Event) error) error {
	path := "/v1/exports/" + url.PathEscape(id) + "/events"
	last := ""
	failures := 0
	delay := 500 * time.Millisecond
	for {
		ended, got, err := c.streamOnce(ctx, path, last, func(ev Event) error {
			last = ev.ID
			return fn(ev)
		}, &delay)
		switch {
		case ended:
			return nil
		case err != nil && (ctx.Err() != nil || isFinal(err)):
			return err
		}
		if got {
			failures = 0
		}
		failures++
		if failures > maxReconnects {
			if err == nil {
				err = errors.New("the stream ended before the export did")
			}
			return fmt.Errorf("follow export %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// maxReconnects bounds the reconnections of Follow that deliver nothing.
const maxReconnects = 10

// isFinal reports whether err is an answer no reconnection changes (a
// 4xx), or fn's own error.
func isFinal(err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Status < 500 && ae.Status != http.StatusTooManyRequests
	}
	var fe fnError
	return errors.As(err, &fe)
}

// fnError marks an error of the caller's callback.
type fnError struct{ error }

func (e fnError) Unwrap() error { return e.error }

// streamOnce reads one connection of the stream. ended is true once a
// terminal export was delivered or the gateway answered 204 (the client
// already saw the end); got says whether any event arrived.
func (c *Client) streamOnce(ctx context.Context, path, last string, fn func(Event) error, delay *time.Duration) (ended, got bool, err error) {
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return false, false, err
	}
	req.Header.Set("Accept", "text/event-stream")
	if last != "" {
		req.Header.Set("Last-Event-ID", last)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return false, false, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNoContent:
		return true, false, nil
	case resp.StatusCode != http.StatusOK:
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return false, false, problemOf(resp, data)
	}
	err = readEvents(resp.Body, func(f frame) error {
		if f.retry > 0 {
			*delay = f.retry
		}
		if f.data == "" {
			return nil
		}
		e, err := decodeExport([]byte(f.data))
		if err != nil {
			return err
		}
		got = true
		if err := fn(Event{ID: f.id, Export: e}); err != nil {
			return fnError{err}
		}
		if e.Terminal() {
			ended = true
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return ended, got, err
}

var errStop = errors.New("stop")

// frame is one parsed event of the text/event-stream format.
type frame struct {
	id, event, data string
	retry           time.Duration
}

// readEvents parses the event stream format (comments, id, event, data
// over several lines, retry) and calls fn at each blank line.
func readEvents(r io.Reader, fn func(frame) error) error {
	lines := bufio.NewScanner(r)
	lines.Buffer(make([]byte, 64<<10), 16<<20)
	var (
		f    frame
		data []string
		any  bool
	)
	for lines.Scan() {
		line := lines.Text()
		if line == "" {
			if any {
				f.data = strings.Join(data, "\n")
				if err := fn(f); err != nil {
					return err
				}
			}
			f, data, any = frame{}, nil, false
			continue
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		any = true
		switch field {
		case "id":
			f.id = value
		case "event":
			f.event = value
		case "data":
			data = append(data, value)
		case "retry":
			if ms, err := strconv.Atoi(value); err == nil && ms >= 0 {
				f.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	return lines.Err()
}
