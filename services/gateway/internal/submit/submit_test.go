package submit_test

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

// The tests below check that the projection has one write path: what the
// gateway writes for its own events (a create, a cancel) is exactly what
// the projection consumer would write for them, so their copies coming
// back from the stream write nothing.

type rig struct {
	nats *bustest.Server
	kv   jetstream.KeyValue
	jobs *jobstore.Store
	sub  *submit.Submitter

	mu    sync.Mutex
	ended []string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{nats: bustest.Start(t)}
	var err error
	r.kv, err = r.nats.JS.KeyValue(t.Context(), bus.BucketJobs)
	require.NoError(t, err)
	index, err := r.nats.JS.KeyValue(t.Context(), bus.BucketJobIndex)
	require.NoError(t, err)
	r.jobs = jobstore.New(r.nats.JS, r.kv, index, jobstore.WithOnTerminal(func(_ context.Context, j *exportv1.Job) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.ended = append(r.ended, j.GetId())
	}))
	r.sub = submit.New(r.jobs, bus.NewPublisher(r.nats.JS, nil), bustest.TaskSigner(t), nil)
	return r
}

func (r *rig) submit(t *testing.T, id string) *exportv1.Job {
	t.Helper()
	job := &exportv1.Job{
		Id: id, OwnerId: "alice", Scope: &exportv1.Scope{UserId: "alice"},
		Kind: exportv1.JobKind_JOB_KIND_ROOM, Format: exportv1.Format_FORMAT_JSON, State: exportv1.JobState_JOB_STATE_PENDING,
		Room: &exportv1.RoomScope{RoomId: "GENERAL"}, CreatedAt: timestamppb.Now(), UpdatedAt: timestamppb.Now(),
	}
	require.NoError(t, r.sub.Submit(t.Context(), job, bus.TaskRoom, []*exportv1.ExportTask{{PartKind: exportv1.PartKind_PART_KIND_ROOM}}))
	return job
}

// watch records every write of job id as the state it wrote.
func (r *rig) watch(t *testing.T, id string) func() []exportv1.JobState {
	t.Helper()
	w, err := r.kv.Watch(t.Context(), id, jetstream.UpdatesOnly())
	require.NoError(t, err)
	t.Cleanup(func() { _ = w.Stop() })
	var mu sync.Mutex
	var states []exportv1.JobState
	go func() {
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			j := &exportv1.Job{}
			if proto.Unmarshal(e.Value(), j) == nil {
				mu.Lock()
				states = append(states, j.GetState())
				mu.Unlock()
			}
		}
	}()
	return func() []exportv1.JobState {
		mu.Lock()
		defer mu.Unlock()
		return append([]exportv1.JobState(nil), states...)
	}
}

// statusMsg returns the published status event of kind ev for the job, as
// the projection consumer would receive it.
func (r *rig) statusMsg(t *testing.T, ev bus.Event, id string) jetstream.Msg {
	t.Helper()
	subject, err := bus.StatusSubject(ev, id)
	require.NoError(t, err)
	c, err := r.nats.JS.OrderedConsumer(t.Context(), bus.StreamExportEvents, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	require.NoError(t, err)
	msg, err := c.Next(jetstream.FetchMaxWait(5 * time.Second))
	require.NoError(t, err)
	return msg
}

// TestSubmittedJobIsNotWrittenAgainByItsRequest: Submit writes the job by
// applying its ExportRequested; the same event coming back from the stream
// through the projection leaves the record byte for byte as it was, at the
// same revision.
func TestSubmittedJobIsNotWrittenAgainByItsRequest(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	job := r.submit(t, "SubmittedOnce")
	before, err := r.kv.Get(ctx, job.GetId())
	require.NoError(t, err)

	msg := r.statusMsg(t, bus.EventRequested, job.GetId())
	var req exportv1.ExportRequested
	require.NoError(t, proto.Unmarshal(msg.Data(), &req))
	stored := &exportv1.Job{}
	require.NoError(t, proto.Unmarshal(before.Value(), stored))
	assert.True(t, proto.Equal(req.GetJob(), stored), "the record is the job the request carries")

	require.NoError(t, r.jobs.Projection(slog.New(slog.DiscardHandler))(ctx, msg))
	after, err := r.kv.Get(ctx, job.GetId())
	require.NoError(t, err)
	assert.Equal(t, before.Revision(), after.Revision(), "the request's copy must not write")
	assert.Equal(t, before.Value(), after.Value())
}

// TestCancelChangesTheJobOnce: a handler's cancel shows at once, and the
// projection consumer then applying everything the job published (its
// request, ExportQueued and the ExportCanceled) changes nothing more: the
// job was written twice in all, created and canceled, and ended once.
func TestCancelChangesTheJobOnce(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	const id = "CanceledOnce"
	writes := r.watch(t, id)
	r.submit(t, id)
	got, err := r.sub.Cancel(ctx, id, "canceled by the user")
	require.NoError(t, err)
	assert.Equal(t, exportv1.JobState_JOB_STATE_CANCELED, got.GetState(), "the answer shows the cancel")
	canceled, err := r.kv.Get(ctx, id)
	require.NoError(t, err)

	consumer, err := bus.EnsureConsumer(ctx, r.nats.JS, bustest.Topology(), bus.ConsumerGatewayProjection)
	require.NoError(t, err)
	consumeCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- bus.Consume(consumeCtx, consumer, r.jobs.Projection(slog.New(slog.DiscardHandler)), bus.ConsumeOptions{})
	}()
	t.Cleanup(func() { stop(); <-done })
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		info, err := consumer.Info(ctx)
		if assert.NoError(c, err) {
			assert.Equal(c, uint64(3), info.AckFloor.Stream, "requested, queued and canceled are applied")
			assert.Zero(c, info.NumPending)
			assert.Zero(c, info.NumAckPending)
		}
	}, 10*time.Second, 20*time.Millisecond)

	after, err := r.kv.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, canceled.Revision(), after.Revision())
	assert.Equal(t, canceled.Value(), after.Value())
	assert.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, []exportv1.JobState{exportv1.JobState_JOB_STATE_PENDING, exportv1.JobState_JOB_STATE_CANCELED}, writes())
	}, 5*time.Second, 20*time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	assert.Equal(t, []string{id}, r.ended, "the job ends once")
}

