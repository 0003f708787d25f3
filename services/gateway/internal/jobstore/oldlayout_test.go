package jobstore_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/bus"
)

// TestPurgeOldLayoutRemovesTheEarlierLayouts migrates a deployment
// indexed in the earlier layouts, lets a replica of the old code create a
// job during the rolling update (this layout's owner entry, no
// organization entry), and checks that the purge waits out the grace,
// then removes every old entry and marker and nothing of this layout,
// with replicas racing, once; and that the job created meanwhile is in
// its organization's listing afterwards.
func TestPurgeOldLayoutRemovesTheEarlierLayouts(t *testing.T) {
	_, kv, srv := newStore(t)
	ctx := t.Context()
	var now atomic.Pointer[time.Time]
	setNow := func(t time.Time) { now.Store(&t) }
	setNow(t0)
	clock := func() time.Time { return *now.Load() }
	replicas := make([]*jobstore.Store, 2)
	for i := range replicas {
		var err error
		replicas[i], err = jobstore.Open(ctx, srv.JS, jobstore.WithClock(clock))
		require.NoError(t, err)
	}
	index, err := srv.JS.KeyValue(ctx, bus.BucketJobIndex)
	require.NoError(t, err)

	for i := range 12 {
		j := scoped(fmt.Sprintf("old-%02d", i), "alice", "rebilly", "acme", exportv1.JobKind_JOB_KIND_RECORDS, i)
		data, err := proto.Marshal(j)
		require.NoError(t, err)
		_, err = kv.Create(ctx, j.GetId(), data)
		require.NoError(t, err)
	}
	old := putOldLayout(t, index, 12)
	for _, k := range []string{"meta.built", "meta.built.v2"} {
		_, err := index.Put(ctx, k, []byte("2026-01-01T00:00:00Z"))
		require.NoError(t, err)
		old = append(old, k)
	}
	_, err = replicas[0].PurgeOldLayout(ctx, time.Hour)
	require.Error(t, err, "nothing is purged before this layout is built")
	built, err := replicas[0].BuildIndex(ctx)
	require.NoError(t, err)
	require.True(t, built)

	// The old code, still serving during the rollout, creates a job: its
	// owner entry is this layout's, its organization entry v2's.
	rollout := scoped("rollout", "bob", "rebilly", "acme", exportv1.JobKind_JOB_KIND_RECORDS, 50)
	data, err := proto.Marshal(rollout)
	require.NoError(t, err)
	_, err = kv.Create(ctx, rollout.GetId(), data)
	require.NoError(t, err)
	bobIndexed := false
	for _, k := range keysOf(t, index) {
		if strings.HasPrefix(k, "own.") && strings.HasSuffix(k, ".old-00") && strings.Count(k, ".") == 8 {
			_, err := index.Put(ctx, strings.Replace(strings.Replace(k, "old-00", "rollout", 1), hash("alice"), hash("bob"), 1), nil)
			require.NoError(t, err)
			bobIndexed = true
		}
	}
	require.True(t, bobIndexed)
	v2org := fmt.Sprintf("org.rebilly.%s.%019d.rollout", hash("acme"), 50)
	_, err = index.Put(ctx, v2org, nil)
	require.NoError(t, err)
	old = append(old, v2org)

	wait, err := replicas[0].PurgeOldLayout(ctx, time.Hour)
	require.NoError(t, err)
	assert.InDelta(t, time.Hour, wait, float64(time.Minute), "the grace runs from the build")
	assert.Subset(t, keysOf(t, index), old, "nothing purged within the grace")
	org, err := replicas[0].Summaries(ctx, jobstore.Scope{Dialect: "rebilly", Organization: "acme"}, nil)
	require.NoError(t, err)
	assert.NotContains(t, ids(org), "rollout", "the old code's job has no organization entry yet")

	setNow(t0.Add(time.Hour + time.Second))
	current := slices.DeleteFunc(keysOf(t, index), func(k string) bool { return slices.Contains(old, k) })
	var wg sync.WaitGroup
	for _, r := range replicas {
		wg.Go(func() {
			wait, err := r.PurgeOldLayout(ctx, time.Hour)
			assert.NoError(t, err)
			assert.Zero(t, wait)
		})
	}
	wg.Wait()
	after := keysOf(t, index)
	for _, k := range old {
		assert.NotContains(t, after, k)
	}
	assert.Subset(t, after, current, "this layout's entries and markers stay")
	assert.Contains(t, after, "meta.purged.v3")

	org, err = replicas[1].Summaries(ctx, jobstore.Scope{Dialect: "rebilly", Organization: "acme"}, nil)
	require.NoError(t, err)
	assert.Equal(t, "rollout", ids(org)[0], "the pass before the purge indexed the rollout's job")
	assert.Len(t, org, 13)
	page, err := replicas[1].Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, Limit: 1})
	require.NoError(t, err)
	assert.Equal(t, 12, page.Total, "the second pass counts nobody twice")

	wait, err = replicas[0].PurgeOldLayout(ctx, time.Hour)
	require.NoError(t, err)
	assert.Zero(t, wait)
	assert.ElementsMatch(t, after, keysOf(t, index), "done once")
}

func keysOf(t *testing.T, kv jetstream.KeyValue) []string {
	t.Helper()
	keys, err := kv.Keys(t.Context())
	require.NoError(t, err)
	return keys
}

// hash is the index's token of an owner or organization.
func hash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}
