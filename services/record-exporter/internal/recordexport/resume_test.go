package recordexport_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/record-exporter/internal/recordexport"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/logtest"
	"dataport.dev/shared/taskrun/taskruntest"
)

// crashSwitch injects a crash after the checkpoint of a chosen chunk and
// records what the stream sources read after it.
type crashSwitch struct {
	at       atomic.Int64 // crash after this many finished chunks; 0: never
	always   atomic.Bool  // crash after every checkpoint
	crashed  atomic.Bool
	reads    atomic.Int64 // records read (reset per attempt by the test)
	minAfter atomic.Uint64
}

func (c *crashSwitch) reset() {
	c.reads.Store(0)
	c.minAfter.Store(^uint64(0))
}

func (c *crashSwitch) hooks(o *recordexport.Options) {
	recordexport.SetTestHooks(o, func(seq uint64) {
		c.reads.Add(1)
		for cur := c.minAfter.Load(); seq < cur && !c.minAfter.CompareAndSwap(cur, seq); cur = c.minAfter.Load() {
		}
	}, func(chunks int) error {
		if c.always.Load() || int64(chunks) == c.at.Load() {
			c.at.Store(0)
			c.crashed.Store(true)
			return fmt.Errorf("injected crash after the checkpoint of chunk %d", chunks)
		}
		return nil
	})
}

