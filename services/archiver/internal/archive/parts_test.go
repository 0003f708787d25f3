package archive_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/archiver/internal/archive"
	"dataport.dev/shared/bus"
)

// countingPackager counts how often a job is packaged, which is how often
// the archiver decided to finalise it: the events it then publishes are
// deduplicated and would hide a second decision.
type countingPackager struct {
	archive.Packager
	calls atomic.Int32
}

func (p *countingPackager) Package(ctx context.Context, job archive.Job, parts []*exportv1.PartUploaded) ([]*exportv1.File, error) {
	p.calls.Add(1)
	return p.Packager.Package(ctx, job, parts)
}

// completedFiles asserts that the job completed exactly once, without
// failing, and returns its files.
func (e *env) completedFiles(t *testing.T, jobID string) []*exportv1.File {
	t.Helper()
	assert.EqualValues(t, 1, e.count(t, bus.EventFinalizing, jobID), "finalizing events")
	require.EqualValues(t, 1, e.count(t, bus.EventCompleted, jobID), "completed events")
	assert.Zero(t, e.count(t, bus.EventFailed, jobID), "failed events")
	var done exportv1.ExportCompleted
	e.last(t, bus.EventCompleted, jobID, &done)
	return done.GetFiles()
}

// TestLatestReportOfEachPart reports parts out of order and one of them
// twice, the second time describing other bytes under the same key (its
// task redelivered to another exporter, which overwrote the object): the
// job completes once, with the latest report of that part, whose record
// is what the object now holds.
func TestLatestReportOfEachPart(t *testing.T) {
	e := prepare(t)
	pkg := &countingPackager{Packager: archive.NewDefaultPackager(e.store, bucket)}
	e.run(t, e.archiver(t, pkg))
	jobID := fmt.Sprintf("latest-%d", time.Now().UnixNano())

	f0 := e.upload(t, jobID, 0, partSpec{name: "general.json", recorded: `{"room":"general"}`})
	f2 := e.upload(t, jobID, 2, partSpec{name: "assets.json", recorded: `{"assets":[]}`})
	first := e.upload(t, jobID, 1, partSpec{name: "random.json", recorded: `{"room":"random","attempt":1}`})
	kind := exportv1.JobKind_JOB_KIND_ROOM
	e.publishPart(t, jobID, kind, 1, 3, 0, first)
	e.publishPart(t, jobID, kind, 2, 3, 1, f2)
	latest := e.upload(t, jobID, 1, partSpec{name: "random.json", recorded: `{"room":"random","attempt":2,"more":true}`})
	require.Equal(t, first.GetObjectKey(), latest.GetObjectKey())
	e.publishPart(t, jobID, kind, 1, 3, 2, latest)
	e.publishPart(t, jobID, kind, 0, 3, 3, f0)
	e.waitOutcome(t, jobID)

	assert.Empty(t, cmpFiles([]*exportv1.File{f0, latest, f2}, e.completedFiles(t, jobID)), "files differ (-want +got)")
	assert.EqualValues(t, 1, pkg.calls.Load(), "packaged")
	// Each handler reads through a consumer of its own and deletes it.
	var names []string
	for name := range e.events.ConsumerNames(t.Context()).Name() {
		names = append(names, name)
	}
	assert.Equal(t, []string{bus.ConsumerArchiver}, names, "consumers left on the events stream")
}

// TestConcurrentLastParts hands a job's last two part events to two
// handlers (as two replicas would get them), at once and with the later
// event first: exactly one of them finalises.
func TestConcurrentLastParts(t *testing.T) {
	tests := []struct {
		name string
		// handle runs the handlers of the job's part events, in stream
		// order.
		handle func(t *testing.T, a *archive.Archiver, msgs []jetstream.Msg)
	}{
		{
			name: "at once",
			handle: func(t *testing.T, a *archive.Archiver, msgs []jetstream.Msg) {
				var wg sync.WaitGroup
				begin := make(chan struct{})
				errs := make([]error, len(msgs))
				for i, m := range msgs {
					wg.Go(func() {
						<-begin
						errs[i] = a.Handle(t.Context(), m)
					})
				}
				close(begin)
				wg.Wait()
				for _, err := range errs {
					assert.NoError(t, err)
				}
			},
		},
		{
			name: "later event first",
			handle: func(t *testing.T, a *archive.Archiver, msgs []jetstream.Msg) {
				for i := len(msgs) - 1; i >= 0; i-- {
					require.NoError(t, a.Handle(t.Context(), msgs[i]))
				}
			},
		},
	}
	e := prepare(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pkg := &countingPackager{Packager: archive.NewDefaultPackager(e.store, bucket)}
			a := e.archiver(t, pkg)
			jobID := fmt.Sprintf("race%d-%d", i, time.Now().UnixNano())
			files := []*exportv1.File{
				e.upload(t, jobID, 0, partSpec{name: "general.json", recorded: `{"room":"general"}`}),
				e.upload(t, jobID, 1, partSpec{name: "random.json", recorded: `{"room":"random"}`}),
			}
			for n, f := range files {
				e.publishPart(t, jobID, exportv1.JobKind_JOB_KIND_ROOM, n, len(files), 0, f)
			}
			tt.handle(t, a, e.partEvents(t, jobID, len(files)))

			assert.Empty(t, cmpFiles(files, e.completedFiles(t, jobID)), "files differ (-want +got)")
			assert.EqualValues(t, 1, pkg.calls.Load(), "packaged")
		})
	}
}

// partEvents reads the job's n part events as a consumer delivers them,
// with their stream metadata, without acking anything.
func (e *env) partEvents(t *testing.T, jobID string, n int) []jetstream.Msg {
	t.Helper()
	subject, err := bus.StatusSubject(bus.EventPart, jobID)
	require.NoError(t, err)
	cons, err := e.events.OrderedConsumer(t.Context(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	require.NoError(t, err)
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(waitFor))
	require.NoError(t, err)
	var msgs []jetstream.Msg
	for m := range batch.Messages() {
		msgs = append(msgs, m)
	}
	require.NoError(t, batch.Error())
	require.Len(t, msgs, n)
	return msgs
}

// TestPartsAcrossRestart reports a job's first part to one archiver
// process, the second while no archiver runs and the last to a new
// process: the job completes once, as the parts live in the events
// stream, not in a process.
func TestPartsAcrossRestart(t *testing.T) {
	e := prepare(t)
	jobID := fmt.Sprintf("restart-%d", time.Now().UnixNano())
	files := []*exportv1.File{
		e.upload(t, jobID, 0, partSpec{name: "general.json", recorded: `{"room":"general"}`}),
		e.upload(t, jobID, 1, partSpec{name: "random.json", recorded: `{"room":"random"}`}),
		e.upload(t, jobID, 2, partSpec{name: "assets.json", recorded: `{"assets":[]}`}),
	}
	kind := exportv1.JobKind_JOB_KIND_ROOM

	stop := e.run(t, e.archiver(t, nil))
	e.publishPart(t, jobID, kind, 0, len(files), 0, files[0])
	require.EventuallyWithT(t, func(c *assert.CollectT) { e.settled(t, c) }, waitFor, tick)
	stop()

	e.publishPart(t, jobID, kind, 1, len(files), 0, files[1])
	e.run(t, e.archiver(t, nil))
	e.publishPart(t, jobID, kind, 2, len(files), 0, files[2])
	e.waitOutcome(t, jobID)

	assert.Empty(t, cmpFiles(files, e.completedFiles(t, jobID)), "files differ (-want +got)")
}
