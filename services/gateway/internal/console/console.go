// Package console is the gateway's web console: pages under /console/
// (HTML, CSS and JavaScript embedded in the binary, no external
// resources) that sign a person in with a personal access token or an API
// key and then use the native API (/v1/exports...) as that person.
//
// The credential is checked once, at sign-in, by the same authenticators
// the API uses, and is never kept: the browser gets a random session id in
// an HttpOnly, SameSite=Strict cookie (Secure, and named with the
// __Host- prefix, when the gateway is reached over TLS), and the gateway
// keeps the session, under the SHA-256 of that id, in the JetStream KV
// bucket BucketSessions, whose TTL ends it. Every later request re-reads
// the user, so a rotated token or key ends its sessions at once.
//
// Native routes accept the cookie through Authenticate, which the router
// runs after the header authentication: that is what lets EventSource,
// which cannot send headers, open the event streams. A state-changing
// request with the cookie must also carry the session's CSRF token in
// X-CSRF-Token and an Origin equal to the gateway's public origin; the
// sign-in itself checks the Origin (against login CSRF).
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go/jetstream"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// BucketSessions is the KV bucket of console sessions, created by Open.
const BucketSessions = "console_sessions"

// DefaultSessionTTL is how long a session lasts after sign-in.
const DefaultSessionTTL = 12 * time.Hour

// TokenChecker checks a personal access token; it is auth.Service's
// Authenticate. Wrong credentials are auth.ErrUnauthenticated, any other
// error an outage. It must be safe for concurrent use.
type TokenChecker interface {
	Authenticate(ctx context.Context, userID, token string) (*sourcev1.User, error)
}

// KeyChecker checks an API key; it is auth.KeyAuthenticator's APIKey.
// Errors are as TokenChecker's.
type KeyChecker interface {
	APIKey(ctx context.Context, key string) (*sourcev1.User, error)
}

// Users reads a user by id; it is access.Directory's User. found is
// false for an unknown id. It must be safe for concurrent use.
type Users interface {
	User(ctx context.Context, id string) (u *sourcev1.User, found bool, err error)
}

// Options configures the console. Tokens, Keys, Users and PublicURL are
// required.
type Options struct {
	Tokens TokenChecker
	Keys   KeyChecker
	Users  Users
	// PublicURL is the gateway's base URL as users reach it. Its origin
	// is the only one state-changing requests may come from, and an https
	// scheme makes the cookie Secure.
	PublicURL string
	// SessionTTL is a session's lifetime; zero means DefaultSessionTTL.
	SessionTTL time.Duration
	// Replicas of the sessions bucket (the topology's); zero means 1.
	Replicas int
	Logger   *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

//go:embed static
var static embed.FS

// Console serves the console's pages and sessions. It is safe for
// concurrent use.
type Console struct {
	opts   Options
	kv     jetstream.KeyValue
	origin string
	secure bool
	log    *slog.Logger
	assets http.Handler
}

// Open creates or updates the sessions bucket and returns the console.
func Open(ctx context.Context, js jetstream.JetStream, opts Options) (*Console, error) {
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      BucketSessions,
		Description: "web console sessions, by the SHA-256 of the session id",
		History:     1,
		TTL:         opts.SessionTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    opts.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("open bucket %s: %w", BucketSessions, err)
	}
	return New(kv, opts)
}

// New returns the console over an existing sessions bucket.
func New(kv jetstream.KeyValue, opts Options) (*Console, error) {
	if opts.Tokens == nil || opts.Keys == nil || opts.Users == nil {
		return nil, errors.New("console: Tokens, Keys and Users are required")
	}
	u, err := url.Parse(opts.PublicURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("console: public URL %q is not an http(s) URL", opts.PublicURL)
	}
	if opts.SessionTTL <= 0 {
		opts.SessionTTL = DefaultSessionTTL
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	sub, err := fs.Sub(static, "static")
	if err != nil {
		return nil, fmt.Errorf("console assets: %w", err)
	}
	return &Console{
		opts: opts, kv: kv, log: opts.Logger,
		origin: u.Scheme + "://" + u.Host,
		secure: u.Scheme == "https",
		assets: http.StripPrefix(Path, http.FileServerFS(sub)),
	}, nil
}

// Path is where the console is served.
const Path = "/console/"

// Routes registers the console's pages and its session endpoint.
func (c *Console) Routes(r chi.Router) {
	r.Get("/console", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Path, http.StatusMovedPermanently)
	})
	r.Get(Path+"api/session", c.getSession)
	r.Post(Path+"api/session", c.signIn)
	r.Delete(Path+"api/session", c.signOut)
	r.Get(Path+"*", c.page)
}

// contentSecurityPolicy allows only the console's own files: no inline
// script or style, no framing, no form posts or connections elsewhere.
const contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'"

// secureHeaders sets what every console answer carries.
func secureHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
}

// page serves the embedded files; the single page's views are chosen
// by the URL's fragment, so every other path is a 404.
func (c *Console) page(w http.ResponseWriter, r *http.Request) {
	secureHeaders(w.Header())
	// Assets change with the binary; revalidating costs one request.
	w.Header().Set("Cache-Control", "no-cache")
	c.assets.ServeHTTP(w, r)
}
