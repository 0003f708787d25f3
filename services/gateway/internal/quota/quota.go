// Package quota pushes back on callers who create exports faster than the
// platform should take them: a per-user limit on unfinished exports and a
// per-caller request rate, both answered with 429 and Retry-After in the
// dialect's error shape.
//
// The concurrency limit counts the user's non-terminal jobs in the job
// projection, so it holds over every gateway replica. The rate limit is a
// token bucket per caller held in memory by each replica: with N replicas
// behind a balancer a caller may get up to N times the rate, which is
// acceptable for a guard against runaway scripts (documented in
// docs/RELIABILITY.md).
package quota

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/dialect"
	"dataport.dev/services/gateway/internal/jobstore"
)

// ActiveCounter counts a user's unfinished (non-terminal) jobs.
type ActiveCounter interface {
	CountActive(ctx context.Context, ownerID string) (int, error)
}

// ActiveCounterFunc adapts a function to ActiveCounter.
type ActiveCounterFunc func(ctx context.Context, ownerID string) (int, error)

// CountActive calls f.
func (f ActiveCounterFunc) CountActive(ctx context.Context, ownerID string) (int, error) {
	return f(ctx, ownerID)
}

// Options configure the limits.
type Options struct {
	// MaxConcurrent is how many unfinished exports one user may have; 0
	// disables the limit.
	MaxConcurrent int
	// RatePerMinute is how many creates one caller may send per minute
	// (with a burst of the same size); 0 disables the limit.
	RatePerMinute int
	// ConcurrentRetryAfter is the Retry-After sent when the concurrency
	// limit is hit; 0 means 30 seconds.
	ConcurrentRetryAfter time.Duration
	Identify             dialect.Identify
	Active               ActiveCounter
	Logger               *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Limiter is the quota middleware. It is safe for concurrent use.
type Limiter struct {
	opts Options

	mu      sync.Mutex
	buckets map[string]*bucket
	sweep   time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

// New returns a Limiter.
func New(opts Options) *Limiter {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ConcurrentRetryAfter <= 0 {
		opts.ConcurrentRetryAfter = 30 * time.Second
	}
	return &Limiter{opts: opts, buckets: map[string]*bucket{}}
}

// Handler wraps next; only job-creating requests (dialect.IsCreate) are
// limited.
func (l *Limiter) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !dialect.IsCreate(r) || (l.opts.MaxConcurrent <= 0 && l.opts.RatePerMinute <= 0) {
			next.ServeHTTP(w, r)
			return
		}
		caller, ok, err := l.opts.Identify(r)
		if err != nil {
			l.opts.Logger.ErrorContext(r.Context(), "identify caller", "error", err)
			dialect.WriteError(w, r, http.StatusServiceUnavailable, "try again later")
			return
		}
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		if wait, ok := l.take(caller.Scope); !ok {
			tooMany(w, r, wait, fmt.Sprintf("too many export requests: at most %d per minute", l.opts.RatePerMinute))
			return
		}
		if l.opts.MaxConcurrent > 0 && caller.UserID != "" && l.opts.Active != nil {
			n, err := l.opts.Active.CountActive(r.Context(), caller.UserID)
			if err != nil {
				l.opts.Logger.ErrorContext(r.Context(), "count active exports", "user_id", caller.UserID, "error", err)
				dialect.WriteError(w, r, http.StatusServiceUnavailable, "try again later")
				return
			}
			if n >= l.opts.MaxConcurrent {
				tooMany(w, r, l.opts.ConcurrentRetryAfter, fmt.Sprintf(
					"too many exports in progress: at most %d at a time; wait for one to finish", l.opts.MaxConcurrent))
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

func tooMany(w http.ResponseWriter, r *http.Request, wait time.Duration, msg string) {
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	dialect.WriteError(w, r, http.StatusTooManyRequests, msg)
}

// take removes one token from scope's bucket, or reports how long until
// one is there.
func (l *Limiter) take(scope string) (time.Duration, bool) {
	if l.opts.RatePerMinute <= 0 {
		return 0, true
	}
	capacity := float64(l.opts.RatePerMinute)
	perSecond := capacity / 60
	now := l.opts.Now()

	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepIdle(now, capacity/perSecond)
	b, ok := l.buckets[scope]
	if !ok {
		b = &bucket{tokens: capacity, at: now}
		l.buckets[scope] = b
	}
	b.tokens = math.Min(capacity, b.tokens+now.Sub(b.at).Seconds()*perSecond)
	b.at = now
	if b.tokens >= 1 {
		b.tokens--
		return 0, true
	}
	return time.Duration((1 - b.tokens) / perSecond * float64(time.Second)), false
}

// sweepIdle drops full buckets now and then so memory follows active
// callers only; fullAfter is how long an empty bucket takes to refill.
func (l *Limiter) sweepIdle(now time.Time, fullAfterSeconds float64) {
	if now.Sub(l.sweep) < time.Minute {
		return
	}
	l.sweep = now
	for k, b := range l.buckets {
		if now.Sub(b.at).Seconds() >= fullAfterSeconds {
			delete(l.buckets, k)
		}
	}
}

// lister is the part of jobstore.Store the counter needs.
type lister interface {
	List(ctx context.Context, ownerID string) ([]*exportv1.Job, error)
}

// ActiveJobs counts a user's non-terminal jobs in the projection.
func ActiveJobs(jobs lister) ActiveCounter {
	return ActiveCounterFunc(func(ctx context.Context, ownerID string) (int, error) {
		list, err := jobs.List(ctx, ownerID)
		if err != nil {
			return 0, err
		}
		n := 0
		for _, j := range list {
			if !jobstore.Terminal(j.GetState()) {
				n++
			}
		}
		return n, nil
	})
}
