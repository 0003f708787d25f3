package main

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/infra/infratest"
)

func TestRunRejectsBadConfig(t *testing.T) {
	infratest.RejectsConfig(t, run, map[string]string{
		"DATAPORT_HTTP_ADDR":  "no-port",
		"DATAPORT_LINK_TTL":   "forever",
		"DATAPORT_PUBLIC_URL": "/relative",
		"DATAPORT_TIMEZONE":   "Mars/Olympus_Mons",
		// Below the floor, and out of range.
		"DATAPORT_SCHEDULE_MIN_INTERVAL": "30s",
		"DATAPORT_MAX_EMAIL_RECIPIENTS":  "0",
		"DATAPORT_RECORD_MAX_BYTES":      "-1",
	}, "DATAPORT_HTTP_ADDR", "DATAPORT_LINK_TTL", "DATAPORT_PUBLIC_URL", "Mars/Olympus_Mons",
		"DATAPORT_SCHEDULE_MIN_INTERVAL", "DATAPORT_MAX_EMAIL_RECIPIENTS", "DATAPORT_RECORD_MAX_BYTES")
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
			infratest.RejectsConfig(t, run, tc.env, tc.want...)
		})
	}
}

func TestRunServesUntilCanceled(t *testing.T) {
	st := infratest.StartStack(t)
	addr := infratest.FreeAddr(t)
	p := infratest.Start(t, run, st.Env(map[string]string{
		"DATAPORT_HTTP_ADDR":   addr,
		"DATAPORT_LINK_SECRET": testLinkKey,
		"DATAPORT_TASK_SECRET": testTaskKey,
	}))

	base := "http://" + addr
	p.WaitReady(t, addr)
	resp, err := http.Get(base + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp, err = http.Get(base + "/v1/exports")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)

	p.Stop(t)
	logs := p.Output(t)
	assert.Contains(t, logs, "DATAPORT_PUBLIC_URL=http://"+addr+"\n")
	assert.Contains(t, logs, "DATAPORT_LINK_TTL=24h0m0s\n")
	assert.Contains(t, logs, "DATAPORT_ENV=production\n")
	assert.Contains(t, logs, "DATAPORT_HTTP_WRITE_TIMEOUT=1m0s\n")
	infratest.AssertMasked(t, logs, map[string]string{
		"DATAPORT_LINK_SECRET": testLinkKey,
		"DATAPORT_TASK_SECRET": testTaskKey,
	})
}
