package gatewaytest

import (
	"testing"

	"google.golang.org/protobuf/proto"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

// The seeded directory. Admin is a member of the private room and of
// general; Admin2 is in neither, but shares the direct room with User.
// User (alice) is a member of the private and the direct room and also
// has an API key in organization Org, for the Rebilly and myTracker
// dialects.
const (
	AdminID, AdminToken   = "AdminUserId000001", "admin-token-Zu-Z6eKzIIz7MCCRGeHi"
	Admin2ID, Admin2Token = "AdminUserId000002", "admin2-token"
	UserID, UserToken     = "PlainUserId000001", "user-token"
	UserAPIKey            = "sk_live_alice_0123456789"

	RoomGeneral = "GENERAL"
	RoomPrivate = "iu7jtPAhvEeAS5tNq"
	RoomDirect  = "DirectRoomId00001"

	Org = "acme"

	// JWTSecret is the HS256 key of accepted bearer JWTs.
	JWTSecret = "test-hs256-key-0123456789abcdefghij"
)

// Creds are the credential headers of a request; empty ones are not sent.
type Creds struct {
	// User and Token are X-User-Id and X-Auth-Token (native and
	// Rocket.Chat).
	User, Token string
	// APIKey is REB-APIKEY (Rebilly).
	APIKey string
	// Bearer is sent as Authorization: Bearer (Rebilly and myTracker).
	Bearer string
}

// Callers of the seeded directory.
var (
	AsAdmin   = Creds{User: AdminID, Token: AdminToken}
	AsAdmin2  = Creds{User: Admin2ID, Token: Admin2Token}
	AsUser    = Creds{User: UserID, Token: UserToken}
	Anonymous = Creds{}
)

// Token returns a personal access token's credentials.
func Token(userID, token string) Creds { return Creds{User: userID, Token: token} }

// APIKey returns a Rebilly API key's credentials.
func APIKey(key string) Creds { return Creds{APIKey: key} }

// Bearer returns an Authorization: Bearer credential.
func Bearer(token string) Creds { return Creds{Bearer: token} }

// seed stores users, rooms, memberships and organizations as the host
// platform would.
func seed(tb testing.TB, srv *bustest.Server) {
	tb.Helper()
	put(tb, srv, bus.BucketUsers, AdminID, &sourcev1.User{Id: AdminID, Username: "root", Email: "root@example.com", Roles: []string{"user", "admin"}, AuthTokenSha256: auth.TokenHash(AdminToken)})
	put(tb, srv, bus.BucketUsers, Admin2ID, &sourcev1.User{Id: Admin2ID, Username: "root2", Roles: []string{"admin"}, AuthTokenSha256: auth.TokenHash(Admin2Token)})
	put(tb, srv, bus.BucketUsers, UserID, &sourcev1.User{Id: UserID, Username: "alice", Email: "Alice Example <alice@example.com>", Roles: []string{"user"},
		AuthTokenSha256: auth.TokenHash(UserToken), ApiKeySha256: auth.TokenHash(UserAPIKey)})
	put(tb, srv, bus.BucketRooms, RoomGeneral, &sourcev1.Room{Id: RoomGeneral, Name: "general", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	put(tb, srv, bus.BucketRooms, RoomPrivate, &sourcev1.Room{Id: RoomPrivate, Name: "staff", Type: sourcev1.RoomType_ROOM_TYPE_PRIVATE})
	put(tb, srv, bus.BucketRooms, RoomDirect, &sourcev1.Room{Id: RoomDirect, Type: sourcev1.RoomType_ROOM_TYPE_DIRECT, Usernames: []string{"alice", "root2"}})
	for _, m := range []*sourcev1.Membership{
		{UserId: AdminID, RoomId: RoomPrivate},
		{UserId: AdminID, RoomId: RoomGeneral},
		{UserId: UserID, RoomId: RoomPrivate},
		{UserId: UserID, RoomId: RoomDirect},
		{UserId: Admin2ID, RoomId: RoomDirect},
	} {
		put(tb, srv, bus.BucketMemberships, m.GetUserId()+"."+m.GetRoomId(), m)
	}
	put(tb, srv, bus.BucketOrgMembers, UserID+"."+Org, &sourcev1.OrganizationMembership{UserId: UserID, OrganizationId: Org, Default: true})
}

func put(tb testing.TB, srv *bustest.Server, bucket, key string, m proto.Message) {
	tb.Helper()
	bustest.Put(tb, srv.JS, bucket, key, m)
}
