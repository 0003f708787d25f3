package archive_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/archiver/internal/archive"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/jobview"
)

const (
	bucket      = "dataport-exports"
	assetBucket = "dataport-assets"
	owner       = "user-alice"
	waitFor     = 20 * time.Second
	tick        = 50 * time.Millisecond
)

// env is an archiver's surroundings: a real JetStream server, a real
// MinIO and the archiver's durable consumer.
type env struct {
	js       jetstream.JetStream
	store    *blob.Store
	pub      *bus.Publisher
	events   jetstream.Stream
	jobs     jetstream.KeyValue
	consumer jetstream.Consumer
}

// start runs an archiver on a fresh env.
func start(t *testing.T) *env {
	t.Helper()
	e := prepare(t)
	e.run(t, e.archiver(t, nil))
	return e
}

// prepare starts the servers and declares the archiver's consumer, but
// runs no archiver.
func prepare(t *testing.T) *env {
	t.Helper()
	srv := bustest.Start(t)
	mio := blobtest.Start(t, bucket, assetBucket)
	ctx := t.Context()
	events, err := srv.JS.Stream(ctx, bus.StreamExportEvents)
	require.NoError(t, err)
	jobs, err := srv.JS.KeyValue(ctx, bus.BucketJobs)
	require.NoError(t, err)
	consumer, err := bus.EnsureConsumer(ctx, srv.JS, bustest.Topology(), bus.ConsumerArchiver)
	require.NoError(t, err)
	return &env{js: srv.JS, store: mio.Store, pub: bus.NewPublisher(srv.JS, nil), events: events, jobs: jobs, consumer: consumer}
}

// archiver returns a new archiver on the env's servers, as a replica or a
// restarted process would be; packager nil means the default one.
func (e *env) archiver(t *testing.T, packager archive.Packager) *archive.Archiver {
	t.Helper()
	a, err := archive.New(archive.Config{
		Events:    e.events,
		Jobs:      jobview.New(e.jobs, nil),
		Objects:   e.store,
		Bucket:    bucket,
		Publisher: e.pub,
		Packager:  packager,
	})
	require.NoError(t, err)
	return a
}

// run consumes the archiver's durable consumer with a until the returned
// stop is called or the test ends.
func (e *env) run(t *testing.T, a *archive.Archiver) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- bus.Consume(ctx, e.consumer, a.Handle, bus.ConsumeOptions{
			Concurrency: 4,
			NakDelay:    func(uint64) time.Duration { return 100 * time.Millisecond },
		})
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			assert.NoError(t, <-done)
		})
	}
	// Registered after the servers' cleanups, so it runs before them.
	t.Cleanup(stop)
	return stop
}

// partSpec is one part of a job as a test sets it up.
type partSpec struct {
	name string
	// recorded is the content the exporter reports (size and SHA-256).
	recorded string
	// stored is what is actually in the bucket; nil means the same as
	// recorded, and missing means no object at all.
	stored  *string
	missing bool
}

// upload stores a part's object as the spec says and returns the File
// record the exporter would report for it.
func (e *env) upload(t *testing.T, jobID string, part int, s partSpec) *exportv1.File {
	t.Helper()
	key := fmt.Sprintf("jobs/%s/parts/%d/%s", jobID, part, s.name)
	sum := sha256.Sum256([]byte(s.recorded))
	f := &exportv1.File{
		Name:        s.name,
		ObjectKey:   key,
		Size:        uint64(len(s.recorded)),
		Records:     3,
		Sha256:      hex.EncodeToString(sum[:]),
		ContentType: "application/json",
	}
	if s.missing {
		return f
	}
	content := s.recorded
	if s.stored != nil {
		content = *s.stored
	}
	_, err := e.store.Upload(t.Context(), bucket, key, bytes.NewReader([]byte(content)), f.ContentType)
	require.NoError(t, err)
	return f
}

// publishPart sends PartUploaded as room-exporter does. seq makes the
// dedup id unique, so a repeated part is really delivered again. One file
// goes in PartUploaded.file, several in .files.
func (e *env) publishPart(t *testing.T, jobID string, kind exportv1.JobKind, part, total int, seq int, files ...*exportv1.File) {
	t.Helper()
	m := &exportv1.PartUploaded{
		JobId:      jobID,
		OccurredAt: timestamppb.Now(),
		Part:       uint32(part),
		PartsTotal: uint32(total),
		Kind:       kind,
		OwnerId:    owner,
	}
	if len(files) == 1 {
		m.File = files[0]
	} else {
		m.Files = files
	}
	require.NoError(t, e.pub.PublishStatus(t.Context(), bus.EventPart, jobID, fmt.Sprintf("%d.%d", part, seq), m))
}

// count is how many events of kind ev the job has in EXPORT_EVENTS.
func (e *env) count(t *testing.T, ev bus.Event, jobID string) uint64 {
	t.Helper()
	subject, err := bus.StatusSubject(ev, jobID)
	require.NoError(t, err)
	info, err := e.events.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	require.NoError(t, err)
	return info.State.Subjects[subject]
}

// last decodes the job's latest event of kind ev into m.
func (e *env) last(t *testing.T, ev bus.Event, jobID string, m proto.Message) {
	t.Helper()
	subject, err := bus.StatusSubject(ev, jobID)
	require.NoError(t, err)
	raw, err := e.events.GetLastMsgForSubject(t.Context(), subject)
	require.NoError(t, err)
	require.NoError(t, proto.Unmarshal(raw.Data, m))
}

// waitOutcome waits until the job has a terminal event and the archiver
// has settled every delivered message, so counts are final.
func (e *env) waitOutcome(t *testing.T, jobID string) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Positive(c, e.count(t, bus.EventCompleted, jobID)+e.count(t, bus.EventFailed, jobID), "no terminal event yet")
		e.settled(t, c)
	}, waitFor, tick)
}

