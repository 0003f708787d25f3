package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/dialect/native"
	"dataport.dev/services/gateway/internal/principal"
	"dataport.dev/services/gateway/internal/respond"
)

// Cookie names: with TLS the __Host- prefix makes the browser refuse the
// cookie unless it is Secure, host-only and for the whole site, so a
// sibling subdomain cannot plant one.
const (
	cookieName       = "dataport_session"
	secureCookieName = "__Host-dataport_session"
)

// HeaderCSRF carries the session's CSRF token on state-changing
// requests authenticated by the cookie.
const HeaderCSRF = "X-CSRF-Token"

// session is what the sessions bucket keeps per signed-in browser. The
// credential itself is not kept: CredentialSHA256 is the hash the users
// bucket already holds, compared on every request so that a rotated
// credential ends the session.
type session struct {
	UserID           string    `json:"userId"`
	Credential       string    `json:"credential"`
	CredentialSHA256 string    `json:"credentialSha256"`
	CSRF             string    `json:"csrf"`
	Created          time.Time `json:"created"`
	Expires          time.Time `json:"expires"`
}

// Credential kinds of a session, as stored.
const (
	credToken  = "access-token"
	credAPIKey = "api-key"
)

// errNoSession means the request carries no cookie, or one naming no
// live session.
var errNoSession = errors.New("console: no session")

// randomToken returns 32 random bytes, base64url: a session id or a CSRF
// token.
func randomToken() string {
	b := make([]byte, 32)
	// crypto/rand.Read never fails (it panics rather than return weak
	// bytes, Go 1.24+).
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sessionKey is the bucket key of a session id: a reader of the bucket
// learns no usable cookie.
func sessionKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

func (c *Console) secureRequest(r *http.Request) bool { return c.secure || r.TLS != nil }

func (c *Console) cookieName(r *http.Request) string {
	if c.secureRequest(r) {
		return secureCookieName
	}
	return cookieName
}

// cookieID returns the session id the request's cookie carries.
func (c *Console) cookieID(r *http.Request) (string, bool) {
	ck, err := r.Cookie(c.cookieName(r))
	if err != nil || ck.Value == "" || len(ck.Value) > 128 {
		return "", false
	}
	return ck.Value, true
}

func (c *Console) setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: c.cookieName(r), Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: c.secureRequest(r), SameSite: http.SameSiteStrictMode,
	})
}

// lookup returns the request's session and its user, re-read now. A
// session past its expiry, of a user who is gone, or whose credential
// changed is deleted and errNoSession. Other errors are outages.
func (c *Console) lookup(ctx context.Context, r *http.Request) (string, *session, *sourcev1.User, error) {
	id, ok := c.cookieID(r)
	if !ok {
		return "", nil, nil, errNoSession
	}
	key := sessionKey(id)
	e, err := c.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return "", nil, nil, errNoSession
	case err != nil:
		return "", nil, nil, fmt.Errorf("read session: %w", err)
	}
	var s session
	if err := json.Unmarshal(e.Value(), &s); err != nil {
		c.end(ctx, key)
		return "", nil, nil, errNoSession
	}
	if !c.opts.Now().Before(s.Expires) {
		c.end(ctx, key)
		return "", nil, nil, errNoSession
	}
	u, found, err := c.opts.Users.User(ctx, s.UserID)
	if err != nil {
		return "", nil, nil, fmt.Errorf("read user %s: %w", s.UserID, err)
	}
	if !found || !sameHash(s.CredentialSHA256, currentHash(u, s.Credential)) {
		c.end(ctx, key)
		return "", nil, nil, errNoSession
	}
	return key, &s, u, nil
}

// currentHash is the stored hash of the user's credential of that kind.
func currentHash(u *sourcev1.User, kind string) string {
	if kind == credAPIKey {
		return u.GetApiKeySha256()
	}
	return u.GetAuthTokenSha256()
}

func sameHash(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(strings.ToLower(a)), []byte(strings.ToLower(b))) == 1
}

// end deletes a session. A failure leaves it to the bucket's TTL, which
// ends it anyway.
func (c *Console) end(ctx context.Context, key string) {
	if err := c.kv.Purge(context.WithoutCancel(ctx), key); err != nil {
		c.log.WarnContext(ctx, "delete console session", "error", err)
	}
}

