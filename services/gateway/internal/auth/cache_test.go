package auth_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

// countingKV is a real bucket whose reads are counted.
type countingKV struct {
	jetstream.KeyValue
	gets atomic.Int64
}

func (kv *countingKV) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	kv.gets.Add(1)
	return kv.KeyValue.Get(ctx, key)
}

// clock is a settable time for the cache's TTL.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// cached is a Service and a KeyAuthenticator sharing one running Cache
// over counted buckets on a real NATS server.
type cached struct {
	users, index *countingKV
	cache        *auth.Cache
	tokens       *auth.Service
	keys         *auth.KeyAuthenticator
	clock        *clock
}

// reads is how many reads of the users bucket and its index were made.
func (c *cached) reads() int64 { return c.users.gets.Load() + c.index.gets.Load() }

func (c *cached) putUser(t *testing.T, u *sourcev1.User) {
	t.Helper()
	b, err := proto.Marshal(u)
	require.NoError(t, err)
	_, err = c.users.Put(t.Context(), u.GetId(), b)
	require.NoError(t, err)
	_, err = access.IndexUser(t.Context(), c.index, u)
	require.NoError(t, err)
}

func (c *cached) user(t *testing.T, id string) *sourcev1.User {
	t.Helper()
	e, err := c.users.KeyValue.Get(t.Context(), id)
	require.NoError(t, err)
	u := &sourcev1.User{}
	require.NoError(t, proto.Unmarshal(e.Value(), u))
	return u
}

func startCached(t *testing.T, o auth.CacheOptions) *cached {
	t.Helper()
	srv := bustest.Start(t)
	ctx := t.Context()
	users, err := srv.JS.KeyValue(ctx, bus.BucketUsers)
	require.NoError(t, err)
	index, err := srv.JS.KeyValue(ctx, bus.BucketUserIndex)
	require.NoError(t, err)
	c := &cached{users: &countingKV{KeyValue: users}, index: &countingKV{KeyValue: index}, clock: &clock{t: now}}
	if o.Now == nil {
		o.Now = c.clock.Now
	}
	if o.TTL == 0 {
		// Long enough that only the watch can end an entry in these
		// tests.
		o.TTL = time.Hour
	}
	c.cache = auth.NewCache(c.users, c.index, o)
	c.tokens = auth.New(c.users, nil, nil, nil, c.index, auth.WithCache(c.cache))
	c.keys, err = auth.NewKeyAuthenticator(c.users, c.index, auth.KeyConfig{HS256Secret: hsSecret, Now: c.clock.Now, Cache: c.cache})
	require.NoError(t, err)
	c.putUser(t, &sourcev1.User{Id: "alice", Username: "alice", AuthTokenSha256: auth.TokenHash("alice-token"), ApiKeySha256: auth.TokenHash("alice-key")})
	c.putUser(t, &sourcev1.User{Id: "bob", Username: "bob", AuthTokenSha256: auth.TokenHash("bob-token"), ApiKeySha256: auth.TokenHash("bob-key")})

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.cache.Run(runCtx) }()
	t.Cleanup(func() {
		cancel()
		assert.NoError(t, <-done)
	})
	waitFor(t, "the cache's watch", c.cache.Watching)
	return c
}

// waitFor polls cond until it holds, failing the test after 5 s: far
// below the tests' TTL, so what it waits for came from the watch.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func jwtFor(t *testing.T, sub string) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.RegisteredClaims{
		Subject: sub, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
	}).SignedString([]byte(hsSecret))
	require.NoError(t, err)
	return tok
}

// Each kind of credential, once accepted, is accepted again without a
// read of the users bucket or its index; wrong credentials are read (and
// refused) every time.
func TestCacheSavesTheCredentialRead(t *testing.T) {
	c := startCached(t, auth.CacheOptions{})
	ctx := t.Context()
	credentials := []struct {
		name  string
		login func() (*sourcev1.User, error)
		reads int64
	}{
		{"access token", func() (*sourcev1.User, error) { return c.tokens.Authenticate(ctx, "alice", "alice-token") }, 1},
		{"API key", func() (*sourcev1.User, error) { return c.keys.APIKey(ctx, "alice-key") }, 2},
		{"bearer API key", func() (*sourcev1.User, error) {
			u, _, err := c.keys.Header(ctx, "", "Bearer bob-key")
			return u, err
		}, 2},
		{"JWT", func() (*sourcev1.User, error) { return c.keys.Bearer(ctx, jwtFor(t, "bob")) }, 1},
	}
	for _, cred := range credentials {
		t.Run(cred.name, func(t *testing.T) {
			before := c.reads()
			u, err := cred.login()
			require.NoError(t, err)
			assert.Equal(t, cred.reads, c.reads()-before, "the first use reads")
			for range 20 {
				again, err := cred.login()
				require.NoError(t, err)
				assert.True(t, proto.Equal(u, again))
			}
			assert.Equal(t, cred.reads, c.reads()-before, "later uses read nothing")
		})
	}

	t.Run("wrong credentials", func(t *testing.T) {
		before := c.reads()
		for range 3 {
			_, err := c.tokens.Authenticate(ctx, "alice", "bob-token")
			assert.ErrorIs(t, err, auth.ErrUnauthenticated)
			_, err = c.keys.APIKey(ctx, "nobodys-key")
			assert.ErrorIs(t, err, auth.ErrUnauthenticated)
		}
		assert.Equal(t, int64(6), c.reads()-before, "every refusal was read")
	})

	t.Run("a changed copy leaves the cache as read", func(t *testing.T) {
		u, err := c.tokens.Authenticate(ctx, "alice", "alice-token")
		require.NoError(t, err)
		u.Roles = append(u.Roles, "admin")
		again, err := c.tokens.Authenticate(ctx, "alice", "alice-token")
		require.NoError(t, err)
		assert.Empty(t, again.GetRoles())
	})
}