// settled asserts that the archiver's consumer has every message
// delivered and acked.
func (e *env) settled(t *testing.T, c *assert.CollectT) {
	info, err := e.consumer.Info(t.Context())
	if assert.NoError(c, err) {
		assert.Zero(c, info.NumPending, "messages not yet delivered")
		assert.Zero(c, info.NumAckPending, "messages not yet acked")
	}
}

func TestArchiver(t *testing.T) {
	e := start(t)
	tampered := `{"room":"general","messages":["HELLO"]}`

	tests := []struct {
		name  string
		parts []partSpec
		// order lists part numbers in publish order; repeats are
		// redeliveries.
		order []int
		// wantReason is empty for a completed job, else substrings of the
		// failure reason.
		wantReason []string
	}{
		{
			name:  "one-part room export completes with its file",
			parts: []partSpec{{name: "general.json", recorded: `{"room":"general","messages":[]}`}},
			order: []int{0},
		},
		{
			name: "three parts out of order, one twice, complete once in part order",
			parts: []partSpec{
				{name: "general.json", recorded: `{"room":"general"}`},
				{name: "random.json", recorded: `{"room":"random"}`},
				{name: "assets.json", recorded: `{"assets":[]}`},
			},
			order: []int{2, 0, 2, 1, 0},
		},
		{
			name:       "object with other bytes than recorded fails naming the part",
			parts:      []partSpec{{name: "general.json", recorded: `{"room":"general","messages":["hello"]}`, stored: &tampered}},
			order:      []int{0},
			wantReason: []string{"part 0 (general.json) failed verification", "sha256"},
		},
		{
			name: "object of another size fails",
			parts: []partSpec{
				{name: "general.json", recorded: `{"room":"general"}`},
				{name: "random.json", recorded: `{"room":"random"}`, stored: &tampered},
			},
			order:      []int{0, 1},
			wantReason: []string{"part 1 (random.json) failed verification", "bytes"},
		},
		{
			name: "missing object fails",
			parts: []partSpec{
				{name: "general.json", recorded: `{"room":"general"}`},
				{name: "random.json", recorded: `{"room":"random"}`, missing: true},
			},
			order:      []int{1, 0},
			wantReason: []string{"part 1 (random.json) failed verification", "missing"},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobID := fmt.Sprintf("job%d-%d", i, time.Now().UnixNano())
			files := make([]*exportv1.File, len(tt.parts))
			for n, s := range tt.parts {
				files[n] = e.upload(t, jobID, n, s)
			}
			for seq, n := range tt.order {
				e.publishPart(t, jobID, exportv1.JobKind_JOB_KIND_ROOM, n, len(tt.parts), seq, files[n])
			}
			e.waitOutcome(t, jobID)

			assert.EqualValues(t, 1, e.count(t, bus.EventFinalizing, jobID), "finalizing events")
			if len(tt.wantReason) == 0 {
				require.EqualValues(t, 1, e.count(t, bus.EventCompleted, jobID), "completed events")
				assert.Zero(t, e.count(t, bus.EventFailed, jobID), "failed events")
				var done exportv1.ExportCompleted
				e.last(t, bus.EventCompleted, jobID, &done)
				assert.Equal(t, jobID, done.GetJobId())
				assert.Equal(t, owner, done.GetOwnerId())
				assert.Equal(t, exportv1.JobKind_JOB_KIND_ROOM, done.GetKind())
				assert.Empty(t, cmpFiles(files, done.GetFiles()), "files differ (-want +got)")
				return
			}
			require.EqualValues(t, 1, e.count(t, bus.EventFailed, jobID), "failed events")
			assert.Zero(t, e.count(t, bus.EventCompleted, jobID), "completed events")
			var failed exportv1.ExportFailed
			e.last(t, bus.EventFailed, jobID, &failed)
			assert.Equal(t, owner, failed.GetOwnerId())
			assert.False(t, failed.GetRejected())
			for _, want := range tt.wantReason {
				assert.Contains(t, failed.GetReason(), want)
			}
			assertWorded(t, failed.GetReason(), jobID)
		})
	}
}

// TestArchiverIgnoresEndedJob checks that a part delivered again long after
// its job ended (past the dedup window) cannot complete the job twice.
func TestArchiverIgnoresEndedJob(t *testing.T) {
	e := start(t)
	jobID := fmt.Sprintf("ended-%d", time.Now().UnixNano())
	f := e.upload(t, jobID, 0, partSpec{name: "general.json", recorded: `{"room":"general"}`})
	e.publishPart(t, jobID, exportv1.JobKind_JOB_KIND_ROOM, 0, 1, 0, f)
	e.waitOutcome(t, jobID)
	require.EqualValues(t, 1, e.count(t, bus.EventCompleted, jobID))

	// Without the object, verifying again would publish ExportFailed,
	// which no dedup id of the completion would stop.
	require.NoError(t, e.store.Delete(t.Context(), bucket, f.GetObjectKey()))
	e.publishPart(t, jobID, exportv1.JobKind_JOB_KIND_ROOM, 0, 1, 1, f)
	e.waitOutcome(t, jobID)
	assert.EqualValues(t, 1, e.count(t, bus.EventCompleted, jobID), "completed events")
	assert.Zero(t, e.count(t, bus.EventFailed, jobID), "failed events")
}

func cmpFiles(want, got []*exportv1.File) string {
	if len(want) != len(got) {
		return fmt.Sprintf("want %d files, got %d", len(want), len(got))
	}
	for i := range want {
		if !proto.Equal(want[i], got[i]) {
			return fmt.Sprintf("file %d: want %v, got %v", i, want[i], got[i])
		}
	}
	return ""
}