// TestChunkedExportResumesFromCheckpoint kills chunked record exports of
// each stream source right after the checkpoint of chunk k, runs the task
// again as a redelivery would, and checks that the second attempt
// continued after the finished chunks instead of starting over, and that
// the files equal a clean run's byte for byte.
func TestChunkedExportResumesFromCheckpoint(t *testing.T) {
	e := setup(t)
	var (
		crash crashSwitch
		logs  logtest.Buffer
	)
	generated := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	x := e.exporter(t, func(o *config) {
		o.Now = func() time.Time { return generated } // PDF prints it
		o.CheckpointInterval = -1                     // after every chunk, so the crash point is exact
		o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		crash.hooks(&o.Options)
	})
	checkpoints, err := e.ns.JS.KeyValue(t.Context(), bus.BucketCheckpoints)
	require.NoError(t, err)

	tests := []struct {
		name   string
		format exportv1.Format
		target string
		scope  func() *exportv1.RecordsScope
		k      int
	}{
		{"events csv.gz by rows", exportv1.Format_FORMAT_CSV, "4.payment.abc123", func() *exportv1.RecordsScope {
			return &exportv1.RecordsScope{Resource: "events", MaxRowsPerChunk: 400, GzipChunks: true}
		}, 3},
		{"filtered transactions jsonl.gz by bytes", exportv1.Format_FORMAT_JSONL, "", func() *exportv1.RecordsScope {
			return &exportv1.RecordsScope{Resource: "transactions", Filter: "status:approved", MaxBytesPerChunk: 60_000, GzipChunks: true}
		}, 2},
		{"messages pdf by rows", exportv1.Format_FORMAT_PDF, "", func() *exportv1.RecordsScope {
			return &exportv1.RecordsScope{Resource: "messages", Fields: []string{"_id", "rid", "ts", "msg"}, MaxRowsPerChunk: 150}
		}, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			newTask := func() *exportv1.ExportTask {
				task := e.task(t, tc.format, tc.scope())
				task.TargetFile = tc.target
				// The PDF prints the job's name: the same for both runs.
				e.putJob(t, &exportv1.Job{Id: task.GetJobId(), Name: "Resume test", State: exportv1.JobState_JOB_STATE_PROCESSING,
					Kind: exportv1.JobKind_JOB_KIND_RECORDS})
				return task
			}
			crash.reset()
			clean := newTask()
			require.NoError(t, x.Export(ctx, clean))
			cleanFiles := e.part(t, clean.GetJobId()).GetFiles()
			cleanReads := crash.reads.Load()
			require.Greater(t, len(cleanFiles), tc.k+1, "several chunks after the crash point")
			assert.Empty(t, logs.Records(t, "resuming from chunk", clean.GetJobId()), "a clean run resumes nothing")

			// The first attempt dies right after the checkpoint of chunk k.
			task := newTask()
			crash.at.Store(int64(tc.k))
			crash.crashed.Store(false)
			err := x.Export(ctx, task)
			require.Error(t, err)
			require.True(t, crash.crashed.Load())
			assert.False(t, bus.IsPermanent(err), "a crash is transient")
			_, err = checkpoints.Get(ctx, task.GetJobId()+".0")
			require.NoError(t, err, "the checkpoint survives a transient failure")
			kept := e.objects(t, "jobs/"+task.GetJobId()+"/")
			require.Len(t, kept, tc.k, "the finished chunks survive a transient failure")

			// The redelivered task.
			crash.reset()
			require.NoError(t, x.Export(ctx, task))
			resumes := logs.Records(t, "resuming from chunk", task.GetJobId())
			require.Len(t, resumes, 1)
			from := uint64(resumes[0]["stream_seq"].(float64))
			assert.Equal(t, fmt.Sprintf("resuming from chunk %d at message %d", tc.k, from), resumes[0]["msg"])
			assert.EqualValues(t, tc.k, resumes[0]["chunks_done"])
			var before uint64
			for _, f := range cleanFiles[:tc.k] {
				before += f.GetRecords()
			}
			assert.EqualValues(t, before, resumes[0]["records_done"])
			// The saved work: nothing before the checkpoint is read again.
			assert.Equal(t, from, crash.minAfter.Load(), "the replay starts at the checkpoint's row")
			assert.Less(t, crash.reads.Load(), cleanReads)
			t.Logf("%s: %d chunks; clean run read %d records, the resumed attempt %d (from stream sequence %d, %d rows kept)",
				tc.name, len(cleanFiles), cleanReads, crash.reads.Load(), from, before)

			// What a user checks: the same files, byte for byte.
			files := e.part(t, task.GetJobId()).GetFiles()
			require.Len(t, files, len(cleanFiles))
			for i, f := range files {
				c := cleanFiles[i]
				assert.Equal(t, c.GetName(), f.GetName())
				assert.Equal(t, c.GetSha256(), f.GetSha256(), "chunk %d", i)
				assert.Equal(t, c.GetSize(), f.GetSize())
				assert.Equal(t, c.GetRecords(), f.GetRecords())
				assert.True(t, bytes.Equal(e.download(t, c), e.download(t, f)), "chunk %d: stored bytes differ", i)
			}
			_, err = checkpoints.Get(ctx, task.GetJobId()+".0")
			assert.ErrorIs(t, err, jetstream.ErrKeyNotFound, "the checkpoint is deleted once the part is announced")
			var keys []string
			for _, f := range files {
				keys = append(keys, f.GetObjectKey())
			}
			slices.Sort(keys)
			assert.Equal(t, keys, e.objects(t, "jobs/"+task.GetJobId()+"/"))
		})
	}

	scope := func() *exportv1.RecordsScope {
		return &exportv1.RecordsScope{Resource: "events", MaxRowsPerChunk: 700, GzipChunks: true}
	}
	t.Run("a checkpoint whose chunk is gone starts over", func(t *testing.T) {
		ctx := t.Context()
		clean := e.task(t, exportv1.Format_FORMAT_CSV, scope())
		require.NoError(t, x.Export(ctx, clean))
		cleanFiles := e.part(t, clean.GetJobId()).GetFiles()

		task := e.task(t, exportv1.Format_FORMAT_CSV, scope())
		crash.at.Store(2)
		require.Error(t, x.Export(ctx, task))
		gone := "jobs/" + task.GetJobId() + "/parts/0/events.0.csv.gz"
		require.NoError(t, e.store.Delete(ctx, bucket, gone))

		crash.reset()
		require.NoError(t, x.Export(ctx, task))
		assert.Empty(t, logs.Records(t, "resuming from chunk", task.GetJobId()))
		stale := logs.Records(t, "checkpoint not usable", task.GetJobId())
		require.Len(t, stale, 1)
		assert.Equal(t, "chunk events.0.csv.gz is gone", stale[0]["reason"])
		files := e.part(t, task.GetJobId()).GetFiles()
		require.Len(t, files, len(cleanFiles))
		for i, f := range files {
			assert.Equal(t, cleanFiles[i].GetSha256(), f.GetSha256(), "chunk %d", i)
		}
	})

	t.Run("a canceled job keeps the finished chunks as partial results and deletes the checkpoint", func(t *testing.T) {
		ctx := t.Context()
		task := e.task(t, exportv1.Format_FORMAT_CSV, scope())
		crash.at.Store(2)
		require.Error(t, x.Export(ctx, task))
		require.NotEmpty(t, e.objects(t, "jobs/"+task.GetJobId()+"/"))
		e.putJob(t, &exportv1.Job{Id: task.GetJobId(), State: exportv1.JobState_JOB_STATE_CANCELED})
		require.NoError(t, x.Export(ctx, task))
		kept := e.part(t, task.GetJobId())
		assert.True(t, kept.GetPartial())
		assert.Len(t, kept.GetFiles(), 2, "the two chunks checkpointed before the crash")
		e.keptAsPartial(t, task.GetJobId(), kept.GetFiles())
		_, err := checkpoints.Get(ctx, task.GetJobId()+".0")
		assert.ErrorIs(t, err, jetstream.ErrKeyNotFound)
	})

	t.Run("sorted and key-value exports take no checkpoint", func(t *testing.T) {
		ctx := t.Context()
		for _, sc := range []*exportv1.RecordsScope{
			{Resource: "events", Sort: "-createdTime", MaxRowsPerChunk: 700},
			{Resource: "users", MaxRowsPerChunk: 1},
		} {
			crash.always.Store(true)
			task := e.task(t, exportv1.Format_FORMAT_CSV, sc)
			require.NoError(t, x.Export(ctx, task), sc.GetResource())
			crash.always.Store(false)
			assert.Greater(t, len(e.part(t, task.GetJobId()).GetFiles()), 2)
			assert.Empty(t, logs.Records(t, "checkpoint saved", task.GetJobId()))
		}
	})
}

