package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMinIOOutageWithTheDefaults runs what a deployment runs: default
// deliveries, ack wait and quotas. A minute without MinIO mid-export is
// waited out by the task that meets it, in its delivery, and the file is
// the clean run's to the byte.
func TestMinIOOutageWithTheDefaults(t *testing.T) {
	t.Parallel()
	// A minute is longer than the default deliveries' back-offs (1 s
	// doubling, 5 tries) ever were.
	minioOutageWithTheDefaults(t, time.Minute, "minio-outage-defaults")
}

// minioOutageWithTheDefaults stops MinIO for outage while a big-room
// export runs on a stack with the default configuration, then checks the
// export against a clean run's.
func minioOutageWithTheDefaults(t *testing.T, outage time.Duration, what string) {
	t.Helper()
	s := startStackWith(t, stackOptions{defaults: true})
	js := natsJS(t, s.natsURL)
	seedBigRoom(t, js, bigMessages, bigMessageSize)
	admin := s.user(t, "admin")
	var f figures

	clean := waitState(t, s, admin, createRoomExport(t, s, admin, bigRoom, ""), "completed", 2*time.Minute)
	require.Len(t, clean.Files, 1)
	f.rowErrors += checkBigRoomFile(t, clean, bigMessages)
	f.rowsChecked += bigMessages

	id := createRoomExport(t, s, admin, bigRoom, "")
	waitProcessing(t, s, admin, id)
	before := len(s.exporters[0].logText(t))
	s.minio.Stop()
	f.faults++
	// The outage is the scenario.
	select {
	case <-time.After(outage):
	case <-t.Context().Done():
		return
	}
	j, err := getJob(t.Context(), s, admin, id)
	require.NoError(t, err)
	assert.Equal(t, "processing", j.State, "the job waits for storage, neither failed nor done: %q", j.Error)
	s.minio.Restart(t)
	job := waitState(t, s, admin, id, "completed", 3*time.Minute)
	require.Len(t, job.Files, 1)
	assert.Equal(t, clean.Files[0].SHA256, job.Files[0].SHA256, "byte-identical to the clean run")
	f.rowErrors += checkBigRoomFile(t, job, bigMessages)
	f.rowsChecked += bigMessages

	after := s.exporters[0].logText(t)[before:]
	assert.Contains(t, after, "dependency unavailable", "the exporter met the outage and waited")
	assert.NotContains(t, after, "message failed; retrying", "the outage burned no delivery")
	uploads, err := s.minio.Store.ListIncompleteUploads(t.Context(), "dataport-exports", "jobs/")
	require.NoError(t, err)
	assert.Empty(t, uploads, "no orphaned multipart uploads")
	f.jobs = 2
	if job.State != "completed" {
		f.lost++
	}
	f.log(t, what)
}
