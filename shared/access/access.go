// Package access decides whose data an export may read. The gateway puts a
// scope (user, organization, permissions) into every task; exporters turn
// it into a Grant here, from the directory data as it stands when the task
// runs, and read only what the Grant allows. Chat data follows
// Rocket.Chat's rules: public channels are readable with view-c-room,
// private groups and direct conversations only by their members. Business
// records belong to an organization and are readable by its members.
// Wider reach is always a named permission (docs/SECURITY.md), never a
// side effect of a role's name.
package access

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/kvbatch"
)

// Permission names an action. Rocket.Chat's own ids are used where
// Rocket.Chat has the permission; the export-* ones are Dataport's.
type Permission string

// Permissions.
const (
	// PermViewCRoom reads public channels (Rocket.Chat's view-c-room).
	PermViewCRoom Permission = "view-c-room"
	// PermMailMessages exports a room's history (rooms.export).
	PermMailMessages Permission = "mail-messages"
	// PermViewRoomAdministration lists every room in a rooms export, not
	// only the readable ones. It does not make any room's messages
	// readable.
	PermViewRoomAdministration Permission = "view-room-administration"
	// PermViewFullOtherUserInfo exports every user's profile (email,
	// roles) in a users export, not only the caller's own.
	PermViewFullOtherUserInfo Permission = "view-full-other-user-info"
	// PermExportAnyRoom reads the messages of every room, private groups
	// and direct conversations the user is not in included: a compliance
	// officer's permission, granted to no default role.
	PermExportAnyRoom Permission = "export-any-room"
	// PermExportAnyOrganization reads the records of every organization
	// without being a member: a platform operator's permission, granted to
	// no default role.
	PermExportAnyOrganization Permission = "export-any-organization"
)

// roleTable is Rocket.Chat's default assignment of these permissions to
// roles, plus the two Dataport roles that carry the wide permissions.
var roleTable = map[Permission][]string{
	PermViewCRoom:              {"admin", "user", "bot", "app", "anonymous"},
	PermMailMessages:           {"admin"},
	PermViewRoomAdministration: {"admin"},
	PermViewFullOtherUserInfo:  {"admin"},
	PermExportAnyRoom:          {"compliance-officer"},
	PermExportAnyOrganization:  {"platform-operator"},
}