// checkOrigin refuses a state-changing request a browser sent from
// another site: browsers send Origin on every non-GET fetch and no page
// can forge it, and Sec-Fetch-Site (where sent) must say same-origin.
func (c *Console) checkOrigin(r *http.Request) error {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return fmt.Errorf("a %s request cannot change anything here", site)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return errors.New("the request has no Origin header")
	}
	if origin != c.origin {
		return fmt.Errorf("requests must come from %s, this one came from %s (open the console at %s%s)", c.origin, origin, c.origin, Path)
	}
	return nil
}

// checkCSRF is the check of every state-changing request the cookie
// authenticates: the Origin, and the session's token in HeaderCSRF.
func (c *Console) checkCSRF(r *http.Request, s *session) error {
	if err := c.checkOrigin(r); err != nil {
		return err
	}
	if t := r.Header.Get(HeaderCSRF); t == "" || subtle.ConstantTimeCompare([]byte(t), []byte(s.CSRF)) != 1 {
		return errors.New("missing or wrong " + HeaderCSRF + " header; reload the console")
	}
	return nil
}

// safeMethod reports whether method only reads. Only native routes
// accept the cookie, and none of their GETs changes anything.
func safeMethod(method string) bool {
	return method == http.MethodGet || method == http.MethodHead || method == http.MethodOptions
}

// Authenticate is middleware for the router, after the header
// authentication: a request to a native route (/v1/) that carries none
// of the native credential headers but the console's cookie acts as the
// session's user, and a state-changing one only when it passes
// checkCSRF (else 403). Other routes never see the cookie act: a
// Rocket.Chat GET creates exports, and the other dialects have their own
// credentials.
func (c *Console) Authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/v1/") || r.Header.Get("X-User-Id") != "" || r.Header.Get("X-Auth-Token") != "" {
			next.ServeHTTP(w, r)
			return
		}
		if _, ok := c.cookieID(r); !ok {
			next.ServeHTTP(w, r)
			return
		}
		ctx := r.Context()
		_, s, u, err := c.lookup(ctx, r)
		switch {
		case errors.Is(err, errNoSession):
			// The handler answers 401 as for any missing credential.
			next.ServeHTTP(w, r)
			return
		case err != nil:
			next.ServeHTTP(w, r.WithContext(principal.FailedContext(ctx, err)))
			return
		}
		if !safeMethod(r.Method) {
			if err := c.checkCSRF(r, s); err != nil {
				w.Header().Set("Cache-Control", "no-store")
				native.WriteError(w, http.StatusForbidden, "CSRF check failed: "+err.Error())
				return
			}
		}
		kind := principal.AccessToken
		if s.Credential == credAPIKey {
			kind = principal.APIKey
		}
		next.ServeHTTP(w, r.WithContext(principal.NewContext(ctx, principal.Principal{User: u, Credential: kind})))
	})
}

// sessionView is the answer of GET and POST /console/api/session. The
// CSRF token is readable by the console's script only: the API sends no
// CORS headers, so no other origin can read it.
type sessionView struct {
	UserID     string `json:"userId"`
	Username   string `json:"username,omitempty"`
	Name       string `json:"name,omitempty"`
	Credential string `json:"credential"`
	CSRFToken  string `json:"csrfToken"`
	ExpiresAt  string `json:"expiresAt"`
}

func view(s *session, u *sourcev1.User) sessionView {
	return sessionView{
		UserID: u.GetId(), Username: u.GetUsername(), Name: u.GetName(), Credential: s.Credential,
		CSRFToken: s.CSRF, ExpiresAt: s.Expires.UTC().Format(time.RFC3339),
	}
}

func (c *Console) internalError(w http.ResponseWriter, r *http.Request, what string, err error) {
	if respond.Abandoned(r) {
		c.log.DebugContext(r.Context(), what+": the client went away", "error", err)
		w.WriteHeader(respond.StatusClientClosedRequest)
		return
	}
	c.log.ErrorContext(r.Context(), what, "error", err)
	native.WriteError(w, http.StatusInternalServerError, "internal error")
}

// getSession implements GET /console/api/session: who is signed in,
// and the CSRF token, or 401.
func (c *Console) getSession(w http.ResponseWriter, r *http.Request) {
	secureHeaders(w.Header())
	w.Header().Set("Cache-Control", "no-store")
	_, s, u, err := c.lookup(r.Context(), r)
	switch {
	case errors.Is(err, errNoSession):
		native.WriteError(w, http.StatusUnauthorized, "not signed in")
		return
	case err != nil:
		c.internalError(w, r, "read console session", err)
		return
	}
	respond.JSON(w, http.StatusOK, view(s, u))
}

