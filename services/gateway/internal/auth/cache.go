package auth

import (
	"container/list"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// Defaults of CacheOptions.
const (
	// DefaultCacheSize bounds the credentials kept: more than the callers
	// one replica serves within a TTL, at about 1 KiB each (a user as
	// stored, its key and the bookkeeping) under 4 MiB.
	DefaultCacheSize = 4096
	// DefaultCacheTTL is how long a credential is trusted without a read
	// even if its invalidation were lost. The watch ends an entry as soon
	// as its user changes; the TTL is only the safety net behind it.
	DefaultCacheTTL = 30 * time.Second
)

// watchRetry is how long Run waits before watching again after a watch
// failed; the cache serves nothing meanwhile.
const watchRetry = time.Second

// CacheOptions configure a Cache.
type CacheOptions struct {
	// Size is the most credentials kept; the least recently used one
	// leaves for a new one. Zero means DefaultCacheSize.
	Size int
	// TTL is the longest an entry is used. Zero means DefaultCacheTTL.
	TTL time.Duration
	// Now is the clock of the TTL; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Cache keeps the users that credentials recently authenticated as, so
// that a client polling a job costs one KV read (the job) rather than two.
// Only successful authentications are kept, keyed by the credential (the
// user id and the token's hash, the API key's hash, or a verified JWT's
// subject), so a wrong credential is always checked against the bucket
// and never fills the cache.
//
// Entries are ended by a watch of bus.BucketUsers (any change of a user
// ends the entries of that user: a rotated or revoked token or key, a
// changed role, a deleted user) and of the API-key entries of
// bus.BucketUserIndex, so a change takes effect as soon as the watch
// delivers it (well under a millisecond on a local server), not after the
// TTL. The cache answers only while Run's watch is established: before
// Run, after it returns, and while it re-establishes a failed watch,
// every lookup reads the buckets. It is safe for concurrent use.
type Cache struct {
	users, index jetstream.KeyValue
	size         int
	ttl          time.Duration
	now          func() time.Time
	log          *slog.Logger

	mu      sync.Mutex
	live    bool
	epoch   uint64
	lru     *list.List // of *cacheEntry, most recently used first
	entries map[string]*list.Element
	byUser  map[string]map[string]struct{}
}

type cacheEntry struct {
	key, userID string
	user        *sourcev1.User
	expires     time.Time
}

// NewCache returns a Cache ending its entries by watching users and
// userIndex (bus.BucketUsers and bus.BucketUserIndex). It answers nothing
// until Run runs.
func NewCache(users, userIndex jetstream.KeyValue, o CacheOptions) *Cache {
	c := &Cache{
		users: users, index: userIndex, size: o.Size, ttl: o.TTL, now: o.Now, log: o.Logger,
		lru: list.New(), entries: map[string]*list.Element{}, byUser: map[string]map[string]struct{}{},
	}
	if c.size <= 0 {
		c.size = DefaultCacheSize
	}
	if c.ttl <= 0 {
		c.ttl = DefaultCacheTTL
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Run watches the buckets and lets the cache answer while the watch
// holds, until ctx ends; it then returns nil. A failed watch empties the
// cache and is established again after a second; it is logged, not
// returned, since without the cache every lookup still works.
func (c *Cache) Run(ctx context.Context) error {
	defer c.stop()
	for {
		err := c.watch(ctx)
		c.stop()
		if ctx.Err() != nil {
			return nil
		}
		c.log.WarnContext(ctx, "credential cache off until its watch is back", "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(watchRetry):
		}
	}
}

// watch serves the cache until a watch fails or ctx ends.
func (c *Cache) watch(ctx context.Context) error {
	// Only changes from now on matter: the cache starts empty.
	users, err := c.users.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("watch users: %w", err)
	}
	defer func() { _ = users.Stop() }()
	keys, err := c.index.Watch(ctx, "apikey.>", jetstream.UpdatesOnly())
	if err != nil {
		return fmt.Errorf("watch API keys: %w", err)
	}
	defer func() { _ = keys.Stop() }()
	c.start()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-users.Updates():
			if !ok {
				return fmt.Errorf("watch of %s ended", c.users.Bucket())
			}
			if e != nil {
				c.forgetUser(e.Key())
			}
		case e, ok := <-keys.Updates():
			if !ok {
				return fmt.Errorf("watch of %s ended", c.index.Bucket())
			}
			if e != nil {
				c.forget(apiKeyCacheKey(strings.TrimPrefix(e.Key(), "apikey.")))
			}
		}
	}
}

func (c *Cache) start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearLocked()
	c.live = true
}

