package jobstore_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/bus"
)

// requireOwnSummaries checks that the owner's summaries are those of its
// jobs as stored, want of them, newest first.
func requireOwnSummaries(t *testing.T, store *jobstore.Store, owner string, want []string) {
	t.Helper()
	got, err := store.Summaries(t.Context(), jobstore.Scope{Owner: owner, Dialect: "rebilly", Organization: "acme"}, nil)
	require.NoError(t, err)
	require.Equal(t, want, ids(got))
	for _, sum := range got {
		job, err := store.Get(t.Context(), sum.GetId())
		require.NoError(t, err)
		assert.True(t, proto.Equal(jobstore.Summary(job), sum), "%s: %v, want %v", sum.GetId(), sum, jobstore.Summary(job))
	}
}

func newestFirstIDs(prefix string, n int) []string {
	var out []string
	for i := n - 1; i >= 0; i-- {
		out = append(out, fmt.Sprintf("%s-%02d", prefix, i))
	}
	return out
}

// blockKeys are the index's summary blocks (blk.<owner>.<shard>).
func blockKeys(t *testing.T, index jetstream.KeyValue) []string {
	var out []string
	for _, k := range keysOf(t, index) {
		if strings.HasPrefix(k, "blk.") {
			out = append(out, k)
		}
	}
	return out
}

// TestOwnerSummariesAfterConcurrentChanges: two replicas create 48 of
// alice's exports at once and then race through each one's events
// (queued, progress, and completed or failed), all the jobs' changes
// contending for her few summary blocks. Her listing then shows every
// export in its last state, once, newest first.
func TestOwnerSummariesAfterConcurrentChanges(t *testing.T) {
	store, _, srv := newStore(t)
	ctx := t.Context()
	other, err := jobstore.Open(ctx, srv.JS)
	require.NoError(t, err)
	replicas := []*jobstore.Store{store, other}
	const n = 48
	id := func(i int) string { return fmt.Sprintf("a-%02d", i) }
	var g errgroup.Group
	for i := range n {
		g.Go(func() error {
			return create(ctx, replicas[i%2], scoped(id(i), "alice", "rebilly", "acme", exportv1.JobKind_JOB_KIND_RECORDS, i))
		})
	}
	require.NoError(t, g.Wait())
	for i := range n {
		end := completed(id(i), 100)
		if i%3 == 0 {
			end = failed(id(i), 100, false)
		}
		events := []jobstore.Event{queued(id(i), 10), progress(id(i), 20, 30, uint64(i)), progress(id(i), 30, 60, uint64(10*i)), end}
		for w := range 2 {
			g.Go(func() error {
				for k := w; k < len(events); k += 2 {
					if _, err := replicas[(i+w)%2].Apply(ctx, events[k]); err != nil {
						return err
					}
				}
				return nil
			})
		}
	}
	require.NoError(t, g.Wait())

	requireOwnSummaries(t, store, "alice", newestFirstIDs("a", n))
	completedOnes, err := other.Summaries(ctx, jobstore.Scope{Owner: "alice"}, func(j *exportv1.Job) bool {
		return j.GetState() == exportv1.JobState_JOB_STATE_COMPLETED
	})
	require.NoError(t, err)
	assert.Len(t, completedOnes, n-n/3)
	index, err := srv.JS.KeyValue(ctx, bus.BucketJobIndex)
	require.NoError(t, err)
	assert.NotEmpty(t, blockKeys(t, index), "alice's summaries are kept in blocks")
}

// TestOwnerSummariesOfJobsIndexedBeforeBlocks: a deployment whose jobs
// were indexed without summary blocks (the previous version, or
// BuildIndex) lists them right, then from blocks the listing fills, and
// keeps listing them right as they change and when a block is lost.
func TestOwnerSummariesOfJobsIndexedBeforeBlocks(t *testing.T) {
	store, kv, srv := newStore(t)
	ctx := t.Context()
	index, err := srv.JS.KeyValue(ctx, bus.BucketJobIndex)
	require.NoError(t, err)
	const old, fresh = 30, 5
	for i := range old {
		j := scoped(fmt.Sprintf("b-%02d", i), "alice", "rebilly", "acme", exportv1.JobKind_JOB_KIND_RECORDS, i)
		data, err := proto.Marshal(j)
		require.NoError(t, err)
		_, err = kv.Create(ctx, j.GetId(), data)
		require.NoError(t, err)
	}
	_, err = store.BuildIndex(ctx)
	require.NoError(t, err)
	require.Empty(t, blockKeys(t, index), "BuildIndex writes no blocks")
	for i := old; i < old+fresh; i++ {
		require.NoError(t, create(ctx, store, scoped(fmt.Sprintf("b-%02d", i), "alice", "rebilly", "acme", exportv1.JobKind_JOB_KIND_RECORDS, i)))
	}
	want := newestFirstIDs("b", old+fresh)

	requireOwnSummaries(t, store, "alice", want)
	requireOwnSummaries(t, store, "alice", want)
	for _, ev := range []jobstore.Event{queued("b-03", 50), completed("b-03", 51), failed("b-31", 52, true)} {
		_, err := store.Apply(ctx, ev)
		require.NoError(t, err)
	}
	requireOwnSummaries(t, store, "alice", want)

	blocks := blockKeys(t, index)
	require.NotEmpty(t, blocks)
	require.NoError(t, index.Purge(ctx, blocks[0]))
	requireOwnSummaries(t, store, "alice", want)
	assert.Contains(t, blockKeys(t, index), blocks[0], "the listing wrote the purged block again")
	_, err = store.Apply(ctx, queued("b-10", 60))
	require.NoError(t, err)
	requireOwnSummaries(t, store, "alice", want)
}

// TestOwnerSummariesOfJobsEndedByThePreviousVersion: during a rolling
// upgrade a replica of the previous version, which writes no summary
// blocks, ends some of alice's exports that her blocks hold as queued.
// Her listing shows them ended, as stored, and so does the next one.
func TestOwnerSummariesOfJobsEndedByThePreviousVersion(t *testing.T) {
	store, _, srv := newStore(t)
	ctx := t.Context()
	previous, err := jobstore.Open(ctx, srv.JS, jobstore.AsPreviousVersion())
	require.NoError(t, err)
	const n = 12
	id := func(i int) string { return fmt.Sprintf("c-%02d", i) }
	for i := range n {
		require.NoError(t, create(ctx, store, scoped(id(i), "alice", "rebilly", "acme", exportv1.JobKind_JOB_KIND_RECORDS, i)))
		_, err := store.Apply(ctx, queued(id(i), 20))
		require.NoError(t, err)
	}
	want := newestFirstIDs("c", n)
	requireOwnSummaries(t, store, "alice", want)

	for i := range 5 {
		end := completed(id(i), 30)
		if i == 4 {
			end = failed(id(i), 30, false)
		}
		_, err := previous.Apply(ctx, end)
		require.NoError(t, err)
	}
	requireOwnSummaries(t, store, "alice", want)
	requireOwnSummaries(t, store, "alice", want)
	done, err := store.Summaries(ctx, jobstore.Scope{Owner: "alice"}, func(j *exportv1.Job) bool {
		return j.GetState() == exportv1.JobState_JOB_STATE_COMPLETED
	})
	require.NoError(t, err)
	assert.Equal(t, []string{id(3), id(2), id(1), id(0)}, ids(done))
}
