package retention_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/archiver/internal/retention"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/jobview"
)

const bucket = "dataport-exports"

// clock is a fake clock the test moves by hand.
type clock struct{ now time.Time }

func (c *clock) Now() time.Time { return c.now }

type env struct {
	jobs   jetstream.KeyValue
	events jetstream.Stream
	store  *blob.Store
	clock  *clock
	sweep  *retention.Sweeper
	spans  *tracetest.SpanRecorder
}

func start(t *testing.T) *env {
	t.Helper()
	srv := bustest.Start(t)
	mio := blobtest.Start(t, bucket)
	ctx := t.Context()
	jobs, err := srv.JS.KeyValue(ctx, bus.BucketJobs)
	require.NoError(t, err)
	events, err := srv.JS.Stream(ctx, bus.StreamExportEvents)
	require.NoError(t, err)
	// Real time: MinIO stamps uploads with its own clock.
	c := &clock{now: time.Now()}
	spans := tracetest.NewSpanRecorder()
	s, err := retention.New(retention.Config{
		TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans)),
		Jobs:           jobview.New(jobs, nil),
		Events:         events,
		Objects:        mio.Store,
		Bucket:         bucket,
		Publisher:      bus.NewPublisher(srv.JS, nil),
		Retention:      168 * time.Hour,
		StaleUploadAge: 24 * time.Hour,
		Interval:       time.Minute,
		Now:            c.Now,
	})
	require.NoError(t, err)
	return &env{jobs: jobs, events: events, store: mio.Store, clock: c, sweep: s, spans: spans}
}

func (e *env) putJob(t *testing.T, j *exportv1.Job) {
	t.Helper()
	data, err := proto.Marshal(j)
	require.NoError(t, err)
	_, err = e.jobs.Put(t.Context(), j.GetId(), data)
	require.NoError(t, err)
}

func (e *env) putObject(t *testing.T, key string) {
	t.Helper()
	_, err := e.store.Upload(t.Context(), bucket, key, strings.NewReader("x"), "")
	require.NoError(t, err)
}

func (e *env) objects(t *testing.T, jobID string) int {
	t.Helper()
	objs, err := e.store.List(t.Context(), bucket, "jobs/"+jobID+"/")
	require.NoError(t, err)
	return len(objs)
}

func (e *env) expiredEvents(t *testing.T, jobID string) uint64 {
	t.Helper()
	subject, err := bus.StatusSubject(bus.EventExpired, jobID)
	require.NoError(t, err)
	info, err := e.events.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	require.NoError(t, err)
	return info.State.Subjects[subject]
}

func TestSweepExpiresJobs(t *testing.T) {
	e := start(t)
	now := e.clock.now
	ended := now.Add(-time.Hour)
	type job struct {
		job         *exportv1.Job
		wantExpired bool
	}
	mk := func(id string, state exportv1.JobState, updated time.Time, expires *time.Time, filesExpired bool) *exportv1.Job {
		j := &exportv1.Job{Id: id, State: state, UpdatedAt: timestamppb.New(updated), FilesExpired: filesExpired}
		if expires != nil {
			j.ExpiresAt = timestamppb.New(*expires)
		}
		return j
	}
	soon, past := now.Add(time.Hour), now.Add(-time.Minute)
	tests := []job{
		// Ended within the retention: kept.
		{mk("completed-recent", exportv1.JobState_JOB_STATE_COMPLETED, ended, nil, false), false},
		// expires_at set by the gateway wins over updated_at + retention.
		{mk("completed-expires-soon", exportv1.JobState_JOB_STATE_COMPLETED, ended.Add(-200*time.Hour), &soon, false), false},
		{mk("completed-expired", exportv1.JobState_JOB_STATE_COMPLETED, ended, &past, false), true},
		{mk("completed-old", exportv1.JobState_JOB_STATE_COMPLETED, ended.Add(-168*time.Hour), nil, false), true},
		// Parts of failed and canceled jobs go after the same retention.
		{mk("failed-old", exportv1.JobState_JOB_STATE_FAILED, ended.Add(-168*time.Hour), nil, false), true},
		{mk("canceled-old", exportv1.JobState_JOB_STATE_CANCELED, ended.Add(-168*time.Hour), nil, false), true},
		// Running jobs are never swept, however old.
		{mk("processing-old", exportv1.JobState_JOB_STATE_PROCESSING, ended.Add(-1000*time.Hour), nil, false), false},
		// Already swept (the gateway applied ExportExpired).
		{mk("already-expired", exportv1.JobState_JOB_STATE_COMPLETED, ended.Add(-168*time.Hour), nil, true), false},
	}
	for _, tt := range tests {
		e.putJob(t, tt.job)
		e.putObject(t, "jobs/"+tt.job.GetId()+"/parts/0/general.json")
		e.putObject(t, "jobs/"+tt.job.GetId()+"/files/dataport-"+tt.job.GetId()+".zip")
	}

	r, err := e.sweep.Sweep(t.Context())
	require.NoError(t, err)
	assert.Equal(t, retention.Report{JobsExpired: 4, ObjectsDeleted: 8}, r)
	for _, tt := range tests {
		t.Run(tt.job.GetId(), func(t *testing.T) {
			if tt.wantExpired {
				assert.Zero(t, e.objects(t, tt.job.GetId()), "objects left")
				assert.EqualValues(t, 1, e.expiredEvents(t, tt.job.GetId()), "ExportExpired events")
				return
			}
			assert.Equal(t, 2, e.objects(t, tt.job.GetId()), "objects left")
			assert.Zero(t, e.expiredEvents(t, tt.job.GetId()), "ExportExpired events")
		})
	}

	// A second sweep before the gateway marked the jobs finds the
	// published expiry and does nothing again.
	r, err = e.sweep.Sweep(t.Context())
	require.NoError(t, err)
	assert.Equal(t, retention.Report{}, r)

	// Time passes: the recent job's retention ends too.
	e.clock.now = now.Add(168 * time.Hour)
	r, err = e.sweep.Sweep(t.Context())
	require.NoError(t, err)
	assert.Equal(t, retention.Report{JobsExpired: 2, ObjectsDeleted: 4}, r, "completed-recent and completed-expires-soon")
	assert.Zero(t, e.objects(t, "completed-recent"))
	assert.Equal(t, 2, e.objects(t, "processing-old"))
}

