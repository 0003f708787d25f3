package infra_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/infra"
	"dataport.dev/shared/infra/infratest"
)

// client is one raw HTTP/1.1 connection, so the test decides when it is
// opened, reused and closed (http.Client would pool them).
type client struct {
	conn net.Conn
	r    *bufio.Reader
}

// dial connects to addr, waiting for the server to listen: a connection
// refused before it does takes no slot, where a probe request would hold
// one until the server sees it closed.
func dial(t *testing.T, addr string) *client {
	t.Helper()
	var conn net.Conn
	require.Eventually(t, func() bool {
		var err error
		conn, err = net.Dial("tcp", addr)
		return err == nil
	}, 5*time.Second, 5*time.Millisecond)
	t.Cleanup(func() { _ = conn.Close() })
	// A safety net for a broken server, far beyond anything under test.
	require.NoError(t, conn.SetDeadline(time.Now().Add(30*time.Second)))
	return &client{conn: conn, r: bufio.NewReader(conn)}
}

func (c *client) send(path string) error {
	_, err := io.WriteString(c.conn, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
	return err
}

// answer reads one response; the body is returned read and closed.
func (c *client) answer() (*http.Response, string, error) {
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

func serveLimited(t *testing.T, max int, h http.Handler) string {
	t.Helper()
	addr := infratest.FreeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- infra.Serve(ctx, addr, h, infra.HTTPLimits{MaxConns: max}, time.Second, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() { cancel(); <-done })
	return addr
}

// More clients than the limit connect while every admitted request is
// still running: exactly the limit's worth reach the handler, the others
// are answered 503 with Retry-After at once (not left waiting), and once
// the running requests finish, every one of them has completed and a
// refused client that retries is served.
func TestServeHoldsAtMostMaxConnsAndRefusesTheRest(t *testing.T) {
	t.Parallel()
	const max, clients = 4, 20
	release := make(chan struct{})
	var running, peak atomic.Int64
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		defer running.Add(-1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		<-release
		_, _ = io.WriteString(w, "done")
	})
	addr := serveLimited(t, max, h)

	type result struct {
		status     int
		retryAfter string
		body       string
		err        error
	}
	results := make(chan result, clients)
	var wg sync.WaitGroup
	for range clients {
		c := dial(t, addr)
		wg.Go(func() {
			if err := c.send("/work"); err != nil {
				results <- result{err: err}
				return
			}
			resp, body, err := c.answer()
			r := result{err: err, body: body}
			if err == nil {
				r.status, r.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
			}
			results <- r
		})
	}
	// Every client beyond the limit has its answer while the admitted
	// ones are still held in the handler.
	for i := range clients - max {
		r := <-results
		require.NoError(t, r.err, "refused client %d", i)
		assert.Equal(t, http.StatusServiceUnavailable, r.status)
		assert.Equal(t, "1", r.retryAfter)
		assert.Contains(t, r.body, "retry")
	}
	require.Eventually(t, func() bool { return running.Load() == max }, 10*time.Second, time.Millisecond,
		"the limit's worth of requests are running")
	// net/http's client, which discards a response that comes before its
	// request, reads the refusal as the answer to its request.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/work")
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.Equal(t, "1", resp.Header.Get("Retry-After"))
	close(release)
	wg.Wait()
	close(results)
	ok := 0
	for r := range results {
		require.NoError(t, r.err)
		assert.Equal(t, http.StatusOK, r.status)
		assert.Equal(t, "done", r.body)
		ok++
	}
	assert.Equal(t, max, ok, "the admitted requests all completed")
	assert.EqualValues(t, max, peak.Load(), "never more requests than connections allowed")

	// A refused client that retries is served now that slots are free.
	require.Eventually(t, func() bool {
		c := dial(t, addr)
		defer c.conn.Close()
		if c.send("/work") != nil {
			return false
		}
		resp, body, err := c.answer()
		return err == nil && resp.StatusCode == http.StatusOK && body == "done"
	}, 5*time.Second, 10*time.Millisecond)
}

// Idle keep-alive connections do not keep a new client out: at the limit
// the one idle the longest is closed to make room, and the new client is
// served, not refused.
func TestServeClosesTheLongestIdleConnForANewOne(t *testing.T) {
	t.Parallel()
	const max = 3
	addr := serveLimited(t, max, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	var idle []*client
	for range max {
		c := dial(t, addr)
		require.NoError(t, c.send("/"))
		resp, _, err := c.answer()
		require.NoError(t, err)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		idle = append(idle, c)           // kept open: idle between requests
		time.Sleep(5 * time.Millisecond) // distinct idle times
	}

	for i := range 2 * max {
		c := dial(t, addr)
		require.NoError(t, c.send("/"))
		resp, body, err := c.answer()
		require.NoError(t, err, "new client %d", i)
		assert.Equal(t, http.StatusOK, resp.StatusCode, "new client %d", i)
		assert.Equal(t, "ok", body)
		idle = append(idle, c)
	}
	// The server holds the limit's worth of them, the first one (idle
	// the longest) not among them. Which of the newer ones it closed
	// depends on when the server saw each of them go idle, which may
	// differ by a scheduling delay from when its client read the answer.
	_, err := idle[0].r.ReadByte()
	assert.ErrorIs(t, err, io.EOF, "the client idle the longest was closed")
	open := 0
	for _, c := range idle {
		if c.send("/") != nil {
			continue
		}
		if resp, _, err := c.answer(); err == nil && resp.StatusCode == http.StatusOK {
			open++
		}
	}
	assert.Equal(t, max, open)
}
