package auth

import (
	"context"
	"crypto/rsa"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/principal"
	"dataport.dev/shared/access"
)

// KeyAuthenticator resolves the credentials of the Rebilly and myTracker
// dialects: a secret API key in REB-APIKEY or as a bearer value (stored
// only as SHA-256 in User.api_key_sha256), or an "Authorization: Bearer
// <JWT>" signed with a configured HS256 secret or RS256 key whose "sub" is
// a user id. Credentials that are missing, malformed, expired or match no
// user are ErrUnauthenticated; which of these is deliberately not told
// apart. It is safe for concurrent use.
type KeyAuthenticator struct {
	users       jetstream.KeyValue
	userIndex   jetstream.KeyValue
	hsSecret    []byte
	rsaKey      *rsa.PublicKey
	methods     []string
	issuer      string
	audience    string
	maxLifetime time.Duration
	now         func() time.Time
	cache       *Cache
}

// MinHS256KeyBytes is the shortest HS256 key accepted: RFC 7518, section
// 3.2, requires a key at least as long as the hash output. A shorter one
// can be brute-forced offline from a single token.
const MinHS256KeyBytes = 32

// DefaultMaxTokenLifetime is KeyConfig.MaxLifetime's default.
const DefaultMaxTokenLifetime = 24 * time.Hour

// KeyConfig configures JWT verification; both keys empty disables JWTs.
type KeyConfig struct {
	// HS256Secret verifies HS256 tokens; at least MinHS256KeyBytes long.
	HS256Secret string
	// RS256PublicKeyPEM verifies RS256 tokens (PKIX or PKCS#1 PEM).
	RS256PublicKeyPEM string
	// Issuer, when set, must equal a token's "iss".
	Issuer string
	// Audience, when set, must be one of a token's "aud" values.
	Audience string
	// MaxLifetime is the longest a token may be valid for: exp minus iat
	// (or nbf, or now when the token has neither). A leaked token is then
	// useful for a bounded time even when its issuer mints long-lived
	// ones. Zero means DefaultMaxTokenLifetime.
	MaxLifetime time.Duration
	// Now is the clock for expiry checks; nil means time.Now.
	Now func() time.Time
	// Cache, when set, answers for API keys and JWT subjects recently
	// accepted (Cache). A JWT is still verified on every request; only
	// the read of its subject is saved.
	Cache *Cache
}

// NewKeyAuthenticator returns a KeyAuthenticator over the users bucket and
// the users' index (bus.BucketUserIndex, see
// access.IndexUser). It fails on an HS256 key shorter than
// MinHS256KeyBytes and on an unparsable RS256 key.
func NewKeyAuthenticator(users, userIndex jetstream.KeyValue, cfg KeyConfig) (*KeyAuthenticator, error) {
	a := &KeyAuthenticator{users: users, userIndex: userIndex, now: cfg.Now, issuer: cfg.Issuer, audience: cfg.Audience, maxLifetime: cfg.MaxLifetime, cache: cfg.Cache}
	if a.now == nil {
		a.now = time.Now
	}
	if a.maxLifetime <= 0 {
		a.maxLifetime = DefaultMaxTokenLifetime
	}
	if cfg.HS256Secret != "" {
		if len(cfg.HS256Secret) < MinHS256KeyBytes {
			return nil, fmt.Errorf("hs256 secret is %d bytes long; at least %d are required", len(cfg.HS256Secret), MinHS256KeyBytes)
		}
		a.hsSecret = []byte(cfg.HS256Secret)
		a.methods = append(a.methods, jwt.SigningMethodHS256.Alg())
	}
	if strings.TrimSpace(cfg.RS256PublicKeyPEM) != "" {
		k, err := jwt.ParseRSAPublicKeyFromPEM([]byte(cfg.RS256PublicKeyPEM))
		if err != nil {
			return nil, fmt.Errorf("rs256 public key: %w", err)
		}
		a.rsaKey = k
		a.methods = append(a.methods, jwt.SigningMethodRS256.Alg())
	}
	return a, nil
}

// APIKey returns the user whose API key this is. The key's hash names
// one entry of the users' index, and that entry one user, whose
// stored hash is then compared in constant time: one read per lookup
// however many users there are. An entry left by a rotated key names a
// user whose hash no longer matches, and is refused.
func (a *KeyAuthenticator) APIKey(ctx context.Context, key string) (*sourcev1.User, error) {
	if key == "" {
		return nil, ErrUnauthenticated
	}
	want := TokenHash(key)
	ck := apiKeyCacheKey(want)
	if u, ok := a.cache.get(ck); ok {
		return u, nil
	}
	t := a.cache.ticket()
	entry, _ := access.APIKeyEntry(want)
	e, err := a.userIndex.Get(ctx, entry)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, ErrUnauthenticated
	case err != nil:
		return nil, fmt.Errorf("look up API key: %w", err)
	}
	userID := string(e.Value())
	u, err := a.user(ctx, userID)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(u.GetApiKeySha256()))) != 1 {
		return nil, ErrUnauthenticated
	}
	a.cache.put(t, ck, userID, u)
	return u, nil
}

