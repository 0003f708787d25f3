package taskrun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/objects"
)

// MaxCheckpointBytes keeps a checkpoint under the NATS payload limit (1
// MiB by default). A larger one is not saved: the previous checkpoint
// stays valid, only less useful.
const MaxCheckpointBytes = 960 << 10

// Task is one run of an export task, handed to its Kind. It is not safe
// for concurrent use: a kind reports progress from one goroutine.
type Task struct {
	// Task is the task as the gateway signed it.
	Task *exportv1.ExportTask
	// Kind is the task's part kind (PartKind).
	Kind exportv1.PartKind
	// Grant is what the task may read, resolved from its scope as the
	// directory stands now; nil in Validate.
	Grant *access.Grant
	// Job is the job's record, nil when the gateway's projection has none
	// (yet); nil in Validate and Authorize.
	Job *exportv1.Job
	// Log carries job_id, part and part_kind.
	Log *slog.Logger

	r            *Runner
	lastProgress time.Time
	lastRecords  uint64
	// done is the part once a run finished it, before its announcement:
	// an outage that hits the announcement must not cost the whole part
	// again, and a job that fails meanwhile keeps it as partial results.
	done *Result
}

func (r *Runner) newTask(task *exportv1.ExportTask) *Task {
	kind := PartKind(task)
	return &Task{
		Task: task, Kind: kind, r: r, lastProgress: r.opts.Now(),
		Log: r.log.With("job_id", task.GetJobId(), "part", task.GetPart(), "part_kind", EnumWord(kind.String(), "PART_KIND_")),
	}
}

// Progress publishes an ExportProgress event under the dedup id
// <part>.<records>. It is informative only: a failure is logged and the
// export goes on, since the part event that matters is published (and
// checked) at the end. The Runner publishes 0 % before Run and 100 % with
// the announcement.
func (t *Task) Progress(ctx context.Context, percent uint32, records, bytes uint64) {
	t.ProgressStep(ctx, percent, records, bytes, "")
}

// ProgressStep is Progress with a step appended to the dedup id, for
// parts whose intermediate events may repeat the final record count (an
// asset list reports after each room): the final event keeps the plain
// <part>.<records> id, which no intermediate one then takes.
func (t *Task) ProgressStep(ctx context.Context, percent uint32, records, bytes uint64, step string) {
	task := t.Task
	ev := &exportv1.ExportProgress{
		JobId:      task.GetJobId(),
		OccurredAt: timestamppb.New(t.r.opts.Now()),
		Part:       task.GetPart(),
		PartsTotal: partsTotal(task),
		Progress:   &exportv1.Progress{Percent: percent, Records: records, Bytes: bytes},
	}
	disc := strconv.FormatUint(uint64(task.GetPart()), 10) + "." + strconv.FormatUint(records, 10)
	if step != "" {
		disc += "." + step
	}
	if err := t.r.opts.Publisher.PublishStatus(ctx, bus.EventProgress, task.GetJobId(), disc, ev); err != nil && ctx.Err() == nil {
		t.Log.WarnContext(ctx, "progress not published", "error", err)
	}
}

// Tick is the periodic check of a running part, cheap enough for every
// record: it returns the cause of ctx once ctx ended (the job was
// canceled, or the service is stopping), and publishes progress when
// Options.ProgressInterval passed or Options.ProgressRecords more records
// were done since the last report. Call it before each record, so a
// report covers work done: the last event is then always the final one,
// whose dedup id no periodic event has taken.
func (t *Task) Tick(ctx context.Context, percent uint32, records, bytes uint64) error {
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	now := t.r.opts.Now()
	if records != t.lastRecords &&
		(now.Sub(t.lastProgress) >= t.r.opts.ProgressInterval || records-t.lastRecords >= uint64(t.r.opts.ProgressRecords)) {
		t.lastProgress, t.lastRecords = now, records
		t.Progress(ctx, percent, records, bytes)
	}
	return nil
}

// checkpointKey is <jobId>.<part> in bus.BucketCheckpoints.
func (t *Task) checkpointKey() string {
	return t.Task.GetJobId() + "." + strconv.FormatUint(uint64(t.Task.GetPart()), 10)
}

// LoadCheckpoint decodes the part's checkpoint (JSON) into v and reports
// whether there was one. An undecodable checkpoint is deleted and reads
// as none. Only failing to read is an error. The kind checks what it
// loaded (version, what it refers to) and calls DeleteCheckpoint, or its
// Discarder's logic, when it cannot use it.
func (t *Task) LoadCheckpoint(ctx context.Context, v any) (bool, error) {
	entry, err := t.r.checkpoints.Get(ctx, t.checkpointKey())
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read checkpoint of part %d: %w", t.Task.GetPart(), err)
	}
	if err := json.Unmarshal(entry.Value(), v); err != nil {
		t.Log.WarnContext(ctx, "checkpoint not usable; starting the part over", "reason", "undecodable: "+err.Error())
		t.DeleteCheckpoint(ctx)
		return false, nil
	}
	return true, nil
}

// SaveCheckpoint stores v (JSON) as the part's checkpoint and reports
// whether it did. Failing to save is not fatal and only logged: the
// export goes on, and a crash then resumes from an older checkpoint or
// from scratch. A checkpoint over MaxCheckpointBytes is not saved.
func (t *Task) SaveCheckpoint(ctx context.Context, v any) bool {
	data, err := json.Marshal(v)
	if err != nil {
		t.Log.WarnContext(ctx, "checkpoint not saved", "error", err)
		return false
	}
	if len(data) > MaxCheckpointBytes {
		t.Log.WarnContext(ctx, "checkpoint too large; not saved", "bytes", len(data))
		return false
	}
	if _, err := t.r.checkpoints.Put(ctx, t.checkpointKey(), data); err != nil {
		t.Log.WarnContext(ctx, "checkpoint not saved", "error", err)
		return false
	}
	return true
}

// DeleteCheckpoint removes the part's checkpoint, even after ctx ended. A
// failure is logged: it only leaves a key behind that a later redelivery
// finds stale, or the bucket's TTL removes.
func (t *Task) DeleteCheckpoint(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := t.r.checkpoints.Delete(ctx, t.checkpointKey()); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Log.WarnContext(ctx, "checkpoint not deleted", "error", err)
	}
}

// ClearPart deletes the objects under the part's prefix
// (objects.PartPrefix): what an earlier attempt left, before a fresh
// start that must hold exactly the files it announces.
func (t *Task) ClearPart(ctx context.Context) error {
	prefix := objects.PartPrefix(t.Task.GetJobId(), t.Task.GetPart())
	n, err := t.r.deletePrefix(ctx, prefix, nil)
	if err != nil {
		return err
	}
	if n > 0 {
		t.Log.InfoContext(ctx, "deleted export objects", "prefix", prefix, "objects", n)
	}
	return nil
}
