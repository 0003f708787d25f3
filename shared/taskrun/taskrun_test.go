package taskrun_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/jobview"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/taskrun"
	"dataport.dev/shared/taskrun/taskruntest"
)

const bucket = "dataport-exports"

var owner = &sourcev1.User{Id: "u-owner", Username: "owner", Roles: []string{"admin"}}

// env is a Runner on real servers with one fake kind per test.
type env struct {
	ns    *bustest.Server
	ms    *blobtest.Server
	store *blob.Store
	pub   *bus.Publisher
	run   *taskrun.Runner
}

func setup(t *testing.T, configure func(*taskrun.Options)) *env {
	t.Helper()
	ns := bustest.Start(t)
	ms := blobtest.Start(t, bucket)
	e := &env{ns: ns, ms: ms, store: ms.Store, pub: bus.NewPublisher(ns.JS, nil)}
	o := taskrun.Options{JS: ns.JS, Store: ms.Store, Publisher: e.pub, Bucket: bucket,
		Signer: bustest.TaskSigner(t), Name: "testexport", NotAllowed: "Not yours."}
	if configure != nil {
		configure(&o)
	}
	var err error
	e.run, err = taskrun.New(t.Context(), o)
	require.NoError(t, err)
	e.put(t, bus.BucketUsers, owner.GetId(), owner)
	return e
}

func (e *env) put(t testing.TB, bucket, key string, m proto.Message) {
	t.Helper()
	bustest.Put(t, e.ns.JS, bucket, key, m)
}

func (e *env) setJob(t testing.TB, id string, state exportv1.JobState) {
	t.Helper()
	e.put(t, bus.BucketJobs, id, &exportv1.Job{Id: id, Name: "job " + id, State: state})
}

func task(jobID string, pk exportv1.PartKind) *exportv1.ExportTask {
	return &exportv1.ExportTask{JobId: jobID, Kind: exportv1.JobKind_JOB_KIND_RECORDS, PartKind: pk,
		Format: exportv1.Format_FORMAT_CSV, OwnerId: owner.GetId(), PartsTotal: 1, Scope: access.ScopeFor(owner, "")}
}

// event returns the job's last status event of a kind, false if none.
func (e *env) event(t testing.TB, ev bus.Event, jobID string, m proto.Message) bool {
	t.Helper()
	return taskruntest.LastEvent(t, e.ns.JS, ev, jobID, m)
}

func (e *env) objects(t testing.TB, prefix string) []string {
	t.Helper()
	return blobtest.Keys(t, e.store, bucket, prefix)
}

func (e *env) checkpoint(t testing.TB, jobID string) bool {
	t.Helper()
	kv, err := e.ns.JS.KeyValue(t.Context(), bus.BucketCheckpoints)
	require.NoError(t, err)
	_, err = kv.Get(t.Context(), jobID+".0")
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false
	}
	require.NoError(t, err)
	return true
}

// consume runs the runner behind the real consume loop on the record
// exporter's consumer until the test ends.
func (e *env) consume(t *testing.T, maxDeliver int) {
	t.Helper()
	topo := bustest.Topology()
	topo.TaskMaxDeliver = maxDeliver
	taskruntest.Consume(t, e.ns.JS, topo, bus.ConsumerRecordExporter, e.run,
		bus.ConsumeOptions{NakDelay: func(uint64) time.Duration { return 50 * time.Millisecond }})
}

func (e *env) publish(t testing.TB, signer *bus.TaskSigner, task *exportv1.ExportTask) {
	t.Helper()
	subject, err := bus.TaskSubject(bus.TaskRecords)
	require.NoError(t, err)
	require.NoError(t, e.pub.PublishTask(t.Context(), signer, subject, task.GetJobId()+".task.0", task))
}

// fakeKind writes one object per run, unless run says otherwise.
type fakeKind struct {
	runs     atomic.Int32
	run      func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error)
	discards atomic.Int32
}

func (k *fakeKind) Run(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
	k.runs.Add(1)
	if k.run != nil {
		return k.run(ctx, t)
	}
	return nil, errors.New("no run")
}

func (k *fakeKind) Discard(context.Context, *taskrun.Task) { k.discards.Add(1) }

