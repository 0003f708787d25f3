package access

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// Credentials are indexed by hash in bus.BucketCredentials so that
// authenticating a secret reads one key, never every user: the entry
// apikey.<sha256 hex> holds the id of the user whose API key hashes to
// it. An entry is a hint: the authenticator still compares the user's
// stored hash, so an entry left behind by a rotated key lets nobody in.
// Whoever writes users writes their entries too (IndexCredentials); the
// demo seeder does, and the gateway indexes every user at start for users
// written before the index existed.

var sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)

// APIKeyEntry is the key of bus.BucketCredentials for the API key whose
// SHA-256 is sum (hex, any case); ok is false when sum is no such hash.
func APIKeyEntry(sum string) (key string, ok bool) {
	sum = strings.ToLower(sum)
	if !sha256Hex.MatchString(sum) {
		return "", false
	}
	return "apikey." + sum, true
}

// IndexCredentials writes the credential entries of u into creds (the
// bucket bus.BucketCredentials) unless they hold u's id already, and
// reports whether it wrote any. It is idempotent.
func IndexCredentials(ctx context.Context, creds jetstream.KeyValue, u *sourcev1.User) (bool, error) {
	key, ok := APIKeyEntry(u.GetApiKeySha256())
	if !ok || !ValidID(u.GetId()) {
		return false, nil
	}
	id := []byte(u.GetId())
	cur, err := creds.Get(ctx, key)
	switch {
	case err == nil && bytes.Equal(cur.Value(), id):
		return false, nil
	case err != nil && !errors.Is(err, jetstream.ErrKeyNotFound):
		return false, fmt.Errorf("get credential of %s: %w", u.GetId(), err)
	}
	if _, err := creds.Put(ctx, key, id); err != nil {
		return false, fmt.Errorf("index credential of %s: %w", u.GetId(), err)
	}
	return true, nil
}
