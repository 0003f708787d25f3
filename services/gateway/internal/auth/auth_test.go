package auth_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

func put(t *testing.T, srv *bustest.Server, bucket, key string, m proto.Message) {
	t.Helper()
	bustest.Put(t, srv.JS, bucket, key, m)
}

func setup(t *testing.T) *auth.Service {
	t.Helper()
	srv := bustest.Start(t)
	put(t, srv, bus.BucketUsers, "admin1", &sourcev1.User{Id: "admin1", Username: "root", Roles: []string{"user", "admin"}, AuthTokenSha256: auth.TokenHash("admin-token")})
	put(t, srv, bus.BucketUsers, "user1", &sourcev1.User{Id: "user1", Username: "alice", Roles: []string{"user"}, AuthTokenSha256: auth.TokenHash("alice-token")})
	put(t, srv, bus.BucketUsers, "notoken", &sourcev1.User{Id: "notoken", Username: "ghost"})
	put(t, srv, bus.BucketRooms, "GENERAL", &sourcev1.Room{Id: "GENERAL", Name: "general", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	put(t, srv, bus.BucketRooms, "secret", &sourcev1.Room{Id: "secret", Name: "secret", Type: sourcev1.RoomType_ROOM_TYPE_PRIVATE})
	put(t, srv, bus.BucketRooms, "dm", &sourcev1.Room{Id: "dm", Type: sourcev1.RoomType_ROOM_TYPE_DIRECT, Usernames: []string{"alice", "root"}})
	put(t, srv, bus.BucketMemberships, "user1.secret", &sourcev1.Membership{UserId: "user1", RoomId: "secret"})
	put(t, srv, bus.BucketMemberships, "user1.dm", &sourcev1.Membership{UserId: "user1", RoomId: "dm"})
	s, err := auth.Open(t.Context(), srv.JS)
	require.NoError(t, err)
	return s
}

func TestAuthenticate(t *testing.T) {
	s := setup(t)
	cases := []struct {
		name, userID, token string
		wantUser            string
	}{
		{"admin", "admin1", "admin-token", "root"},
		{"user", "user1", "alice-token", "alice"},
		{"wrong token", "user1", "admin-token", ""},
		{"token of another user", "admin1", "alice-token", ""},
		{"no token", "user1", "", ""},
		{"no user id", "", "alice-token", ""},
		{"unknown user", "nobody", "alice-token", ""},
		{"user without a token", "notoken", "anything", ""},
		{"user id that is no key", "user1.secret", "alice-token", ""},
		{"user id with wildcards", "*", "alice-token", ""},
		{"hash instead of token", "user1", auth.TokenHash("alice-token"), ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u, err := s.Authenticate(t.Context(), tc.userID, tc.token)
			if tc.wantUser == "" {
				assert.ErrorIs(t, err, auth.ErrUnauthenticated)
				assert.Nil(t, u)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.wantUser, u.GetUsername())
		})
	}
}

func TestRoomAccess(t *testing.T) {
	s := setup(t)
	admin, err := s.Authenticate(t.Context(), "admin1", "admin-token")
	require.NoError(t, err)
	alice, err := s.Authenticate(t.Context(), "user1", "alice-token")
	require.NoError(t, err)
	cases := []struct {
		name string
		user *sourcev1.User
		room string
		want bool
	}{
		{"public channel, non-member", admin, "GENERAL", true},
		{"private group, member", alice, "secret", true},
		{"private group, admin but not a member", admin, "secret", false},
		{"direct room, member", alice, "dm", true},
		{"direct room, not a member", admin, "dm", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			room, err := s.Room(t.Context(), tc.room)
			require.NoError(t, err)
			ok, err := s.CanAccessRoom(t.Context(), tc.user, room)
			require.NoError(t, err)
			assert.Equal(t, tc.want, ok)
		})
	}
	for _, id := range []string{"nope", "", "a.b", "GENERAL>", "x y"} {
		_, err := s.Room(t.Context(), id)
		assert.ErrorIs(t, err, auth.ErrRoomNotFound, "room %q", id)
	}
}

func TestMemberRooms(t *testing.T) {
	srv := bustest.Start(t)
	put(t, srv, bus.BucketRooms, "GENERAL", &sourcev1.Room{Id: "GENERAL", Name: "general", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	put(t, srv, bus.BucketRooms, "secret", &sourcev1.Room{Id: "secret", Name: "secret", Type: sourcev1.RoomType_ROOM_TYPE_PRIVATE})
	put(t, srv, bus.BucketMemberships, "user1.secret", &sourcev1.Membership{UserId: "user1", RoomId: "secret"})
	put(t, srv, bus.BucketMemberships, "user1.GENERAL", &sourcev1.Membership{UserId: "user1", RoomId: "GENERAL"})
	put(t, srv, bus.BucketMemberships, "user1.gone", &sourcev1.Membership{UserId: "user1", RoomId: "gone"})
	// A user whose id starts like user1's must not leak into its list.
	put(t, srv, bus.BucketMemberships, "user10.secret", &sourcev1.Membership{UserId: "user10", RoomId: "secret"})
	s, err := auth.Open(t.Context(), srv.JS)
	require.NoError(t, err)

	rooms, err := s.MemberRooms(t.Context(), &sourcev1.User{Id: "user1"})
	require.NoError(t, err)
	var ids []string
	for _, r := range rooms {
		ids = append(ids, r.GetId())
	}
	assert.Equal(t, []string{"GENERAL", "secret"}, ids, "sorted, without the deleted room")

	none, err := s.MemberRooms(t.Context(), &sourcev1.User{Id: "nobody"})
	require.NoError(t, err)
	assert.Empty(t, none)
	bad, err := s.MemberRooms(t.Context(), &sourcev1.User{Id: "*"})
	require.NoError(t, err)
	assert.Empty(t, bad)
}

func TestUsersByUsername(t *testing.T) {
	srv := bustest.Start(t)
	put(t, srv, bus.BucketUsers, "admin1", &sourcev1.User{Id: "admin1", Username: "root", Email: "root@example.com"})
	put(t, srv, bus.BucketUsers, "user1", &sourcev1.User{Id: "user1", Username: "alice", Email: "alice@example.com"})
	s, err := auth.Open(t.Context(), srv.JS)
	require.NoError(t, err)

	got, err := s.UsersByUsername(t.Context(), []string{"alice", "nobody", "alice"})
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, "user1", got["alice"].GetId())
	empty, err := s.UsersByUsername(t.Context(), nil)
	require.NoError(t, err)
	assert.Empty(t, empty)

	// A rename leaves the old name's entry behind; it finds nobody.
	put(t, srv, bus.BucketUsers, "user1", &sourcev1.User{Id: "user1", Username: "alice2"})
	got, err = s.UsersByUsername(t.Context(), []string{"alice", "alice2"})
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, "user1", got["alice2"].GetId())
}
