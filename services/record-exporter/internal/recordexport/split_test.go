package recordexport_test

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/record-exporter/internal/recordexport"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/demo"
)

// subjectSpan is the first and last stream sequence of an organization's
// records of a resource, as the gateway's planner reads them.
func (e *env) subjectSpan(t *testing.T, resource string) (first, last uint64) {
	t.Helper()
	subject, err := bus.RecordSubject(resource, testOrg)
	require.NoError(t, err)
	st, err := e.ns.JS.Stream(t.Context(), bus.StreamRecords)
	require.NoError(t, err)
	m, err := st.GetMsg(t.Context(), 1, jetstream.WithGetMsgSubject(subject))
	require.NoError(t, err)
	l, err := st.GetLastMsgForSubject(t.Context(), subject)
	require.NoError(t, err)
	return m.Sequence, l.Sequence
}

// rangeTasks splits task into n range parts of its job, as
// plan.Split.RecordsTasks does: even ranges of the subject's sequences.
func (e *env) rangeTasks(t *testing.T, task *exportv1.ExportTask, n int) []*exportv1.ExportTask {
	t.Helper()
	first, last := e.subjectSpan(t, task.GetRecords().GetResource())
	span := last - first + 1
	out := make([]*exportv1.ExportTask, n)
	for i := range out {
		pt := proto.CloneOf(task)
		pt.Part, pt.PartsTotal = uint32(i), uint32(n)
		pt.RecordRange = &exportv1.RecordRange{FirstSeq: first + span*uint64(i)/uint64(n), LastSeq: first + span*uint64(i+1)/uint64(n) - 1}
		out[i] = pt
	}
	return out
}