// writeFile uploads one small object of the part.
func writeFile(ctx context.Context, store *blob.Store, t *taskrun.Task, name string) (*exportv1.File, error) {
	key := objects.PartKey(t.Task.GetJobId(), t.Task.GetPart(), name)
	info, err := store.Upload(ctx, bucket, key, strings.NewReader("hello"), "text/plain")
	if err != nil {
		return nil, err
	}
	return &exportv1.File{Name: name, ObjectKey: key, Size: uint64(info.Size), Records: 1}, nil
}

func TestRunnerDispatchesOnceAndAnnounces(t *testing.T) {
	e := setup(t, nil)
	var records, other fakeKind
	records.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
		if t.Job.GetName() != "job j1" || t.Grant.User.GetId() != owner.GetId() {
			return nil, bus.Permanent(fmt.Errorf("job %v, grant %v", t.Job, t.Grant))
		}
		if !t.SaveCheckpoint(ctx, map[string]int{"n": 1}) {
			return nil, errors.New("checkpoint not saved")
		}
		f, err := writeFile(ctx, e.store, t, "out.csv")
		if err != nil {
			return nil, err
		}
		return &taskrun.Result{Files: []*exportv1.File{f}, Records: 1, Bytes: f.GetSize()}, nil
	}
	e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &records)
	e.run.Register(exportv1.PartKind_PART_KIND_ROOM, &other)
	e.setJob(t, "j1", exportv1.JobState_JOB_STATE_PROCESSING)

	// The part kind is unset: it follows from the job kind.
	require.NoError(t, e.run.Export(t.Context(), task("j1", exportv1.PartKind_PART_KIND_UNSPECIFIED)))
	assert.EqualValues(t, 1, records.runs.Load())
	assert.Zero(t, other.runs.Load())
	var part exportv1.PartUploaded
	require.True(t, e.event(t, bus.EventPart, "j1", &part))
	require.NotNil(t, part.GetFile(), "one file goes in file")
	assert.Equal(t, "out.csv", part.GetFile().GetName())
	assert.EqualValues(t, 1, part.GetPartsTotal())
	var progress exportv1.ExportProgress
	require.True(t, e.event(t, bus.EventProgress, "j1", &progress))
	assert.EqualValues(t, 100, progress.GetProgress().GetPercent())
	assert.False(t, e.checkpoint(t, "j1"), "an announced part needs no checkpoint")

	t.Run("a file list stays a list", func(t *testing.T) {
		records.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
			f, err := writeFile(ctx, e.store, t, "out.0.csv")
			if err != nil {
				return nil, err
			}
			return &taskrun.Result{Files: []*exportv1.File{f}, FileList: true}, nil
		}
		require.NoError(t, e.run.Export(t.Context(), task("j2", exportv1.PartKind_PART_KIND_RECORDS)))
		var part exportv1.PartUploaded
		require.True(t, e.event(t, bus.EventPart, "j2", &part))
		assert.Nil(t, part.GetFile())
		assert.Len(t, part.GetFiles(), 1)
	})

	// A room with thousands of attachments: inline they would make an
	// event NATS refuses, so past MaxInlineAttachments they go in a list
	// object the event names, and the list holds every one, in order.
	for _, n := range []int{taskrun.MaxInlineAttachments, 20 * taskrun.MaxInlineAttachments} {
		t.Run(fmt.Sprintf("%d attachments", n), func(t *testing.T) {
			jobID := fmt.Sprintf("att%d", n)
			attachments := make([]*exportv1.File, n)
			for i := range attachments {
				attachments[i] = &exportv1.File{Bucket: "assets", ObjectKey: fmt.Sprintf("assets/f%06d/photo of the team outing.jpeg", i),
					Name: fmt.Sprintf("assets/f%06d-photo of the team outing.jpeg", i), Size: 123456, Records: 1,
					Sha256: strings.Repeat("ab", 32), ContentType: "image/jpeg"}
			}
			records.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
				f, err := writeFile(ctx, e.store, t, "room.json")
				if err != nil {
					return nil, err
				}
				return &taskrun.Result{Files: []*exportv1.File{f}, Attachments: attachments}, nil
			}
			require.NoError(t, e.run.Export(t.Context(), task(jobID, exportv1.PartKind_PART_KIND_RECORDS)))
			var part exportv1.PartUploaded
			require.True(t, e.event(t, bus.EventPart, jobID, &part), "the part is announced")
			assert.Equal(t, "room.json", part.GetFile().GetName())
			list := part.GetAttachmentList()
			if n <= taskrun.MaxInlineAttachments {
				assert.Nil(t, list)
				assert.Len(t, part.GetFiles(), n, "inline")
				return
			}
			assert.Empty(t, part.GetFiles())
			require.NotNil(t, list)
			assert.EqualValues(t, n, list.GetRecords())
			r, info, err := e.store.Open(t.Context(), bucket, list.GetObjectKey())
			require.NoError(t, err)
			defer r.Close()
			assert.EqualValues(t, info.Size, list.GetSize())
			br := bufio.NewReader(r)
			for i := range n {
				var f exportv1.File
				require.NoError(t, protodelim.UnmarshalFrom(br, &f), "file %d", i)
				require.True(t, proto.Equal(attachments[i], &f), "file %d", i)
			}
			_, err = br.ReadByte()
			assert.ErrorIs(t, err, io.EOF, "nothing after the last file")
		})
	}

	t.Run("a handed-off part is not announced", func(t *testing.T) {
		records.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
			return &taskrun.Result{Handoff: true, Records: 3}, nil
		}
		require.NoError(t, e.run.Export(t.Context(), task("j3", exportv1.PartKind_PART_KIND_RECORDS)),
			"no file is no error when the part is handed off")
		assert.False(t, e.event(t, bus.EventPart, "j3", &exportv1.PartUploaded{}), "no part event")
	})
}

