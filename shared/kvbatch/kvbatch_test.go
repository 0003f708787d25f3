package kvbatch_test

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/kvbatch"
)

func TestGetReadsCurrentValuesOfManyKeys(t *testing.T) {
	srv := bustest.Start(t)
	ctx := t.Context()
	kv, err := srv.JS.KeyValue(ctx, bus.BucketJobs)
	require.NoError(t, err)
	const n = 2500 // more than one request's worth
	var keys []string
	want := map[string][]byte{}
	for i := range n {
		k := fmt.Sprintf("key-%04d", i)
		keys = append(keys, k)
		_, err := kv.Put(ctx, k, []byte("v1-"+k))
		require.NoError(t, err)
		want[k] = []byte("v1-" + k)
	}
	_, err = kv.Put(ctx, "key-0007", []byte("v2"))
	require.NoError(t, err)
	want["key-0007"] = []byte("v2")
	require.NoError(t, kv.Delete(ctx, "key-0008"))
	require.NoError(t, kv.Purge(ctx, "key-0009"))
	delete(want, "key-0008")
	delete(want, "key-0009")
	keys = append(keys, "missing", "key-0001")

	got, err := kvbatch.Get(ctx, srv.JS, kv, keys)
	require.NoError(t, err)
	assert.Equal(t, want, got)

	none, err := kvbatch.Get(ctx, srv.JS, kv, []string{"missing"})
	require.NoError(t, err)
	assert.Empty(t, none)
	empty, err := kvbatch.Get(ctx, srv.JS, kv, nil)
	require.NoError(t, err)
	assert.Empty(t, empty)
	_, err = kvbatch.Get(ctx, srv.JS, kv, []string{"key.*"})
	require.Error(t, err)
}

func TestMatchingListsOnlyTheKeysUnderAFilter(t *testing.T) {
	srv := bustest.Start(t)
	ctx := t.Context()
	kv, err := srv.JS.KeyValue(ctx, bus.BucketJobIndex)
	require.NoError(t, err)
	for i := range 3000 {
		_, err := kv.Put(ctx, fmt.Sprintf("other.%04d", i), nil)
		require.NoError(t, err)
	}
	for _, k := range []string{"a.1", "a.2", "a.2.deeper", "a.3"} {
		_, err := kv.Put(ctx, k, []byte(k))
		require.NoError(t, err)
	}
	require.NoError(t, kv.Purge(ctx, "a.3"))

	got, err := kvbatch.Matching(ctx, srv.JS, kv, "a.*")
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"a.1": []byte("a.1"), "a.2": []byte("a.2")}, got)
	deep, err := kvbatch.Matching(ctx, srv.JS, kv, "a.>")
	require.NoError(t, err)
	assert.Len(t, deep, 3)
	none, err := kvbatch.Matching(ctx, srv.JS, kv, "b.*")
	require.NoError(t, err)
	assert.Empty(t, none)

	_, err = kvbatch.Matching(ctx, srv.JS, kv, "other.*")
	assert.ErrorIs(t, err, kvbatch.ErrTooMany, "more than %d keys match", kvbatch.MaxMatching)

	union, err := kvbatch.MatchingAny(ctx, srv.JS, kv, "a.*", "other.0042", "a.2.*", "b.*")
	require.NoError(t, err)
	assert.Equal(t, map[string][]byte{"a.1": []byte("a.1"), "a.2": []byte("a.2"), "a.2.deeper": []byte("a.2.deeper"), "other.0042": {}}, union)
	_, err = kvbatch.MatchingAny(ctx, srv.JS, kv, "a.*", "other.*")
	assert.ErrorIs(t, err, kvbatch.ErrTooMany, "more than %d keys match in all", kvbatch.MaxMatching)
}

func TestMatchingUpToTellsWhetherItAnsweredEveryMatch(t *testing.T) {
	srv := bustest.Start(t)
	ctx := t.Context()
	kv, err := srv.JS.KeyValue(ctx, bus.BucketJobIndex)
	require.NoError(t, err)
	want := map[string][]byte{}
	for i := range 10 {
		k := fmt.Sprintf("a.%02d", i)
		_, err := kv.Put(ctx, k, []byte(k))
		require.NoError(t, err)
		want[k] = []byte(k)
	}
	_, err = kv.Put(ctx, "b.1", []byte("b.1"))
	require.NoError(t, err)

	all, complete, err := kvbatch.MatchingUpTo(ctx, srv.JS, kv, 10, "a.*")
	require.NoError(t, err)
	assert.True(t, complete, "10 matches within a limit of 10")
	assert.Equal(t, want, all)

	some, complete, err := kvbatch.MatchingUpTo(ctx, srv.JS, kv, 4, "a.*", "b.1")
	require.NoError(t, err)
	assert.False(t, complete, "11 matches past a limit of 4")
	assert.Len(t, some, 4)
	for k, v := range some {
		assert.Equal(t, []byte(k), v)
	}

	none, complete, err := kvbatch.MatchingUpTo(ctx, srv.JS, kv, 4, "c.*")
	require.NoError(t, err)
	assert.True(t, complete)
	assert.Empty(t, none)
	_, _, err = kvbatch.MatchingUpTo(ctx, srv.JS, kv, 0, "a.*")
	require.Error(t, err)
}

// TestNoRespondersIsTheBusState: a read nobody answers (here the bucket's
// stream is gone; in production a server restarting) says
// nats.ErrNoResponders, which bus.Unavailable takes for the bus's state,
// so a task waits for it instead of failing a delivery.
func TestNoRespondersIsTheBusState(t *testing.T) {
	srv := bustest.Start(t)
	ctx := t.Context()
	kv, err := srv.JS.KeyValue(ctx, bus.BucketMemberships)
	require.NoError(t, err)
	require.NoError(t, srv.JS.DeleteKeyValue(ctx, bus.BucketMemberships))

	_, err = kvbatch.Matching(ctx, srv.JS, kv, "u1.*")
	require.Error(t, err)
	assert.ErrorIs(t, err, nats.ErrNoResponders)
	assert.True(t, bus.Unavailable(err), "%v", err)
	_, err = kvbatch.Get(ctx, srv.JS, kv, []string{"u1.r1"})
	assert.True(t, bus.Unavailable(err), "%v", err)
}
