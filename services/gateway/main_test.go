package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bustest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestRunRejectsBadConfig(t *testing.T) {
	err := run(t.Context(), env(map[string]string{
		"DATAPORT_HTTP_ADDR":  "no-port",
		"DATAPORT_LINK_TTL":   "forever",
		"DATAPORT_PUBLIC_URL": "/relative",
		// Below the floor, and out of range.
		"DATAPORT_SCHEDULE_MIN_INTERVAL": "30s",
		"DATAPORT_MAX_EMAIL_RECIPIENTS":  "0",
		"DATAPORT_RECORD_MAX_BYTES":      "-1",
	}), io.Discard)
	require.Error(t, err)
	for _, name := range []string{"DATAPORT_HTTP_ADDR", "DATAPORT_LINK_TTL", "DATAPORT_PUBLIC_URL",
		"DATAPORT_SCHEDULE_MIN_INTERVAL", "DATAPORT_MAX_EMAIL_RECIPIENTS", "DATAPORT_RECORD_MAX_BYTES"} {
		assert.Contains(t, err.Error(), name)
	}
}

func TestRunServesUntilCanceled(t *testing.T) {
	nats := bustest.Start(t)
	minio := blobtest.Start(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	out := &syncBuffer{}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, env(map[string]string{
			"DATAPORT_HTTP_ADDR":        addr,
			"DATAPORT_NATS_URL":         nats.URL,
			"DATAPORT_S3_ENDPOINT":      minio.Config.Endpoint,
			"DATAPORT_S3_ACCESS_KEY":    minio.Config.AccessKey,
			"DATAPORT_S3_SECRET_KEY":    minio.Config.SecretKey,
			"DATAPORT_SHUTDOWN_TIMEOUT": "5s",
		}), out)
	}()

	base := "http://" + addr
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		resp, err := http.Get(base + "/readyz")
		if !assert.NoError(c, err) {
			return
		}
		resp.Body.Close()
		assert.Equal(c, http.StatusOK, resp.StatusCode)
	}, 20*time.Second, 50*time.Millisecond)

	resp, err := http.Get(base + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp, err = http.Get(base + "/v1/exports")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	logs := out.String()
	assert.Contains(t, logs, "DATAPORT_LINK_SECRET=****\n")
	assert.Contains(t, logs, "DATAPORT_PUBLIC_URL=http://"+addr+"\n")
	assert.Contains(t, logs, "DATAPORT_LINK_TTL=24h0m0s\n")
	assert.True(t, strings.Contains(logs, "DATAPORT_LINK_SECRET is not set"), "warns about the default link secret")
}
