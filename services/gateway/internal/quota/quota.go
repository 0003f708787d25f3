// Package quota pushes back on callers who create exports faster than the
// platform should take them: a limit on one principal's unfinished exports
// and a limit on how many exports one principal creates per minute, both
// answered with 429 and Retry-After in the dialect's error shape.
//
// The principal is the user a dialect authenticated from the credential
// that dialect reads, which is the owner of the job it creates: never a
// header the dialect ignores, never the organization in the path. Both
// limits live in the KV bucket bus.BucketQuotas, so every gateway replica
// shares them, and every change is a revision-checked update retried on
// conflict, so concurrent creates on any number of replicas cannot get
// past a limit.
//
//   - Rate: a fixed one-minute window per principal, key
//     rate.<principal>.<minute>, holding the count of creates in it.
//   - Concurrency: key active.<principal> holds the ids of the principal's
//     unfinished jobs. A create adds its job id before the job is written;
//     the job projection removes it when the job first becomes terminal
//     (Release), and Submit removes it when the create fails. A release
//     that was lost (a crash between the two writes) is repaired when the
//     set is full: ids whose job has ended, or never appeared, are dropped
//     after a look at the projection, so the set stays within the limit.
//
// Only jobs actually created count. A request only attaches a ticket to
// its context (Handler); the charge happens in Admit, which Submit calls
// right before writing a job. A poll, including a users.requestDataDownload
// that answers with the running operation, creates nothing and is never
// charged or refused. Jobs created outside a request (scheduled runs) carry
// no ticket and are not charged.
package quota

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/dialect"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/bus"
)

// ErrLimited is wrapped by every refusal (a *LimitError).
var ErrLimited = errors.New("quota: limit reached")

// LimitError is a refused create: what to tell the caller and when to
// come back.
type LimitError struct {
	Message    string
	RetryAfter time.Duration
}

func (e *LimitError) Error() string { return "quota: " + e.Message }

// Unwrap makes errors.Is(err, ErrLimited) hold.
func (e *LimitError) Unwrap() error { return ErrLimited }

// JobLookup reads a job from the projection (jobstore.Store.Get); it
// returns an error wrapping jobstore.ErrNotFound for a missing job.
type JobLookup interface {
	Get(ctx context.Context, id string) (*exportv1.Job, error)
}

// JobLookupFunc adapts a function to JobLookup.
type JobLookupFunc func(ctx context.Context, id string) (*exportv1.Job, error)

// Get calls f.
func (f JobLookupFunc) Get(ctx context.Context, id string) (*exportv1.Job, error) { return f(ctx, id) }

// Options configure the limits.
type Options struct {
	// MaxConcurrent is how many unfinished exports one principal may have;
	// 0 disables the limit.
	MaxConcurrent int
	// RatePerMinute is how many exports one principal may create per
	// clock minute; 0 disables the limit.
	RatePerMinute int
	// ConcurrentRetryAfter is the Retry-After sent when the concurrency
	// limit is hit; 0 means 30 seconds.
	ConcurrentRetryAfter time.Duration
	// Jobs is read to repair a full slot set; nil never repairs.
	Jobs JobLookup
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Limiter holds the limits. It is safe for concurrent use, and any number
// of Limiters over one bucket (one per gateway replica) share the limits.
type Limiter struct {
	kv   jetstream.KeyValue
	opts Options
}

const (
	// maxAttempts bounds the revision-checked retries of one change; each
	// conflict means another create or release of the same principal
	// succeeded meanwhile.
	maxAttempts = 100
	// staleSlot is how long a slot may name a job the projection does not
	// have: Admit runs before the job is written, and Submit takes at most
	// submit.Timeout (15 s) to write it or give the slot back.
	staleSlot = 2 * time.Minute
)

// New returns a Limiter over the quotas bucket.
func New(kv jetstream.KeyValue, opts Options) *Limiter {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ConcurrentRetryAfter <= 0 {
		opts.ConcurrentRetryAfter = 30 * time.Second
	}
	return &Limiter{kv: kv, opts: opts}
}

// Open looks up the bucket (declared by bus.EnsureTopology).
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Limiter, error) {
	kv, err := js.KeyValue(ctx, bus.BucketQuotas)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bus.BucketQuotas, err)
	}
	return New(kv, opts), nil
}

func (l *Limiter) enabled() bool { return l.opts.MaxConcurrent > 0 || l.opts.RatePerMinute > 0 }