func TestRunnerRejectsAndTerminates(t *testing.T) {
	e := setup(t, nil)
	var k fakeKind
	k.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
		if _, err := writeFile(ctx, e.store, t, "partial.csv"); err != nil {
			return nil, err
		}
		t.SaveCheckpoint(ctx, map[string]int{"n": 1})
		switch t.Task.GetFormat() {
		case exportv1.Format_FORMAT_PDF:
			return nil, taskrun.Reject("Too many lines in one export")
		case exportv1.Format_FORMAT_JSON:
			return nil, bus.Permanent(errors.New("broken source"))
		}
		return nil, errors.New("unreachable")
	}
	e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)
	e.consume(t, 5)

	for _, tc := range []struct {
		name     string
		task     func(id string) *exportv1.ExportTask
		reason   string
		rejected bool
	}{
		{"rejected by its kind", func(id string) *exportv1.ExportTask {
			tk := task(id, exportv1.PartKind_PART_KIND_RECORDS)
			tk.Format = exportv1.Format_FORMAT_PDF
			return tk
		}, "Too many lines in one export", true},
		{"permanent failure", func(id string) *exportv1.ExportTask {
			tk := task(id, exportv1.PartKind_PART_KIND_RECORDS)
			tk.Format = exportv1.Format_FORMAT_JSON
			return tk
		}, bus.DefaultReason, false},
		{"scope of another user", func(id string) *exportv1.ExportTask {
			tk := task(id, exportv1.PartKind_PART_KIND_RECORDS)
			tk.OwnerId = "u-other"
			return tk
		}, "Not yours.", true},
		{"unregistered part kind", func(id string) *exportv1.ExportTask {
			return task(id, exportv1.PartKind_PART_KIND_ASSETS)
		}, "part kind assets not supported", true},
		{"unknown job kind", func(id string) *exportv1.ExportTask {
			tk := task(id, exportv1.PartKind_PART_KIND_UNSPECIFIED)
			tk.Kind = exportv1.JobKind_JOB_KIND_USER_DATA
			return tk
		}, "export kind user_data not supported yet", true},
		{"part beyond the plan", func(id string) *exportv1.ExportTask {
			tk := task(id, exportv1.PartKind_PART_KIND_RECORDS)
			tk.Part = 3
			return tk
		}, bus.DefaultReason, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := "rej-" + strings.ReplaceAll(tc.name, " ", "-")
			e.publish(t, bustest.TaskSigner(t), tc.task(id))
			var failed exportv1.ExportFailed
			require.Eventually(t, func() bool { return e.event(t, bus.EventFailed, id, &failed) }, 10*time.Second, 10*time.Millisecond)
			assert.Equal(t, tc.reason, failed.GetReason())
			assert.Equal(t, tc.rejected, failed.GetRejected())
			assert.Empty(t, e.objects(t, objects.JobPrefix(id)), "the part's objects are deleted")
			assert.False(t, e.checkpoint(t, id), "and its checkpoint")
			assert.False(t, e.event(t, bus.EventPart, id, &exportv1.PartUploaded{}))
		})
	}
	assert.EqualValues(t, 2, k.runs.Load(), "only tasks that pass the runner's checks run")
	assert.Positive(t, k.discards.Load(), "the kind's discard runs for a failed part")
}

