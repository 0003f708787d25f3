package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/bus"
)

// resumeLine is the exporter's log line of a room task that continues
// from its checkpoint.
var resumeLine = regexp.MustCompile(`"msg":"resuming from message (\d+)"`)

// TestKilledExporterResumesFromCheckpoint kills -9 the exporter right
// after the first checkpoint of a big room's export (one part
// uploaded), starts it again, and checks that the redelivered task
// continued from the checkpoint instead of starting over and that the
// file is byte-identical to a clean export of the same room.
func TestKilledExporterResumesFromCheckpoint(t *testing.T) {
	t.Parallel()
	start := time.Now()
	// A short ack wait: the killed exporter's task comes back within 3 s.
	s := startStackWith(t, stackOptions{env: []string{"DATAPORT_TASK_ACK_WAIT=3s"}})
	js := natsJS(t, s.natsURL)
	seedBigRoom(t, js, bigMessages, bigMessageSize)
	admin := s.user(t, "admin")
	exporter := s.exporters[0]
	checkpoints, err := js.KeyValue(t.Context(), bus.BucketCheckpoints)
	require.NoError(t, err)

	id := createRoomExport(t, s, admin, bigRoom, "")
	// Watch the part's checkpoint key and kill the exporter the moment the
	// first checkpoint lands.
	w, err := checkpoints.Watch(t.Context(), id+".0", jetstream.UpdatesOnly())
	require.NoError(t, err)
	defer func() { _ = w.Stop() }()
	select {
	case entry := <-w.Updates():
		require.NotNil(t, entry)
		require.Equal(t, jetstream.KeyValuePut, entry.Operation())
	case <-time.After(60 * time.Second):
		t.Fatal("no checkpoint within a minute")
	}
	exporter.kill()
	killedAt := time.Now()
	before := exporter.logText(t)
	require.NotRegexp(t, partUploaded(id), before, "killed before the part was uploaded")
	_, err = checkpoints.Get(t.Context(), id+".0")
	require.NoError(t, err, "the checkpoint outlives the process")

	exporter.restart(t)
	job := waitState(t, s, admin, id, "completed", time.Minute)
	t.Logf("killed after the first checkpoint; completed %v after the kill", time.Since(killedAt).Round(time.Millisecond))

	// The restarted process resumed the part from the checkpoint.
	after := exporter.logText(t)[len(before):]
	var resumed []string
	for line := range strings.Lines(after) {
		if resumeLine.MatchString(line) && strings.Contains(line, `"job_id":"`+id+`"`) {
			resumed = append(resumed, line)
		}
	}
	require.Len(t, resumed, 1, "the redelivered task resumed once")
	from, err := strconv.ParseUint(resumeLine.FindStringSubmatch(resumed[0])[1], 10, 64)
	require.NoError(t, err)
	assert.Greater(t, from, uint64(1), "it did not start at the first message")
	assert.Regexp(t, `"parts_done":[1-9]`, resumed[0])
	assert.Regexp(t, regexp.MustCompile(`"msg":"part uploaded"[^\n]*"job_id":"`+regexp.QuoteMeta(id)+`"[^\n]*"resumed":true`), after)
	t.Logf("the restarted exporter: %s", strings.TrimSpace(resumed[0]))

	// A clean export of the same room gives the reference file.
	clean := waitState(t, s, admin, createRoomExport(t, s, admin, bigRoom, ""), "completed", time.Minute)
	require.Len(t, job.Files, 1)
	require.Len(t, clean.Files, 1)
	assert.Equal(t, clean.Files[0].SHA256, job.Files[0].SHA256, "byte-identical to a clean run")
	assert.Equal(t, clean.Files[0].Size, job.Files[0].Size)
	rowErrors := checkBigRoomFile(t, job, bigMessages)

	_, err = checkpoints.Get(t.Context(), id+".0")
	assert.ErrorIs(t, err, jetstream.ErrKeyNotFound, "the checkpoint is deleted once the part is announced")
	uploads, err := s.minio.Store.ListIncompleteUploads(t.Context(), "dataport-exports", "jobs/")
	require.NoError(t, err)
	assert.Empty(t, uploads, "no unfinished multipart upload is left")
	lost := 0
	if job.State != "completed" {
		lost++
	}
	figures{faults: 1, jobs: 2, lost: lost, rowsChecked: bigMessages, rowErrors: rowErrors}.log(t, "resume-after-kill")
	t.Logf("resumed at stream sequence %d of a %d-message room (%.1f MB file); test took %v",
		from, bigMessages, float64(job.Files[0].Size)/1e6, time.Since(start).Round(time.Second))
}
