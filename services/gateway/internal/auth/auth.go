// Package auth authenticates API callers and decides what they may export.
//
// Callers present Rocket.Chat's personal access token headers (X-User-Id
// and X-Auth-Token). Users live in the KV bucket bus.BucketUsers with only
// the SHA-256 of their token, so the gateway never holds a usable
// credential. Permissions and room access are package access's rules
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
	"regexp"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
)

// Errors.
var (
	// ErrUnauthenticated means the credentials are missing or wrong; which
	// of the two is deliberately not told apart.
	ErrUnauthenticated = errors.New("auth: not authenticated")
	// ErrRoomNotFound means no room has the id.
	ErrRoomNotFound = errors.New("auth: room not found")
)

// idPattern is what user and room ids may look like: the characters that
// are valid both in a KV key and a subject token. Anything else cannot name
// a stored user or room, and is rejected before it reaches the bus.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_=-]{1,128}$`)

// ValidID reports whether id can name a user or a room.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Service answers authentication and authorization questions from the
// users, rooms and memberships buckets; the rules themselves are
// access's, which the exporters apply again to every task. It is safe for
// concurrent use.
type Service struct {
	users, rooms, memberships jetstream.KeyValue
	// Directory answers room and organization questions.
	*access.Directory
}

// New returns a Service over the four buckets.
func New(users, rooms, memberships, orgMembers jetstream.KeyValue) *Service {
	return &Service{users: users, rooms: rooms, memberships: memberships,
		Directory: access.NewDirectory(users, rooms, memberships, orgMembers)}
}

// Open looks up the buckets (declared by bus.EnsureTopology).
func Open(ctx context.Context, js jetstream.JetStream) (*Service, error) {
	var kvs [4]jetstream.KeyValue
	for i, name := range []string{bus.BucketUsers, bus.BucketRooms, bus.BucketMemberships, bus.BucketOrgMembers} {
		kv, err := js.KeyValue(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("open bucket %s: %w", name, err)
		}
		kvs[i] = kv
	}
	return New(kvs[0], kvs[1], kvs[2], kvs[3]), nil
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
	u := &sourcev1.User{}
	found, err := get(ctx, s.users, userID, u)
	if err != nil {
		return nil, fmt.Errorf("authenticate %s: %w", userID, err)
	}
	// The hash is compared even for unknown users, so that timing does not
	// tell which user ids exist.
	stored := strings.ToLower(u.GetAuthTokenSha256())
	if !found {
		stored = strings.Repeat("0", sha256.Size*2)
	}
	ok := subtle.ConstantTimeCompare([]byte(TokenHash(token)), []byte(stored)) == 1
	if !found || !ok || u.GetAuthTokenSha256() == "" {
		return nil, ErrUnauthenticated
	}
	return u, nil
}

// Room returns the room, or ErrRoomNotFound.
func (s *Service) Room(ctx context.Context, roomID string) (*sourcev1.Room, error) {
	if !ValidID(roomID) {
		return nil, ErrRoomNotFound
	}
	r := &sourcev1.Room{}
	found, err := get(ctx, s.rooms, roomID, r)
	if err != nil {
		return nil, fmt.Errorf("room %s: %w", roomID, err)
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

// get reads and decodes key; found is false for a missing key.
func get(ctx context.Context, kv jetstream.KeyValue, key string, m proto.Message) (found bool, err error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := proto.Unmarshal(e.Value(), m); err != nil {
		return false, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, nil
}

// MemberRooms returns the rooms u is a member of (memberships under
// "<userId>.*"), sorted by room id. A membership whose room no longer
// exists is skipped.
func (s *Service) MemberRooms(ctx context.Context, u *sourcev1.User) ([]*sourcev1.Room, error) {
	if !ValidID(u.GetId()) {
		return nil, nil
	}
	var roomIDs []string
	err := scan(ctx, s.memberships, u.GetId()+".*", func(key string, _ []byte) error {
		roomIDs = append(roomIDs, strings.TrimPrefix(key, u.GetId()+"."))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("memberships of %s: %w", u.GetId(), err)
	}
	slices.Sort(roomIDs)
	rooms := make([]*sourcev1.Room, 0, len(roomIDs))
	for _, id := range roomIDs {
		r, err := s.Room(ctx, id)
		if errors.Is(err, ErrRoomNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		rooms = append(rooms, r)
	}
	return rooms, nil
}

// UsersByUsername returns the users with the given usernames, by
// username; names nobody has are absent from the map. It reads the whole
// users bucket once, which suits the handful of recipients of a mail and
// the size of a chat workspace's user list.
func (s *Service) UsersByUsername(ctx context.Context, usernames []string) (map[string]*sourcev1.User, error) {
	want := make(map[string]bool, len(usernames))
	for _, n := range usernames {
		want[n] = true
	}
	found := make(map[string]*sourcev1.User, len(usernames))
	if len(want) == 0 {
		return found, nil
	}
	err := scan(ctx, s.users, ">", func(key string, value []byte) error {
		u := &sourcev1.User{}
		if err := proto.Unmarshal(value, u); err != nil {
			return fmt.Errorf("decode user %s: %w", key, err)
		}
		if want[u.GetUsername()] {
			found[u.GetUsername()] = u
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("look up users: %w", err)
	}
	return found, nil
}

// scan calls fn with every live entry of kv matching the key filter.
func scan(ctx context.Context, kv jetstream.KeyValue, filter string, fn func(key string, value []byte) error) error {
	w, err := kv.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e = <-w.Updates():
		}
		if e == nil {
			// The watcher sends nil once the initial values are through.
			return nil
		}
		if err := fn(e.Key(), e.Value()); err != nil {
			return err
		}
	}
}
