package jobstore_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/trace"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/bustest"
)

// TestCreateStampsTheRequestsTrace: a job created inside a span carries
// that trace's id, and so does the event its creator publishes next; a
// job that brings its own keeps it.
func TestCreateStampsTheRequestsTrace(t *testing.T) {
	store, _, _ := newStore(t)
	sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{0xab, 1}, SpanID: trace.SpanID{2}, TraceFlags: trace.FlagsSampled})
	ctx := trace.ContextWithSpanContext(t.Context(), sc)

	req := requested(newJob("job-traced", "alice"))
	job, err := store.Create(ctx, req)
	require.NoError(t, err)
	assert.Equal(t, sc.TraceID().String(), job.GetTraceId())
	assert.Equal(t, sc.TraceID().String(), req.GetJob().GetTraceId(), "the event to publish carries it too")
	got, err := store.Get(t.Context(), "job-traced")
	require.NoError(t, err)
	assert.Equal(t, sc.TraceID().String(), got.GetTraceId())
	assert.Equal(t, sc.SpanID().String(), got.GetSpanId(), "the creating span, for later work on the job to join")
	_, err = store.Apply(t.Context(), req)
	assert.NoError(t, err, "the copy from the stream recognises its job")

	own := newJob("job-own-trace", "alice")
	own.TraceId = "0123456789abcdef0123456789abcdef"
	job, err = store.Create(ctx, requested(own))
	require.NoError(t, err)
	assert.Equal(t, "0123456789abcdef0123456789abcdef", job.GetTraceId())

	job, err = store.Create(t.Context(), requested(newJob("job-untraced", "alice")))
	require.NoError(t, err)
	assert.Empty(t, job.GetTraceId(), "no span, no trace")
}

// TestOnChangeSeesEveryWriteOnce: the hook gets each write's before and
// after, nil before for the create, and nothing for events that change
// nothing.
func TestOnChangeSeesEveryWriteOnce(t *testing.T) {
	srv := bustest.Start(t)
	type change struct{ from, to exportv1.JobState }
	var mu sync.Mutex
	var changes []change
	store, err := jobstore.Open(t.Context(), srv.JS, jobstore.WithOnChange(func(_ context.Context, before, after *exportv1.Job) {
		mu.Lock()
		defer mu.Unlock()
		changes = append(changes, change{before.GetState(), after.GetState()})
	}))
	require.NoError(t, err)
	ctx := t.Context()
	require.NoError(t, create(ctx, store, newJob("job-changes", "alice")))
	for _, ev := range []jobstore.Event{queued("job-changes", 1), queued("job-changes", 1), completed("job-changes", 5), completed("job-changes", 5)} {
		_, err := store.Apply(ctx, ev)
		require.NoError(t, err)
	}
	assert.Equal(t, []change{
		{exportv1.JobState_JOB_STATE_UNSPECIFIED, exportv1.JobState_JOB_STATE_PENDING},
		{exportv1.JobState_JOB_STATE_PENDING, exportv1.JobState_JOB_STATE_QUEUED},
		{exportv1.JobState_JOB_STATE_QUEUED, exportv1.JobState_JOB_STATE_COMPLETED},
	}, changes)
}