func TestRunnerCancelStopsTheRun(t *testing.T) {
	e := setup(t, nil)
	started := make(chan struct{})
	var cause error
	var k fakeKind
	k.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
		if _, err := writeFile(ctx, e.store, t, "a.csv"); err != nil {
			return nil, err
		}
		t.SaveCheckpoint(ctx, map[string]int{"n": 1})
		close(started)
		<-ctx.Done()
		cause = context.Cause(ctx)
		return nil, ctx.Err()
	}
	e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)
	// The job's other parts: part 1 was uploaded and announced by another
	// task, which is done; part 2's task is still running elsewhere and
	// cleans up its own objects when it notices the cancellation.
	parts := func(state exportv1.JobState) *exportv1.Job {
		return &exportv1.Job{Id: "jc", State: state, Parts: []*exportv1.PartStatus{
			{Part: 0, State: exportv1.PartState_PART_STATE_EXPORTING},
			{Part: 1, State: exportv1.PartState_PART_STATE_COMPLETED},
			{Part: 2, State: exportv1.PartState_PART_STATE_EXPORTING},
		}}
	}
	e.put(t, bus.BucketJobs, "jc", parts(exportv1.JobState_JOB_STATE_PROCESSING))
	for part, name := range map[uint32]string{1: "b.csv", 2: "c.csv"} {
		_, err := e.store.Upload(t.Context(), bucket, objects.PartKey("jc", part, name), strings.NewReader("x"), "text/csv")
		require.NoError(t, err)
	}

	done := make(chan error, 1)
	tk := task("jc", exportv1.PartKind_PART_KIND_RECORDS)
	tk.PartsTotal = 3
	go func() { done <- e.run.Export(t.Context(), tk) }()
	<-started
	e.put(t, bus.BucketJobs, "jc", parts(exportv1.JobState_JOB_STATE_CANCELED))
	select {
	case err := <-done:
		require.NoError(t, err, "a canceled task is acked")
	case <-time.After(5 * time.Second):
		t.Fatal("the run did not stop on cancellation")
	}
	assert.ErrorIs(t, cause, jobview.ErrCanceled)
	assert.Equal(t, []string{objects.PartKey("jc", 2, "c.csv")}, e.objects(t, objects.JobPrefix("jc")),
		"the canceled part and the completed one are deleted; the running part's objects are its own")
	assert.False(t, e.checkpoint(t, "jc"))
	assert.EqualValues(t, 1, k.discards.Load())
	assert.False(t, e.event(t, bus.EventPart, "jc", &exportv1.PartUploaded{}))

	t.Run("canceled before it starts", func(t *testing.T) {
		require.NoError(t, e.run.Export(t.Context(), task("jc", exportv1.PartKind_PART_KIND_RECORDS)))
		assert.EqualValues(t, 1, k.runs.Load(), "the kind does not run")
	})
}

// keeperKind is a fakeKind whose finished files are what finished says.
type keeperKind struct {
	fakeKind
	finished []*exportv1.File
}

func (k *keeperKind) Finished(context.Context, *taskrun.Task) ([]*exportv1.File, error) {
	return k.finished, nil
}

