package dialect

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/principal"
)

// Caller is who sent a request, as far as middleware needs to know: the
// principal Authenticate resolved, or the credential that did not
// authenticate.
type Caller struct {
	// Principal is the credential the route's dialect reads, resolved:
	// "user:<id>" for an authenticated user, else "cred:<sha256 of those
	// credential headers>", stable per credential. Headers the dialect
	// ignores never change it.
	Principal string
	// Scope partitions idempotency keys: Principal, with "/org:<id>"
	// appended for a Rebilly organization path, so that one key used in
	// two organizations names two requests.
	Scope string
	// UserID is set when the caller authenticated as a stored user.
	UserID string
}

// Identify returns the request's caller; ok is false when the request
// carries none of its dialect's credentials, in which case middleware lets
// it through for the handler to refuse. An error means the credentials
// could not be checked.
type Identify func(r *http.Request) (c Caller, ok bool, err error)

// TokenAuthenticator checks personal access tokens (X-User-Id and
// X-Auth-Token); it is auth.Service's Authenticate. Wrong credentials are
// an error wrapping auth.ErrUnauthenticated, any other error an outage. It
// must be safe for concurrent use.
type TokenAuthenticator interface {
	Authenticate(ctx context.Context, userID, token string) (*sourcev1.User, error)
}

// KeyAuthenticator checks API keys (REB-APIKEY) and bearer tokens
// (Authorization) and tells which kind the credential was; it is
// auth.KeyAuthenticator's Header. Errors are as TokenAuthenticator's.
type KeyAuthenticator interface {
	Header(ctx context.Context, apiKey, authorization string) (*sourcev1.User, principal.Credential, error)
}

// Credential headers per dialect: exactly what each dialect's handlers
// authenticate with.
var (
	// Native and Rocket.Chat routes: a personal access token.
	tokenHeaders = []string{"X-User-Id", "X-Auth-Token"}
	// Rebilly routes: an API key, else a bearer JWT (or API key).
	rebillyHeaders = []string{"REB-APIKEY", "Authorization"}
	// myTracker routes: a bearer API key or JWT.
	myTrackerHeaders = []string{"Authorization"}
)

// CredentialHeaders returns the headers the dialect serving path
// authenticates with.
func CredentialHeaders(path string) []string {
	switch Of(path) {
	case Rebilly:
		return rebillyHeaders
	case MyTracker:
		return myTrackerHeaders
	}
	return tokenHeaders
}

// Authenticate returns middleware that authenticates every request once,
// by the credential of its route's dialect (Of), and records the outcome
// in the request's context for later middleware and the handler
// (principal.From): X-User-Id and X-Auth-Token through tokens on native
// and Rocket.Chat routes, REB-APIKEY or Authorization through keys on
// Rebilly routes, Authorization through keys on myTracker routes. Headers
// of other dialects are ignored, so a credential of one dialect never
// acts on another's routes.
//
// The middleware never answers. A request without a valid credential goes
// on without a principal, and its handler refuses it in its dialect's
// words (or a route that needs none, such as a signed download, serves
// it); one whose credentials could not be checked carries the error, and
// whoever needs the principal answers 5xx. Either authenticator may be
// nil: its dialects' requests then have no principal.
func Authenticate(tokens TokenAuthenticator, keys KeyAuthenticator) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ctx := r.Context()
			var (
				u    *sourcev1.User
				kind principal.Credential
				err  error
				try  bool
			)
			switch Of(r.URL.Path) {
			case Rebilly:
				apiKey, authz := r.Header.Get("REB-APIKEY"), r.Header.Get("Authorization")
				if try = keys != nil && (apiKey != "" || authz != ""); try {
					u, kind, err = keys.Header(ctx, apiKey, authz)
				}
			case MyTracker:
				// Only Authorization: a REB-APIKEY header is the Rebilly
				// dialect's and must not make a request here act as
				// someone else than its bearer.
				authz := r.Header.Get("Authorization")
				if try = keys != nil && authz != ""; try {
					u, kind, err = keys.Header(ctx, "", authz)
				}
			default:
				id, tok := r.Header.Get("X-User-Id"), r.Header.Get("X-Auth-Token")
				if try = tokens != nil && id != "" && tok != ""; try {
					u, err = tokens.Authenticate(ctx, id, tok)
					kind = principal.AccessToken
				}
			}
			switch {
			case try && err == nil:
				ctx = principal.NewContext(ctx, principal.Principal{User: u, Credential: kind})
			case try && !errors.Is(err, auth.ErrUnauthenticated):
				ctx = principal.FailedContext(ctx, err)
			}
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// Identity identifies a request's caller from what Authenticate recorded:
// the authenticated user, else credentials that did not authenticate by
// their hash (so a replay of a refused request is still recognised). It
// authenticates nothing itself.
func Identity(r *http.Request) (Caller, bool, error) {
	org := ""
	if Of(r.URL.Path) == Rebilly {
		if i := strings.Index(r.URL.Path, "/organizations/"); i >= 0 {
			rest := r.URL.Path[i+len("/organizations/"):]
			org, _, _ = strings.Cut(rest, "/")
		}
	}
	caller := func(who, userID string) Caller {
		c := Caller{Principal: who, Scope: who, UserID: userID}
		if org != "" {
			c.Scope += "/org:" + org
		}
		return c
	}
	p, err := principal.From(r.Context())
	switch {
	case err == nil:
		return caller("user:"+p.User.GetId(), p.User.GetId()), true, nil
	case !errors.Is(err, principal.ErrUnauthenticated):
		return Caller{}, false, err
	}
	h := sha256.New()
	found := false
	for _, name := range CredentialHeaders(r.URL.Path) {
		if v := r.Header.Get(name); v != "" {
			found = true
			h.Write([]byte(name + "\x00" + v + "\x00"))
		}
	}
	if !found {
		return Caller{}, false, nil
	}
	return caller("cred:"+hex.EncodeToString(h.Sum(nil)), ""), true, nil
}
