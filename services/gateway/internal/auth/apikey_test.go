package auth_test

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

// TestAPIKeyByHash finds users by their API key's hash among many users,
// including users written before the index (IndexUsers at start), one
// written with its entry afterwards, and one whose key was rotated.
func TestAPIKeyByHash(t *testing.T) {
	nats := bustest.Start(t)
	ctx := t.Context()
	users, err := nats.JS.KeyValue(ctx, bus.BucketUsers)
	require.NoError(t, err)
	creds, err := nats.JS.KeyValue(ctx, bus.BucketUserIndex)
	require.NoError(t, err)
	put := func(u *sourcev1.User) {
		b, err := proto.Marshal(u)
		require.NoError(t, err)
		_, err = users.Put(ctx, u.GetId(), b)
		require.NoError(t, err)
	}
	for i := range 50 {
		put(&sourcev1.User{Id: fmt.Sprintf("user-%02d", i), ApiKeySha256: auth.TokenHash(fmt.Sprintf("key-%02d", i))})
	}
	put(&sourcev1.User{Id: "nokey"})

	a, err := auth.NewKeyAuthenticator(users, creds, auth.KeyConfig{})
	require.NoError(t, err)
	_, err = a.APIKey(ctx, "key-07")
	require.ErrorIs(t, err, auth.ErrUnauthenticated, "not indexed yet")
	n, err := a.IndexUsers(ctx)
	require.NoError(t, err)
	assert.Equal(t, 50, n)
	n, err = a.IndexUsers(ctx)
	require.NoError(t, err)
	assert.Zero(t, n, "indexing again writes nothing")

	u, err := a.APIKey(ctx, "key-07")
	require.NoError(t, err)
	assert.Equal(t, "user-07", u.GetId())
	for _, bad := range []string{"", "key-99", "KEY-07"} {
		_, err := a.APIKey(ctx, bad)
		assert.ErrorIs(t, err, auth.ErrUnauthenticated, bad)
	}

	// A user written later, with its entry, as the seeder writes them.
	late := &sourcev1.User{Id: "late", ApiKeySha256: auth.TokenHash("late-key")}
	put(late)
	_, err = access.IndexUser(ctx, creds, late)
	require.NoError(t, err)
	u, err = a.APIKey(ctx, "late-key")
	require.NoError(t, err)
	assert.Equal(t, "late", u.GetId())

	// Rotation: the old key's entry is still there but lets nobody in.
	rotated := &sourcev1.User{Id: "user-07", ApiKeySha256: auth.TokenHash("key-07-new")}
	put(rotated)
	_, err = access.IndexUser(ctx, creds, rotated)
	require.NoError(t, err)
	_, err = a.APIKey(ctx, "key-07")
	require.ErrorIs(t, err, auth.ErrUnauthenticated)
	u, err = a.APIKey(ctx, "key-07-new")
	require.NoError(t, err)
	assert.Equal(t, "user-07", u.GetId())
}