// TestUnqueuedJobFailsOnce: a job whose tasks cannot be published is
// failed at once through the projection's one write path, the failure is
// published for the other services, and its copy from the stream changes
// nothing.
func TestUnqueuedJobFailsOnce(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	const id = "NeverQueued"
	job := &exportv1.Job{Id: id, OwnerId: "alice", Scope: &exportv1.Scope{UserId: "alice"}, State: exportv1.JobState_JOB_STATE_PENDING, CreatedAt: timestamppb.Now()}
	// A task kind that names no subject: the task cannot be published.
	err := r.sub.Submit(ctx, job, bus.TaskKind("no.such"), []*exportv1.ExportTask{{PartKind: exportv1.PartKind_PART_KIND_ROOM}})
	require.Error(t, err)
	failed, err := r.kv.Get(ctx, id)
	require.NoError(t, err)
	stored := &exportv1.Job{}
	require.NoError(t, proto.Unmarshal(failed.Value(), stored))
	assert.Equal(t, exportv1.JobState_JOB_STATE_FAILED, stored.GetState())
	assert.Equal(t, "the export could not be queued; please try again", stored.GetError())

	require.NoError(t, r.jobs.Projection(slog.New(slog.DiscardHandler))(ctx, r.statusMsg(t, bus.EventFailed, id)))
	after, err := r.kv.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, failed.Revision(), after.Revision())
	r.mu.Lock()
	defer r.mu.Unlock()
	assert.Equal(t, []string{id}, r.ended, "the job ends once")
}

// TestTakenIDIsErrExists: Submit of a job whose id is taken fails with
// jobstore.ErrExists, publishes nothing and leaves the job there alone.
func TestTakenIDIsErrExists(t *testing.T) {
	r := newRig(t)
	ctx := t.Context()
	first := r.submit(t, "Taken")
	second := proto.CloneOf(first)
	second.OwnerId, second.Scope, second.CreatedAt = "mallory", &exportv1.Scope{UserId: "mallory"}, timestamppb.Now()
	second.Parts = nil
	err := r.sub.Submit(ctx, second, bus.TaskRoom, []*exportv1.ExportTask{{PartKind: exportv1.PartKind_PART_KIND_ROOM}})
	require.ErrorIs(t, err, jobstore.ErrExists)
	got, err := r.jobs.Get(ctx, "Taken")
	require.NoError(t, err)
	assert.Equal(t, "alice", got.GetOwnerId())
	// Even the very same job again: the id is in use.
	again := proto.CloneOf(first)
	err = r.sub.Submit(ctx, again, bus.TaskRoom, []*exportv1.ExportTask{{PartKind: exportv1.PartKind_PART_KIND_ROOM}})
	require.ErrorIs(t, err, jobstore.ErrExists)

	stream, err := r.nats.JS.Stream(ctx, bus.StreamExportEvents)
	require.NoError(t, err)
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(2), info.State.Msgs, "only the first job's requested and queued events")
}
