package infra_test

import (
	"bufio"
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/infra"
	"dataport.dev/shared/infra/infratest"
)

// A stream that lasts while the client listens ends when the shutdown
// begins, so Serve returns long before its shutdown budget.
func TestServeEndsStreamsWhenShutdownBegins(t *testing.T) {
	t.Parallel()
	addr := infratest.FreeAddr(t)
	stream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("open\n"))
		_ = http.NewResponseController(w).Flush()
		select {
		case <-infra.Draining(r.Context()):
			_, _ = w.Write([]byte("bye\n"))
		case <-r.Context().Done():
		}
	})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- infra.Serve(ctx, addr, stream, infra.HTTPLimits{}, time.Minute, slog.New(slog.DiscardHandler))
	}()
	t.Cleanup(func() { cancel(); <-done })

	var resp *http.Response
	require.Eventually(t, func() bool {
		var err error
		resp, err = http.Get("http://" + addr + "/")
		return err == nil
	}, 5*time.Second, 10*time.Millisecond)
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	require.True(t, lines.Scan())
	require.Equal(t, "open", lines.Text())

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
		done <- nil
	case <-time.After(10 * time.Second):
		t.Fatal("Serve is still waiting for the open stream")
	}
	assert.Less(t, time.Since(start), 10*time.Second)
	require.True(t, lines.Scan())
	assert.Equal(t, "bye", lines.Text())
}

func TestDrainingOutsideAServerIsNeverReady(t *testing.T) {
	t.Parallel()
	assert.Nil(t, infra.Draining(t.Context()))
}
