// Package submit turns a validated request into a running job: it creates
// the job record by applying the job's ExportRequested to the projection
// (jobstore, the only writer of job records) and publishes that event, the
// job's tasks and ExportQueued.
// Every dialect creates jobs through it, so all of them get the same
// ordering and failure handling.
package submit

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/bus"
)

// Timeout bounds creating a job and publishing its messages. Callers run
// Submit detached from the HTTP request (context.WithoutCancel) so a client
// that hangs up halfway does not leave a job written but never queued.
const Timeout = 15 * time.Second

// Submitter creates jobs. It is safe for concurrent use.
type Submitter struct {
	jobs   *jobstore.Store
	pub    *bus.Publisher
	signer *bus.TaskSigner
	now    func() time.Time
	admit  Admission
}

// Admission decides whether a job may be created (package quota's
// Limiter). Admit runs before the job is written and may refuse it with an
// error; held reports that it reserved something for the job, which
// Release gives back if the job is not created after all. Once the job is
// written, its reservation is released when the job ends, not by Submit.
type Admission interface {
	Admit(ctx context.Context, job *exportv1.Job) (held bool, err error)
	Release(ctx context.Context, job *exportv1.Job) error
}

// Option configures a Submitter.
type Option func(*Submitter)

// ErrNotAdmitted wraps an Admission's refusal: the caller is over a quota,
// which the quota middleware answers; it is no failure to log.
var ErrNotAdmitted = errors.New("submit: not admitted")

// WithAdmission makes Submit ask a before creating each job.
func WithAdmission(a Admission) Option {
	return func(s *Submitter) { s.admit = a }
}

// New returns a Submitter that signs tasks with signer; now nil means
// time.Now.
func New(jobs *jobstore.Store, pub *bus.Publisher, signer *bus.TaskSigner, now func() time.Time, opts ...Option) *Submitter {
	if now == nil {
		now = time.Now
	}
	s := &Submitter{jobs: jobs, pub: pub, signer: signer, now: now}
	for _, o := range opts {
		o(s)
	}
	return s
}

// ErrNoScope means a job was submitted without the caller's scope; its
// tasks would read nothing, so it is refused before anything is written.
var ErrNoScope = errors.New("submit: the job carries no scope")

// Submit asks the admission (if any) for the job, writes job (state
// pending) by applying its ExportRequested to the projection, and then
// publishes that same ExportRequested, every task and ExportQueued, in
// that order: a poll right after Submit finds the job, and the request's
// copy that the projection consumer gets back changes nothing. A refusal
// of the admission is returned as it is (wrapped), before anything is
// written; an id that is taken (by any job, even an equal one) fails with
// jobstore.ErrExists, and the admission's reservation is given back. Tasks get their job id, owner,
// scope, kind, format, part numbers and parts_total filled in from job and
// their position, and are signed. If a message cannot be published the
// job is failed at once, so nobody waits for work that was never queued;
// a lost ExportQueued only delays the state word, since the exporter's
// own events move the job on.
func (s *Submitter) Submit(ctx context.Context, job *exportv1.Job, kind bus.TaskKind, tasks []*exportv1.ExportTask) error {
	if len(tasks) == 0 {
		return errors.New("submit: a job needs at least one task")
	}
	if job.GetScope().GetUserId() == "" || job.GetScope().GetUserId() != job.GetOwnerId() {
		return ErrNoScope
	}
	id := job.GetId()
	job.PartsTotal = uint32(len(tasks))
	if len(job.Parts) == 0 {
		job.Parts = jobstore.PlanParts(tasks)
	}
	held := false
	if s.admit != nil {
		var err error
		if held, err = s.admit.Admit(ctx, job); err != nil {
			return fmt.Errorf("submit %s: %w: %w", id, ErrNotAdmitted, err)
		}
	}
	now := timestamppb.New(s.now())
	requested := &exportv1.ExportRequested{JobId: id, OccurredAt: now, Job: job}
	if _, err := s.jobs.Create(ctx, requested); err != nil {
		if held {
			if rerr := s.admit.Release(context.WithoutCancel(ctx), job); rerr != nil {
				err = errors.Join(err, rerr)
			}
		}
		return err
	}
	// From here on a failure fails the job, and its end releases what
	// Admit reserved.
	err := s.pub.PublishStatus(ctx, bus.EventRequested, id, "", requested)
	if err == nil {
		err = s.publishTasks(ctx, job, kind, tasks)
	}
	if err != nil {
		return errors.Join(err, s.fail(ctx, id, job.GetOwnerId(), now))
	}
	// The queued event is best effort: the exporter's own events move the
	// job on even if it is lost.
	_ = s.pub.PublishStatus(ctx, bus.EventQueued, id, "", &exportv1.ExportQueued{JobId: id, OccurredAt: now})
	return nil
}

// fail ends a job whose messages could not all be published. The bus has
// just failed, so unlike Emit the failure is applied even if its own
// publish fails too: the job must not stay pending for work that was
// never queued. The publish, when it works, tells the other services (the
// notifier, for one); its copy from the stream then changes nothing.
func (s *Submitter) fail(ctx context.Context, id, ownerID string, at *timestamppb.Timestamp) error {
	failed := &exportv1.ExportFailed{JobId: id, OccurredAt: at, OwnerId: ownerID, Reason: "the export could not be queued; please try again"}
	_ = s.pub.PublishStatus(ctx, bus.EventFailed, id, "", failed)
	if _, err := s.jobs.Apply(ctx, failed); err != nil {
		return fmt.Errorf("mark job failed: %w", err)
	}
	return nil
}

func (s *Submitter) publishTasks(ctx context.Context, job *exportv1.Job, kind bus.TaskKind, tasks []*exportv1.ExportTask) error {
	subject, err := bus.TaskSubject(kind)
	if err != nil {
		return err
	}
	for i, task := range tasks {
		task.JobId = job.GetId()
		task.OccurredAt = timestamppb.New(s.now())
		task.Kind = job.GetKind()
		task.Format = job.GetFormat()
		task.OwnerId = job.GetOwnerId()
		task.Scope = job.GetScope()
		task.Part = uint32(i)
		task.PartsTotal = uint32(len(tasks))
		if err := s.pub.PublishTask(ctx, s.signer, subject, job.GetId()+".task."+strconv.Itoa(i), task); err != nil {
			return err
		}
	}
	return nil
}

// Cancel ends a job that has not finished: it emits ExportCanceled
// (jobstore.Store.Emit: published, then applied to the projection at
// once), so the next poll already shows the job canceled and the event's
// copy from the stream changes nothing. Exporters notice the state and stop, deleting partial
// objects. It returns the job as it stands afterwards.
func (s *Submitter) Cancel(ctx context.Context, jobID, reason string) (*exportv1.Job, error) {
	ev := &exportv1.ExportCanceled{JobId: jobID, OccurredAt: timestamppb.New(s.now()), Reason: reason}
	return s.jobs.Emit(ctx, s.pub, ev)
}

// idAlphabet is base62. Ids look like Rocket.Chat's: 17 random characters.
const idAlphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

const idLength = 17

// NewJobID returns a random id from crypto/rand; bytes of 248 and above
// are skipped so every character is equally likely.
func NewJobID() (string, error) {
	out := make([]byte, 0, idLength)
	var buf [32]byte
	for len(out) < idLength {
		if _, err := rand.Read(buf[:]); err != nil {
			return "", fmt.Errorf("random id: %w", err)
		}
		for _, b := range buf {
			if b >= 248 || len(out) == idLength {
				continue
			}
			out = append(out, idAlphabet[b%62])
		}
	}
	return string(out), nil
}
