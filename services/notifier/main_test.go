package main

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"dataport.dev/shared/infra/infratest"
)

// testKey is a signing key as a deployment has one: 32 random bytes, hex.
const testKey = "5c0ffee1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3"

func TestRunRejectsBadConfig(t *testing.T) {
	infratest.RejectsConfig(t, run, map[string]string{
		"DATAPORT_HEALTH_ADDR": "localhost",
		"DATAPORT_SMTP_PORT":   "0",
		"DATAPORT_SMTP_TLS":    "sometimes",
	}, "DATAPORT_HEALTH_ADDR", "DATAPORT_SMTP_PORT", "DATAPORT_SMTP_TLS", "DATAPORT_LINK_SECRET", "DATAPORT_WEBHOOK_SECRET")
	// Checked once the variables themselves are valid.
	infratest.RejectsConfig(t, run, map[string]string{
		"DATAPORT_ENV":       "development",
		"DATAPORT_MAIL_FROM": "not an address",
	}, "DATAPORT_MAIL_FROM")
}

// TestRunServesUntilCanceled starts the binary's run against real NATS
// and MinIO, waits for its probes and stops it.
func TestRunServesUntilCanceled(t *testing.T) {
	st := infratest.StartStack(t)
	addr := infratest.FreeAddr(t)
	p := infratest.Start(t, run, st.Env(map[string]string{
		"DATAPORT_HEALTH_ADDR":    addr,
		"DATAPORT_LINK_SECRET":    testKey,
		"DATAPORT_WEBHOOK_SECRET": testKey + "-webhooks",
		"DATAPORT_SMTP_PASSWORD":  "smtp-password",
	}))
	p.WaitReady(t, addr)
	assert.Contains(t, p.Output(t), "DATAPORT_SMTP_PORT=1025\n")
	infratest.AssertMasked(t, p.Output(t), map[string]string{
		"DATAPORT_S3_SECRET_KEY":  st.MinIO.Config.SecretKey,
		"DATAPORT_LINK_SECRET":    testKey,
		"DATAPORT_WEBHOOK_SECRET": testKey + "-webhooks",
		"DATAPORT_SMTP_PASSWORD":  "smtp-password",
	})
	p.Stop(t)
}
