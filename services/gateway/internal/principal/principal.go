// Package principal carries who sent a request, as the gateway's
// authentication middleware (dialect.Authenticate) resolved it once, in
// the request's context. Middleware (idempotency keys) and every dialect's
// handlers read it from there instead of authenticating again.
package principal

import (
	"context"
	"errors"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// ErrUnauthenticated means the request carried none of its dialect's
// credentials, or ones that match no user; which of the two is
// deliberately not told apart.
var ErrUnauthenticated = errors.New("principal: not authenticated")

// Credential is the kind of credential a caller authenticated with.
type Credential int

// Credentials.
const (
	// AccessToken is a personal access token: X-User-Id and
	// X-Auth-Token (native and Rocket.Chat routes).
	AccessToken Credential = iota + 1
	// APIKey is a secret API key: REB-APIKEY, or a bearer value that is
	// not a JWT (Rebilly and myTracker routes).
	APIKey
	// JWT is a signed bearer token naming a user (Rebilly and myTracker
	// routes).
	JWT
)

// String returns the credential's name, for logs.
func (c Credential) String() string {
	switch c {
	case AccessToken:
		return "access-token"
	case APIKey:
		return "api-key"
	case JWT:
		return "jwt"
	}
	return "none"
}

// Principal is an authenticated caller.
type Principal struct {
	// User is the stored user the credential belongs to.
	User *sourcev1.User
	// Credential is what the user authenticated with.
	Credential Credential
}

type outcome struct {
	p   Principal
	err error
}

type key struct{}

// NewContext returns ctx carrying p as the request's principal.
func NewContext(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, key{}, outcome{p: p})
}

// FailedContext returns ctx recording that the request's credentials could
// not be checked (the users bucket could not be read): From then returns
// err, and a handler answers 5xx rather than 401.
func FailedContext(ctx context.Context, err error) context.Context {
	return context.WithValue(ctx, key{}, outcome{err: err})
}

// From returns the request's principal. The error is ErrUnauthenticated
// when the request carried no valid credential of its dialect (or never
// passed the authentication middleware), else the error that kept the
// credentials from being checked.
func From(ctx context.Context) (Principal, error) {
	o, ok := ctx.Value(key{}).(outcome)
	switch {
	case !ok:
		return Principal{}, ErrUnauthenticated
	case o.err != nil:
		return Principal{}, o.err
	}
	return o.p, nil
}
