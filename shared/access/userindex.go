package access

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// Users are indexed in bus.BucketUserIndex so that finding one by a
// secret or a name reads one key, never every user:
//
//	apikey.<sha256 hex of the API key>  -> user id
//	username.<first 32 hex of the username's SHA-256> -> user id
//
// An entry is a hint: readers compare the user's stored hash or username,
// so an entry left behind by a rotated key or a rename finds nobody.
// Whoever writes users writes their entries too (IndexUser); the demo
// seeder does, and the gateway indexes every user at start for users
// written before the index existed.

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// APIKeyEntry is the key of bus.BucketUserIndex for the API key whose
// SHA-256 is sum (hex, any case); ok is false when sum is no such hash.
func APIKeyEntry(sum string) (key string, ok bool) {
	sum = strings.ToLower(sum)
	if !sha256Hex.MatchString(sum) {
		return "", false
	}
	return "apikey." + sum, true
}

// UsernameEntry is the key of bus.BucketUserIndex for a username.
func UsernameEntry(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "username." + hex.EncodeToString(sum[:16])
}

// userEntries are the index keys of u.
func userEntries(u *sourcev1.User) []string {
	var keys []string
	if k, ok := APIKeyEntry(u.GetApiKeySha256()); ok {
		keys = append(keys, k)
	}
	if u.GetUsername() != "" {
		keys = append(keys, UsernameEntry(u.GetUsername()))
	}
	return keys
}

// IndexUser writes the index entries of u into index (the bucket
// bus.BucketUserIndex) unless they hold u's id already, and reports
// whether it wrote any. It is idempotent.
func IndexUser(ctx context.Context, index jetstream.KeyValue, u *sourcev1.User) (bool, error) {
	if !ValidID(u.GetId()) {
		return false, nil
	}
	id := []byte(u.GetId())
	wrote := false
	for _, key := range userEntries(u) {
		cur, err := index.Get(ctx, key)
		switch {
		case err == nil && bytes.Equal(cur.Value(), id):
			continue
		case err != nil && !errors.Is(err, jetstream.ErrKeyNotFound):
			return wrote, fmt.Errorf("get index entry of user %s: %w", u.GetId(), err)
		}
		if _, err := index.Put(ctx, key, id); err != nil {
			return wrote, fmt.Errorf("index user %s: %w", u.GetId(), err)
		}
		wrote = true
	}
	return wrote, nil
}

// IndexUsers writes the index entries of every user of users into index
// (IndexUser) and returns how many users it wrote entries for. It reads
// every user once, so it belongs at start, never on a request; it is
// idempotent, so replicas may run it together.
func IndexUsers(ctx context.Context, users, index jetstream.KeyValue) (int, error) {
	lister, err := users.ListKeys(ctx)
	if err != nil {
		return 0, fmt.Errorf("index users: %w", err)
	}
	defer func() { _ = lister.Stop() }()
	written := 0
	for id := range lister.Keys() {
		u := &sourcev1.User{}
		found, err := get(ctx, users, id, u)
		if err != nil {
			return written, fmt.Errorf("index users: %w", err)
		}
		if !found {
			continue
		}
		did, err := IndexUser(ctx, index, u)
		if err != nil {
			return written, fmt.Errorf("index users: %w", err)
		}
		if did {
			written++
		}
	}
	if err := ctx.Err(); err != nil {
		return written, fmt.Errorf("index users: %w", err)
	}
	return written, nil
}
