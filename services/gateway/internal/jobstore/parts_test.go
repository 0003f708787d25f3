package jobstore_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

// userDataJob is a user-data download planned as two rooms, the profile
// and the assets, the way the Rocket.Chat dialect plans it.
func userDataJob(id string) *exportv1.Job {
	job := newJob(id, "alice")
	job.Kind = exportv1.JobKind_JOB_KIND_USER_DATA
	job.Room = nil
	tasks := []*exportv1.ExportTask{
		{PartKind: exportv1.PartKind_PART_KIND_ROOM, Room: &exportv1.RoomScope{RoomId: "GENERAL"}, TargetFile: "general.json"},
		{PartKind: exportv1.PartKind_PART_KIND_ROOM, Room: &exportv1.RoomScope{RoomId: "dev"}, TargetFile: "dev-team.json"},
		{PartKind: exportv1.PartKind_PART_KIND_USER_PROFILE, TargetFile: "user.json"},
		{PartKind: exportv1.PartKind_PART_KIND_ASSETS, TargetFile: "assets"},
	}
	job.Parts = jobstore.PlanParts(tasks)
	job.PartsTotal = uint32(len(tasks))
	return job
}

func partProgress(id string, sec int, part, pct uint32, records uint64) jobstore.Event {
	return &exportv1.ExportProgress{JobId: id, OccurredAt: at(sec), Part: part, PartsTotal: 4, Progress: &exportv1.Progress{Percent: pct, Records: records, Bytes: records * 10}}
}

func partUploaded(id string, sec int, part uint32, files ...*exportv1.File) jobstore.Event {
	ev := &exportv1.PartUploaded{JobId: id, OccurredAt: at(sec), Part: part, PartsTotal: 4}
	if len(files) == 1 {
		ev.File = files[0]
	} else {
		ev.Files = files
	}
	return ev
}

func withRecords(name string, n uint64) *exportv1.File {
	f := file(name)
	f.Records = n
	return f
}

type partView struct {
	state    exportv1.PartState
	exported uint64
}

func partsOf(job *exportv1.Job) []partView {
	out := make([]partView, 0, len(job.GetParts()))
	for _, p := range job.GetParts() {
		out = append(out, partView{p.GetState(), p.GetExported()})
	}
	return out
}

const (
	pending   = exportv1.PartState_PART_STATE_PENDING
	exporting = exportv1.PartState_PART_STATE_EXPORTING
	done      = exportv1.PartState_PART_STATE_COMPLETED
)

func TestPlanParts(t *testing.T) {
	job := userDataJob("plan")
	require.Len(t, job.GetParts(), 4)
	for i, p := range job.GetParts() {
		assert.Equal(t, uint32(i), p.GetPart())
		assert.Equal(t, pending, p.GetState())
	}
	assert.Equal(t, "GENERAL", job.GetParts()[0].GetRoomId())
	assert.Equal(t, "dev-team.json", job.GetParts()[1].GetTargetFile())
	assert.Equal(t, exportv1.PartKind_PART_KIND_USER_PROFILE, job.GetParts()[2].GetKind())
	assert.Equal(t, exportv1.PartKind_PART_KIND_ASSETS, job.GetParts()[3].GetKind())
}