// Rotating or revoking a credential, deleting its user or its index entry
// refuses the old credential as soon as the watch has seen the change,
// although the TTL is an hour; a new credential works at once.
func TestCacheEndsAChangedCredential(t *testing.T) {
	aliceJWT := jwtFor(t, "alice")
	cases := []struct {
		name   string
		use    func(c *cached) error
		change func(t *testing.T, c *cached)
		after  func(c *cached) error // a credential that must work after the change
	}{
		{
			name: "token rotated",
			use: func(c *cached) error {
				_, err := c.tokens.Authenticate(context.Background(), "alice", "alice-token")
				return err
			},
			change: func(t *testing.T, c *cached) {
				u := c.user(t, "alice")
				u.AuthTokenSha256 = auth.TokenHash("alice-token-2")
				c.putUser(t, u)
			},
			after: func(c *cached) error {
				_, err := c.tokens.Authenticate(context.Background(), "alice", "alice-token-2")
				return err
			},
		},
		{
			name: "token revoked",
			use: func(c *cached) error {
				_, err := c.tokens.Authenticate(context.Background(), "alice", "alice-token")
				return err
			},
			change: func(t *testing.T, c *cached) {
				u := c.user(t, "alice")
				u.AuthTokenSha256 = ""
				c.putUser(t, u)
			},
		},
		{
			name: "API key rotated",
			use: func(c *cached) error {
				_, err := c.keys.APIKey(context.Background(), "alice-key")
				return err
			},
			change: func(t *testing.T, c *cached) {
				u := c.user(t, "alice")
				u.ApiKeySha256 = auth.TokenHash("alice-key-2")
				c.putUser(t, u)
			},
			after: func(c *cached) error {
				_, err := c.keys.APIKey(context.Background(), "alice-key-2")
				return err
			},
		},
		{
			name: "API key's index entry deleted",
			use: func(c *cached) error {
				_, err := c.keys.APIKey(context.Background(), "alice-key")
				return err
			},
			change: func(t *testing.T, c *cached) {
				entry, _ := access.APIKeyEntry(auth.TokenHash("alice-key"))
				require.NoError(t, c.index.Delete(t.Context(), entry))
			},
		},
		{
			name: "user deleted (JWT)",
			use: func(c *cached) error {
				_, err := c.keys.Bearer(context.Background(), aliceJWT)
				return err
			},
			change: func(t *testing.T, c *cached) {
				require.NoError(t, c.users.Delete(t.Context(), "alice"))
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := startCached(t, auth.CacheOptions{})
			require.NoError(t, tc.use(c))
			reads := c.reads()
			require.NoError(t, tc.use(c))
			require.Equal(t, reads, c.reads(), "cached before the change")

			changed := time.Now()
			tc.change(t, c)
			waitFor(t, "the old credential to be refused", func() bool { return tc.use(c) != nil })
			t.Logf("refused %s after the change was written", time.Since(changed))
			assert.ErrorIs(t, tc.use(c), auth.ErrUnauthenticated)
			if tc.after != nil {
				assert.NoError(t, tc.after(c))
			}
			// A refusal is not cached: the old credential stays refused.
			for range 5 {
				assert.ErrorIs(t, tc.use(c), auth.ErrUnauthenticated)
			}
		})
	}
}

// Another user's change leaves a user's entry in place.
func TestCacheKeepsOtherUsersEntries(t *testing.T) {
	c := startCached(t, auth.CacheOptions{})
	ctx := t.Context()
	_, err := c.tokens.Authenticate(ctx, "alice", "alice-token")
	require.NoError(t, err)
	u := c.user(t, "bob")
	u.AuthTokenSha256 = auth.TokenHash("bob-token-2")
	c.putUser(t, u)
	waitFor(t, "bob's new token", func() bool {
		_, err := c.tokens.Authenticate(ctx, "bob", "bob-token-2")
		return err == nil
	})
	reads := c.reads()
	_, err = c.tokens.Authenticate(ctx, "alice", "alice-token")
	require.NoError(t, err)
	assert.Equal(t, reads, c.reads())
}