func TestSweepAbortsStaleUploads(t *testing.T) {
	e := start(t)
	// An exporter that died mid-upload leaves an unfinished multipart
	// upload behind. An upload blocked after its first part looks the same
	// to the sweeper; the fake clock decides whether it is stale.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	key := fmt.Sprintf("jobs/stale-%d/parts/0/big.json", time.Now().UnixNano())
	pr := &blockingReader{ctx: ctx}
	upDone := make(chan error, 1)
	go func() {
		_, err := e.store.Upload(ctx, bucket, key, pr, "")
		upDone <- err
	}()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		ups, err := e.store.ListIncompleteUploads(t.Context(), bucket, "jobs/")
		require.NoError(c, err)
		assert.Len(c, ups, 1)
	}, 20*time.Second, 50*time.Millisecond, "the running upload is listed")

	// Young: left alone.
	r, err := e.sweep.Sweep(t.Context())
	require.NoError(t, err)
	assert.Zero(t, r.UploadsAborted)

	// A day later it counts as abandoned.
	e.clock.now = time.Now().Add(25 * time.Hour)
	r, err = e.sweep.Sweep(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, r.UploadsAborted)
	ups, err := e.store.ListIncompleteUploads(t.Context(), bucket, "jobs/")
	require.NoError(t, err)
	assert.Empty(t, ups)

	cancel()
	assert.Error(t, <-upDone, "the aborted upload cannot complete")
	_, err = e.store.Stat(t.Context(), bucket, key)
	assert.ErrorIs(t, err, blob.ErrNotFound)
}

// blockingReader yields a little more than one multipart part (so the
// upload is started on the server) and then blocks until ctx ends.
type blockingReader struct {
	ctx context.Context
	n   int
}

func (b *blockingReader) Read(p []byte) (int, error) {
	if b.n > blob.PartSize+1 {
		<-b.ctx.Done()
		return 0, b.ctx.Err()
	}
	n := min(len(p), blob.PartSize+2-b.n)
	clear(p[:n])
	b.n += n
	return n, nil
}

// TestExpiryIsInTheJobsTrace: the deletion of a job's files shows in the
// job's one trace, and the ExportExpired event carries it on.
func TestExpiryIsInTheJobsTrace(t *testing.T) {
	e := start(t)
	const traceID, spanID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	e.putJob(t, &exportv1.Job{Id: "traced", State: exportv1.JobState_JOB_STATE_COMPLETED,
		UpdatedAt: timestamppb.New(e.clock.now.Add(-200 * time.Hour)), TraceId: traceID, SpanId: spanID})
	e.putObject(t, "jobs/traced/files/dataport-traced.zip")

	r, err := e.sweep.Sweep(t.Context())
	require.NoError(t, err)
	require.Equal(t, 1, r.JobsExpired)

	var expire sdktrace.ReadOnlySpan
	for _, s := range e.spans.Ended() {
		if s.Name() == "retention expire" {
			expire = s
		}
	}
	require.NotNil(t, expire, "the expiry is a span")
	assert.Equal(t, traceID, expire.SpanContext().TraceID().String(), "in the job's trace")
	assert.Equal(t, spanID, expire.Parent().SpanID().String(), "under the span that created the job")
	subject, err := bus.StatusSubject(bus.EventExpired, "traced")
	require.NoError(t, err)
	m, err := e.events.GetLastMsgForSubject(t.Context(), subject)
	require.NoError(t, err)
	assert.Contains(t, m.Header.Get("traceparent"), traceID, "ExportExpired carries the job's trace")
}