// ticket is a request's standing with the limiter: whether its rate was
// charged (a handler that retries a create with a new id is one create)
// and the refusal, if Admit refused.
type ticket struct {
	mu          sync.Mutex
	rateCharged bool
	refused     *LimitError
}

type ticketKey struct{}

func ticketFrom(ctx context.Context) *ticket {
	t, _ := ctx.Value(ticketKey{}).(*ticket)
	return t
}

// Handler wraps next. Requests that may create a job (dialect.IsCreate)
// get a ticket in their context; when Admit refuses the job, whatever the
// handler answers is replaced by a 429 with Retry-After in the dialect's
// error shape. Other requests pass through untouched.
func (l *Limiter) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !l.enabled() || !dialect.IsCreate(r) {
			next.ServeHTTP(w, r)
			return
		}
		t := &ticket{}
		lw := &limitWriter{ResponseWriter: w, r: r, t: t}
		next.ServeHTTP(lw, r.WithContext(context.WithValue(r.Context(), ticketKey{}, t)))
		if !lw.decided {
			// A handler that wrote nothing still owes the refusal.
			t.mu.Lock()
			refused := t.refused
			t.mu.Unlock()
			if refused != nil {
				tooMany(w, r, refused)
			}
		}
	})
}

// limitWriter answers 429 in place of the handler's answer once its
// ticket was refused. Handlers call Submit before they write anything, so
// the refusal is known by the first WriteHeader.
type limitWriter struct {
	http.ResponseWriter
	r       *http.Request
	t       *ticket
	decided bool
	swallow bool
}