func (c *Cache) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearLocked()
	c.live = false
}

// clearLocked drops every entry; the new epoch voids the tickets of
// lookups in progress, whose reads may predate what was missed.
func (c *Cache) clearLocked() {
	c.epoch++
	c.lru.Init()
	clear(c.entries)
	clear(c.byUser)
}

// Watching reports whether the cache answers: Run's watch is
// established.
func (c *Cache) Watching() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live
}

// Len is how many credentials the cache holds.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Cache keys, one namespace per kind of credential. The token's key
// holds the user id too, since a token only authenticates with it.
func tokenCacheKey(userID, tokenHash string) string { return "t." + userID + "." + tokenHash }
func apiKeyCacheKey(keyHash string) string          { return "k." + strings.ToLower(keyHash) }
func subjectCacheKey(userID string) string          { return "j." + userID }

// ticket is taken before a lookup reads the buckets and given back with
// its result: a change seen by the watch in between voids it, so a user
// read before a rotation is never cached after the rotation's
// invalidation went by.
type ticket struct {
	epoch uint64
	ok    bool
}

// get returns a copy of the user cached under key, if any. A nil cache
// holds nothing.
func (c *Cache) get(key string) (*sourcev1.User, bool) {
	if c == nil {
		return nil, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, found := c.entries[key]
	if !found || !c.live {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !c.now().Before(e.expires) {
		c.removeLocked(el)
		return nil, false
	}
	c.lru.MoveToFront(el)
	// Callers may change what they get; the cached user stays as read.
	return proto.CloneOf(e.user), true
}

func (c *Cache) ticket() ticket {
	if c == nil {
		return ticket{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return ticket{epoch: c.epoch, ok: c.live}
}

// put caches u, read from the users bucket under userID, under key unless
// t was voided since it was taken. userID is what the watch names when
// the user changes.
func (c *Cache) put(t ticket, key, userID string, u *sourcev1.User) {
	if c == nil || !t.ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.live || t.epoch != c.epoch {
		return
	}
	if el, found := c.entries[key]; found {
		c.removeLocked(el)
	}
	e := &cacheEntry{key: key, userID: userID, user: proto.CloneOf(u), expires: c.now().Add(c.ttl)}
	c.entries[key] = c.lru.PushFront(e)
	keys := c.byUser[e.userID]
	if keys == nil {
		keys = map[string]struct{}{}
		c.byUser[e.userID] = keys
	}
	keys[key] = struct{}{}
	for c.lru.Len() > c.size {
		c.removeLocked(c.lru.Back())
	}
}

// forgetUser ends every entry of the user.
func (c *Cache) forgetUser(userID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	for key := range c.byUser[userID] {
		c.removeLocked(c.entries[key])
	}
}

// forget ends the entry under key.
func (c *Cache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.epoch++
	if el, found := c.entries[key]; found {
		c.removeLocked(el)
	}
}

func (c *Cache) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*cacheEntry)
	delete(c.entries, e.key)
	if keys := c.byUser[e.userID]; keys != nil {
		delete(keys, e.key)
		if len(keys) == 0 {
			delete(c.byUser, e.userID)
		}
	}
}
