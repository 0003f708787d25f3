// Package jobview is the read-only side of the job projection for the
// services that are not its writer. The gateway's projection is the only
// writer of bus.BucketJobs; exporters, the archiver and the notifier read
// a job's record (its name, creation time, recipients, state) and learn
// of a cancellation through this package, so the record's encoding and
// "no record yet" are handled in one place.
package jobview

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
)

// ErrCanceled is the cause of a Watch context whose job was canceled.
var ErrCanceled = errors.New("jobview: job canceled")

// ErrFailed is the cause of a Watch context whose job failed or was
// rejected while the task ran: another part's failure ended the job, so
// what this part would still produce is wanted by no one.
var ErrFailed = errors.New("jobview: job failed")

// Ended is the cause that stops work on a job in the state its record
// shows: ErrCanceled, ErrFailed, or nil while the job may still complete.
// A completed or expired job is not among them: its parts are done.
func Ended(job *exportv1.Job) error {
	switch job.GetState() {
	case exportv1.JobState_JOB_STATE_CANCELED:
		return ErrCanceled
	case exportv1.JobState_JOB_STATE_FAILED, exportv1.JobState_JOB_STATE_REJECTED:
		return ErrFailed
	}
	return nil
}

// Reader reads job records. It is safe for concurrent use.
type Reader struct {
	kv  jetstream.KeyValue
	log *slog.Logger
}

// New returns a Reader over the jobs bucket kv; log may be nil.
func New(kv jetstream.KeyValue, log *slog.Logger) *Reader {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reader{kv: kv, log: log}
}

// Open looks up the jobs bucket (declared by bus.EnsureTopology).
func Open(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*Reader, error) {
	kv, err := js.KeyValue(ctx, bus.BucketJobs)
	if err != nil {
		return nil, fmt.Errorf("jobview: bucket %s: %w", bus.BucketJobs, err)
	}
	return New(kv, log), nil
}

// Get returns the job's record, or nil without error when there is none:
// a task may run before the gateway's projection has the job, and a job
// may be gone after retention. A record this version cannot decode is
// logged and reported as none too: the record is the gateway's, and a bad
// one must not stop an export or a notification. Only failing to read is
// an error.
func (r *Reader) Get(ctx context.Context, id string) (*exportv1.Job, error) {
	if bus.Token(id) != nil {
		return nil, nil
	}
	entry, err := r.kv.Get(ctx, id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrInvalidKey):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("read job %s: %w", id, err)
	}
	return r.decode(ctx, id, entry.Value()), nil
}

func (r *Reader) decode(ctx context.Context, id string, data []byte) *exportv1.Job {
	var job exportv1.Job
	if err := proto.Unmarshal(data, &job); err != nil {
		r.log.WarnContext(ctx, "undecodable job record", "job_id", id, "error", err)
		return nil
	}
	return &job
}

// IDs lists the ids of every job the projection holds. It reads the
// whole bucket's keys: for background work over all jobs (the retention
// sweeper), never for a request.
func (r *Reader) IDs(ctx context.Context) ([]string, error) {
	lister, err := r.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	var ids []string
	for k := range lister.Keys() {
		ids = append(ids, k)
	}
	return ids, nil
}

// Ended is Ended of the job's record: cause is nil for a job without a
// record.
func (r *Reader) Ended(ctx context.Context, id string) (cause, err error) {
	job, err := r.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return Ended(job), nil
}

// Watch returns a context derived from ctx that is canceled, with the
// cause Ended gives (ErrCanceled, ErrFailed), as soon as the job's record
// says it was canceled or failed: a running task learns of it when the
// record is written instead of polling it. The watch reads the current
// record first, so a job that ended before the call ends the context at
// once. stop releases the watch; call it when the task ends.
//
// A watch that breaks (its connection lost for good) does not cancel the
// context: whoever acts on the job's state last (announcing a part) reads
// the record with Ended, so a lost watch delays a stop, never loses it.
func (r *Reader) Watch(ctx context.Context, id string) (context.Context, context.CancelFunc, error) {
	if err := bus.Token(id); err != nil {
		return nil, nil, fmt.Errorf("watch job: %w", err)
	}
	wctx, cancel := context.WithCancelCause(ctx)
	w, err := r.kv.Watch(wctx, id, jetstream.IgnoreDeletes())
	if err != nil {
		cancel(nil)
		return nil, nil, fmt.Errorf("watch job %s: %w", id, err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-wctx.Done():
				return
			case entry, ok := <-w.Updates():
				if !ok {
					return
				}
				if entry == nil {
					continue // the end of the initial values
				}
				if cause := Ended(r.decode(wctx, id, entry.Value())); cause != nil {
					cancel(cause)
					return
				}
			}
		}
	}()
	stop := func() {
		cancel(nil)
		_ = w.Stop()
		<-done
	}
	return wctx, stop, nil
}