func TestRunnerStopsWhenAnotherPartFailsTheJob(t *testing.T) {
	e := setup(t, nil)
	failed := func(id string) *exportv1.Job {
		return &exportv1.Job{Id: id, State: exportv1.JobState_JOB_STATE_FAILED, Error: "Part 1 failed.", Parts: []*exportv1.PartStatus{
			{Part: 0, State: exportv1.PartState_PART_STATE_EXPORTING},
			{Part: 1, State: exportv1.PartState_PART_STATE_EXPORTING},
			{Part: 2, State: exportv1.PartState_PART_STATE_COMPLETED},
		}}
	}
	partTask := func(id string) *exportv1.ExportTask {
		tk := task(id, exportv1.PartKind_PART_KIND_RECORDS)
		tk.PartsTotal = 3
		return tk
	}
	export := func(t *testing.T, tk *exportv1.ExportTask) {
		t.Helper()
		done := make(chan error, 1)
		go func() { done <- e.run.Export(t.Context(), tk) }()
		select {
		case err := <-done:
			require.NoError(t, err, "a task whose job failed elsewhere is acked")
		case <-time.After(10 * time.Second):
			t.Fatal("the run did not stop when the job failed")
		}
	}

	t.Run("running part keeps its finished chunks", func(t *testing.T) {
		var k keeperKind
		var cause error
		k.run = func(ctx context.Context, tk *taskrun.Task) (*taskrun.Result, error) {
			f, err := writeFile(ctx, e.store, tk, "a-1.csv")
			if err != nil {
				return nil, err
			}
			k.finished = []*exportv1.File{f}
			if _, err := writeFile(ctx, e.store, tk, "a-2.csv"); err != nil {
				return nil, err
			}
			// Another part fails the job while this one is on its second chunk.
			e.put(t, bus.BucketJobs, "jf", failed("jf"))
			<-ctx.Done()
			cause = context.Cause(ctx)
			return nil, ctx.Err()
		}
		e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)
		e.put(t, bus.BucketJobs, "jf", &exportv1.Job{Id: "jf", State: exportv1.JobState_JOB_STATE_PROCESSING})
		_, err := e.store.Upload(t.Context(), bucket, objects.PartKey("jf", 2, "c.csv"), strings.NewReader("x"), "text/csv")
		require.NoError(t, err)

		export(t, partTask("jf"))
		assert.ErrorIs(t, cause, jobview.ErrFailed)
		assert.Equal(t, []string{objects.PartKey("jf", 0, "a-1.csv"), objects.PartKey("jf", 2, "c.csv")},
			e.objects(t, objects.JobPrefix("jf")),
			"the finished chunk and the completed part stay; the unfinished chunk is deleted")
		var ev exportv1.PartUploaded
		require.True(t, e.event(t, bus.EventPart, "jf", &ev), "the finished chunk is announced")
		assert.True(t, ev.GetPartial())
		require.Len(t, ev.GetFiles(), 1)
		assert.Equal(t, objects.PartKey("jf", 0, "a-1.csv"), ev.GetFiles()[0].GetObjectKey())
		assert.False(t, e.event(t, bus.EventFailed, "jf", &exportv1.ExportFailed{}), "the job had failed already")
		assert.False(t, e.checkpoint(t, "jf"))
	})

	t.Run("finished part is kept whole", func(t *testing.T) {
		var k keeperKind
		k.run = func(ctx context.Context, tk *taskrun.Task) (*taskrun.Result, error) {
			f, err := writeFile(ctx, e.store, tk, "whole.csv")
			if err != nil {
				return nil, err
			}
			e.put(t, bus.BucketJobs, "jw", failed("jw"))
			<-ctx.Done() // the failure is seen; the part is done all the same
			return &taskrun.Result{Files: []*exportv1.File{f}, Records: 1}, nil
		}
		e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)
		e.put(t, bus.BucketJobs, "jw", &exportv1.Job{Id: "jw", State: exportv1.JobState_JOB_STATE_PROCESSING})

		export(t, partTask("jw"))
		assert.Equal(t, []string{objects.PartKey("jw", 0, "whole.csv")}, e.objects(t, objects.JobPrefix("jw")))
		var ev exportv1.PartUploaded
		require.True(t, e.event(t, bus.EventPart, "jw", &ev))
		assert.True(t, ev.GetPartial(), "a part of a failed job is a partial result, not a completed part")
		require.Len(t, ev.GetFiles(), 1)
		assert.Equal(t, "whole.csv", ev.GetFiles()[0].GetName())
	})

	t.Run("failed before it starts", func(t *testing.T) {
		var k keeperKind
		e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)
		e.put(t, bus.BucketJobs, "jb", failed("jb"))
		export(t, partTask("jb"))
		assert.EqualValues(t, 0, k.runs.Load(), "the kind does not run")
		assert.False(t, e.event(t, bus.EventPart, "jb", &exportv1.PartUploaded{}))
	})
}

