package infra_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/config"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/infra/infratest"
)

func TestReadyzTellsOnlyReadyOrNot(t *testing.T) {
	t.Parallel()
	internal := errors.New("object store: Get \"http://10.1.2.3:9000/dataport-exports\": dial tcp: connection refused")
	var failing bool
	var logs bytes.Buffer
	mux := http.NewServeMux()
	infra.HealthRoutes(mux, func(context.Context) error {
		if failing {
			return internal
		}
		return nil
	}, slog.New(slog.NewJSONHandler(&logs, nil)))

	get := func() (int, string) {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		return rec.Code, rec.Body.String()
	}
	code, body := get()
	assert.Equal(t, http.StatusOK, code)
	assert.JSONEq(t, `{"status":"ready"}`, body)

	failing = true
	code, body = get()
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.JSONEq(t, `{"status":"not ready"}`, body, "no internal error text for unauthenticated callers")
	assert.NotContains(t, body, "10.1.2.3")
	assert.Contains(t, logs.String(), "connection refused", "the cause is logged instead")
}

func TestLoadHTTPLimits(t *testing.T) {
	t.Parallel()
	l := config.New(func(string) string { return "" })
	assert.Equal(t, infra.HTTPLimits{
		ReadHeader: infra.DefaultReadHeaderTimeout,
		Read:       infra.DefaultReadTimeout,
		Write:      infra.DefaultWriteTimeout,
		Idle:       infra.DefaultIdleTimeout,
		MaxConns:   infra.DefaultMaxConns,
	}, infra.LoadHTTPLimits(l))
	require.NoError(t, l.Err())

	l = config.New(func(k string) string {
		return map[string]string{
			"DATAPORT_HTTP_READ_HEADER_TIMEOUT": "2s",
			"DATAPORT_HTTP_READ_TIMEOUT":        "5s",
			"DATAPORT_HTTP_WRITE_TIMEOUT":       "7s",
			"DATAPORT_HTTP_IDLE_TIMEOUT":        "1m",
			"DATAPORT_HTTP_MAX_CONNS":           "64",
		}[k]
	})
	assert.Equal(t, infra.HTTPLimits{ReadHeader: 2 * time.Second, Read: 5 * time.Second, Write: 7 * time.Second, Idle: time.Minute, MaxConns: 64}, infra.LoadHTTPLimits(l))
	require.NoError(t, l.Err())
}

// TestServeDropsClientsThatNeverSendHeaders: a client that connects and
// sends nothing (slowloris) is disconnected by the header timeout instead
// of holding the connection forever. Only the server's timeout can end
// the read below, so nothing here depends on how fast the machine is.
func TestServeDropsClientsThatNeverSendHeaders(t *testing.T) {
	t.Parallel()
	addr := infratest.FreeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- infra.Serve(ctx, addr, http.NotFoundHandler(),
			infra.HTTPLimits{ReadHeader: 50 * time.Millisecond}, time.Second, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() { cancel(); <-done })

	var conn net.Conn
	require.Eventually(t, func() bool {
		var err error
		conn, err = net.Dial("tcp", addr)
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	defer conn.Close()
	_, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n"))
	require.NoError(t, err)
	// A safety net for a broken server, far beyond the timeout under test.
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
	b, err := io.ReadAll(conn)
	var ne net.Error
	require.False(t, errors.As(err, &ne) && ne.Timeout(), "the server kept the connection open")
	// The server may answer 408 before it hangs up; it never serves the
	// request.
	assert.NotContains(t, string(b), "404")
}
