package infra

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// DefaultMaxConns is the default of HTTPLimits.MaxConns. Every open
// connection costs the server a goroutine and its buffers (30 to 50 KiB
// measured on the gateway under load) whether a request runs on it or
// not, so the limit is what bounds a replica's memory when clients open
// connections faster than it answers: at 1,024 the gateway peaked at
// 81 MiB during 2,000 polls a second on a saturated machine, against
// 28 MiB idle. 512 is twice the gateway's cap on requests in flight, so
// the requests it serves and as many again waiting or idle fit.
const DefaultMaxConns = 512

// refusalWait bounds how long a refused connection is served: the time
// for its client to send its request's headers, take the answer and hang
// up. The refuser answers only after the headers, since a response that
// comes before its request is one an HTTP client discards ("unsolicited
// response"), and closes only after the client, since closing a socket
// whose request is still unread sends a reset, which may make the client
// drop the answer unread (net/http lingers for the same reason).
const refusalWait = time.Second

// maxRefusing bounds the refused connections served at once (each a
// goroutine and a small buffer, about 10 KiB), so that a flood of them
// costs a fixed amount; beyond it a refused connection is closed at once,
// and its client sees the connection end without an answer.
const maxRefusing = 128

// connLimit is a listener that holds at most max connections open. At the
// limit it first closes the connection that has been idle (between
// keep-alive requests) the longest, so idle keep-alives never keep a new
// client out; only when every connection is busy is the new one refused:
// answered 503 with Retry-After as soon as its request's headers are in,
// and closed.
//
// Refusing rather than leaving the connection unaccepted (as
// netutil.LimitListener does) is deliberate: an unaccepted connection
// waits in the kernel's backlog, where its client hears nothing until its
// own timeout, and an open-model client (a browser, a load balancer, a
// load generator) opens still more meanwhile; a 503 tells it at once to
// back off or try another replica, as the gateway's cap on requests in
// flight does for requests.
type connLimit struct {
	net.Listener
	max     int
	refusal []byte
	log     *slog.Logger

	mu   sync.Mutex
	open int
	// idle holds the connections waiting for their next request, with
	// when they became idle.
	idle map[net.Conn]time.Time
	// refusing counts the refused connections being answered.
	refusing int
	// refused counts refusals since lastWarned, so a flood is one warning
	// every warnEvery, not one line per connection.
	refused    int
	lastWarned time.Time
}

const warnEvery = 10 * time.Second

func newConnLimit(ln net.Listener, max int, log *slog.Logger) *connLimit {
	body := fmt.Sprintf("the server has as many connections open as it can (%d); retry in 1 s\n", max)
	refusal := fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"+
		"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	return &connLimit{Listener: ln, max: max, refusal: []byte(refusal), log: log, idle: map[net.Conn]time.Time{}}
}

// Accept returns the next connection the limit admits, refusing those it
// does not on the way.
func (l *connLimit) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		if l.open < l.max {
			l.open++
			l.mu.Unlock()
			return &limitedConn{Conn: c, l: l}, nil
		}
		victim := l.oldestIdle()
		if victim == nil {
			l.mu.Unlock()
			l.refuse(c)
			continue
		}
		// The victim's slot passes to c: the count stays as it is, and
		// the victim's Close does not give the slot back.
		delete(l.idle, victim)
		victim.(*limitedConn).handedOver = true
		l.mu.Unlock()
		_ = victim.(*limitedConn).Conn.Close()
		return &limitedConn{Conn: c, l: l}, nil
	}
}

// oldestIdle is the connection idle the longest, or nil. Called with mu
// held; it is a scan, but one that runs only at the limit.
func (l *connLimit) oldestIdle() net.Conn {
	var oldest net.Conn
	var since time.Time
	for c, t := range l.idle {
		if oldest == nil || t.Before(since) {
			oldest, since = c, t
		}
	}
	return oldest
}

// connState is the server's ConnState hook: it keeps the set of idle
// connections. A connection closed while idle, or by a keep-alive of the
// client that sends its next request at the moment the limit reclaims it,
// is the same race every HTTP/1.1 client handles for the idle timeout.
func (l *connLimit) connState(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s == http.StateIdle {
		if lc, ok := c.(*limitedConn); ok && !lc.handedOver {
			l.idle[c] = time.Now()
		}
		return
	}
	delete(l.idle, c)
}

func (l *connLimit) refuse(c net.Conn) {
	l.mu.Lock()
	l.refused++
	if now := time.Now(); now.Sub(l.lastWarned) >= warnEvery {
		l.log.Warn("refusing connections: the server has as many open as it may",
			"max_conns", l.max, "refused", l.refused)
		l.refused, l.lastWarned = 0, now
	}
	serve := l.refusing < maxRefusing
	if serve {
		l.refusing++
	}
	l.mu.Unlock()
	if !serve {
		_ = c.Close()
		return
	}
	go func() {
		defer func() {
			_ = c.Close()
			l.mu.Lock()
			l.refusing--
			l.mu.Unlock()
		}()
		_ = c.SetDeadline(time.Now().Add(refusalWait))
		if !readHead(c) {
			return
		}
		if _, err := c.Write(l.refusal); err != nil {
			return
		}
		if tc, ok := c.(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
		// Until the client hangs up or the deadline passes.
		_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

// readHead reads from c up to the end of a request's headers (an empty
// line) and reports whether it came within 8 KiB; what follows it (a
// body) is left unread and drained with the rest.
func readHead(c net.Conn) bool {
	var buf [1024]byte
	var tail []byte
	for read := 0; read < 8<<10; {
		n, err := c.Read(buf[:])
		read += n
		tail = append(tail, buf[:n]...)
		if bytes.Contains(tail, []byte("\r\n\r\n")) {
			return true
		}
		if len(tail) > 3 {
			tail = append(tail[:0], tail[len(tail)-3:]...)
		}
		if err != nil {
			return false
		}
	}
	return false
}

// limitedConn gives its slot back when it is closed, once.
type limitedConn struct {
	net.Conn
	l *connLimit
	// handedOver is set (under l.mu) when the limit closed this idle
	// connection to give its slot to a new one.
	handedOver bool
	once       sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		defer c.l.mu.Unlock()
		delete(c.l.idle, c)
		if !c.handedOver {
			c.l.open--
		}
	})
	return err
}
