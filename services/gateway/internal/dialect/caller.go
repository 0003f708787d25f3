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
	// Scope partitions idempotency keys and rate limits: "user:<id>" for an
	// authenticated user, else "cred:<sha256 of the credential headers>",
	// with "/org:<id>" appended for a Rebilly organization path.
	Scope string
	// UserID is set when the caller authenticated as a stored user; the
	// per-user concurrency limit only applies then.
	UserID string
}

// Identify returns the request's caller; ok is false when the request
// carries no credentials at all, in which case middleware lets it through
// for the handler to refuse.
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

// credentialHeaders are the headers dialects authenticate with.
var credentialHeaders = []string{"X-User-Id", "X-Auth-Token", "Reb-Apikey", "Authorization", "X-Api-Key"}

// HeaderIdentity identifies callers as stored users by X-User-Id and
// X-Auth-Token through a, or by REB-APIKEY or Authorization through keys
// (nil skips that); failing both, by a hash of whatever credential headers
// they send, which is stable per credential. unauthenticated tells a
// wrong-credentials error from an outage.
func HeaderIdentity(a Authenticator, keys KeyAuthenticator, unauthenticated func(error) bool) Identify {
	return func(r *http.Request) (Caller, bool, error) {
		org := ""
		if i := strings.Index(r.URL.Path, "/organizations/"); i >= 0 {
			rest := r.URL.Path[i+len("/organizations/"):]
			org, _, _ = strings.Cut(rest, "/")
		}
		withOrg := func(c Caller) Caller {
			if org != "" {
				c.Scope += "/org:" + org
			}
			return c
		}
		if id, tok := r.Header.Get("X-User-Id"), r.Header.Get("X-Auth-Token"); id != "" && tok != "" {
			u, err := a.Authenticate(r.Context(), id, tok)
			switch {
			case err == nil:
				return withOrg(Caller{Scope: "user:" + u.GetId(), UserID: u.GetId()}), true, nil
			case !unauthenticated(err):
				return Caller{}, false, err
			}
		}
		if apiKey, authz := r.Header.Get("REB-APIKEY"), r.Header.Get("Authorization"); keys != nil && (apiKey != "" || authz != "") {
			u, err := keys.Header(r.Context(), apiKey, authz)
			switch {
			case err == nil:
				return withOrg(Caller{Scope: "user:" + u.GetId(), UserID: u.GetId()}), true, nil
			case !unauthenticated(err):
				return Caller{}, false, err
			}
		}
		h := sha256.New()
		found := false
		for _, name := range credentialHeaders {
			if v := r.Header.Get(name); v != "" {
				found = true
				h.Write([]byte(name + "\x00" + v + "\x00"))
			}
		}
		if !found {
			return Caller{}, false, nil
		}
		return withOrg(Caller{Scope: "cred:" + hex.EncodeToString(h.Sum(nil))}), true, nil
	}
}
