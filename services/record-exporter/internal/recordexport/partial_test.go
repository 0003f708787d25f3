package recordexport_test

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/taskrun/taskruntest"
)

// keptAsPartial asserts that what a failed or canceled job left in the
// bucket is exactly its partial results, files, and that each file is
// what its record says (size, SHA-256, the store's checksum): the
// finished chunks stay downloadable, nothing else is left.
func (e *env) keptAsPartial(t *testing.T, jobID string, files []*exportv1.File) {
	t.Helper()
	var keys []string
	for _, f := range files {
		keys = append(keys, f.GetObjectKey())
		e.download(t, f)
		assert.Positive(t, f.GetRecords(), "%s counts its rows", f.GetName())
	}
	left := e.objects(t, "jobs/"+jobID+"/")
	slices.Sort(keys)
	slices.Sort(left)
	assert.Equal(t, keys, left, "the objects left are the partial results")
}

// TestCanceledPartsKeepEachOthersChunks: a job of two chunked parts
// exported at once is canceled while both run. Each part's cleanup
// removes only its own unfinished objects, so every chunk either part
// finished is kept and listed in that part's partial results, from its
// first chunk on.
func TestCanceledPartsKeepEachOthersChunks(t *testing.T) {
	e := setup(t)
	topo := bustest.Topology()
	x := e.exporter(t, func(o *config) { o.Runner.ProgressRecords = 100; o.Runner.MaxDeliver = topo.TaskMaxDeliver })
	taskruntest.Consume(t, e.ns.JS, topo, bus.ConsumerRecordExporter, x.Runner, bus.ConsumeOptions{Concurrency: 2})

	// PDF chunks of the fewest rows allowed: slow enough that both parts
	// are still running when the job is canceled.
	resources := []string{"events", "transactions"}
	first := e.task(t, exportv1.Format_FORMAT_PDF, nil)
	jobID := first.GetJobId()
	progress, err := bus.StatusSubject(bus.EventProgress, jobID)
	require.NoError(t, err)
	sub, err := e.ns.Conn.SubscribeSync(progress)
	require.NoError(t, err)
	defer func() { _ = sub.Unsubscribe() }()
	for part, res := range resources {
		task := proto.CloneOf(first)
		task.Part, task.PartsTotal = uint32(part), uint32(len(resources))
		task.Records = &exportv1.RecordsScope{Resource: res, MaxRowsPerChunk: 100}
		publishPartTask(t, e.ns.JS, task)
	}

	// Cancel once both parts have closed chunks.
	done := make(map[uint32]uint64)
	require.Eventually(t, func() bool {
		msg, err := sub.NextMsg(100 * time.Millisecond)
		if err != nil {
			return false
		}
		var p exportv1.ExportProgress
		require.NoError(t, proto.Unmarshal(msg.Data, &p))
		done[p.GetPart()] = max(done[p.GetPart()], p.GetProgress().GetRecords())
		return done[0] >= 400 && done[1] >= 400
	}, time.Minute, time.Millisecond, "both parts export at once")
	e.putJob(t, &exportv1.Job{Id: jobID, State: exportv1.JobState_JOB_STATE_CANCELED})

	var partial []*exportv1.PartUploaded
	require.Eventually(t, func() bool {
		info, err := e.ns.JS.Stream(t.Context(), bus.StreamExportTasks)
		require.NoError(t, err)
		partial = e.partEvents(t, jobID)
		return info.CachedInfo().State.Msgs == 0 && len(partial) == len(resources)
	}, 30*time.Second, 20*time.Millisecond, "both tasks acked and both parts' partial results announced")

	var all []*exportv1.File
	for _, p := range partial {
		require.True(t, p.GetPartial(), "part %d announces partial results, not the part", p.GetPart())
		files := p.GetFiles()
		assert.GreaterOrEqual(t, len(files), 3, "part %d keeps the chunks closed within its first 400 rows at least", p.GetPart())
		for n, f := range files {
			assert.Equal(t, fmt.Sprintf("%s.%d.pdf", resources[p.GetPart()], n), f.GetName(),
				"part %d keeps every chunk it finished, from the first", p.GetPart())
		}
		all = append(all, files...)
	}
	e.keptAsPartial(t, jobID, all)
}

// publishPartTask publishes one part's task under that part's dedup id.
func publishPartTask(t *testing.T, js jetstream.JetStream, task *exportv1.ExportTask) {
	t.Helper()
	subject, err := bus.TaskSubject(bus.TaskRecords)
	require.NoError(t, err)
	id := task.GetJobId() + ".task." + strconv.FormatUint(uint64(task.GetPart()), 10)
	require.NoError(t, bus.NewPublisher(js, nil).PublishTask(t.Context(), bustest.TaskSigner(t), subject, id, task))
}

// partEvents returns every PartUploaded event of the job, in order.
func (e *env) partEvents(t *testing.T, jobID string) []*exportv1.PartUploaded {
	t.Helper()
	subject, err := bus.StatusSubject(bus.EventPart, jobID)
	require.NoError(t, err)
	stream, err := e.ns.JS.Stream(t.Context(), bus.StreamExportEvents)
	require.NoError(t, err)
	info, err := stream.Info(t.Context(), jetstream.WithSubjectFilter(subject))
	require.NoError(t, err)
	n := int(info.State.Subjects[subject])
	if n == 0 {
		return nil
	}
	cons, err := stream.OrderedConsumer(t.Context(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	require.NoError(t, err)
	batch, err := cons.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	require.NoError(t, err)
	var out []*exportv1.PartUploaded
	for msg := range batch.Messages() {
		var p exportv1.PartUploaded
		require.NoError(t, proto.Unmarshal(msg.Data(), &p))
		out = append(out, &p)
	}
	require.NoError(t, batch.Error())
	return out
}
