package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/demo"
	"dataport.dev/shared/infra/infratest"
)

func TestRunSeedsAndWritesFiles(t *testing.T) {
	nats := bustest.StartBare(t) // run declares the topology itself
	minio := blobtest.Start(t)
	dir := filepath.Join(t.TempDir(), "dev")
	vars := map[string]string{
		"DATAPORT_NATS_URL":      nats.URL,
		"DATAPORT_S3_ENDPOINT":   minio.Config.Endpoint,
		"DATAPORT_S3_ACCESS_KEY": minio.Config.AccessKey,
		"DATAPORT_S3_SECRET_KEY": minio.Config.SecretKey,
		"DATAPORT_DEV_DIR":       dir,
		"DATAPORT_LOG_LEVEL":     "warn",
	}

	var out bytes.Buffer
	require.NoError(t, run(t.Context(), infratest.Getenv(vars), &out))
	t.Log(out.String())

	assert.Contains(t, out.String(), "DATAPORT_DEV_DIR="+dir, "prints its effective config")
	assert.NotContains(t, out.String(), minio.Config.SecretKey, "secret masked")
	d := demo.Generate()
	admin, _ := d.User("admin")
	assert.Contains(t, out.String(), admin.User.GetId(), "summary names the users")
	assert.NotContains(t, out.String(), admin.AuthToken, "summary keeps tokens out of the terminal")

	raw, err := os.ReadFile(filepath.Join(dir, demo.SeedFile))
	require.NoError(t, err)
	var counts demo.Counts
	require.NoError(t, json.Unmarshal(raw, &counts))
	assert.Equal(t, d.Counts(), counts)
	creds, err := demo.ReadCredentials(dir)
	require.NoError(t, err)
	require.Len(t, creds, len(d.Users))
	assert.Equal(t, admin.User.GetId(), creds[0].UserID)
	assert.NotEqual(t, admin.AuthToken, creds[0].AuthToken, "tokens are this installation's, not derived from the public seed")
	assert.Len(t, creds[0].AuthToken, 43)

	// A second seed keeps the installation's credentials.
	require.NoError(t, run(t.Context(), infratest.Getenv(vars), &out))
	again, err := demo.ReadCredentials(dir)
	require.NoError(t, err)
	assert.Equal(t, creds, again)
}

func TestRunRejectsBadConfig(t *testing.T) {
	infratest.RejectsConfig(t, run, map[string]string{"DATAPORT_SEED_TIMEOUT": "soon", "DATAPORT_NATS_URL": "::"},
		"DATAPORT_SEED_TIMEOUT", "DATAPORT_NATS_URL")
}