// user reads the user id names; a missing one is ErrUnauthenticated.
func (a *KeyAuthenticator) user(ctx context.Context, id string) (*sourcev1.User, error) {
	e, err := a.users.Get(ctx, id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrInvalidKey):
		return nil, ErrUnauthenticated
	case err != nil:
		return nil, fmt.Errorf("get user %s: %w", id, err)
	}
	u := &sourcev1.User{}
	if err := proto.Unmarshal(e.Value(), u); err != nil {
		return nil, fmt.Errorf("decode user %s: %w", id, err)
	}
	return u, nil
}

// IndexUsers writes the index entries of every user (access.IndexUsers)
// and returns how many users it indexed anew. The gateway runs it at
// start, so that users written before the index existed, or by a writer
// that does not index, are found.
func (a *KeyAuthenticator) IndexUsers(ctx context.Context) (int, error) {
	return access.IndexUsers(ctx, a.users, a.userIndex)
}

// Bearer verifies a JWT and returns the user its subject names. The
// accepted algorithms are exactly the configured ones, so an HS256 token
// "signed" with the RS256 public key is refused; exp is required, iat must
// not lie in the future, iss and aud must match when configured, and the
// token's lifetime must not exceed the maximum.
func (a *KeyAuthenticator) Bearer(ctx context.Context, token string) (*sourcev1.User, error) {
	if token == "" || len(a.methods) == 0 {
		return nil, ErrUnauthenticated
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(a.methods), jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(a.now),
	}
	if a.issuer != "" {
		opts = append(opts, jwt.WithIssuer(a.issuer))
	}
	if a.audience != "" {
		opts = append(opts, jwt.WithAudience(a.audience))
	}
	claims := &jwt.RegisteredClaims{}
	_, err := jwt.ParseWithClaims(token, claims, func(t *jwt.Token) (any, error) {
		switch t.Method.Alg() {
		case jwt.SigningMethodHS256.Alg():
			if a.hsSecret != nil {
				return a.hsSecret, nil
			}
		case jwt.SigningMethodRS256.Alg():
			if a.rsaKey != nil {
				return a.rsaKey, nil
			}
		}
		return nil, fmt.Errorf("algorithm %s not accepted", t.Method.Alg())
	}, opts...)
	if err != nil || claims.Subject == "" || a.tooLong(claims) {
		return nil, ErrUnauthenticated
	}
	ck := subjectCacheKey(claims.Subject)
	if u, ok := a.cache.get(ck); ok {
		return u, nil
	}
	t := a.cache.ticket()
	u, err := a.user(ctx, claims.Subject)
	if err != nil {
		return nil, err
	}
	a.cache.put(t, ck, claims.Subject, u)
	return u, nil
}

// tooLong reports whether a verified token is valid for longer than the
// maximum lifetime, counted from when it was issued (iat, which the parser
// has checked is not in the future), else from when it becomes valid (nbf),
// else from now.
func (a *KeyAuthenticator) tooLong(c *jwt.RegisteredClaims) bool {
	start := a.now()
	switch {
	case c.IssuedAt != nil:
		start = c.IssuedAt.Time
	case c.NotBefore != nil:
		start = c.NotBefore.Time
	}
	return c.ExpiresAt.Sub(start) > a.maxLifetime
}

// Header authenticates from request headers: REB-APIKEY first, then an
// Authorization Bearer token. A bearer value that is not a JWT is tried
// as an API key, which is how the myTracker dialect's clients send keys.
// It also returns which of the two the credential was.
func (a *KeyAuthenticator) Header(ctx context.Context, apiKey, authorization string) (*sourcev1.User, principal.Credential, error) {
	if apiKey != "" {
		u, err := a.APIKey(ctx, apiKey)
		return u, principal.APIKey, err
	}
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, 0, ErrUnauthenticated
	}
	token = strings.TrimSpace(token)
	if strings.Count(token, ".") == 2 {
		u, err := a.Bearer(ctx, token)
		return u, principal.JWT, err
	}
	u, err := a.APIKey(ctx, token)
	return u, principal.APIKey, err
}