func (w *limitWriter) WriteHeader(status int) {
	if w.decided {
		if !w.swallow {
			w.ResponseWriter.WriteHeader(status)
		}
		return
	}
	w.decided = true
	w.t.mu.Lock()
	refused := w.t.refused
	w.t.mu.Unlock()
	if refused == nil {
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.swallow = true
	h := w.ResponseWriter.Header()
	h.Del("Location")
	h.Del("Content-Length")
	tooMany(w.ResponseWriter, w.r, refused)
}

func (w *limitWriter) Write(b []byte) (int, error) {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	if w.swallow {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *limitWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func tooMany(w http.ResponseWriter, r *http.Request, e *LimitError) {
	secs := int(math.Ceil(e.RetryAfter.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	dialect.WriteError(w, r, http.StatusTooManyRequests, e.Message)
}

// Principal is who a job is charged to: its owner.
func Principal(job *exportv1.Job) string {
	if job.GetOwnerId() == "" {
		return ""
	}
	return "user:" + job.GetOwnerId()
}

// Admit charges job to its owner before the job is written: one create in
// the current minute and one slot of the owner's unfinished jobs. On
// success held reports whether a slot was taken (and job.quota_principal
// set); the caller gives it back with Release if the job is not created
// after all. A refusal is a *LimitError (errors.Is ErrLimited), and the
// request's answer becomes a 429. Outside a request with a ticket (see
// Handler) nothing is charged.
func (l *Limiter) Admit(ctx context.Context, job *exportv1.Job) (held bool, err error) {
	t := ticketFrom(ctx)
	p := Principal(job)
	if t == nil || p == "" || !l.enabled() {
		return false, nil
	}
	refuse := func(e *LimitError) (bool, error) {
		t.mu.Lock()
		t.refused = e
		t.mu.Unlock()
		l.opts.Logger.InfoContext(ctx, "export refused by quota", "principal", p, "reason", e.Message)
		return false, e
	}
	t.mu.Lock()
	charged := t.rateCharged
	t.mu.Unlock()
	if l.opts.RatePerMinute > 0 && !charged {
		e, err := l.chargeRate(ctx, p)
		if err != nil {
			return false, fmt.Errorf("quota: rate of %s: %w", p, err)
		}
		if e != nil {
			return refuse(e)
		}
		t.mu.Lock()
		t.rateCharged = true
		t.mu.Unlock()
	}
	if l.opts.MaxConcurrent <= 0 {
		return false, nil
	}
	held, e, err := l.acquire(ctx, p, job.GetId())
	if err != nil {
		return false, fmt.Errorf("quota: slots of %s: %w", p, err)
	}
	if e != nil {
		return refuse(e)
	}
	if held {
		job.QuotaPrincipal = p
	}
	return held, nil
}

// Release gives back the slot job holds, if any. It is idempotent; the
// job projection calls it when a job first becomes terminal.
func (l *Limiter) Release(ctx context.Context, job *exportv1.Job) error {
	p := job.GetQuotaPrincipal()
	if p == "" {
		return nil
	}
	if err := l.release(ctx, p, job.GetId()); err != nil {
		return fmt.Errorf("quota: release %s of %s: %w", job.GetId(), p, err)
	}
	return nil
}

// ReleaseTerminal is a jobstore.WithOnTerminal hook: it releases the
// ended job's slot and logs a failure, which the next full-set repair
// makes good.
func (l *Limiter) ReleaseTerminal(ctx context.Context, job *exportv1.Job) {
	if err := l.Release(ctx, job); err != nil {
		l.opts.Logger.WarnContext(ctx, "release quota slot", "job_id", job.GetId(), "error", err)
	}
}

// keyPart turns a principal into a KV key token: principals may hold
// characters keys cannot, and the hash is as stable as the principal.
func keyPart(principal string) string {
	sum := sha256.Sum256([]byte(principal))
	return hex.EncodeToString(sum[:16])
}

func conflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}

// pause backs off a little, with jitter, after a conflict.
func pause(ctx context.Context, attempt int) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(time.Duration(rand.Int64N(int64(min(attempt, 20)) * int64(time.Millisecond)))):
		return nil
	}
}

// errContention is returned after maxAttempts conflicts in a row.
var errContention = errors.New("too much contention")

// chargeRate counts one create in the principal's current minute, or
// refuses it when the minute's count is spent.
func (l *Limiter) chargeRate(ctx context.Context, p string) (*LimitError, error) {
	now := l.opts.Now()
	minute := now.Unix() / 60
	key := "rate." + keyPart(p) + "." + strconv.FormatInt(minute, 10)
	limit := l.opts.RatePerMinute
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		e, err := l.kv.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			_, err := l.kv.Create(ctx, key, []byte("1"))
			if err == nil {
				return nil, nil
			}
			if !conflict(err) {
				return nil, err
			}
		case err != nil:
			return nil, err
		default:
			n, err := strconv.Atoi(string(e.Value()))
			if err != nil {
				return nil, fmt.Errorf("key %s holds %q", key, e.Value())
			}
			if n >= limit {
				next := time.Unix((minute+1)*60, 0)
				return &LimitError{
					Message:    fmt.Sprintf("too many export requests: at most %d per minute", limit),
					RetryAfter: next.Sub(now),
				}, nil
			}
			_, err = l.kv.Update(ctx, key, []byte(strconv.Itoa(n+1)), e.Revision())
			if err == nil {
				return nil, nil
			}
			if !conflict(err) {
				return nil, err
			}
		}
		if err := pause(ctx, attempt); err != nil {
			return nil, err
		}
	}
	return nil, errContention
}

// slotSet is the value of active.<principal>.
type slotSet struct {
	Principal string `json:"principal"`
	Jobs      []slot `json:"jobs"`
}

type slot struct {
	ID string    `json:"id"`
	At time.Time `json:"at"`
}

func (s *slotSet) index(id string) int {
	return slices.IndexFunc(s.Jobs, func(x slot) bool { return x.ID == id })
}

func activeKey(p string) string { return "active." + keyPart(p) }

// read returns the principal's slot set and its revision (0: no entry).
func (l *Limiter) read(ctx context.Context, p string) (slotSet, uint64, error) {
	set := slotSet{Principal: p}
	e, err := l.kv.Get(ctx, activeKey(p))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return set, 0, nil
	}
	if err != nil {
		return set, 0, err
	}
	if err := json.Unmarshal(e.Value(), &set); err != nil {
		return set, 0, fmt.Errorf("decode %s: %w", activeKey(p), err)
	}
	return set, e.Revision(), nil
}

// write stores set with a revision check (rev 0: the key must not exist).
func (l *Limiter) write(ctx context.Context, p string, set slotSet, rev uint64) error {
	data, err := json.Marshal(set)
	if err != nil {
		return err
	}
	if rev == 0 {
		_, err = l.kv.Create(ctx, activeKey(p), data)
	} else {
		_, err = l.kv.Update(ctx, activeKey(p), data, rev)
	}
	return err
}

