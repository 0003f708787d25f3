// Package idempotency makes job-creating requests safe to retry: a client
// that sends the same Idempotency-Key again gets the first answer (the
// same job) instead of a second job.
//
// The first request with a key claims it with a KV create (only one
// gateway replica can win), runs the handler and stores the answer. A
// repeat with the same request hash replays the stored answer; a repeat
// with a different body is a 422; a repeat while the first is still
// running waits briefly for it and otherwise gets a 409. Keys live in the
// bus.BucketIdempotency bucket, whose TTL is how long they are remembered.
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"dataport.dev/services/gateway/internal/dialect"
	"dataport.dev/shared/bus"
)

// Header is the request header carrying the client's key.
const Header = "Idempotency-Key"

// ReplayedHeader is set on answers replayed from a stored response.
const ReplayedHeader = "Idempotent-Replayed"

const (
	// maxKeyLength is generous for UUIDs and client-made keys alike.
	maxKeyLength = 255
	// maxBody bounds what is read to hash the request; create bodies are
	// a few kilobytes at most.
	maxBody = 1 << 20
	// staleClaim is when a claim whose request never finished (its
	// gateway crashed) may be taken over; it is well above submit.Timeout.
	staleClaim = time.Minute
)

// record is what the bucket stores per key.
type record struct {
	// RequestHash is the SHA-256 of method, path and body.
	RequestHash string `json:"requestHash"`
	// Done is false while the first request runs.
	Done        bool      `json:"done"`
	Status      int       `json:"status,omitempty"`
	ContentType string    `json:"contentType,omitempty"`
	Location    string    `json:"location,omitempty"`
	Body        []byte    `json:"body,omitempty"`
	ClaimedAt   time.Time `json:"claimedAt"`
}

// Options configure the middleware.
type Options struct {
	// Identify scopes keys by caller; nil means dialect.Identity, the
	// principal the authentication middleware put in the request's
	// context, so the middleware must run after it.
	Identify dialect.Identify
	// Wait is how long a concurrent duplicate waits for the first request's
	// answer before it gets a 409; 0 means 5 seconds.
	Wait time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Middleware stores answers to job-creating requests by idempotency key.
type Middleware struct {
	kv   jetstream.KeyValue
	opts Options
}

// New returns the middleware over the idempotency bucket.
func New(kv jetstream.KeyValue, opts Options) *Middleware {
	if opts.Wait <= 0 {
		opts.Wait = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Identify == nil {
		opts.Identify = dialect.Identity
	}
	return &Middleware{kv: kv, opts: opts}
}

// Open looks up the bucket (declared by bus.EnsureTopology).
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Middleware, error) {
	kv, err := js.KeyValue(ctx, bus.BucketIdempotency)
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", bus.BucketIdempotency, err)
	}
	return New(kv, opts), nil
}

// Handler wraps next. Only job-creating requests (dialect.IsCreate) that
// carry the header are affected; everything else passes through.
func (m *Middleware) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(Header)
		if key == "" || !dialect.IsCreate(r) {
			next.ServeHTTP(w, r)
			return
		}
		if len(key) > maxKeyLength {
			dialect.WriteError(w, r, http.StatusBadRequest, fmt.Sprintf("%s must be at most %d characters", Header, maxKeyLength))
			return
		}
		caller, ok, err := m.opts.Identify(r)
		if err != nil {
			m.opts.Logger.ErrorContext(r.Context(), "identify caller", "error", err)
			dialect.WriteError(w, r, http.StatusServiceUnavailable, "try again later")
			return
		}
		if !ok {
			// No credentials: the handler refuses it, nothing to remember.
			next.ServeHTTP(w, r)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		if err != nil || len(body) > maxBody {
			dialect.WriteError(w, r, http.StatusBadRequest, "request body unreadable or too large")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		m.serve(w, r, next, storageKey(caller.Scope, key), requestHash(r, body))
	})
}

// storageKey hashes scope and key into a valid KV key, so any characters
// in a client's key are safe and one caller never sees another's keys.
func storageKey(scope, key string) string {
	sum := sha256.Sum256([]byte(scope + "\x00" + key))
	return hex.EncodeToString(sum[:])
}

