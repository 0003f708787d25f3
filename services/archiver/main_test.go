package main

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"dataport.dev/shared/infra/infratest"
)

func TestRunRejectsBadConfig(t *testing.T) {
	infratest.RejectsConfig(t, run, map[string]string{
		"DATAPORT_HEALTH_ADDR":      "localhost",
		"DATAPORT_SWEEP_INTERVAL":   "often",
		"DATAPORT_STALE_UPLOAD_AGE": "0s",
	}, "DATAPORT_HEALTH_ADDR", "DATAPORT_SWEEP_INTERVAL", "DATAPORT_STALE_UPLOAD_AGE")
}

// TestRunServesUntilCanceled starts the binary's run against real NATS
// and MinIO, waits for its probes and stops it.
func TestRunServesUntilCanceled(t *testing.T) {
	st := infratest.StartStack(t)
	addr := infratest.FreeAddr(t)
	p := infratest.Start(t, run, st.Env(map[string]string{"DATAPORT_HEALTH_ADDR": addr}))
	p.WaitReady(t, addr)
	assert.Contains(t, p.Output(t), "DATAPORT_RETENTION=168h0m0s\n")
	assert.Contains(t, p.Output(t), "DATAPORT_SWEEP_INTERVAL=10m0s\n")
	infratest.AssertMasked(t, p.Output(t), map[string]string{"DATAPORT_S3_SECRET_KEY": st.MinIO.Config.SecretKey})
	p.Stop(t)
}
