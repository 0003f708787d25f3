package retention_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/archiver/internal/retention"
)

// TestSweepRemovesPartialResultsWithTheJob: the chunks a canceled or
// failed job kept as partial results, and a completed job's manifest and
// archive, live under the job's prefix and go with it once its retention
// ends, not before.
func TestSweepRemovesPartialResultsWithTheJob(t *testing.T) {
	e := start(t)
	now := e.clock.now
	for _, j := range []*exportv1.Job{
		{Id: "canceled-partial", State: exportv1.JobState_JOB_STATE_CANCELED, UpdatedAt: timestamppb.New(now.Add(-time.Hour)),
			PartialFiles: []*exportv1.File{{Name: "tx.0.csv", ObjectKey: "jobs/canceled-partial/parts/0/tx.0.csv"}}},
		{Id: "rejected-partial", State: exportv1.JobState_JOB_STATE_REJECTED, UpdatedAt: timestamppb.New(now.Add(-time.Hour)),
			PartialFiles: []*exportv1.File{{Name: "tx.0.csv", ObjectKey: "jobs/rejected-partial/parts/0/tx.0.csv"}}},
		{Id: "completed-manifest", State: exportv1.JobState_JOB_STATE_COMPLETED, UpdatedAt: timestamppb.New(now.Add(-time.Hour)),
			Manifest: &exportv1.File{Name: "manifest.json", ObjectKey: "jobs/completed-manifest/files/manifest.json"}},
	} {
		e.putJob(t, j)
		e.putObject(t, "jobs/"+j.GetId()+"/parts/0/tx.0.csv")
		e.putObject(t, "jobs/"+j.GetId()+"/files/manifest.json")
	}
	r, err := e.sweep.Sweep(t.Context())
	require.NoError(t, err)
	assert.Equal(t, retention.Report{}, r, "kept within the retention")

	e.clock.now = now.Add(168 * time.Hour)
	r, err = e.sweep.Sweep(t.Context())
	require.NoError(t, err)
	assert.Equal(t, retention.Report{JobsExpired: 3, ObjectsDeleted: 6}, r)
	for _, id := range []string{"canceled-partial", "rejected-partial", "completed-manifest"} {
		assert.Zero(t, e.objects(t, id), "%s: objects left", id)
	}
}
