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

// testLinkKey is a link key as a deployment has one: 32 random bytes, hex.
const testLinkKey = "5c0ffee1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3"

// testTaskKey signs export tasks, as testLinkKey signs links.
const testTaskKey = "9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9"

// TestRunRefusesWeakSecretsOutsideDevelopment: without DATAPORT_ENV the
// gateway runs as production and will not start with the development link
// key, a short one or a short HS256 key, naming the variable.
func TestRunRefusesWeakSecretsOutsideDevelopment(t *testing.T) {
	cases := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"link key not set", map[string]string{}, []string{"DATAPORT_LINK_SECRET not set"}},
		{"task key not set", map[string]string{"DATAPORT_LINK_SECRET": testLinkKey}, []string{"DATAPORT_TASK_SECRET not set"}},
		{"development task key", map[string]string{"DATAPORT_LINK_SECRET": testLinkKey, "DATAPORT_TASK_SECRET": "dev-only-task-secret-change-me"}, []string{"DATAPORT_TASK_SECRET"}},
		{"development link key", map[string]string{"DATAPORT_LINK_SECRET": defaultLinkSecret}, []string{"DATAPORT_LINK_SECRET is the well-known development default"}},
		{"short link key", map[string]string{"DATAPORT_LINK_SECRET": "0123456789abcdef"}, []string{"DATAPORT_LINK_SECRET is 16 bytes long"}},
		{"short previous key", map[string]string{"DATAPORT_LINK_SECRET": testLinkKey, "DATAPORT_LINK_PREVIOUS_SECRETS": "old"}, []string{"DATAPORT_LINK_PREVIOUS_SECRETS key 1 of 1 is 3 bytes long"}},
		{"short HS256 key", map[string]string{"DATAPORT_LINK_SECRET": testLinkKey, "DATAPORT_JWT_HS256_SECRET": "hs256"}, []string{"DATAPORT_JWT_HS256_SECRET is 5 bytes long"}},
		{"short HS256 key in development too", map[string]string{"DATAPORT_ENV": "development", "DATAPORT_JWT_HS256_SECRET": "hs256"}, []string{"DATAPORT_JWT_HS256_SECRET is 5 bytes long"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := run(t.Context(), env(tc.env), io.Discard)
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
		})
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
			"DATAPORT_LINK_SECRET":      testLinkKey,
			"DATAPORT_TASK_SECRET":      testTaskKey,
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
	assert.Contains(t, logs, "DATAPORT_ENV=production\n")
	assert.Contains(t, logs, "DATAPORT_HTTP_WRITE_TIMEOUT=1m0s\n")
	assert.False(t, strings.Contains(logs, testLinkKey), "the link key is never printed")
	assert.False(t, strings.Contains(logs, testTaskKey), "the task key is never printed")
}
