// Package auth authenticates API callers and decides what they may export.
//
// Native and Rocket.Chat callers present personal access token headers
// (X-User-Id and X-Auth-Token; Service.Authenticate); Rebilly and
// myTracker callers an API key or a bearer JWT (KeyAuthenticator). Users
// live in the KV bucket bus.BucketUsers with only the SHA-256 of their
// token and API key, so the gateway never holds a usable credential. The
// gateway's authentication middleware (dialect.Authenticate) calls these
// once per request; with a Cache, a credential accepted recently is
// accepted again without a read until its user changes. Permissions and room access are package access's rules
// (Rocket.Chat's role table; public channels with view-c-room, private
// groups and direct conversations for members only).
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/access"
)

// Errors.
var (
	// ErrUnauthenticated means the credentials are missing or wrong; which
	// of the two is deliberately not told apart.
	ErrUnauthenticated = errors.New("auth: not authenticated")
	// ErrRoomNotFound means no room has the id.
	ErrRoomNotFound = errors.New("auth: room not found")
)

// ValidID reports whether id can name a user or a room (access.ValidID).
func ValidID(id string) bool { return access.ValidID(id) }

// Service answers authentication and authorization questions from the
// users, rooms and memberships buckets; the rules themselves are
// access's, which the exporters apply again to every task. It is safe for
// concurrent use.
type Service struct {
	// Directory reads users, rooms and memberships. Its reads are never
	// cached: only Authenticate uses the cache.
	*access.Directory
	cache *Cache
}

// Option configures a Service.
type Option func(*Service)

// WithCache lets Authenticate answer from c for credentials it recently
// accepted (Cache); without it every call reads the user.
func WithCache(c *Cache) Option { return func(s *Service) { s.cache = c } }

// New returns a Service over the four buckets and the users' index.
func New(users, rooms, memberships, orgMembers, userIndex jetstream.KeyValue, opts ...Option) *Service {
	return newService(access.NewDirectory(nil, users, rooms, memberships, orgMembers, userIndex), opts)
}

// Open looks up the buckets (declared by bus.EnsureTopology).
func Open(ctx context.Context, js jetstream.JetStream, opts ...Option) (*Service, error) {
	dir, err := access.OpenDirectory(ctx, js)
	if err != nil {
		return nil, err
	}
	return newService(dir, opts), nil
}

func newService(dir *access.Directory, opts []Option) *Service {
	s := &Service{Directory: dir}
	for _, o := range opts {
		o(s)
	}
	return s
}

// TokenHash is the lower-case hex SHA-256 of a token, as stored in
// User.auth_token_sha256.
func TokenHash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Authenticate returns the user whose id and token these are, or
// ErrUnauthenticated. Other errors mean the users bucket could not be read.
func (s *Service) Authenticate(ctx context.Context, userID, token string) (*sourcev1.User, error) {
	if token == "" || !ValidID(userID) {
		return nil, ErrUnauthenticated
	}
	hash := TokenHash(token)
	key := tokenCacheKey(userID, hash)
	if u, ok := s.cache.get(key); ok {
		return u, nil
	}
	t := s.cache.ticket()
	u, found, err := s.User(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("authenticate %s: %w", userID, err)
	}
	// The hash is compared even for unknown users, so that timing does not
	// tell which user ids exist.
	stored := strings.ToLower(u.GetAuthTokenSha256())
	if !found {
		stored = strings.Repeat("0", sha256.Size*2)
	}
	ok := subtle.ConstantTimeCompare([]byte(hash), []byte(stored)) == 1
	if !found || !ok || u.GetAuthTokenSha256() == "" {
		return nil, ErrUnauthenticated
	}
	s.cache.put(t, key, userID, u)
	return u, nil
}

// Room returns the room, or ErrRoomNotFound.
func (s *Service) Room(ctx context.Context, roomID string) (*sourcev1.Room, error) {
	r, found, err := s.Directory.Room(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrRoomNotFound
	}
	return r, nil
}

// CanAccessRoom reports whether u may read room, by Rocket.Chat's rule
// (access.Directory.CanReadRoom) with u's current permissions.
func (s *Service) CanAccessRoom(ctx context.Context, u *sourcev1.User, room *sourcev1.Room) (bool, error) {
	return s.CanReadRoom(ctx, u.GetId(), access.Permissions(u.GetRoles()), room)
}

// MemberRooms returns the rooms u is a member of (memberships under
// "<userId>.*"), sorted by room id. A membership whose room no longer
// exists is skipped.
func (s *Service) MemberRooms(ctx context.Context, u *sourcev1.User) ([]*sourcev1.Room, error) {
	ids, err := s.MemberRoomIDs(ctx, u.GetId())
	if err != nil {
		return nil, err
	}
	rooms := make([]*sourcev1.Room, 0, len(ids))
	for _, id := range ids {
		r, found, err := s.Directory.Room(ctx, id)
		if err != nil {
			return nil, err
		}
		if found {
			rooms = append(rooms, r)
		}
	}
	return rooms, nil
}
