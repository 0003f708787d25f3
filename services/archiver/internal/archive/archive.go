// Package archive finalises export jobs. It records every uploaded part of a
// job and, once all of a job's parts are there, builds the job's
// deliverable files (a zip archive with a manifest for user-data
// downloads, the parts themselves otherwise), verifying each part's object
// against the size and SHA-256 the exporter reported on the way, and
// publishes ExportCompleted, or ExportFailed when a part does not verify.
package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
)

// Objects is the object store the archiver verifies parts against and
// writes archives to. *blob.Store implements it. Stat and Open report a
// missing object as blob.ErrNotFound; Open and Upload stream, so neither
// verifying a part nor building an archive holds a whole object in memory.
// Upload makes the object visible only once r is read to its end, and
// leaves no object when reading r fails.
type Objects interface {
	Stat(ctx context.Context, bucket, key string) (blob.Info, error)
	Open(ctx context.Context, bucket, key string) (io.ReadCloser, blob.Info, error)
	Upload(ctx context.Context, bucket, key string, r io.Reader, contentType string) (blob.Info, error)
}

// Publisher publishes a job's status events. *bus.Publisher implements it;
// the discriminator completes the dedup id "<jobId>.<event>.<discriminator>".
type Publisher interface {
	PublishStatus(ctx context.Context, ev bus.Event, jobID, discriminator string, m proto.Message) error
}

// Config holds an Archiver's dependencies.
type Config struct {
	// Parts is the export_parts bucket: PartUploaded records under
	// "<jobId>.<part>".
	Parts jetstream.KeyValue
	// Events is the EXPORT_EVENTS stream, read to skip jobs that already
	// ended.
	Events jetstream.Stream
	// Jobs is the export_jobs bucket, read (never written) for the job's
	// creation time, which archives use as their entries' timestamp. Nil,
	// or a missing record, stamps entries with 1980-01-01.
	Jobs jetstream.KeyValue
	// Objects and Bucket locate the parts' objects.
	Objects Objects
	Bucket  string
	// Publisher sends ExportFinalizing, ExportCompleted and ExportFailed.
	Publisher Publisher
	// Packager verifies the parts and builds the deliverable; nil means
	// NewDefaultPackager(Objects, Bucket).
	Packager Packager
	// Logger defaults to discarding; Now defaults to time.Now.
	Logger *slog.Logger
	Now    func() time.Time
}

// Archiver handles PartUploaded events. It is safe for concurrent use, and
// several replicas may handle parts of the same job at once: the part
// records are idempotent and the once-per-job events carry dedup ids, so
// two archivers racing on a job's last part complete it only once.
type Archiver struct {
	parts     jetstream.KeyValue
	events    jetstream.Stream
	jobs      jetstream.KeyValue
	objects   Objects
	bucket    string
	publisher Publisher
	packager  Packager
	log       *slog.Logger
	now       func() time.Time
}