// parts returns the latest PartUploaded of each of the job's n parts.
func (e *env) parts(t *testing.T, jobID string, n int) []*exportv1.PartUploaded {
	t.Helper()
	subject, err := bus.StatusSubject(bus.EventPart, jobID)
	require.NoError(t, err)
	st, err := e.ns.JS.Stream(t.Context(), bus.StreamExportEvents)
	require.NoError(t, err)
	cons, err := st.OrderedConsumer(t.Context(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	require.NoError(t, err)
	out := make([]*exportv1.PartUploaded, n)
	for {
		msgs, err := cons.FetchNoWait(100)
		require.NoError(t, err)
		got := 0
		for msg := range msgs.Messages() {
			got++
			var p exportv1.PartUploaded
			require.NoError(t, proto.Unmarshal(msg.Data(), &p))
			require.Less(t, int(p.GetPart()), n)
			out[p.GetPart()] = &p
		}
		if got == 0 {
			break
		}
	}
	for i, p := range out {
		require.NotNil(t, p, "part %d announced", i)
	}
	return out
}

// join concatenates the pieces as the archiver's Joiner does: a piece
// after the first leaves out its lead when no earlier piece held a row.
func (e *env) join(t *testing.T, parts []*exportv1.PartUploaded) []byte {
	t.Helper()
	var out []byte
	rows := false
	for i, p := range parts {
		require.NotNil(t, p.GetPiece(), "part %d is a piece", i)
		b := e.download(t, p.GetFile())
		if i > 0 && !rows && p.GetFile().GetRecords() > 0 {
			b = b[p.GetPiece().GetLead():]
		}
		rows = rows || p.GetFile().GetRecords() > 0
		out = append(out, b...)
	}
	return out
}

// TestSplitExportIsTheUnsplitFile: the pieces of a record export split
// into ranges join into the bytes one exporter writes over the whole
// stream, in every splittable format, when some ranges match nothing,
// and when a range's first attempt crashes; a canceled split export
// leaves no piece.
func TestSplitExportIsTheUnsplitFile(t *testing.T) {
	e := setup(t)
	// crash, when set, ends the attempt it belongs to once that many
	// records were read, as a killed exporter would.
	var crashAfter atomic.Int64
	var crash atomic.Pointer[context.CancelFunc]
	// during, when set, runs at every record read.
	var during atomic.Pointer[func()]
	x := e.exporter(t, func(o *config) {
		recordexport.SetTestHooks(&o.Options, func(uint64) {
			if crashAfter.Add(-1) == 0 {
				if c := crash.Load(); c != nil {
					(*c)()
				}
			}
			if f := during.Load(); f != nil {
				(*f)()
			}
		}, nil)
	})
	txns := e.data.Records[demo.ResourceTransactions]
	require.Greater(t, len(txns), 100)
	lastID := txns[len(txns)-1].GetId()

	unsplit := func(t *testing.T, format exportv1.Format, sc *exportv1.RecordsScope) ([]byte, *exportv1.File) {
		task := e.task(t, format, sc)
		require.NoError(t, x.Export(t.Context(), task))
		f := e.part(t, task.GetJobId()).GetFile()
		return e.download(t, f), f
	}
	split := func(t *testing.T, format exportv1.Format, sc *exportv1.RecordsScope, n int) ([]byte, []*exportv1.PartUploaded) {
		tasks := e.rangeTasks(t, e.task(t, format, sc), n)
		// Out of order, as replicas take them.
		for i := n - 1; i >= 0; i-- {
			require.NoError(t, x.Export(t.Context(), tasks[i]))
		}
		parts := e.parts(t, tasks[0].GetJobId(), n)
		return e.join(t, parts), parts
	}

	formats := []exportv1.Format{exportv1.Format_FORMAT_CSV, exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_XML,
		exportv1.Format_FORMAT_JSONL, exportv1.Format_FORMAT_JSON_API}
	scopes := map[string]*exportv1.RecordsScope{
		"all":             {Resource: "transactions"},
		"last range only": {Resource: "transactions", Filter: "id:" + lastID},
		"nothing":         {Resource: "transactions", Filter: "id:no-such-id"},
	}
	for _, format := range formats {
		for name, sc := range scopes {
			t.Run(fmt.Sprintf("%s %s", format, name), func(t *testing.T) {
				want, wf := unsplit(t, format, sc)
				got, parts := split(t, format, sc, 3)
				assert.True(t, bytes.Equal(want, got), "joined pieces differ from the unsplit file:\n%.300q\n%.300q", want, got)
				var records uint64
				for _, p := range parts {
					records += p.GetFile().GetRecords()
					assert.Equal(t, wf.GetName(), p.GetFile().GetName())
					assert.EqualValues(t, sc.GetMaxRows(), p.GetPiece().GetMaxRows())
				}
				assert.Equal(t, wf.GetRecords(), records)
				if sc.GetFilter() == "id:"+lastID {
					assert.Zero(t, parts[0].GetFile().GetRecords(), "the first range matches nothing")
					assert.EqualValues(t, 1, parts[2].GetFile().GetRecords(), "the last range holds the row")
				}
			})
		}
	}

	t.Run("a range retried after a crash writes the same piece", func(t *testing.T) {
		sc := &exportv1.RecordsScope{Resource: "transactions"}
		want, _ := unsplit(t, exportv1.Format_FORMAT_JSON, sc)
		tasks := e.rangeTasks(t, e.task(t, exportv1.Format_FORMAT_JSON, sc), 3)
		require.NoError(t, x.Export(t.Context(), tasks[0]))
		require.NoError(t, x.Export(t.Context(), tasks[2]))
		ctx, cancel := context.WithCancel(t.Context())
		crash.Store(&cancel)
		crashAfter.Store(20)
		require.Error(t, x.Export(ctx, tasks[1]), "the first attempt crashes")
		crash.Store(nil)
		assert.False(t, e.event(t, bus.EventPart, tasks[1].GetJobId(), &exportv1.PartUploaded{}) &&
			e.part(t, tasks[1].GetJobId()).GetPart() == 1, "the crashed attempt announced nothing")
		require.NoError(t, x.Export(t.Context(), tasks[1]))
		parts := e.parts(t, tasks[0].GetJobId(), 3)
		first := e.download(t, parts[1].GetFile())
		assert.True(t, bytes.Equal(want, e.join(t, parts)), "joined after the retry")
		// Redelivered once more after it was announced (a task that waited
		// in a consumer's buffer past its ack wait): the announced piece
		// stays readable while the range runs again, since the archiver
		// may be joining it, and is replaced by the same bytes.
		var missing atomic.Int32
		check := func() {
			if _, err := e.store.Stat(t.Context(), bucket, parts[1].GetFile().GetObjectKey()); err != nil {
				missing.Add(1)
			}
		}
		during.Store(&check)
		require.NoError(t, x.Export(t.Context(), tasks[1]))
		during.Store(nil)
		assert.Zero(t, missing.Load(), "the piece was gone while its range ran again")
		again := e.parts(t, tasks[0].GetJobId(), 3)
		assert.True(t, bytes.Equal(first, e.download(t, again[1].GetFile())))
		assert.Equal(t, parts[1].GetFile().GetSha256(), again[1].GetFile().GetSha256())
	})

	t.Run("progress counts each range's records", func(t *testing.T) {
		tasks := e.rangeTasks(t, e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions"}), 2)
		var sum uint64
		for _, task := range tasks {
			require.NoError(t, x.Export(t.Context(), task))
		}
		for _, p := range e.parts(t, tasks[0].GetJobId(), 2) {
			sum += p.GetFile().GetRecords()
			assert.Positive(t, p.GetFile().GetRecords(), "part %d", p.GetPart())
		}
		assert.EqualValues(t, len(txns), sum)
	})

	t.Run("a range over the row cap is rejected", func(t *testing.T) {
		tasks := e.rangeTasks(t, e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions", MaxRows: 5}), 2)
		err := x.Export(t.Context(), tasks[0])
		require.Error(t, err)
		assert.Contains(t, err.Error(), recordexport.ReasonTooManyRows)
	})

	t.Run("canceled split export leaves no pieces", func(t *testing.T) {
		tasks := e.rangeTasks(t, e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions"}), 3)
		require.NoError(t, x.Export(t.Context(), tasks[0]))
		require.NoError(t, x.Export(t.Context(), tasks[2]))
		prefix := "jobs/" + tasks[0].GetJobId() + "/"
		require.Len(t, e.objects(t, prefix), 2, "two pieces before the cancellation")
		// The record as the projection has it: the announced pieces'
		// parts are completed, so the range that notices the cancellation
		// deletes them as well as its own.
		e.putJob(t, &exportv1.Job{Id: tasks[0].GetJobId(), State: exportv1.JobState_JOB_STATE_CANCELED, Parts: []*exportv1.PartStatus{
			{Part: 0, State: exportv1.PartState_PART_STATE_COMPLETED},
			{Part: 1, State: exportv1.PartState_PART_STATE_EXPORTING},
			{Part: 2, State: exportv1.PartState_PART_STATE_COMPLETED},
		}})
		require.NoError(t, x.Export(t.Context(), tasks[1]))
		require.Eventually(t, func() bool { return len(e.objects(t, prefix)) == 0 }, 10*time.Second, 20*time.Millisecond,
			"every piece of the job deleted")
	})

	t.Run("what cannot be split is rejected", func(t *testing.T) {
		for name, c := range map[string]struct {
			format exportv1.Format
			sc     *exportv1.RecordsScope
		}{
			"pdf":     {exportv1.Format_FORMAT_PDF, &exportv1.RecordsScope{Resource: "transactions"}},
			"sorted":  {exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions", Sort: "-amount"}},
			"chunked": {exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions", MaxRowsPerChunk: 10}},
			"chat":    {exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "messages"}},
		} {
			t.Run(name, func(t *testing.T) {
				task := e.task(t, c.format, c.sc)
				task.Part, task.PartsTotal, task.RecordRange = 0, 2, &exportv1.RecordRange{FirstSeq: 1, LastSeq: 10}
				err := x.Export(t.Context(), task)
				require.Error(t, err)
				assert.Contains(t, err.Error(), "split")
			})
		}
	})
}
