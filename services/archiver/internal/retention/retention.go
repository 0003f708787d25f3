// Package retention deletes what Dataport no longer promises to keep: the
// files and parts of jobs whose retention has passed, and multipart
// uploads left unfinished by exporters or archivers that died. MinIO
// ignores the S3 AbortIncompleteMultipartUpload lifecycle rule and expires
// objects only in whole days, so this sweeper does both itself.
package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/jobview"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/telemetry"
)

// Objects is the part of the object store the sweeper uses. *blob.Store
// implements it; every method is idempotent (deleting a missing key or
// aborting a finished upload succeeds), so two sweepers may race.
type Objects interface {
	List(ctx context.Context, bucket, prefix string) ([]blob.Info, error)
	Delete(ctx context.Context, bucket, key string) error
	ListIncompleteUploads(ctx context.Context, bucket, prefix string) ([]blob.Upload, error)
	AbortUpload(ctx context.Context, bucket, key, uploadID string) error
}

// Publisher publishes status events. *bus.Publisher implements it.
type Publisher interface {
	PublishStatus(ctx context.Context, ev bus.Event, jobID, discriminator string, m proto.Message) error
}

// Config holds a Sweeper's dependencies and settings.
type Config struct {
	// Jobs reads the job projection. The sweeper never writes it: the
	// gateway owns job records and learns of the deletion from
	// ExportExpired.
	Jobs *jobview.Reader
	// Events is the EXPORT_EVENTS stream, read to skip jobs whose expiry
	// was already published.
	Events    jetstream.Stream
	Objects   Objects
	Bucket    string
	Publisher Publisher
	// Retention is how long a job's files are kept after it ended
	// (DATAPORT_RETENTION); a job's own expires_at, when set, wins.
	Retention time.Duration
	// StaleUploadAge is how old an unfinished multipart upload under jobs/
	// must be before it is aborted (DATAPORT_STALE_UPLOAD_AGE). Keep it far
	// above the longest upload.
	StaleUploadAge time.Duration
	// Interval is the time between sweeps (DATAPORT_SWEEP_INTERVAL).
	Interval time.Duration
	// Logger defaults to discarding; Now defaults to time.Now.
	Logger *slog.Logger
	Now    func() time.Time
	// TracerProvider traces each job's expiry inside the job's trace
	// (telemetry.InJobTrace); nil traces nothing.
	TracerProvider trace.TracerProvider
}

// Sweeper deletes expired job files and stale uploads. Several replicas
// may sweep at once: deletions are idempotent and ExportExpired carries
// the once-per-job dedup id "<jobId>.expired".
type Sweeper struct {
	c      Config
	tracer trace.Tracer
}

