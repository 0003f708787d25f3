package servicetest_test

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/procstat"
	"dataport.dev/shared/servicetest"
)

// TestStartsAService: the archiver, built from its module, starts against
// real NATS and MinIO, reports ready, and its log lines reach the caller.
func TestStartsAService(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a service")
	}
	ns := bustest.Start(t)
	ms := blobtest.Start(t, "dataport-exports")
	bins := servicetest.Build(t, "archiver")
	lines := make(chan string, 64)
	p := servicetest.Start(t, filepath.Join(bins, "archiver"), "archiver", []string{
		"DATAPORT_ENV=development",
		"DATAPORT_NATS_URL=" + ns.URL,
		"DATAPORT_S3_ENDPOINT=" + ms.Config.Endpoint,
		"DATAPORT_S3_ACCESS_KEY=" + ms.Config.AccessKey,
		"DATAPORT_S3_SECRET_KEY=" + ms.Config.SecretKey,
	}, func(line []byte) {
		var l struct {
			Msg string `json:"msg"`
		}
		if json.Unmarshal(line, &l) == nil {
			select {
			case lines <- l.Msg:
			default:
			}
		}
	})
	assert.Equal(t, "archiver", p.Name)
	require.NotEmpty(t, lines, "the service logged")
	rss, err := procstat.PeakRSS(p.Pid())
	require.NoError(t, err)
	assert.Positive(t, rss, "the process runs")
}