func TestRunnerCheckpoints(t *testing.T) {
	e := setup(t, nil)
	type state struct {
		Seq  uint64 `json:"seq"`
		Note string `json:"note"`
	}
	var k fakeKind
	k.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
		var got state
		found, err := t.LoadCheckpoint(ctx, &got)
		if err != nil {
			return nil, err
		}
		if !found {
			if !t.SaveCheckpoint(ctx, state{Seq: 7}) {
				return nil, bus.Permanent(errors.New("not saved"))
			}
			if t.SaveCheckpoint(ctx, state{Seq: 8, Note: strings.Repeat("x", taskrun.MaxCheckpointBytes)}) {
				return nil, bus.Permanent(errors.New("an oversized checkpoint was saved"))
			}
			return nil, errors.New("crash after the checkpoint")
		}
		if got.Seq != 7 {
			return nil, bus.Permanent(fmt.Errorf("resumed at %d", got.Seq))
		}
		f, err := writeFile(ctx, e.store, t, "done.csv")
		if err != nil {
			return nil, err
		}
		return &taskrun.Result{Files: []*exportv1.File{f}}, nil
	}
	e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)

	tk := task("jk", exportv1.PartKind_PART_KIND_RECORDS)
	err := e.run.Export(t.Context(), tk)
	require.Error(t, err)
	assert.False(t, bus.IsPermanent(err), "a crash is retried")
	assert.True(t, e.checkpoint(t, "jk"), "a transient failure keeps the checkpoint")
	require.NoError(t, e.run.Export(t.Context(), tk), "the redelivery resumes")
	assert.False(t, e.checkpoint(t, "jk"))

	t.Run("an undecodable checkpoint reads as none", func(t *testing.T) {
		kv, err := e.ns.JS.KeyValue(t.Context(), bus.BucketCheckpoints)
		require.NoError(t, err)
		_, err = kv.Put(t.Context(), "ju.0", []byte("{not json"))
		require.NoError(t, err)
		err = e.run.Export(t.Context(), task("ju", exportv1.PartKind_PART_KIND_RECORDS))
		require.ErrorContains(t, err, "crash after the checkpoint", "the part started over")
	})
}

func TestRunnerGivesUpOnLastDelivery(t *testing.T) {
	e := setup(t, func(o *taskrun.Options) { o.MaxDeliver = 2 })
	var k fakeKind
	k.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
		return nil, errors.New("minio down")
	}
	e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)
	e.consume(t, 2)
	e.publish(t, bustest.TaskSigner(t), task("jg", exportv1.PartKind_PART_KIND_RECORDS))
	var failed exportv1.ExportFailed
	require.Eventually(t, func() bool { return e.event(t, bus.EventFailed, "jg", &failed) }, 10*time.Second, 10*time.Millisecond)
	assert.Contains(t, failed.GetReason(), "giving up after 2 attempts")
	assert.NotContains(t, failed.GetReason(), "minio down", "the cause is for the logs")
	assert.False(t, failed.GetRejected())
	assert.EqualValues(t, 2, k.runs.Load())
}

func TestRunnerDropsForgedTasks(t *testing.T) {
	e := setup(t, nil)
	var k fakeKind
	e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)
	e.consume(t, 5)
	forger, err := bus.NewTaskSigner([]byte("not-the-gateway-key-0123456789abcdef"))
	require.NoError(t, err)
	e.publish(t, forger, task("jf", exportv1.PartKind_PART_KIND_RECORDS))
	require.Eventually(t, func() bool {
		info, err := e.ns.JS.Stream(t.Context(), bus.StreamExportTasks)
		require.NoError(t, err)
		return info.CachedInfo().State.Msgs == 0
	}, 10*time.Second, 10*time.Millisecond, "the forged task is terminated")
	assert.Zero(t, k.runs.Load())
	assert.False(t, e.event(t, bus.EventFailed, "jf", &exportv1.ExportFailed{}), "the job it names is not failed")
}