func requestHash(r *http.Request, body []byte) string {
	h := sha256.New()
	h.Write([]byte(r.Method + " " + r.URL.RequestURI() + "\n"))
	h.Write(body)
	return hex.EncodeToString(h.Sum(nil))
}

func (m *Middleware) serve(w http.ResponseWriter, r *http.Request, next http.Handler, key, hash string) {
	ctx := r.Context()
	log := m.opts.Logger
	deadline := m.opts.Now().Add(m.opts.Wait)
	for {
		claim := record{RequestHash: hash, ClaimedAt: m.opts.Now()}
		rev, err := m.kv.Create(ctx, key, mustJSON(claim))
		if err == nil {
			m.runFirst(w, r, next, key, rev, claim)
			return
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			log.ErrorContext(ctx, "claim idempotency key", "error", err)
			dialect.WriteError(w, r, http.StatusServiceUnavailable, "try again later")
			return
		}
		entry, err := m.kv.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // released between our create and get
		}
		if err != nil {
			log.ErrorContext(ctx, "read idempotency key", "error", err)
			dialect.WriteError(w, r, http.StatusServiceUnavailable, "try again later")
			return
		}
		var stored record
		if err := json.Unmarshal(entry.Value(), &stored); err != nil {
			log.ErrorContext(ctx, "decode idempotency record", "error", err)
			dialect.WriteError(w, r, http.StatusServiceUnavailable, "try again later")
			return
		}
		if stored.RequestHash != hash {
			dialect.WriteError(w, r, http.StatusUnprocessableEntity,
				"this Idempotency-Key was already used with a different request; use a new key for a new request")
			return
		}
		if stored.Done {
			replay(w, stored)
			return
		}
		if m.opts.Now().Sub(stored.ClaimedAt) > staleClaim {
			// The first request's gateway died mid-way; take the claim over
			// with a revision check so only one waiter does.
			claim.ClaimedAt = m.opts.Now()
			rev, err := m.kv.Update(ctx, key, mustJSON(claim), entry.Revision())
			if err == nil {
				m.runFirst(w, r, next, key, rev, claim)
				return
			}
			continue
		}
		if m.opts.Now().After(deadline) {
			w.Header().Set("Retry-After", "1")
			dialect.WriteError(w, r, http.StatusConflict, "a request with this Idempotency-Key is still being processed; retry shortly")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// runFirst runs the handler for the claimant and stores its answer. Answers
// that say "try again" (429, 5xx) release the key so the retry runs anew.
func (m *Middleware) runFirst(w http.ResponseWriter, r *http.Request, next http.Handler, key string, rev uint64, claim record) {
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	next.ServeHTTP(rec, r)
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.status)
	_, _ = w.Write(rec.body.Bytes())

	// The answer is out; storing it must not depend on the client staying.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if rec.status == http.StatusTooManyRequests || rec.status >= 500 {
		if err := m.kv.Delete(ctx, key, jetstream.LastRevision(rev)); err != nil {
			m.opts.Logger.WarnContext(ctx, "release idempotency key", "error", err)
		}
		return
	}
	claim.Done = true
	claim.Status = rec.status
	claim.ContentType = rec.header.Get("Content-Type")
	claim.Location = rec.header.Get("Location")
	claim.Body = rec.body.Bytes()
	if _, err := m.kv.Update(ctx, key, mustJSON(claim), rev); err != nil {
		m.opts.Logger.WarnContext(ctx, "store idempotent answer", "error", err)
	}
}

func replay(w http.ResponseWriter, rec record) {
	if rec.ContentType != "" {
		w.Header().Set("Content-Type", rec.ContentType)
	}
	if rec.Location != "" {
		w.Header().Set("Location", rec.Location)
	}
	w.Header().Set(ReplayedHeader, "true")
	w.Header().Set("Content-Length", strconv.Itoa(len(rec.Body)))
	w.WriteHeader(rec.Status)
	_, _ = w.Write(rec.Body)
}

func mustJSON(r record) []byte {
	b, _ := json.Marshal(r) // a record always encodes
	return b
}

// recorder buffers a handler's answer; create answers are small.
type recorder struct {
	header      http.Header
	status      int
	wroteHeader bool
	body        bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = status, true
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	return r.body.Write(b)
}