// TestPartsFollowTheirEvents applies one user-data download's events step by
// step and checks every part and the job's overall progress after each.
func TestPartsFollowTheirEvents(t *testing.T) {
	_, _, srv := newStore(t)
	store, err := jobstore.Open(t.Context(), srv.JS, jobstore.WithRetention(48*time.Hour))
	require.NoError(t, err)
	ctx := t.Context()
	const id = "job-parts"
	require.NoError(t, create(ctx, store, userDataJob(id)))

	steps := []struct {
		name    string
		ev      jobstore.Event
		parts   []partView
		percent uint32
		records uint64
	}{
		{"queued", queued(id, 1),
			[]partView{{pending, 0}, {pending, 0}, {pending, 0}, {pending, 0}}, 0, 0},
		{"room 0 half done", partProgress(id, 2, 0, 50, 10),
			[]partView{{exporting, 10}, {pending, 0}, {pending, 0}, {pending, 0}}, 12, 10},
		{"room 1 starts", partProgress(id, 3, 1, 10, 4),
			[]partView{{exporting, 10}, {exporting, 4}, {pending, 0}, {pending, 0}}, 12, 14},
		{"room 0 uploaded with its final count", partUploaded(id, 4, 0, withRecords("general.json", 20)),
			[]partView{{done, 20}, {exporting, 4}, {pending, 0}, {pending, 0}}, 25, 24},
		{"late progress of room 0 changes nothing", partProgress(id, 5, 0, 90, 18),
			[]partView{{done, 20}, {exporting, 4}, {pending, 0}, {pending, 0}}, 25, 24},
		// Room 1's fraction now counts on top of room 0's whole share;
		// its exported count does not go back.
		{"older progress of room 1 keeps its count", partProgress(id, 6, 1, 5, 2),
			[]partView{{done, 20}, {exporting, 4}, {pending, 0}, {pending, 0}}, 26, 24},
		{"profile uploaded without progress", partUploaded(id, 7, 2, withRecords("user.json", 1)),
			[]partView{{done, 20}, {exporting, 4}, {done, 1}, {pending, 0}}, 50, 25},
		{"assets uploaded as several files", partUploaded(id, 8, 3, withRecords("assets/a-1.png", 1), withRecords("assets/b-2.pdf", 1), withRecords("assets/c-3.txt", 1)),
			[]partView{{done, 20}, {exporting, 4}, {done, 1}, {done, 3}}, 75, 28},
		{"room 1 uploaded", partUploaded(id, 9, 1, withRecords("dev-team.json", 40)),
			[]partView{{done, 20}, {done, 40}, {done, 1}, {done, 3}}, 99, 64},
		{"redelivered upload changes nothing", partUploaded(id, 10, 1, withRecords("dev-team.json", 40)),
			[]partView{{done, 20}, {done, 40}, {done, 1}, {done, 3}}, 99, 64},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			job, err := store.Apply(ctx, s.ev)
			require.NoError(t, err)
			assert.Equal(t, s.parts, partsOf(job))
			assert.Equal(t, s.percent, job.GetProgress().GetPercent(), "percent")
			assert.Equal(t, s.records, job.GetProgress().GetRecords(), "records")
			assert.Nil(t, job.GetExpiresAt(), "no expiry before completion")
		})
	}

	zip := &exportv1.File{Name: "alice-data.zip", ObjectKey: "jobs/" + id + "/files/alice-data.zip", Size: 4096, Records: 64}
	job, err := store.Apply(ctx, &exportv1.ExportCompleted{JobId: id, OccurredAt: at(20), Files: []*exportv1.File{zip}})
	require.NoError(t, err)
	assert.Equal(t, exportv1.JobState_JOB_STATE_COMPLETED, job.GetState())
	assert.Equal(t, uint32(100), job.GetProgress().GetPercent())
	assert.Equal(t, t0.Add(20*time.Second+48*time.Hour), job.GetExpiresAt().AsTime(), "expires after the retention, counted from completion")
	assert.False(t, job.GetFilesExpired())

	// The sweeper deleted the files: the job says so and keeps the list.
	job, err = store.Apply(ctx, &exportv1.ExportExpired{JobId: id, OccurredAt: at(30)})
	require.NoError(t, err)
	assert.True(t, job.GetFilesExpired())
	assert.Equal(t, exportv1.JobState_JOB_STATE_COMPLETED, job.GetState())
	assert.Len(t, job.GetFiles(), 1)
	assert.Equal(t, at(30).AsTime(), job.GetUpdatedAt().AsTime())
	again, err := store.Apply(ctx, &exportv1.ExportExpired{JobId: id, OccurredAt: at(31)})
	require.NoError(t, err)
	assert.Equal(t, at(30).AsTime(), again.GetUpdatedAt().AsTime(), "a second expiry changes nothing")
}

func TestCompletionMarksEveryPartCompleted(t *testing.T) {
	store, _, _ := newStore(t)
	ctx := t.Context()
	const id = "job-done"
	require.NoError(t, create(ctx, store, userDataJob(id)))
	_, err := store.Apply(ctx, partProgress(id, 1, 0, 50, 3))
	require.NoError(t, err)
	job, err := store.Apply(ctx, completed(id, 2))
	require.NoError(t, err)
	for _, p := range job.GetParts() {
		assert.Equal(t, done, p.GetState(), "part %d", p.GetPart())
	}
	assert.Nil(t, job.GetExpiresAt(), "no retention configured, no expiry")
}

func TestProjectionAppliesExpired(t *testing.T) {
	store, _, srv := newStore(t)
	ctx := t.Context()
	consumer, err := bus.EnsureConsumer(ctx, srv.JS, bustest.Topology(), bus.ConsumerGatewayProjection)
	require.NoError(t, err)
	consumeCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() {
		stopped <- bus.Consume(consumeCtx, consumer, store.Projection(slog.New(slog.DiscardHandler)), bus.ConsumeOptions{Concurrency: 1})
	}()
	t.Cleanup(func() { stop(); <-stopped })

	const id = "job-exp"
	require.NoError(t, create(ctx, store, newJob(id, "alice")))
	pub := bus.NewPublisher(srv.JS, nil)
	require.NoError(t, pub.PublishStatus(ctx, bus.EventExpired, id, "", &exportv1.ExportExpired{JobId: id, OccurredAt: at(1)}))
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		job, err := store.Get(ctx, id)
		if assert.NoError(c, err) {
			assert.True(c, job.GetFilesExpired())
		}
	}, 10*time.Second, 20*time.Millisecond)
}