// New returns an Archiver, or an error naming a missing dependency.
func New(c Config) (*Archiver, error) {
	switch {
	case c.Parts == nil:
		return nil, errors.New("archive: parts bucket is required")
	case c.Events == nil:
		return nil, errors.New("archive: events stream is required")
	case c.Objects == nil || c.Bucket == "":
		return nil, errors.New("archive: object store and bucket are required")
	case c.Publisher == nil:
		return nil, errors.New("archive: publisher is required")
	}
	if c.Packager == nil {
		c.Packager = NewDefaultPackager(c.Objects, c.Bucket)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Archiver{
		parts:     c.Parts,
		events:    c.Events,
		jobs:      c.Jobs,
		objects:   c.Objects,
		bucket:    c.Bucket,
		publisher: c.Publisher,
		packager:  c.Packager,
		log:       c.Logger,
		now:       c.Now,
	}, nil
}

// Handle is the bus.Handler for the archiver consumer
// (exports.status.part.*). It returns nil once the part is recorded and,
// for a job's last part, once the job's outcome is published; a malformed
// event is permanent; anything else is transient and retried.
func (a *Archiver) Handle(ctx context.Context, msg jetstream.Msg) error {
	var part exportv1.PartUploaded
	if err := bus.Decode(msg, &part); err != nil {
		return err
	}
	return a.HandlePart(ctx, &part)
}

// HandlePart records one uploaded part and finalises its job when every
// part is recorded.
func (a *Archiver) HandlePart(ctx context.Context, part *exportv1.PartUploaded) error {
	if err := validate(part); err != nil {
		return bus.Permanent(err)
	}
	jobID := part.GetJobId()
	data, err := proto.Marshal(part)
	if err != nil {
		return bus.Permanent(fmt.Errorf("marshal part: %w", err))
	}
	// Put, not Create: a task redelivered to another exporter overwrites
	// the object under the same key, and its latest report describes the
	// bytes that are there now.
	if _, err := a.parts.Put(ctx, partKey(jobID, part.GetPart()), data); err != nil {
		return fmt.Errorf("record part %d of job %s: %w", part.GetPart(), jobID, err)
	}
	n, err := a.countParts(ctx, jobID, part)
	if err != nil {
		return err
	}
	log := a.log.With("job_id", jobID, "part", part.GetPart(), "parts_total", part.GetPartsTotal())
	if n < int(part.GetPartsTotal()) {
		log.DebugContext(ctx, "part recorded; waiting for the others", "parts_recorded", n)
		return nil
	}
	return a.finalize(ctx, log, part)
}

func validate(p *exportv1.PartUploaded) error {
	if err := bus.Token(p.GetJobId()); err != nil {
		return fmt.Errorf("part event: job id: %w", err)
	}
	switch {
	case p.GetPartsTotal() == 0:
		return fmt.Errorf("part event of job %s: parts_total is 0", p.GetJobId())
	case p.GetPart() >= p.GetPartsTotal():
		return fmt.Errorf("part event of job %s: part %d out of range (parts_total %d)", p.GetJobId(), p.GetPart(), p.GetPartsTotal())
	}
	// A part may have no file at all: an assets part of a user who
	// uploaded nothing.
	for _, f := range partFiles(p) {
		if f.GetObjectKey() == "" {
			return fmt.Errorf("part event of job %s: part %d has a file without object key", p.GetJobId(), p.GetPart())
		}
	}
	return nil
}

func partKey(jobID string, part uint32) string {
	return jobID + "." + strconv.FormatUint(uint64(part), 10)
}

// countParts counts the recorded parts of current's job, current
// included. It reads each expected key rather than listing the job's
// keys: a KV key listing can end early while another key is being
// rewritten (a redelivered part), and a missed part would leave the job
// waiting for an event that never comes. current itself is not read back:
// it was just written, and a read right after a write may be answered by
// a replica that has not seen it yet (direct gets, or a new leader after
// a node loss), which would leave a one-part job waiting forever.
func (a *Archiver) countParts(ctx context.Context, jobID string, current *exportv1.PartUploaded) (int, error) {
	n := 0
	for i := range current.GetPartsTotal() {
		if i == current.GetPart() {
			n++
			continue
		}
		_, err := a.parts.Get(ctx, partKey(jobID, i))
		switch {
		case err == nil:
			n++
		case errors.Is(err, jetstream.ErrKeyNotFound):
		default:
			return 0, fmt.Errorf("read part %d of job %s: %w", i, jobID, err)
		}
	}
	return n, nil
}

// finalize runs once every part of the job is recorded; it may run more
// than once for a job (a redelivered last part, two replicas racing), and
// every event it publishes is deduplicated by its once-per-job id.
func (a *Archiver) finalize(ctx context.Context, log *slog.Logger, current *exportv1.PartUploaded) error {
	jobID := current.GetJobId()
	ended, err := a.ended(ctx, jobID)
	if err != nil {
		return err
	}
	if ended != "" {
		// Re-verifying would stream every part again for nothing.
		log.InfoContext(ctx, "job already ended; nothing to finalise", "event", string(ended))
		return nil
	}
	parts, err := a.loadParts(ctx, current)
	if err != nil {
		return err
	}
	last := parts[len(parts)-1]
	if err := a.publisher.PublishStatus(ctx, bus.EventFinalizing, jobID, "", &exportv1.ExportFinalizing{
		JobId:      jobID,
		OccurredAt: timestamppb.New(a.now()),
	}); err != nil {
		return err
	}
	log.InfoContext(ctx, "all parts recorded; verifying and packaging")

	job, err := a.job(ctx, jobID, last)
	if err != nil {
		return err
	}
	files, err := a.packager.Package(ctx, job, parts)
	if err != nil {
		if perm, ok := errors.AsType[*bus.PermanentError](err); ok {
			// Packagers word their permanent errors as reasons that name
			// the offending file.
			return a.fail(ctx, log, last, perm.Err.Error())
		}
		return fmt.Errorf("package job %s: %w", jobID, err)
	}
	if err := a.publisher.PublishStatus(ctx, bus.EventCompleted, jobID, "", &exportv1.ExportCompleted{
		JobId:      jobID,
		OccurredAt: timestamppb.New(a.now()),
		Files:      files,
		OwnerId:    last.GetOwnerId(),
		Kind:       job.Kind,
	}); err != nil {
		return err
	}
	log.InfoContext(ctx, "job completed", "files", len(files))
	return nil
}

// ended returns the terminal event already stored for the job, or "".
func (a *Archiver) ended(ctx context.Context, jobID string) (bus.Event, error) {
	// A canceled job gets no archive: its owner no longer wants it.
	for _, ev := range []bus.Event{bus.EventCompleted, bus.EventFailed, bus.EventCanceled} {
		subject, err := bus.StatusSubject(ev, jobID)
		if err != nil {
			return "", bus.Permanent(err)
		}
		_, err = a.events.GetLastMsgForSubject(ctx, subject)
		switch {
		case err == nil:
			return ev, nil
		case errors.Is(err, jetstream.ErrMsgNotFound):
		default:
			return "", fmt.Errorf("look up %s event of job %s: %w", ev, jobID, err)
		}
	}
	return "", nil
}

// loadParts reads parts 0..total-1, in part order.
func (a *Archiver) loadParts(ctx context.Context, current *exportv1.PartUploaded) ([]*exportv1.PartUploaded, error) {
	jobID, total := current.GetJobId(), current.GetPartsTotal()
	parts := make([]*exportv1.PartUploaded, 0, total)
	for i := range total {
		if i == current.GetPart() {
			// As in countParts: the part in hand is the latest report.
			parts = append(parts, current)
			continue
		}
		entry, err := a.parts.Get(ctx, partKey(jobID, i))
		if err != nil {
			// countParts saw it a moment ago; a missing key now is a
			// transient inconsistency of the listing, worth a retry.
			return nil, fmt.Errorf("load part %d of job %s: %w", i, jobID, err)
		}
		var p exportv1.PartUploaded
		if err := proto.Unmarshal(entry.Value(), &p); err != nil {
			return nil, bus.Permanent(fmt.Errorf("decode recorded part %d of job %s: %w", i, jobID, err))
		}
		parts = append(parts, &p)
	}
	return parts, nil
}

// job describes the job for its packager: kind and owner from its parts,
// the creation time from its record when there is one.
func (a *Archiver) job(ctx context.Context, jobID string, last *exportv1.PartUploaded) (Job, error) {
	j := Job{ID: jobID, Kind: last.GetKind(), OwnerID: last.GetOwnerId()}
	if a.jobs == nil {
		return j, nil
	}
	entry, err := a.jobs.Get(ctx, jobID)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return j, nil
	case err != nil:
		return Job{}, fmt.Errorf("read job %s: %w", jobID, err)
	}
	var rec exportv1.Job
	if err := proto.Unmarshal(entry.Value(), &rec); err != nil {
		// The timestamp is cosmetic; a record this service cannot read
		// must not fail the job.
		a.log.WarnContext(ctx, "unreadable job record; archive entries get the default timestamp", "job_id", jobID, "error", err)
		return j, nil
	}
	if rec.GetCreatedAt() != nil {
		j.Created = rec.GetCreatedAt().AsTime()
	}
	if j.Kind == exportv1.JobKind_JOB_KIND_UNSPECIFIED {
		j.Kind = rec.GetKind()
	}
	return j, nil
}

// fail publishes the job's failure. The message is then acked: the same
// parts would fail the same way again.
func (a *Archiver) fail(ctx context.Context, log *slog.Logger, part *exportv1.PartUploaded, reason string) error {
	if err := a.publisher.PublishStatus(ctx, bus.EventFailed, part.GetJobId(), "", &exportv1.ExportFailed{
		JobId:      part.GetJobId(),
		OccurredAt: timestamppb.New(a.now()),
		Reason:     reason,
		OwnerId:    part.GetOwnerId(),
	}); err != nil {
		return err
	}
	log.WarnContext(ctx, "job failed", "reason", reason)
	return nil
}
