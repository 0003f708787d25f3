package dialect

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// Caller is who sent a request, as far as middleware needs to know before
// the dialect's handler authenticates it properly.
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
// it through for the handler to refuse.
type Identify func(r *http.Request) (c Caller, ok bool, err error)

// Authenticator checks Rocket.Chat's personal access token headers; it is
// auth.Service's Authenticate.
type Authenticator interface {
	Authenticate(ctx context.Context, userID, token string) (*sourcev1.User, error)
}

// KeyAuthenticator checks API keys (REB-APIKEY) and bearer tokens
// (Authorization); it is rebilly.Authenticator's Header.
type KeyAuthenticator interface {
	Header(ctx context.Context, apiKey, authorization string) (*sourcev1.User, error)
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

// HeaderIdentity identifies callers by the credential of the route's
// dialect (Of): X-User-Id and X-Auth-Token through a on native and
// Rocket.Chat routes, REB-APIKEY or Authorization through keys on Rebilly
// routes, Authorization through keys on myTracker routes. Credentials
// that do not authenticate identify the caller by their hash. Headers of
// other dialects are ignored, as the route's handler ignores them.
// unauthenticated tells a wrong-credentials error from an outage.
func HeaderIdentity(a Authenticator, keys KeyAuthenticator, unauthenticated func(error) bool) Identify {
	return func(r *http.Request) (Caller, bool, error) {
		d := Of(r.URL.Path)
		org := ""
		if d == Rebilly {
			if i := strings.Index(r.URL.Path, "/organizations/"); i >= 0 {
				rest := r.URL.Path[i+len("/organizations/"):]
				org, _, _ = strings.Cut(rest, "/")
			}
		}
		caller := func(principal, userID string) Caller {
			c := Caller{Principal: principal, Scope: principal, UserID: userID}
			if org != "" {
				c.Scope += "/org:" + org
			}
			return c
		}
		var (
			u   *sourcev1.User
			err error
			try bool
		)
		switch d {
		case Rebilly:
			apiKey, authz := r.Header.Get("REB-APIKEY"), r.Header.Get("Authorization")
			if try = keys != nil && (apiKey != "" || authz != ""); try {
				u, err = keys.Header(r.Context(), apiKey, authz)
			}
		case MyTracker:
			authz := r.Header.Get("Authorization")
			if try = keys != nil && authz != ""; try {
				u, err = keys.Header(r.Context(), "", authz)
			}
		default:
			id, tok := r.Header.Get("X-User-Id"), r.Header.Get("X-Auth-Token")
			if try = a != nil && id != "" && tok != ""; try {
				u, err = a.Authenticate(r.Context(), id, tok)
			}
		}
		switch {
		case try && err == nil:
			return caller("user:"+u.GetId(), u.GetId()), true, nil
		case try && !unauthenticated(err):
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
}