func TestTickReportsAndStops(t *testing.T) {
	e := setup(t, func(o *taskrun.Options) { o.ProgressRecords = 10; o.ProgressInterval = time.Hour })
	var reports []uint64
	var k fakeKind
	k.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
		for n := uint64(0); n < 35; n++ {
			if err := t.Tick(ctx, uint32(n), n, n); err != nil {
				return nil, err
			}
		}
		ctx, cancel := context.WithCancelCause(ctx)
		cancel(errors.New("stopping"))
		if err := t.Tick(ctx, 0, 99, 0); err == nil || err.Error() != "stopping" {
			return nil, bus.Permanent(fmt.Errorf("tick after the end: %v", err))
		}
		f, err := writeFile(context.WithoutCancel(ctx), e.store, t, "t.csv")
		if err != nil {
			return nil, err
		}
		return &taskrun.Result{Files: []*exportv1.File{f}, Records: 35}, nil
	}
	e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)
	subject, err := bus.StatusSubject(bus.EventProgress, "jt")
	require.NoError(t, err)
	sub, err := e.ns.Conn.SubscribeSync(subject)
	require.NoError(t, err)
	require.NoError(t, e.run.Export(t.Context(), task("jt", exportv1.PartKind_PART_KIND_RECORDS)))
	for {
		msg, err := sub.NextMsg(500 * time.Millisecond)
		if err != nil {
			break
		}
		var p exportv1.ExportProgress
		require.NoError(t, proto.Unmarshal(msg.Data, &p))
		reports = append(reports, p.GetProgress().GetRecords())
	}
	assert.Equal(t, []uint64{0, 10, 20, 30, 35}, reports, "start, every ProgressRecords, final")
}

// TestRunnerLeavesCompletedJobsAlone: a task delivered again after its job
// completed does not run, and a repeated run that fails because its job
// completed meanwhile (the archiver deleted the split state it reads)
// ends without failing the job; the same failure while the job is still
// being exported is retried.
func TestRunnerLeavesCompletedJobsAlone(t *testing.T) {
	e := setup(t, nil)
	outer := t
	var k fakeKind
	k.run = func(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
		if t.Task.GetJobId() == "jc-meanwhile" {
			e.setJob(outer, t.Task.GetJobId(), exportv1.JobState_JOB_STATE_COMPLETED)
		}
		return nil, fmt.Errorf("range report of part 0: %w", blob.ErrNotFound)
	}
	e.run.Register(exportv1.PartKind_PART_KIND_RECORDS, &k)

	t.Run("completed before", func(t *testing.T) {
		e.setJob(t, "jc-before", exportv1.JobState_JOB_STATE_COMPLETED)
		require.NoError(t, e.run.Export(t.Context(), task("jc-before", exportv1.PartKind_PART_KIND_RECORDS)))
		assert.Zero(t, k.runs.Load(), "not run")
	})
	t.Run("completed meanwhile", func(t *testing.T) {
		e.setJob(t, "jc-meanwhile", exportv1.JobState_JOB_STATE_PROCESSING)
		require.NoError(t, e.run.Export(t.Context(), task("jc-meanwhile", exportv1.PartKind_PART_KIND_RECORDS)))
		assert.EqualValues(t, 1, k.runs.Load())
	})
	t.Run("still processing", func(t *testing.T) {
		e.setJob(t, "jc-processing", exportv1.JobState_JOB_STATE_PROCESSING)
		err := e.run.Export(t.Context(), task("jc-processing", exportv1.PartKind_PART_KIND_RECORDS))
		require.ErrorIs(t, err, blob.ErrNotFound, "retried")
		assert.False(t, bus.IsPermanent(err))
	})
	for _, id := range []string{"jc-before", "jc-meanwhile", "jc-processing"} {
		var m exportv1.ExportFailed
		assert.False(t, e.event(t, bus.EventFailed, id, &m), "%s: no failure", id)
		var p exportv1.PartUploaded
		assert.False(t, e.event(t, bus.EventPart, id, &p), "%s: no part", id)
	}
}
