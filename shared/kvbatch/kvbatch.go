// Package kvbatch reads many keys of a JetStream KV bucket with one
// request: the direct get "multi_last" of JetStream (nats-server 2.11+),
// which answers the last message of each listed subject followed by an
// end-of-batch marker. A listing that must read a thousand jobs then
// costs one round trip per thousand keys instead of one per key, and
// Matching lists the keys under a wildcard the same way. nats.go has no
// call for it, so the request is spelled out here, in one place.
//
// A direct get is served by the stream itself, not by the JetStream API
// queue that stream-info and consumer requests wait in, so many of them
// at once do not hold up each other or the rest of the API.
package kvbatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// maxPerRequest is the most subjects the server answers in one multi_last
// request.
const maxPerRequest = 1024

// timeout bounds one request when the caller's context has no deadline,
// so a server that drops the request cannot hang the caller.
const timeout = 10 * time.Second

// ErrTooMany is returned by Matching when more than MaxMatching keys
// match: the server answers none of them then.
var ErrTooMany = errors.New("kvbatch: too many matching keys")

// MaxMatching is the most keys Matching answers (the server's bound on
// one multi_last request).
const MaxMatching = maxPerRequest

// Matching returns the current values of the keys of kv that match
// filter (a key with the subject wildcards * and >), by key: one request,
// whose cost is that of the matching keys, whatever else the bucket
// holds. Deleted and purged keys are absent. More than MaxMatching
// matches fail with ErrTooMany.
func Matching(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, filter string) (map[string][]byte, error) {
	return MatchingAny(ctx, js, kv, filter)
}

// MatchingAny is Matching for the keys that match any of filters (keys
// with wildcards, or literal keys), still one request: reads that do not
// depend on each other's answers (a listing's buckets and its counter)
// cost one round trip together. More than MaxMatching keys in all fail
// with ErrTooMany.
func MatchingAny(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, filters ...string) (map[string][]byte, error) {
	if len(filters) == 0 {
		return map[string][]byte{}, nil
	}
	prefix := "$KV." + kv.Bucket() + "."
	subjects := make([]string, len(filters))
	for i, f := range filters {
		if f == "" || strings.Contains(f, " ") {
			return nil, fmt.Errorf("kvbatch: invalid filter %q", f)
		}
		subjects[i] = prefix + f
	}
	out := map[string][]byte{}
	if _, err := get(ctx, js.Conn(), "$JS.API.DIRECT.GET.KV_"+kv.Bucket(), prefix, subjects, maxPerRequest, out); err != nil {
		if errors.Is(err, ErrTooMany) {
			return nil, err
		}
		return nil, fmt.Errorf("kvbatch: keys %s of %s: %w", strings.Join(filters, " "), kv.Bucket(), err)
	}
	return out, nil
}

// MatchingUpTo is MatchingAny answering at most limit keys (1 to
// MaxMatching), still one request; complete reports that those are
// every match. The server sends the matches in the order they were
// written, not by key, so an incomplete answer is an arbitrary part of
// them: it tells the caller that the keys are too many to read with
// their values, for no more than limit messages. Deleted and purged
// keys count towards limit.
func MatchingUpTo(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, limit int, filters ...string) (values map[string][]byte, complete bool, err error) {
	if limit < 1 || limit > MaxMatching {
		return nil, false, fmt.Errorf("kvbatch: limit %d out of 1 to %d", limit, MaxMatching)
	}
	if len(filters) == 0 {
		return map[string][]byte{}, true, nil
	}
	prefix := "$KV." + kv.Bucket() + "."
	subjects := make([]string, len(filters))
	for i, f := range filters {
		if f == "" || strings.Contains(f, " ") {
			return nil, false, fmt.Errorf("kvbatch: invalid filter %q", f)
		}
		subjects[i] = prefix + f
	}
	out := map[string][]byte{}
	pending, err := get(ctx, js.Conn(), "$JS.API.DIRECT.GET.KV_"+kv.Bucket(), prefix, subjects, limit, out)
	if err != nil {
		if errors.Is(err, ErrTooMany) {
			return nil, false, err
		}
		return nil, false, fmt.Errorf("kvbatch: keys %s of %s: %w", strings.Join(filters, " "), kv.Bucket(), err)
	}
	return out, pending == 0, nil
}

// Get returns the current values of keys in kv, by key. Missing, deleted
// and purged keys are absent from the map. Keys must be literal (no
// wildcards); duplicates are read once.
func Get(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, keys []string) (map[string][]byte, error) {
	prefix := "$KV." + kv.Bucket() + "."
	api := "$JS.API.DIRECT.GET.KV_" + kv.Bucket()
	out := make(map[string][]byte, len(keys))
	keys = slices.Compact(slices.Sorted(slices.Values(keys)))
	for chunk := range slices.Chunk(keys, maxPerRequest) {
		subjects := make([]string, len(chunk))
		for i, k := range chunk {
			if strings.ContainsAny(k, "*> ") || k == "" {
				return nil, fmt.Errorf("kvbatch: invalid key %q", k)
			}
			subjects[i] = prefix + k
		}
		if _, err := get(ctx, js.Conn(), api, prefix, subjects, len(subjects), out); err != nil {
			return nil, fmt.Errorf("kvbatch: get %d keys of %s: %w", len(chunk), kv.Bucket(), err)
		}
	}
	return out, nil
}

// get sends one multi_last request of at most batch messages into out
// and returns how many matches the server did not send (the end-of-batch
// marker's Nats-Num-Pending).
func get(ctx context.Context, nc *nats.Conn, api, prefix string, subjects []string, batch int, out map[string][]byte) (pending uint64, err error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	req, err := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
		Batch     int      `json:"batch"`
	}{subjects, batch})
	if err != nil {
		return 0, err
	}
	// The answer is at most batch messages and the end-of-batch marker,
	// so a channel of that size never drops one. SubscribeSync would
	// allocate its default 65,536 slots (512 KiB) per call, which was
	// most of what a listing of a few keys cost the gateway.
	msgs := make(chan *nats.Msg, batch+1)
	inbox := nc.NewInbox()
	sub, err := nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		return 0, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest(api, inbox, req); err != nil {
		return 0, err
	}
	for {
		var msg *nats.Msg
		select {
		case msg = <-msgs:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		switch status := msg.Header.Get("Status"); status {
		case "":
		case "204":
			// End of batch. A marker without the count is taken for
			// one with some left: a caller then reads the keys another way.
			if pending, err = strconv.ParseUint(msg.Header.Get("Nats-Num-Pending"), 10, 64); err != nil {
				pending = 1
			}
			return pending, nil
		case "404":
			// None of the subjects has a message.
			return 0, nil
		case "413":
			return 0, ErrTooMany
		case "503":
			// No responders: the stream has no leader answering (a
			// server restarting, a cluster electing). That is the bus's
			// state, which bus.Unavailable must see to wait instead of
			// failing the work.
			return 0, nats.ErrNoResponders
		default:
			return 0, errors.New("status " + status + " " + msg.Header.Get("Description"))
		}
		switch {
		case msg.Header.Get("KV-Operation") == "DEL", msg.Header.Get("KV-Operation") == "PURGE",
			msg.Header.Get("Nats-Marker-Reason") != "":
			continue
		}
		if subj := msg.Header.Get(jetstream.SubjectHeader); strings.HasPrefix(subj, prefix) {
			out[strings.TrimPrefix(subj, prefix)] = msg.Data
		}
	}
}