// signInRequest is the body of POST /console/api/session: a personal
// access token (userId and token) or an API key.
type signInRequest struct {
	UserID string `json:"userId"`
	Token  string `json:"token"`
	APIKey string `json:"apiKey"`
}

// maxSignInBody bounds the sign-in body; credentials are short.
const maxSignInBody = 8 << 10

// signIn implements POST /console/api/session: it checks the credential
// with the API's own authenticators and starts a session. Only a JSON
// body from the gateway's own origin is taken, so another site can
// neither sign a visitor in to its account nor use the endpoint as an
// oracle through a simple form post.
func (c *Console) signIn(w http.ResponseWriter, r *http.Request) {
	secureHeaders(w.Header())
	w.Header().Set("Cache-Control", "no-store")
	if err := c.checkOrigin(r); err != nil {
		native.WriteError(w, http.StatusForbidden, err.Error())
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		native.WriteError(w, http.StatusUnsupportedMediaType, "send the credentials as application/json")
		return
	}
	var req signInRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxSignInBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		native.WriteError(w, http.StatusBadRequest, "the body must be a JSON object with userId and token, or apiKey")
		return
	}
	ctx := r.Context()
	var (
		u    *sourcev1.User
		kind string
		err  error
	)
	switch {
	case req.APIKey != "" && req.UserID == "" && req.Token == "":
		kind = credAPIKey
		u, err = c.opts.Keys.APIKey(ctx, req.APIKey)
	case req.APIKey == "" && req.UserID != "" && req.Token != "":
		kind = credToken
		u, err = c.opts.Tokens.Authenticate(ctx, req.UserID, req.Token)
	default:
		native.WriteError(w, http.StatusBadRequest, "send either userId and token, or apiKey")
		return
	}
	switch {
	case errors.Is(err, auth.ErrUnauthenticated):
		native.WriteError(w, http.StatusUnauthorized, "wrong credentials: check the user id and token, or the API key")
		return
	case err != nil:
		c.internalError(w, r, "console sign-in", err)
		return
	}
	now := c.opts.Now()
	s := &session{
		UserID: u.GetId(), Credential: kind, CredentialSHA256: currentHash(u, kind),
		CSRF: randomToken(), Created: now, Expires: now.Add(c.opts.SessionTTL),
	}
	data, err := json.Marshal(s)
	if err != nil {
		c.internalError(w, r, "encode console session", err)
		return
	}
	// A session id made of 32 random bytes is never reused; Create
	// refuses an existing key anyway.
	id := randomToken()
	if _, err := c.kv.Create(ctx, sessionKey(id), data); err != nil {
		c.internalError(w, r, "store console session", err)
		return
	}
	// Replace a session the browser still had, so one browser holds one.
	if old, ok := c.cookieID(r); ok {
		c.end(ctx, sessionKey(old))
	}
	c.setCookie(w, r, id, int(c.opts.SessionTTL/time.Second))
	c.log.InfoContext(ctx, "console sign-in", "user_id", u.GetId(), "credential", kind)
	respond.JSON(w, http.StatusOK, view(s, u))
}

// signOut implements DELETE /console/api/session: the session is deleted
// on the server, and the cookie cleared.
func (c *Console) signOut(w http.ResponseWriter, r *http.Request) {
	secureHeaders(w.Header())
	w.Header().Set("Cache-Control", "no-store")
	key, s, _, err := c.lookup(r.Context(), r)
	switch {
	case errors.Is(err, errNoSession):
		c.setCookie(w, r, "", -1)
		w.WriteHeader(http.StatusNoContent)
		return
	case err != nil:
		c.internalError(w, r, "read console session", err)
		return
	}
	if err := c.checkCSRF(r, s); err != nil {
		native.WriteError(w, http.StatusForbidden, "CSRF check failed: "+err.Error())
		return
	}
	if err := c.kv.Purge(context.WithoutCancel(r.Context()), key); err != nil {
		c.internalError(w, r, "delete console session", err)
		return
	}
	c.setCookie(w, r, "", -1)
	w.WriteHeader(http.StatusNoContent)
}
