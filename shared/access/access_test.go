package access_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/kvbatch"
)

func TestPermissionsFollowTheRoleTable(t *testing.T) {
	tests := []struct {
		roles []string
		want  []string
	}{
		{nil, nil},
		{[]string{"guest"}, nil},
		{[]string{"user"}, []string{"view-c-room"}},
		{[]string{"admin", "user"}, []string{"mail-messages", "view-c-room", "view-full-other-user-info", "view-room-administration"}},
		{[]string{"compliance-officer"}, []string{"export-any-room"}},
		{[]string{"platform-operator"}, []string{"export-any-organization"}},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, access.Permissions(tc.roles), "roles %v", tc.roles)
	}
	assert.True(t, access.HasPermission(&sourcev1.User{Roles: []string{"user", "admin"}}, access.PermMailMessages))
	assert.False(t, access.HasPermission(&sourcev1.User{Roles: []string{"user", "moderator"}}, access.PermMailMessages))
	assert.False(t, access.HasPermission(&sourcev1.User{Roles: []string{"admin"}}, access.PermExportAnyRoom), "the admin role reads no private room it is not in")
	assert.False(t, access.HasPermission(&sourcev1.User{Roles: []string{"admin"}}, access.PermExportAnyOrganization), "nor any tenant")
}

func TestDirectory(t *testing.T) {
	ns := bustest.Start(t)
	ctx := t.Context()
	kv := func(name string) putter {
		b, err := ns.JS.KeyValue(ctx, name)
		require.NoError(t, err)
		return func(key string, m proto.Message) {
			data, err := proto.Marshal(m)
			require.NoError(t, err)
			_, err = b.Put(ctx, key, data)
			require.NoError(t, err)
		}
	}
	users, rooms, members, orgs := kv(bus.BucketUsers), kv(bus.BucketRooms), kv(bus.BucketMemberships), kv(bus.BucketOrgMembers)
	carol := &sourcev1.User{Id: "carol", Roles: []string{"user"}}
	users.Put("carol", carol)
	users.Put("nobody", &sourcev1.User{Id: "nobody", Roles: []string{"guest"}})
	for _, r := range []*sourcev1.Room{
		{Id: "pub", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL},
		{Id: "priv", Type: sourcev1.RoomType_ROOM_TYPE_PRIVATE},
		{Id: "mine", Type: sourcev1.RoomType_ROOM_TYPE_PRIVATE},
		{Id: "dm", Type: sourcev1.RoomType_ROOM_TYPE_DIRECT},
		{Id: "odd"},
	} {
		rooms.Put(r.GetId(), r)
	}
	members.Put("carol.mine", &sourcev1.Membership{UserId: "carol", RoomId: "mine"})
	members.Put("carol.gone", &sourcev1.Membership{UserId: "carol", RoomId: "gone"})
	orgs.Put("carol.globex", &sourcev1.OrganizationMembership{UserId: "carol", OrganizationId: "globex"})
	orgs.Put("carol.initech", &sourcev1.OrganizationMembership{UserId: "carol", OrganizationId: "initech", Default: true})
	dir, err := access.OpenDirectory(ctx, ns.JS)
	require.NoError(t, err)

	t.Run("default organization: the marked one, else the lowest id", func(t *testing.T) {
		m, err := dir.DefaultOrganization(ctx, "carol")
		require.NoError(t, err)
		assert.Equal(t, "initech", m.GetOrganizationId())
		assert.True(t, m.GetDefault())
		orgs.Put("dave.b", &sourcev1.OrganizationMembership{UserId: "dave", OrganizationId: "b"})
		orgs.Put("dave.a", &sourcev1.OrganizationMembership{UserId: "dave", OrganizationId: "a"})
		m, err = dir.DefaultOrganization(ctx, "dave")
		require.NoError(t, err)
		assert.Equal(t, "a", m.GetOrganizationId())
		m, err = dir.DefaultOrganization(ctx, "nobody")
		require.NoError(t, err)
		assert.Nil(t, m)
	})

	t.Run("default organization: a left one is gone, and more than one batch read answers", func(t *testing.T) {
		b, err := ns.JS.KeyValue(ctx, bus.BucketOrgMembers)
		require.NoError(t, err)
		orgs.Put("erin.a", &sourcev1.OrganizationMembership{UserId: "erin", OrganizationId: "a", Default: true})
		orgs.Put("erin.b", &sourcev1.OrganizationMembership{UserId: "erin", OrganizationId: "b"})
		require.NoError(t, b.Delete(ctx, "erin.a"))
		m, err := dir.DefaultOrganization(ctx, "erin")
		require.NoError(t, err)
		assert.Equal(t, "b", m.GetOrganizationId(), "the deleted default is not read")
		// The server answers at most kvbatch.MaxMatching keys at once;
		// a user with more is read by watching them.
		for i := range kvbatch.MaxMatching + 1 {
			orgs.Put(fmt.Sprintf("frank.o%04d", i), &sourcev1.OrganizationMembership{UserId: "frank", OrganizationId: fmt.Sprintf("o%04d", i), Default: i == 700})
		}
		m, err = dir.DefaultOrganization(ctx, "frank")
		require.NoError(t, err)
		assert.Equal(t, "o0700", m.GetOrganizationId())
	})

	t.Run("a grant reads the rooms Rocket.Chat lets the user read", func(t *testing.T) {
		g, err := dir.Resolve(ctx, access.ScopeFor(carol, ""))
		require.NoError(t, err)
		rs, all, err := g.ReadableRooms(ctx)
		require.NoError(t, err)
		assert.False(t, all)
		var ids []string
		for _, r := range rs {
			ids = append(ids, r.GetId())
		}
		assert.Equal(t, []string{"mine", "pub"}, ids, "public channels and her own rooms; a membership of a deleted room is skipped")

		guest, err := dir.Resolve(ctx, &exportv1.Scope{UserId: "nobody", Permissions: []string{"view-c-room"}})
		require.NoError(t, err)
		rs, _, err = guest.ReadableRooms(ctx)
		require.NoError(t, err)
		assert.Empty(t, rs, "a guest's claimed view-c-room is not granted by its roles")
	})

	t.Run("resolve refuses what the scope may not have", func(t *testing.T) {
		_, err := dir.Resolve(ctx, nil)
		assert.ErrorIs(t, err, access.ErrNoScope)
		_, err = dir.Resolve(ctx, &exportv1.Scope{UserId: "ghost"})
		assert.ErrorIs(t, err, access.ErrUnknownUser)
		_, err = dir.Resolve(ctx, access.ScopeFor(carol, "acme"))
		assert.ErrorIs(t, err, access.ErrNotMember)
		g, err := dir.Resolve(ctx, access.ScopeFor(carol, "globex"))
		require.NoError(t, err)
		assert.Equal(t, "globex", g.Organization)

		_, err = dir.ResolveTask(ctx, &exportv1.ExportTask{OwnerId: "alice", Scope: access.ScopeFor(carol, "")})
		assert.ErrorIs(t, err, access.ErrDenied, "a task's scope is its owner's")
		_, err = dir.ResolveTask(ctx, &exportv1.ExportTask{OwnerId: "carol", Scope: access.ScopeFor(carol, "acme")})
		assert.ErrorIs(t, err, access.ErrDenied)
	})
}

// putter writes one protobuf value under key.
type putter func(key string, m proto.Message)

// Put calls p.
func (p putter) Put(key string, m proto.Message) { p(key, m) }
