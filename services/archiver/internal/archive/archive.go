// Package archive finalises export jobs. It handles every uploaded part of
// a job and, once all of a job's parts are reported, builds the job's
// deliverable files (a zip archive with a manifest for user-data
// downloads, the parts themselves otherwise), verifying each part's object
// against the size and SHA-256 the exporter reported on the way (or, for
// the attachments a room part lists by reference only, taking them from
// the bytes it copies), and publishes ExportCompleted, or ExportFailed
// when a part does not verify.
//
// The archiver keeps no part state of its own: the EXPORT_EVENTS stream,
// which holds every PartUploaded, is the one home of a job's parts.
package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/jobview"
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
	// Events is the EXPORT_EVENTS stream, read for a job's reported parts
	// and to skip jobs that already ended.
	Events jetstream.Stream
	// Jobs reads the job's record for its creation time, which archives
	// use as their entries' timestamp. Nil, or a missing record, stamps
	// entries with 1980-01-01.
	Jobs *jobview.Reader
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
// several replicas may handle parts of the same job at once: the handler
// of a part event reads the job's part events up to its own, so of
// concurrent handlers only the one of the event that completes the set
// sees every part and finalises; the once-per-job events carry dedup ids
// for whatever comes later (that event redelivered, a part reported again).
type Archiver struct {
	events    jetstream.Stream
	jobs      *jobview.Reader
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
	case c.Events == nil:
		return nil, errors.New("archive: events stream is required")
	case c.Objects == nil || c.Bucket == "":
		return nil, errors.New("archive: object store and bucket are required")
	case c.Publisher == nil:
		return nil, errors.New("archive: publisher is required")
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Packager == nil {
		c.Packager = newDefaultPackager(c.Objects, c.Bucket, c.Logger)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Archiver{
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
// (exports.status.part.*). It returns nil once the part is handled and,
// for a job's last part, once the job's outcome is published; a malformed
// event is permanent; anything else is transient and retried.
func (a *Archiver) Handle(ctx context.Context, msg jetstream.Msg) error {
	var part exportv1.PartUploaded
	if err := bus.Decode(msg, &part); err != nil {
		return err
	}
	md, err := msg.Metadata()
	if err != nil {
		return bus.Permanent(fmt.Errorf("part event without JetStream metadata: %w", err))
	}
	return a.HandlePart(ctx, md.Sequence.Stream, &part)
}

// HandlePart handles the part event stored at sequence seq of the
// EXPORT_EVENTS stream and finalises its job when the job's part events
// up to seq report every part.
func (a *Archiver) HandlePart(ctx context.Context, seq uint64, part *exportv1.PartUploaded) error {
	if err := validate(part); err != nil {
		return bus.Permanent(err)
	}
	if part.GetPartial() {
		// What a canceled part kept, for the projection; not a report.
		return nil
	}
	jobID := part.GetJobId()
	parts, err := a.reportedParts(ctx, seq, part)
	if err != nil {
		return err
	}
	log := a.log.With("job_id", jobID, "part", part.GetPart(), "parts_total", part.GetPartsTotal())
	if n := countReported(parts); n < len(parts) {
		log.DebugContext(ctx, "part reported; waiting for the others", "parts_reported", n)
		return nil
	}
	return a.finalize(ctx, log, parts)
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
	// uploaded nothing. A missing file may not know where it was.
	for _, f := range partFiles(p) {
		if f.GetObjectKey() == "" && !f.GetMissing() {
			return fmt.Errorf("part event of job %s: part %d has a file without object key", p.GetJobId(), p.GetPart())
		}
	}
	return nil
}

// partsReadWait bounds how long reading a job's part events may wait for
// the stream to deliver the event in hand. The event is stored before it
// is delivered, so only a lagging replica (which catches up) or an event
// removed by the stream's MaxAge (which a retry cannot bring back) makes
// it wait; the retry then ends at the consumer's MaxDeliver, whose
// advisory fails the job.
const partsReadWait = 30 * time.Second

// reportedParts returns the latest report of each part of current's job,
// indexed by part number, as the EXPORT_EVENTS stream holds them up to
// and including seq, the sequence of current itself; a part not reported
// by then is nil.
//
// Reading up to seq makes the decision to finalise consistent without any
// state of the archiver's own: every event below seq is in the stream
// before the one at seq is delivered, so the handler of a job's latest
// part event sees every earlier report and is the one that finalises,
// however many handlers run at once. The read waits for seq rather than
// stopping when the consumer reports nothing pending, because a consumer
// placed on a replica that is behind (after a node loss) reports nothing
// pending before it has the latest events.
func (a *Archiver) reportedParts(ctx context.Context, seq uint64, current *exportv1.PartUploaded) ([]*exportv1.PartUploaded, error) {
	jobID, total := current.GetJobId(), current.GetPartsTotal()
	parts := make([]*exportv1.PartUploaded, total)
	if total > 1 {
		if err := a.readParts(ctx, seq, jobID, parts); err != nil {
			return nil, err
		}
	}
	// The event in hand is the latest report of its part: it is the one
	// at seq.
	parts[current.GetPart()] = current
	return parts, nil
}

// readParts fills parts with the latest valid reports of the job's events
// below seq.
func (a *Archiver) readParts(ctx context.Context, seq uint64, jobID string, parts []*exportv1.PartUploaded) error {
	subject, err := bus.StatusSubject(bus.EventPart, jobID)
	if err != nil {
		return bus.Permanent(err)
	}
	cons, err := a.events.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		// Released below; the threshold only bounds a consumer left by a
		// process that died while reading.
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return fmt.Errorf("read part events of job %s: %w", jobID, err)
	}
	iter, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read part events of job %s: %w", jobID, err)
	}
	defer func() {
		iter.Stop()
		a.release(ctx, cons)
	}()
	wctx, cancel := context.WithTimeout(ctx, partsReadWait)
	defer cancel()
	for {
		msg, err := iter.Next(jetstream.NextContext(wctx))
		if err != nil {
			return fmt.Errorf("read part events of job %s up to sequence %d: %w", jobID, seq, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return fmt.Errorf("read part events of job %s: %w", jobID, err)
		}
		if md.Sequence.Stream >= seq {
			return nil
		}
		var p exportv1.PartUploaded
		if err := proto.Unmarshal(msg.Data(), &p); err != nil || p.GetJobId() != jobID || validate(&p) != nil ||
			p.GetPart() >= uint32(len(parts)) || p.GetPartial() {
			// Its own handler terminated it; it never counted as a report.
			continue
		}
		parts[p.GetPart()] = &p
	}
}

// release deletes the ordered consumer of a read at once rather than
// leaving it to its inactive threshold: a job of many parts creates one
// per part event.
func (a *Archiver) release(ctx context.Context, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil {
		return
	}
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := a.events.DeleteConsumer(dctx, info.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		a.log.DebugContext(ctx, "release part reader", "consumer", info.Name, "error", err)
	}
}

// countReported counts the parts that have a report.
func countReported(parts []*exportv1.PartUploaded) int {
	n := 0
	for _, p := range parts {
		if p != nil {
			n++
		}
	}
	return n
}

// finalize runs with the latest report of every part of the job, in part
// order. It may run more than once for a job (a redelivered latest part
// event, a part reported again after all were in), and every event it
// publishes is deduplicated by its once-per-job id.
func (a *Archiver) finalize(ctx context.Context, log *slog.Logger, parts []*exportv1.PartUploaded) error {
	last := parts[len(parts)-1]
	jobID := last.GetJobId()
	ended, err := a.ended(ctx, jobID)
	if err != nil {
		return err
	}
	if ended != "" {
		// Re-verifying would stream every part again for nothing.
		log.InfoContext(ctx, "job already ended; nothing to finalise", "event", string(ended))
		if ended == bus.EventCompleted {
			// A crash after the completion was stored, or a range that ran
			// twice and reported again, may have left what Clean deletes.
			a.clean(ctx, Job{ID: jobID, Kind: last.GetKind(), OwnerID: last.GetOwnerId()}, parts)
		}
		return nil
	}
	if err := a.publisher.PublishStatus(ctx, bus.EventFinalizing, jobID, "", &exportv1.ExportFinalizing{
		JobId:      jobID,
		OccurredAt: timestamppb.New(a.now()),
	}); err != nil {
		return err
	}
	log.InfoContext(ctx, "all parts reported; verifying and packaging")

	job, err := a.job(ctx, jobID, last)
	if err != nil {
		return err
	}
	if parts, err = withAttachments(ctx, a.objects, a.bucket, parts); err != nil {
		if bus.IsPermanent(err) {
			return a.fail(ctx, log, last, err)
		}
		return err
	}
	d, err := deliver(ctx, a.packager, job, parts)
	if err != nil {
		if bus.IsPermanent(err) {
			// Packagers word their permanent errors (bus.Worded) as
			// reasons that name the offending file.
			return a.fail(ctx, log, last, err)
		}
		return fmt.Errorf("package job %s: %w", jobID, err)
	}
	manifest, err := a.writeManifest(ctx, job, parts, d)
	if err != nil {
		return err
	}
	if err := a.publisher.PublishStatus(ctx, bus.EventCompleted, jobID, "", &exportv1.ExportCompleted{
		JobId:      jobID,
		OccurredAt: timestamppb.New(a.now()),
		Files:      d.Files,
		OwnerId:    last.GetOwnerId(),
		Kind:       job.Kind,
		Manifest:   manifest,
		Archive:    d.Archive,
	}); err != nil {
		return err
	}
	log.InfoContext(ctx, "job completed", "files", len(d.Files), "archive", d.Archive.GetName())
	a.clean(ctx, job, parts)
	return nil
}

// clean lets the packager delete what packaging left and the delivery no
// longer needs (Cleaner), once the job's completion is stored: a crash
// before that redoes the packaging, which may still need it.
func (a *Archiver) clean(ctx context.Context, job Job, parts []*exportv1.PartUploaded) {
	if c, ok := a.packager.(Cleaner); ok {
		c.Clean(ctx, job, parts)
	}
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

// job describes the job for its packager: kind and owner from its parts,
// the creation time from its record when there is one.
func (a *Archiver) job(ctx context.Context, jobID string, last *exportv1.PartUploaded) (Job, error) {
	j := Job{ID: jobID, Kind: last.GetKind(), OwnerID: last.GetOwnerId()}
	if a.jobs == nil {
		return j, nil
	}
	// No record, or an undecodable one, is nil: the timestamp is cosmetic
	// and must not fail the job.
	rec, err := a.jobs.Get(ctx, jobID)
	if err != nil {
		return Job{}, err
	}
	if rec.GetCreatedAt() != nil {
		j.Created = rec.GetCreatedAt().AsTime()
	}
	j.Name, j.FullExport = rec.GetName(), rec.GetFullExport()
	if j.Kind == exportv1.JobKind_JOB_KIND_UNSPECIFIED {
		j.Kind = rec.GetKind()
	}
	return j, nil
}

// fail publishes the job's failure with cause's reason (bus.ReasonFor: a
// sentence and the trace id; cause's text goes to the log). The message is
// then acked: the same parts would fail the same way again.
func (a *Archiver) fail(ctx context.Context, log *slog.Logger, part *exportv1.PartUploaded, cause error) error {
	reason := bus.ReasonFor(ctx, cause)
	if err := a.publisher.PublishStatus(ctx, bus.EventFailed, part.GetJobId(), "", &exportv1.ExportFailed{
		JobId:      part.GetJobId(),
		OccurredAt: timestamppb.New(a.now()),
		Reason:     reason,
		Rejected:   isRejected(cause),
		OwnerId:    part.GetOwnerId(),
	}); err != nil {
		return err
	}
	log.WarnContext(ctx, "job failed", "reason", reason, "error", cause)
	return nil
}
