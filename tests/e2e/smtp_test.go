package e2e

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// smtpReceiver is a minimal SMTP server that keeps every message it
// accepted. Unlike Mailpit it lets a test act at the one moment that
// matters for duplicates: after the server has taken a message and
// before the client has read the reply that says so.
type smtpReceiver struct {
	addr string

	mu       sync.Mutex
	messages []string
	// beforeReply, when set, runs for each accepted message before its
	// 250 reply is written; it returns whether to write it at all.
	beforeReply func(msg string) bool
}

func startSMTPReceiver(t *testing.T) *smtpReceiver {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	r := &smtpReceiver{addr: l.Addr().String()}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go r.serve(c)
		}
	}()
	return r
}

func (r *smtpReceiver) port() string {
	_, p, _ := net.SplitHostPort(r.addr)
	return p
}

// onNextAccept sets the hook of beforeReply for the first message that
// contains want; other messages are answered as usual.
func (r *smtpReceiver) onNextAccept(want string, hook func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.beforeReply = func(msg string) bool {
		if !strings.Contains(msg, want) {
			return true
		}
		r.mu.Lock()
		r.beforeReply = nil
		r.mu.Unlock()
		hook()
		return false
	}
}

// count is how many accepted messages contain s (a job id: the notifier's
// Message-ID and links carry it).
func (r *smtpReceiver) count(s string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, m := range r.messages {
		if strings.Contains(m, s) {
			n++
		}
	}
	return n
}

func (r *smtpReceiver) serve(c net.Conn) {
	defer c.Close()
	rd := bufio.NewReader(c)
	reply := func(line string) bool {
		_, err := c.Write([]byte(line + "\r\n"))
		return err == nil
	}
	if !reply("220 e2e ESMTP") {
		return
	}
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO"):
			if !reply("250-e2e\r\n250-8BITMIME\r\n250 SMTPUTF8") {
				return
			}
		case strings.HasPrefix(cmd, "DATA"):
			if !reply("354 go ahead") {
				return
			}
			var b strings.Builder
			for {
				l, err := rd.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" || l == ".\n" {
					break
				}
				b.WriteString(strings.TrimPrefix(l, "."))
			}
			msg := b.String()
			// Accepted: from here on the message is the server's.
			r.mu.Lock()
			r.messages = append(r.messages, msg)
			hook := r.beforeReply
			r.mu.Unlock()
			if hook != nil && !hook(msg) {
				return
			}
			if !reply("250 queued") {
				return
			}
		case strings.HasPrefix(cmd, "QUIT"):
			reply("221 bye")
			return
		default:
			// HELO, MAIL, RCPT, RSET, NOOP: the receiver takes anything.
			if !reply("250 ok") {
				return
			}
		}
	}
}