// New returns a Sweeper, or an error naming a missing dependency.
func New(c Config) (*Sweeper, error) {
	switch {
	case c.Jobs == nil || c.Events == nil:
		return nil, errors.New("retention: jobs bucket and events stream are required")
	case c.Objects == nil || c.Bucket == "":
		return nil, errors.New("retention: object store and bucket are required")
	case c.Publisher == nil:
		return nil, errors.New("retention: publisher is required")
	case c.Retention <= 0 || c.StaleUploadAge <= 0 || c.Interval <= 0:
		return nil, errors.New("retention: retention, stale upload age and interval must be positive")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.TracerProvider == nil {
		c.TracerProvider = tracenoop.NewTracerProvider()
	}
	return &Sweeper{c: c, tracer: c.TracerProvider.Tracer("dataport.dev/services/archiver/internal/retention")}, nil
}

// Run sweeps at once and then every Interval until ctx ends. A failed
// sweep is logged and tried again at the next tick; it returns nil when
// ctx ends.
func (s *Sweeper) Run(ctx context.Context) error {
	t := time.NewTicker(s.c.Interval)
	defer t.Stop()
	for {
		r, err := s.Sweep(ctx)
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			s.c.Logger.ErrorContext(ctx, "retention sweep failed; trying again at the next tick", "error", err)
		case r != (Report{}):
			s.c.Logger.InfoContext(ctx, "retention sweep", "jobs_expired", r.JobsExpired, "objects_deleted", r.ObjectsDeleted, "uploads_aborted", r.UploadsAborted)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Report counts what one sweep did.
type Report struct {
	JobsExpired    int
	ObjectsDeleted int
	UploadsAborted int
}

// Sweep makes one pass: every ended job past its retention loses its
// objects and gets ExportExpired, then stale uploads are aborted. It goes
// on past a failing job so one bad record cannot keep all others alive,
// and returns the errors joined.
func (s *Sweeper) Sweep(ctx context.Context) (Report, error) {
	var r Report
	var errs []error
	ids, err := s.c.Jobs.IDs(ctx)
	if err != nil {
		return r, err
	}
	now := s.c.Now()
	for _, id := range ids {
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		n, expired, err := s.expireJob(ctx, id, now)
		r.ObjectsDeleted += n
		if expired {
			r.JobsExpired++
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("job %s: %w", id, err))
		}
	}
	n, err := s.abortStale(ctx, now)
	r.UploadsAborted = n
	if err != nil {
		errs = append(errs, err)
	}
	return r, errors.Join(errs...)
}

// expiresAt is when an ended job's objects may go, or zero while the job
// is still running or its files were already deleted.
func (s *Sweeper) expiresAt(job *exportv1.Job) time.Time {
	if job.GetFilesExpired() {
		return time.Time{}
	}
	switch job.GetState() {
	case exportv1.JobState_JOB_STATE_COMPLETED, exportv1.JobState_JOB_STATE_FAILED,
		exportv1.JobState_JOB_STATE_REJECTED, exportv1.JobState_JOB_STATE_CANCELED:
	default:
		return time.Time{}
	}
	if job.GetExpiresAt() != nil {
		return job.GetExpiresAt().AsTime()
	}
	// The gateway's projection sets expires_at when any job ends; a
	// record without it ended before that rule covered failed and
	// canceled jobs. updated_at is when the job ended or later (a
	// notification), so this errs on the side of keeping files a little
	// longer.
	return job.GetUpdatedAt().AsTime().Add(s.c.Retention)
}

func (s *Sweeper) expireJob(ctx context.Context, id string, now time.Time) (deleted int, expired bool, err error) {
	job, err := s.c.Jobs.Get(ctx, id)
	if err != nil || job == nil {
		// No record (deleted since the listing, or one jobview could not
		// decode and logged): nothing this sweep can date.
		return 0, false, err
	}
	at := s.expiresAt(job)
	if at.IsZero() || now.Before(at) {
		return 0, false, nil
	}
	// The projection sets files_expired only when it applies our event;
	// until then the job looks unswept, so the event itself is the mark.
	subject, err := bus.StatusSubject(bus.EventExpired, id)
	if err != nil {
		return 0, false, err
	}
	switch _, err := s.c.Events.GetLastMsgForSubject(ctx, subject); {
	case err == nil:
		return 0, false, nil
	case !errors.Is(err, jetstream.ErrMsgNotFound):
		return 0, false, fmt.Errorf("look up expiry: %w", err)
	}

	// The expiry is the job's last chapter: traced in its trace, and the
	// ExportExpired event carries that trace to the projection.
	ctx, span := s.tracer.Start(telemetry.InJobTrace(ctx, job.GetTraceId(), job.GetSpanId()), "retention expire",
		trace.WithAttributes(attribute.String("dataport.job_id", id)))
	defer func() {
		span.SetAttributes(attribute.Int("dataport.objects_deleted", deleted))
		if err != nil {
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		span.End()
	}()
	prefix := objects.JobPrefix(id)
	objs, err := s.c.Objects.List(ctx, s.c.Bucket, prefix)
	if err != nil {
		return 0, false, err
	}
	for _, o := range objs {
		if err := s.c.Objects.Delete(ctx, s.c.Bucket, o.Key); err != nil {
			return deleted, false, err
		}
		deleted++
	}
	// Deleted first, announced second: a crash in between repeats the
	// deletion next time, never announces files that are still there.
	if err := s.c.Publisher.PublishStatus(ctx, bus.EventExpired, id, "", &exportv1.ExportExpired{
		JobId:      id,
		OccurredAt: timestamppb.New(now),
	}); err != nil {
		return deleted, false, err
	}
	s.c.Logger.InfoContext(ctx, "job files expired", "job_id", id, "objects_deleted", deleted, "expired_at", at)
	return deleted, true, nil
}

// abortStale aborts unfinished uploads under jobs/ older than
// StaleUploadAge.
func (s *Sweeper) abortStale(ctx context.Context, now time.Time) (int, error) {
	ups, err := s.c.Objects.ListIncompleteUploads(ctx, s.c.Bucket, objects.JobsPrefix)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, u := range ups {
		if !strings.HasPrefix(u.Key, objects.JobsPrefix) || now.Sub(u.Initiated) < s.c.StaleUploadAge {
			continue
		}
		if err := s.c.Objects.AbortUpload(ctx, s.c.Bucket, u.Key, u.UploadID); err != nil {
			return n, err
		}
		s.c.Logger.InfoContext(ctx, "stale upload aborted", "key", u.Key, "initiated", u.Initiated)
		n++
	}
	return n, nil
}
