package jobstore_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/services/gateway/internal/jobstore"
)

func nextChange(t *testing.T, f *jobstore.Feed) jobstore.Change {
	t.Helper()
	select {
	case ch, ok := <-f.Changes():
		require.True(t, ok, "the feed ended")
		return ch
	case <-time.After(10 * time.Second):
		t.Fatal("no change within 10s")
		return jobstore.Change{}
	}
}

func noChange(t *testing.T, f *jobstore.Feed) {
	t.Helper()
	select {
	case ch := <-f.Changes():
		t.Fatalf("unexpected change of %s at %d", ch.Job.GetId(), ch.Revision)
	case <-time.After(200 * time.Millisecond):
	}
}

// An owner's feed starts with the unfinished jobs, follows jobs created
// later, and names nobody else's: the watch is filtered to the owner's
// keys, not a read of every job.
func TestFollowOwnerWatchesTheOwnersJobsOnly(t *testing.T) {
	t.Parallel()
	store, _, _ := newStore(t)
	ctx := t.Context()
	require.NoError(t, create(ctx, store, newJob("done", "alice")))
	_, err := store.Apply(ctx, canceled("done", 1))
	require.NoError(t, err)
	require.NoError(t, create(ctx, store, newJob("running", "alice")))

	feed, err := store.FollowOwner(ctx, "alice", 0)
	require.NoError(t, err)
	defer feed.Stop()
	first := nextChange(t, feed)
	assert.Equal(t, "running", first.Job.GetId(), "the unfinished job, not the ended one")
	noChange(t, feed)

	require.NoError(t, create(ctx, store, newJob("bobs", "bob")))
	_, err = store.Apply(ctx, queued("bobs", 2))
	require.NoError(t, err)
	require.NoError(t, create(ctx, store, newJob("later", "alice")))
	ch := nextChange(t, feed)
	assert.Equal(t, "later", ch.Job.GetId())
	assert.Greater(t, ch.Revision, first.Revision)
	_, err = store.Apply(ctx, queued("running", 3))
	require.NoError(t, err)
	_, err = store.Apply(ctx, queued("bobs", 3))
	require.NoError(t, err)
	_, err = store.Apply(ctx, progress("later", 4, 50, 5))
	require.NoError(t, err)
	a, b := nextChange(t, feed), nextChange(t, feed)
	assert.Equal(t, []string{"running", "later"}, []string{a.Job.GetId(), b.Job.GetId()})
	assert.Less(t, ch.Revision, a.Revision)
	assert.Less(t, a.Revision, b.Revision)
	noChange(t, feed)

	// From a position: each of the owner's jobs changed after it, the
	// ended one among them, once each, in order.
	_, err = store.Apply(ctx, notified("done", 5, ""))
	require.NoError(t, err)
	resumed, err := store.FollowOwner(ctx, "alice", b.Revision)
	require.NoError(t, err)
	defer resumed.Stop()
	assert.Equal(t, "done", nextChange(t, resumed).Job.GetId())
	noChange(t, resumed)

	// Stop ends the feed and closes its channel.
	feed.Stop()
	_, open := <-feed.Changes()
	assert.False(t, open)
}

func TestFollowRefusesABadID(t *testing.T) {
	t.Parallel()
	store, _, _ := newStore(t)
	_, err := store.Follow(t.Context(), "no.such", 0)
	assert.ErrorIs(t, err, jobstore.ErrNotFound)
	_, err = store.FollowOwner(t.Context(), "", 0)
	assert.Error(t, err)
}