// acquire adds jobID to the principal's slot set unless the set is full.
// held is false when the id is in the set already: another create of the
// same id holds that slot, and this one must not give it back.
func (l *Limiter) acquire(ctx context.Context, p, jobID string) (held bool, refused *LimitError, err error) {
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		set, rev, err := l.read(ctx, p)
		if err != nil {
			return false, nil, err
		}
		if set.index(jobID) >= 0 {
			return false, nil, nil
		}
		if len(set.Jobs) >= l.opts.MaxConcurrent {
			set.Jobs = l.repair(ctx, set.Jobs)
			if len(set.Jobs) >= l.opts.MaxConcurrent {
				return false, &LimitError{
					Message:    fmt.Sprintf("too many exports in progress: at most %d at a time; wait for one to finish", l.opts.MaxConcurrent),
					RetryAfter: l.opts.ConcurrentRetryAfter,
				}, nil
			}
		}
		set.Jobs = append(set.Jobs, slot{ID: jobID, At: l.opts.Now().UTC()})
		err = l.write(ctx, p, set, rev)
		if err == nil {
			return true, nil, nil
		}
		if !conflict(err) {
			return false, nil, err
		}
		if err := pause(ctx, attempt); err != nil {
			return false, nil, err
		}
	}
	return false, nil, errContention
}

// repair drops the slots whose job has ended, or was never written and is
// older than staleSlot: releases that were lost. A job that cannot be
// read keeps its slot, so an outage never frees slots.
func (l *Limiter) repair(ctx context.Context, slots []slot) []slot {
	if l.opts.Jobs == nil {
		return slots
	}
	now := l.opts.Now()
	return slices.DeleteFunc(slices.Clone(slots), func(s slot) bool {
		job, err := l.opts.Jobs.Get(ctx, s.ID)
		switch {
		case errors.Is(err, jobstore.ErrNotFound):
			return now.Sub(s.At) > staleSlot
		case err != nil:
			return false
		}
		return jobstore.Terminal(job.GetState())
	})
}

// release removes jobID from the principal's slot set.
func (l *Limiter) release(ctx context.Context, p, jobID string) error {
	for attempt := 1; attempt <= maxAttempts; attempt++ {
		set, rev, err := l.read(ctx, p)
		if err != nil {
			return err
		}
		i := set.index(jobID)
		if rev == 0 || i < 0 {
			return nil
		}
		set.Jobs = slices.Delete(set.Jobs, i, i+1)
		err = l.write(ctx, p, set, rev)
		if err == nil {
			return nil
		}
		if !conflict(err) {
			return err
		}
		if err := pause(ctx, attempt); err != nil {
			return err
		}
	}
	return errContention
}

// Active returns the ids holding the principal's slots, for tests and
// diagnostics.
func (l *Limiter) Active(ctx context.Context, principal string) ([]string, error) {
	set, _, err := l.read(ctx, principal)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(set.Jobs))
	for _, s := range set.Jobs {
		ids = append(ids, s.ID)
	}
	return ids, nil
}

// unfinishedLister is the part of jobstore.Store ActiveJobs needs.
type unfinishedLister interface {
	Unfinished(ctx context.Context, ownerID string, kind exportv1.JobKind) ([]*exportv1.Job, error)
}

// ActiveCounter counts an owner's unfinished (non-terminal) jobs.
type ActiveCounter interface {
	CountActive(ctx context.Context, ownerID string) (int, error)
}

// ActiveCounterFunc adapts a function to ActiveCounter.
type ActiveCounterFunc func(ctx context.Context, ownerID string) (int, error)

// CountActive calls f.
func (f ActiveCounterFunc) CountActive(ctx context.Context, ownerID string) (int, error) {
	return f(ctx, ownerID)
}

// ActiveJobs counts an owner's non-terminal jobs in the projection, every
// kind including scheduled runs, which hold no slot. The scheduler uses it
// to skip a run while its owner is at the limit. It reads the owner's
// unfinished jobs from the projection's index, so it costs what those
// cost; on request paths the slot set answers in one read.
func ActiveJobs(jobs unfinishedLister) ActiveCounter {
	return ActiveCounterFunc(func(ctx context.Context, ownerID string) (int, error) {
		list, err := jobs.Unfinished(ctx, ownerID, exportv1.JobKind_JOB_KIND_UNSPECIFIED)
		if err != nil {
			return 0, err
		}
		return len(list), nil
	})
}
