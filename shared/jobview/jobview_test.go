package jobview_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/jobview"
)

func put(t *testing.T, ns *bustest.Server, job *exportv1.Job) {
	t.Helper()
	kv, err := ns.JS.KeyValue(t.Context(), "export_jobs")
	require.NoError(t, err)
	data, err := proto.Marshal(job)
	require.NoError(t, err)
	_, err = kv.Put(t.Context(), job.GetId(), data)
	require.NoError(t, err)
}

func TestGet(t *testing.T) {
	ns := bustest.Start(t)
	ctx := t.Context()
	r, err := jobview.Open(ctx, ns.JS, nil)
	require.NoError(t, err)

	job, err := r.Get(ctx, "nope")
	require.NoError(t, err)
	assert.Nil(t, job, "a job without a record is no error")
	job, err = r.Get(ctx, "bad.id")
	require.NoError(t, err)
	assert.Nil(t, job, "an id that cannot be a key names no record")

	put(t, ns, &exportv1.Job{Id: "j1", Name: "Weekly", State: exportv1.JobState_JOB_STATE_PROCESSING})
	job, err = r.Get(ctx, "j1")
	require.NoError(t, err)
	assert.Equal(t, "Weekly", job.GetName())
	cause, err := r.Ended(ctx, "j1")
	require.NoError(t, err)
	assert.NoError(t, cause, "a processing job has not ended")
	for state, want := range map[exportv1.JobState]error{
		exportv1.JobState_JOB_STATE_CANCELED:  jobview.ErrCanceled,
		exportv1.JobState_JOB_STATE_FAILED:    jobview.ErrFailed,
		exportv1.JobState_JOB_STATE_REJECTED:  jobview.ErrFailed,
		exportv1.JobState_JOB_STATE_COMPLETED: nil,
	} {
		put(t, ns, &exportv1.Job{Id: "j4", State: state})
		cause, err := r.Ended(ctx, "j4")
		require.NoError(t, err)
		assert.Equal(t, want, cause, state.String())
	}

	kv, err := ns.JS.KeyValue(ctx, "export_jobs")
	require.NoError(t, err)
	_, err = kv.Put(ctx, "junk", []byte{0xff, 0xff, 0xff})
	require.NoError(t, err)
	job, err = r.Get(ctx, "junk")
	require.NoError(t, err, "an undecodable record is the gateway's business")
	assert.Nil(t, job)

	ids, err := r.IDs(ctx)
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"j1", "j4", "junk"}, ids)
}

func TestWatchEndsTheContextWhenTheJobIsCanceled(t *testing.T) {
	ns := bustest.Start(t)
	ctx := t.Context()
	r, err := jobview.Open(ctx, ns.JS, nil)
	require.NoError(t, err)

	put(t, ns, &exportv1.Job{Id: "j2", State: exportv1.JobState_JOB_STATE_PROCESSING})
	wctx, stop, err := r.Watch(ctx, "j2")
	require.NoError(t, err)
	defer stop()
	put(t, ns, &exportv1.Job{Id: "j2", State: exportv1.JobState_JOB_STATE_PROCESSING, Progress: &exportv1.Progress{Percent: 40}})
	select {
	case <-wctx.Done():
		t.Fatal("a running job's update must not end the task")
	case <-time.After(200 * time.Millisecond):
	}
	put(t, ns, &exportv1.Job{Id: "j2", State: exportv1.JobState_JOB_STATE_CANCELED})
	select {
	case <-wctx.Done():
		assert.ErrorIs(t, context.Cause(wctx), jobview.ErrCanceled)
	case <-time.After(10 * time.Second):
		t.Fatal("cancellation did not reach the watch")
	}
}

func TestWatchEndsTheContextWhenTheJobFails(t *testing.T) {
	ns := bustest.Start(t)
	ctx := t.Context()
	r, err := jobview.Open(ctx, ns.JS, nil)
	require.NoError(t, err)

	put(t, ns, &exportv1.Job{Id: "j5", State: exportv1.JobState_JOB_STATE_PROCESSING})
	wctx, stop, err := r.Watch(ctx, "j5")
	require.NoError(t, err)
	defer stop()
	put(t, ns, &exportv1.Job{Id: "j5", State: exportv1.JobState_JOB_STATE_FAILED, Error: "Part 2 failed."})
	select {
	case <-wctx.Done():
		assert.ErrorIs(t, context.Cause(wctx), jobview.ErrFailed)
	case <-time.After(10 * time.Second):
		t.Fatal("the job's failure did not reach the watch")
	}
}

func TestWatchOfAnAlreadyCanceledJobEndsAtOnce(t *testing.T) {
	ns := bustest.Start(t)
	ctx := t.Context()
	r, err := jobview.Open(ctx, ns.JS, nil)
	require.NoError(t, err)
	put(t, ns, &exportv1.Job{Id: "j3", State: exportv1.JobState_JOB_STATE_CANCELED})

	wctx, stop, err := r.Watch(ctx, "j3")
	require.NoError(t, err)
	defer stop()
	select {
	case <-wctx.Done():
		assert.ErrorIs(t, context.Cause(wctx), jobview.ErrCanceled)
	case <-time.After(10 * time.Second):
		t.Fatal("an already canceled job did not end the watch")
	}
}

func TestStopReleasesTheWatchWithoutCancelingTheJob(t *testing.T) {
	ns := bustest.Start(t)
	ctx := t.Context()
	r, err := jobview.Open(ctx, ns.JS, nil)
	require.NoError(t, err)
	wctx, stop, err := r.Watch(ctx, "j4")
	require.NoError(t, err, "a job without a record can be watched")
	stop()
	<-wctx.Done()
	assert.NotErrorIs(t, context.Cause(wctx), jobview.ErrCanceled)
}