// However many users authenticate, the cache keeps at most its size, the
// most recently used ones.
func TestCacheIsBounded(t *testing.T) {
	c := startCached(t, auth.CacheOptions{Size: 8})
	ctx := t.Context()
	for i := range 40 {
		c.putUser(t, &sourcev1.User{Id: fmt.Sprintf("u%02d", i), AuthTokenSha256: auth.TokenHash(fmt.Sprintf("token-%02d", i))})
	}
	for i := range 40 {
		_, err := c.tokens.Authenticate(ctx, fmt.Sprintf("u%02d", i), fmt.Sprintf("token-%02d", i))
		require.NoError(t, err)
		assert.LessOrEqual(t, c.cache.Len(), 8)
	}
	assert.Equal(t, 8, c.cache.Len())
	reads := c.reads()
	_, err := c.tokens.Authenticate(ctx, "u39", "token-39")
	require.NoError(t, err)
	assert.Equal(t, reads, c.reads(), "the latest user is still cached")
	_, err = c.tokens.Authenticate(ctx, "u00", "token-00")
	require.NoError(t, err)
	assert.Equal(t, reads+1, c.reads(), "the first one left")
}

// An entry is read again after its TTL even when no change was seen.
func TestCacheEntriesExpire(t *testing.T) {
	c := startCached(t, auth.CacheOptions{TTL: time.Minute})
	ctx := t.Context()
	_, err := c.tokens.Authenticate(ctx, "alice", "alice-token")
	require.NoError(t, err)
	reads := c.reads()
	c.clock.Advance(59 * time.Second)
	_, err = c.tokens.Authenticate(ctx, "alice", "alice-token")
	require.NoError(t, err)
	assert.Equal(t, reads, c.reads())
	c.clock.Advance(time.Second)
	_, err = c.tokens.Authenticate(ctx, "alice", "alice-token")
	require.NoError(t, err)
	assert.Equal(t, reads+1, c.reads())
}

// Without its watch the cache answers nothing: before Run and after it
// ended, every use reads.
func TestCacheAnswersOnlyWhileWatching(t *testing.T) {
	srv := bustest.Start(t)
	ctx := t.Context()
	users, err := srv.JS.KeyValue(ctx, bus.BucketUsers)
	require.NoError(t, err)
	index, err := srv.JS.KeyValue(ctx, bus.BucketUserIndex)
	require.NoError(t, err)
	counted := &countingKV{KeyValue: users}
	bustest.Put(t, srv.JS, bus.BucketUsers, "alice", &sourcev1.User{Id: "alice", AuthTokenSha256: auth.TokenHash("alice-token")})
	cache := auth.NewCache(counted, index, auth.CacheOptions{})
	s := auth.New(counted, nil, nil, nil, index, auth.WithCache(cache))
	login := func() {
		t.Helper()
		_, err := s.Authenticate(ctx, "alice", "alice-token")
		require.NoError(t, err)
	}

	login()
	login()
	assert.Equal(t, int64(2), counted.gets.Load(), "not watching yet")

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- cache.Run(runCtx) }()
	waitFor(t, "the cache's watch", cache.Watching)
	login()
	login()
	assert.Equal(t, int64(3), counted.gets.Load(), "watching")

	cancel()
	require.NoError(t, <-done)
	assert.False(t, cache.Watching())
	assert.Zero(t, cache.Len())
	login()
	assert.Equal(t, int64(4), counted.gets.Load(), "stopped")
}

// Under concurrent use, a rotation still ends the old token for good: no
// lookup that read the user before the rotation caches it afterwards.
func TestCacheRotationUnderConcurrentUse(t *testing.T) {
	c := startCached(t, auth.CacheOptions{})
	ctx := t.Context()
	var (
		wg      sync.WaitGroup
		stop    atomic.Bool
		refused atomic.Int64
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if _, err := c.tokens.Authenticate(ctx, "alice", "alice-token"); err != nil {
					refused.Add(1)
				}
			}
		}()
	}
	for i := range 20 {
		u := c.user(t, "alice")
		u.Roles = []string{fmt.Sprint("role-", i)}
		c.putUser(t, u)
	}
	u := c.user(t, "alice")
	u.AuthTokenSha256 = auth.TokenHash("alice-token-2")
	c.putUser(t, u)
	waitFor(t, "the old token to be refused", func() bool { return refused.Load() > 0 })
	stop.Store(true)
	wg.Wait()
	for range 20 {
		_, err := c.tokens.Authenticate(ctx, "alice", "alice-token")
		assert.ErrorIs(t, err, auth.ErrUnauthenticated)
	}
	got, err := c.tokens.Authenticate(ctx, "alice", "alice-token-2")
	require.NoError(t, err)
	assert.Equal(t, []string{"role-19"}, got.GetRoles())
}