// TestCheckpointInterval checks that small chunks do not each rewrite the
// checkpoint: within one interval only the first chunk is checkpointed.
func TestCheckpointInterval(t *testing.T) {
	e := setup(t)
	var logs logtest.Buffer
	x := e.exporter(t, func(o *config) {
		o.Now = func() time.Time { return time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC) } // time stands still
		o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	task := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "events", MaxRowsPerChunk: 100})
	require.NoError(t, x.Export(t.Context(), task))
	assert.Len(t, e.part(t, task.GetJobId()).GetFiles(), (len(e.data.Records["events"])+99)/100)
	saved := logs.Records(t, "checkpoint saved", task.GetJobId())
	require.Len(t, saved, 1, "one checkpoint per DefaultCheckpointInterval")
	assert.EqualValues(t, 1, saved[0]["chunks"])
}

// TestChunkedExportGivenUpKeepsFinishedChunks checks the other end: when
// the consumer gives up on a task (its last delivery failed), the job
// fails, the checkpoint is deleted, and the chunks the attempts finished
// are kept as the job's partial results, nothing else.
func TestChunkedExportGivenUpKeepsFinishedChunks(t *testing.T) {
	e := setup(t)
	var crash crashSwitch
	crash.always.Store(true)
	x := e.exporter(t, func(o *config) {
		o.Runner.MaxDeliver = 1 // the first failure is the last
		o.CheckpointInterval = -1
		crash.hooks(&o.Options)
	})
	taskruntest.Consume(t, e.ns.JS, bustest.Topology(), bus.ConsumerRecordExporter, x.Runner, bus.ConsumeOptions{})

	task := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "events", MaxRowsPerChunk: 500})
	publishTask(t, e.ns.JS, task)
	var failed exportv1.ExportFailed
	require.Eventually(t, func() bool { return e.event(t, bus.EventFailed, task.GetJobId(), &failed) }, 20*time.Second, 20*time.Millisecond)
	assert.Contains(t, failed.GetReason(), "giving up after 1 attempt")
	assert.NotContains(t, failed.GetReason(), "injected crash", "the cause is for the logs")
	assert.False(t, failed.GetRejected())
	require.True(t, crash.crashed.Load())
	assert.NotEmpty(t, failed.GetPartialFiles(), "the chunks finished before the crash")
	e.keptAsPartial(t, task.GetJobId(), failed.GetPartialFiles())
	checkpoints, err := e.ns.JS.KeyValue(t.Context(), bus.BucketCheckpoints)
	require.NoError(t, err)
	_, err = checkpoints.Get(t.Context(), task.GetJobId()+".0")
	assert.ErrorIs(t, err, jetstream.ErrKeyNotFound)
}