// Permissions returns the permissions roles grant, sorted.
func Permissions(roles []string) []string {
	var out []string
	for p, granted := range roleTable {
		for _, r := range roles {
			if slices.Contains(granted, r) {
				out = append(out, string(p))
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// HasPermission reports whether one of u's roles grants p.
func HasPermission(u *sourcev1.User, p Permission) bool {
	return slices.ContainsFunc(u.GetRoles(), func(r string) bool { return slices.Contains(roleTable[p], r) })
}

// ScopeFor is the scope of an export u asks for inside organization org
// (empty: none).
func ScopeFor(u *sourcev1.User, org string) *exportv1.Scope {
	return &exportv1.Scope{UserId: u.GetId(), OrganizationId: org, Permissions: Permissions(u.GetRoles())}
}

// Errors.
var (
	// ErrNoScope means a task carries no usable scope.
	ErrNoScope = errors.New("access: the task carries no scope")
	// ErrUnknownUser means the scope's user does not exist (any more).
	ErrUnknownUser = errors.New("access: the export's user does not exist")
	// ErrNotMember means the user is not a member of the organization.
	ErrNotMember = errors.New("access: the user is not a member of the organization")
)

// Directory reads users, rooms and memberships. It is safe for concurrent
// use.
type Directory struct {
	// js reads a user's memberships in one batch (userKeys); nil
	// watches them instead.
	js                                           jetstream.JetStream
	users, rooms, memberships, orgMembers, index jetstream.KeyValue
}

// NewDirectory returns a Directory over the four buckets and the users'
// index (bus.BucketUserIndex, see IndexUser), all of js.
func NewDirectory(js jetstream.JetStream, users, rooms, memberships, orgMembers, index jetstream.KeyValue) *Directory {
	return &Directory{js: js, users: users, rooms: rooms, memberships: memberships, orgMembers: orgMembers, index: index}
}

// OpenDirectory looks up the buckets (declared by bus.EnsureTopology).
func OpenDirectory(ctx context.Context, js jetstream.JetStream) (*Directory, error) {
	var kvs [5]jetstream.KeyValue
	for i, name := range []string{bus.BucketUsers, bus.BucketRooms, bus.BucketMemberships, bus.BucketOrgMembers, bus.BucketUserIndex} {
		kv, err := js.KeyValue(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("open bucket %s: %w", name, err)
		}
		kvs[i] = kv
	}
	return NewDirectory(js, kvs[0], kvs[1], kvs[2], kvs[3], kvs[4]), nil
}

// ValidID reports whether id can name a user, room or organization: the
// characters valid both in a KV key and in a subject token.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for _, c := range id {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '=' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}

// get reads and decodes key; found is false for a missing or invalid key.
func get(ctx context.Context, kv jetstream.KeyValue, key string, m proto.Message) (found bool, err error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrInvalidKey) {
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

// User returns the user with the id; found is false when there is none.
func (d *Directory) User(ctx context.Context, id string) (*sourcev1.User, bool, error) {
	if !ValidID(id) {
		return nil, false, nil
	}
	u := &sourcev1.User{}
	found, err := get(ctx, d.users, id, u)
	if err != nil {
		return nil, false, fmt.Errorf("user %s: %w", id, err)
	}
	return u, found, nil
}

// Room returns the room with the id; found is false when there is none.
func (d *Directory) Room(ctx context.Context, id string) (*sourcev1.Room, bool, error) {
	if !ValidID(id) {
		return nil, false, nil
	}
	r := &sourcev1.Room{}
	found, err := get(ctx, d.rooms, id, r)
	if err != nil {
		return nil, false, fmt.Errorf("room %s: %w", id, err)
	}
	return r, found, nil
}

// IsRoomMember reports whether the user has a membership of the room.
func (d *Directory) IsRoomMember(ctx context.Context, userID, roomID string) (bool, error) {
	if !ValidID(userID) || !ValidID(roomID) {
		return false, nil
	}
	found, err := get(ctx, d.memberships, userID+"."+roomID, &sourcev1.Membership{})
	if err != nil {
		return false, fmt.Errorf("membership of %s in %s: %w", userID, roomID, err)
	}
	return found, nil
}

// CanReadRoom is Rocket.Chat's rule: a public channel with view-c-room, a
// private group or direct conversation (or a room of unknown type, to
// fail closed) only as a member. perms are the reader's permissions.
func (d *Directory) CanReadRoom(ctx context.Context, userID string, perms []string, room *sourcev1.Room) (bool, error) {
	if slices.Contains(perms, string(PermExportAnyRoom)) {
		return true, nil
	}
	if room.GetType() == sourcev1.RoomType_ROOM_TYPE_CHANNEL && slices.Contains(perms, string(PermViewCRoom)) {
		return true, nil
	}
	return d.IsRoomMember(ctx, userID, room.GetId())
}

// MemberRoomIDs returns the ids of the rooms the user has memberships of,
// sorted, from the memberships under "<userId>.*" (not the whole bucket).
func (d *Directory) MemberRoomIDs(ctx context.Context, userID string) ([]string, error) {
	if !ValidID(userID) {
		return nil, nil
	}
	var ids []string
	err := d.userKeys(ctx, d.memberships, userID, func(key string, _ []byte) error {
		ids = append(ids, strings.TrimPrefix(key, userID+"."))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("memberships of %s: %w", userID, err)
	}
	slices.Sort(ids)
	return ids, nil
}

// OrgMembership returns the user's membership of the organization.
func (d *Directory) OrgMembership(ctx context.Context, userID, orgID string) (*sourcev1.OrganizationMembership, bool, error) {
	if !ValidID(userID) || !ValidID(orgID) {
		return nil, false, nil
	}
	m := &sourcev1.OrganizationMembership{}
	found, err := get(ctx, d.orgMembers, userID+"."+orgID, m)
	if err != nil {
		return nil, false, fmt.Errorf("membership of %s in organization %s: %w", userID, orgID, err)
	}
	return m, found, nil
}

// DefaultOrganization is the membership used when a request names no
// organization: the one marked default, else the one of the lowest
// organization id; nil when the user belongs to none. It is the
// membership itself, so a caller needs no second read for its roles.
func (d *Directory) DefaultOrganization(ctx context.Context, userID string) (*sourcev1.OrganizationMembership, error) {
	if !ValidID(userID) {
		return nil, nil
	}
	var first, marked *sourcev1.OrganizationMembership
	err := d.userKeys(ctx, d.orgMembers, userID, func(key string, value []byte) error {
		m := &sourcev1.OrganizationMembership{}
		if proto.Unmarshal(value, m) != nil {
			return nil // an undecodable membership makes nobody a member
		}
		m.OrganizationId = strings.TrimPrefix(key, userID+".")
		if first == nil || m.GetOrganizationId() < first.GetOrganizationId() {
			first = m
		}
		if m.GetDefault() && (marked == nil || m.GetOrganizationId() < marked.GetOrganizationId()) {
			marked = m
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("organizations of %s: %w", userID, err)
	}
	if marked != nil {
		return marked, nil
	}
	return first, nil
}

// userKeys calls fn with every live entry of kv under "<userID>.*", in
// no particular order: one direct batch read (kvbatch) while they are
// at most kvbatch.MaxMatching, as a user's memberships are. A watcher
// (scan) costs the server a consumer created and deleted per call, and
// a Rebilly or myTracker request without an organization looks up the
// caller's default one on every call (docs/BENCHMARKS.md, "A user's
// memberships in one read").
func (d *Directory) userKeys(ctx context.Context, kv jetstream.KeyValue, userID string, fn func(key string, value []byte) error) error {
	filter := userID + ".*"
	if d.js != nil {
		values, err := kvbatch.Matching(ctx, d.js, kv, filter)
		if !errors.Is(err, kvbatch.ErrTooMany) {
			if err != nil {
				return err
			}
			for k, v := range values {
				if err := fn(k, v); err != nil {
					return err
				}
			}
			return nil
		}
	}
	return scan(ctx, kv, filter, fn)
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

// Grant is a task's scope checked against the directory when the task
// runs: the user exists, the permissions are those the scope names and
// the user's current roles still grant, and the user is a member of the
// organization (unless export-any-organization).
type Grant struct {
	User         *sourcev1.User
	Organization string
	perms        []string
	dir          *Directory
}

// Resolve checks scope. ErrNoScope, ErrUnknownUser and ErrNotMember mean
// the task may read nothing; other errors mean the directory could not be
// read.
func (d *Directory) Resolve(ctx context.Context, scope *exportv1.Scope) (*Grant, error) {
	if scope == nil || scope.GetUserId() == "" {
		return nil, ErrNoScope
	}
	u, found, err := d.User(ctx, scope.GetUserId())
	if err != nil {
		return nil, err
	}
	if !found {
		return nil, ErrUnknownUser
	}
	current := Permissions(u.GetRoles())
	var perms []string
	for _, p := range scope.GetPermissions() {
		if slices.Contains(current, p) {
			perms = append(perms, p)
		}
	}
	g := &Grant{User: u, Organization: scope.GetOrganizationId(), perms: perms, dir: d}
	if org := g.Organization; org != "" && !g.Has(PermExportAnyOrganization) {
		_, member, err := d.OrgMembership(ctx, u.GetId(), org)
		if err != nil {
			return nil, err
		}
		if !member {
			return nil, ErrNotMember
		}
	}
	return g, nil
}

// Has reports whether the grant holds p.
func (g *Grant) Has(p Permission) bool { return slices.Contains(g.perms, string(p)) }

// CanReadRoom reports whether the grant reads room's messages.
func (g *Grant) CanReadRoom(ctx context.Context, room *sourcev1.Room) (bool, error) {
	return g.dir.CanReadRoom(ctx, g.User.GetId(), g.perms, room)
}

// ReadsAllRooms reports whether every room's messages are readable, so a
// caller need not enumerate them.
func (g *Grant) ReadsAllRooms() bool { return g.Has(PermExportAnyRoom) }

// ReadableRooms returns the rooms whose messages the grant reads, sorted
// by id: the rooms the user is a member of and, with view-c-room, every
// public channel. all is true instead when every room is readable
// (export-any-room). Rooms are directory data, orders of magnitude fewer
// than messages, so the public channels are found by reading the rooms
// bucket.
func (g *Grant) ReadableRooms(ctx context.Context) (rooms []*sourcev1.Room, all bool, err error) {
	if g.ReadsAllRooms() {
		return nil, true, nil
	}
	ids, err := g.dir.MemberRoomIDs(ctx, g.User.GetId())
	if err != nil {
		return nil, false, err
	}
	if !g.Has(PermViewCRoom) {
		for _, id := range ids {
			r, found, err := g.dir.Room(ctx, id)
			if err != nil {
				return nil, false, err
			}
			if found {
				rooms = append(rooms, r)
			}
		}
		return rooms, false, nil // in id order, as MemberRoomIDs
	}
	// One pass over the rooms bucket finds the public channels and the
	// user's own rooms alike.
	member := make(map[string]bool, len(ids))
	for _, id := range ids {
		member[id] = true
	}
	err = scan(ctx, g.dir.rooms, ">", func(key string, value []byte) error {
		r := &sourcev1.Room{}
		if err := proto.Unmarshal(value, r); err != nil {
			return nil // an undecodable room is readable by nobody
		}
		if r.GetType() == sourcev1.RoomType_ROOM_TYPE_CHANNEL || member[key] {
			rooms = append(rooms, r)
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("list rooms: %w", err)
	}
	slices.SortFunc(rooms, func(a, b *sourcev1.Room) int { return strings.Compare(a.GetId(), b.GetId()) })
	return rooms, false, nil
}

// ErrDenied means a task's scope reads nothing: it names no user or one
// other than the job's owner, the user is gone, or no longer a member of
// the organization.
var ErrDenied = errors.New("access: the task's scope does not allow the export")

// ResolveTask resolves the scope of task, which must be its owner's.
// ErrDenied when it allows nothing; other errors mean the directory could
// not be read.
func (d *Directory) ResolveTask(ctx context.Context, task *exportv1.ExportTask) (*Grant, error) {
	sc := task.GetScope()
	if sc.GetUserId() == "" || sc.GetUserId() != task.GetOwnerId() {
		return nil, ErrDenied
	}
	g, err := d.Resolve(ctx, sc)
	if errors.Is(err, ErrNoScope) || errors.Is(err, ErrUnknownUser) || errors.Is(err, ErrNotMember) {
		return nil, fmt.Errorf("%w: %w", ErrDenied, err)
	}
	return g, err
}

// UsersByUsername returns the users with the given usernames, by
// username; names nobody has are absent from the map. Each name is one
// read of the users index (bus.BucketUserIndex) and one of the user it
// names, whose username is checked, so the cost is that of the names
// asked for, never of every user.
func (d *Directory) UsersByUsername(ctx context.Context, usernames []string) (map[string]*sourcev1.User, error) {
	found := make(map[string]*sourcev1.User, len(usernames))
	for _, name := range usernames {
		if name == "" || found[name] != nil {
			continue
		}
		e, err := d.index.Get(ctx, UsernameEntry(name))
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			continue
		case err != nil:
			return nil, fmt.Errorf("look up user %q: %w", name, err)
		}
		u, ok, err := d.User(ctx, string(e.Value()))
		if err != nil {
			return nil, fmt.Errorf("look up user %q: %w", name, err)
		}
		if ok && u.GetUsername() == name {
			found[name] = u
		}
	}
	return found, nil
}
