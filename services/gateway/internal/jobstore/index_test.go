package jobstore_test

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/kvbatch"
)

func ids(jobs []*exportv1.Job) []string {
	out := []string{}
	for _, j := range jobs {
		out = append(out, j.GetId())
	}
	return out
}

// scoped is a job of one dialect, organization and kind.
func scoped(id, owner, dialect, org string, kind exportv1.JobKind, sec int) *exportv1.Job {
	j := newJob(id, owner)
	j.Dialect, j.OrganizationId, j.Kind, j.CreatedAt = dialect, org, kind, at(sec)
	return j
}

// TestFindListsExactlyTheScope fills the projection with other owners'
// jobs around alice's and checks that every listing answers exactly
// alice's share, newest first, across dialects and organizations.
func TestFindListsExactlyTheScope(t *testing.T) {
	store, _, _ := newStore(t)
	ctx := t.Context()
	room, user, records := exportv1.JobKind_JOB_KIND_ROOM, exportv1.JobKind_JOB_KIND_USER_DATA, exportv1.JobKind_JOB_KIND_RECORDS
	jobs := []*exportv1.Job{
		scoped("a-rc-room", "alice", "rocketchat", "", room, 10),
		scoped("a-rc-user", "alice", "rocketchat", "", user, 20),
		scoped("a-rb-acme", "alice", "rebilly", "acme", records, 30),
		scoped("a-rb-beta", "alice", "rebilly", "beta", records, 40),
		scoped("a-native", "alice", "native", "", room, 50),
		scoped("a-same-time-1", "alice", "rebilly", "acme", records, 60),
		scoped("a-same-time-2", "alice", "rebilly", "acme", records, 60),
		scoped("b-rb-acme", "bob", "rebilly", "acme", records, 35),
		scoped("b-rc-user", "bob", "rocketchat", "", user, 25),
		scoped("c-rb-beta", "carol", "rebilly", "beta", records, 45),
	}
	run := scoped("a-run", "alice", "rebilly", "acme", records, 70)
	run.ParentId = "sched-1"
	jobs = append(jobs, run)
	for i := range 30 {
		jobs = append(jobs, scoped(fmt.Sprintf("other-%02d", i), fmt.Sprintf("user-%d", i%5), "rebilly", "acme", records, i))
	}
	for _, j := range jobs {
		require.NoError(t, create(ctx, store, j))
	}

	all, err := store.List(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, []string{"a-run", "a-same-time-2", "a-same-time-1", "a-native", "a-rb-beta", "a-rb-acme", "a-rc-user", "a-rc-room"}, ids(all))

	for _, tc := range []struct {
		name  string
		scope jobstore.Scope
		want  []string
	}{
		{"owner in one organization", jobstore.Scope{Owner: "alice", Dialect: "rebilly", Organization: "acme"}, []string{"a-run", "a-same-time-2", "a-same-time-1", "a-rb-acme"}},
		{"owner outside organizations", jobstore.Scope{Owner: "alice", Dialect: "rocketchat"}, []string{"a-rc-user", "a-rc-room"}},
		{"owner and kind", jobstore.Scope{Owner: "alice", Kind: user}, []string{"a-rc-user"}},
		{"organization, every owner", jobstore.Scope{Dialect: "rebilly", Organization: "beta"}, []string{"c-rb-beta", "a-rb-beta"}},
		{"runs of a schedule", jobstore.Scope{Parent: "sched-1"}, []string{"a-run"}},
		{"nobody's", jobstore.Scope{Owner: "dave"}, []string{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			page, err := store.Find(ctx, jobstore.Query{Scope: tc.scope})
			require.NoError(t, err)
			assert.Equal(t, tc.want, ids(page.Jobs))
			assert.Empty(t, page.Next)
			assert.Equal(t, len(tc.want), page.Total)
		})
	}

	_, err = store.Find(ctx, jobstore.Query{})
	require.Error(t, err, "a scope that names no index is refused, not a scan")
}

func TestFindPagesWithACursor(t *testing.T) {
	store, kv, _ := newStore(t)
	ctx := t.Context()
	for i := range 7 {
		id := fmt.Sprintf("job-%d", i)
		require.NoError(t, create(ctx, store, scoped(id, "alice", "native", "", exportv1.JobKind_JOB_KIND_ROOM, i%3)))
		require.NoError(t, create(ctx, store, scoped("bob-"+id, "bob", "native", "", exportv1.JobKind_JOB_KIND_ROOM, i)))
	}
	// Newest first, ties by id descending.
	want := []string{"job-5", "job-2", "job-4", "job-1", "job-6", "job-3", "job-0"}

	var got []string
	after := ""
	for page := 0; ; page++ {
		require.Less(t, page, 10, "the cursor must move")
		page, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, After: after, Limit: 3})
		require.NoError(t, err)
		assert.LessOrEqual(t, len(page.Jobs), 3)
		assert.Equal(t, 7, page.Total)
		got = append(got, ids(page.Jobs)...)
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	assert.Equal(t, want, got)

	// A cursor stays valid when the job it names goes away.
	first, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, Limit: 2})
	require.NoError(t, err)
	assert.Equal(t, []string{"job-5", "job-2"}, ids(first.Jobs))
	require.NoError(t, kv.Delete(ctx, "job-2"))
	rest, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, After: first.Next, Limit: 2})
	require.NoError(t, err)
	assert.Equal(t, []string{"job-4", "job-1"}, ids(rest.Jobs))

	_, err = store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, After: "not a cursor!"})
	require.ErrorIs(t, err, jobstore.ErrBadCursor)
}

// TestFindPagesAcrossDaysAndMinutes spreads alice's jobs over days and
// minutes, with more than one direct get's worth in a single minute, and
// checks that pages of every size join up to her jobs, newest first, in
// every scope, with the total from her counter.
func TestFindPagesAcrossDaysAndMinutes(t *testing.T) {
	store, _, _ := newStore(t)
	ctx := t.Context()
	var want []string // newest first
	add := func(id, owner, dialect string, ts time.Time) {
		j := newJob(id, owner)
		j.Dialect, j.CreatedAt = dialect, timestamppb.New(ts)
		require.NoError(t, create(ctx, store, j))
	}
	// The burst: one minute holding more entries than kvbatch.Matching
	// answers at once.
	burst := t0.Add(-48 * time.Hour)
	for i := range kvbatch.MaxMatching + 10 {
		add(fmt.Sprintf("burst-%04d", i), "alice", "native", burst.Add(time.Duration(i)*time.Millisecond))
	}
	spread := []time.Duration{0, time.Second, time.Minute, 90 * time.Second, time.Hour, 25 * time.Hour, 26 * time.Hour}
	for i, d := range spread {
		add(fmt.Sprintf("spread-%d", i), "alice", []string{"native", "rebilly"}[i%2], t0.Add(d))
		add(fmt.Sprintf("bob-%d", i), "bob", "native", t0.Add(d))
	}
	for i := len(spread) - 1; i >= 0; i-- {
		want = append(want, fmt.Sprintf("spread-%d", i))
	}
	for i := kvbatch.MaxMatching + 9; i >= 0; i-- {
		want = append(want, fmt.Sprintf("burst-%04d", i))
	}

	for _, limit := range []int{1, 3, 100, 1000, 5000} {
		var got []string
		after := ""
		for n := 0; ; n++ {
			require.Less(t, n, len(want)+2, "the cursor must move")
			page, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, After: after, Limit: limit})
			require.NoError(t, err)
			require.Equal(t, len(want), page.Total)
			require.LessOrEqual(t, len(page.Jobs), limit)
			got = append(got, ids(page.Jobs)...)
			if page.Next == "" {
				break
			}
			after = page.Next
			if limit == 1 && len(got) == 12 {
				break // far enough into the burst
			}
		}
		if limit == 1 {
			assert.Equal(t, want[:12], got)
			continue
		}
		assert.Equal(t, want, got, "limit %d", limit)
	}

	// More than one direct get's worth: the summaries are read bucket by
	// bucket.
	sums, err := store.Summaries(ctx, jobstore.Scope{Owner: "alice"}, nil)
	require.NoError(t, err)
	assert.Equal(t, want, ids(sums))

	rebilly, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice", Dialect: "rebilly"}, Limit: 2})
	require.NoError(t, err)
	assert.Equal(t, []string{"spread-5", "spread-3"}, ids(rebilly.Jobs))
	next, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice", Dialect: "rebilly"}, After: rebilly.Next, Limit: 2})
	require.NoError(t, err)
	assert.Equal(t, []string{"spread-1"}, ids(next.Jobs))
	assert.Empty(t, next.Next)
	bob, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "bob"}, Limit: 3})
	require.NoError(t, err)
	assert.Equal(t, []string{"bob-6", "bob-5", "bob-4"}, ids(bob.Jobs))
	assert.Equal(t, len(spread), bob.Total)
}

// TestFindPagesThroughABusyMinute pages through an owner whose jobs
// crowd one minute (a burst of creates, many in the same second) between
// quieter ones, and checks that pages of every size join up to her jobs
// exactly, newest first, also when a store that never read the minute
// goes on from a cursor, and that a page reads about what it holds, not
// the whole minute: fewer messages than the minute's entries.
func TestFindPagesThroughABusyMinute(t *testing.T) {
	store, _, srv := newStore(t)
	ctx := t.Context()
	type job struct {
		id  string
		sec int
	}
	var jobs []job
	const busy = 300
	for i := range busy {
		// Six a second, their ids in another order than their creates.
		jobs = append(jobs, job{fmt.Sprintf("busy-%03d", (i*7)%busy), 3600 + i/6})
	}
	for i := range 20 {
		jobs = append(jobs, job{fmt.Sprintf("before-%02d", i), 3540 + i})
	}
	for i := range 10 {
		jobs = append(jobs, job{fmt.Sprintf("after-%02d", i), 3660 + i})
	}
	for _, j := range jobs {
		require.NoError(t, create(ctx, store, scoped(j.id, "alice", "native", "", exportv1.JobKind_JOB_KIND_ROOM, j.sec)))
	}
	for i := range 100 {
		require.NoError(t, create(ctx, store, scoped(fmt.Sprintf("bob-%03d", i), "bob", "native", "", exportv1.JobKind_JOB_KIND_ROOM, 3600+i/2)))
	}
	slices.SortFunc(jobs, func(a, b job) int {
		if c := cmp.Compare(b.sec, a.sec); c != 0 {
			return c
		}
		return cmp.Compare(b.id, a.id)
	})
	var want []string
	for _, j := range jobs {
		want = append(want, j.id)
	}

	nc := srv.JS.Conn()
	for _, limit := range []int{7, 25, 100} {
		var got []string
		var cursors []string
		after := ""
		for n := 0; ; n++ {
			require.Less(t, n, len(want)+2, "the cursor must move")
			before := nc.Stats().InMsgs
			page, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, After: after, Limit: limit})
			require.NoError(t, err)
			assert.Less(t, nc.Stats().InMsgs-before, uint64(busy), "messages read for a page of %d after %d jobs", limit, len(got))
			require.Equal(t, len(want), page.Total)
			require.LessOrEqual(t, len(page.Jobs), limit)
			got = append(got, ids(page.Jobs)...)
			if page.Next == "" {
				break
			}
			after = page.Next
			cursors = append(cursors, after)
		}
		require.Equal(t, want, got, "limit %d", limit)

		// Another replica, which has not read the minute, goes on from
		// a cursor in its middle to the same jobs.
		other, err := jobstore.Open(ctx, srv.JS)
		require.NoError(t, err)
		mid := cursors[len(cursors)/2]
		var rest []string
		for after := mid; after != ""; {
			page, err := other.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, After: after, Limit: limit})
			require.NoError(t, err)
			rest = append(rest, ids(page.Jobs)...)
			after = page.Next
		}
		assert.Equal(t, want[(len(cursors)/2+1)*limit:], rest, "limit %d from cursor %d", limit, len(cursors)/2)
	}

	all, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}})
	require.NoError(t, err)
	assert.Equal(t, want, ids(all.Jobs))
	sums, err := store.Summaries(ctx, jobstore.Scope{Owner: "alice"}, nil)
	require.NoError(t, err)
	assert.Equal(t, want, ids(sums))
}

func TestUnfinishedFollowsTheJobs(t *testing.T) {
	store, _, _ := newStore(t)
	ctx := t.Context()
	user := exportv1.JobKind_JOB_KIND_USER_DATA
	for i, owner := range []string{"alice", "bob", "alice", "carol"} {
		require.NoError(t, create(ctx, store, scoped(fmt.Sprintf("u-%d", i), owner, "rocketchat", "", user, i)))
	}
	require.NoError(t, create(ctx, store, scoped("room-0", "alice", "rocketchat", "", exportv1.JobKind_JOB_KIND_ROOM, 9)))

	mine, err := store.Unfinished(ctx, "alice", 0)
	require.NoError(t, err)
	assert.Equal(t, []string{"u-0", "u-2", "room-0"}, ids(mine), "oldest first")
	running, err := store.Unfinished(ctx, "", user)
	require.NoError(t, err)
	assert.Equal(t, []string{"u-0", "u-1", "u-2", "u-3"}, ids(running))

	_, err = store.Apply(ctx, completed("u-0", 20))
	require.NoError(t, err)
	_, err = store.Apply(ctx, canceled("u-1", 21))
	require.NoError(t, err)
	mine, err = store.Unfinished(ctx, "alice", user)
	require.NoError(t, err)
	assert.Equal(t, []string{"u-2"}, ids(mine))
	running, err = store.Unfinished(ctx, "", 0)
	require.NoError(t, err)
	assert.Equal(t, []string{"u-2", "u-3", "room-0"}, ids(running))
	all, err := store.List(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, []string{"room-0", "u-2", "u-0"}, ids(all), "ended jobs stay listed")
}

// TestStaleEntriesAreIgnoredAndRepaired writes the entries a crash would
// leave behind: one for a job that was never written and the unfinished
// ones of a job that ended.
func TestStaleEntriesAreIgnoredAndRepaired(t *testing.T) {
	_, _, srv := newStore(t)
	ctx := t.Context()
	now := t0.Add(time.Hour)
	store, err := jobstore.Open(ctx, srv.JS, jobstore.WithClock(func() time.Time { return now }))
	require.NoError(t, err)
	index, err := srv.JS.KeyValue(ctx, bus.BucketJobIndex)
	require.NoError(t, err)

	require.NoError(t, create(ctx, store, newJob("ended", "alice")))
	before, err := index.Keys(ctx)
	require.NoError(t, err)
	_, err = store.Apply(ctx, completed("ended", 5))
	require.NoError(t, err)
	// The crash: the unfinished entries come back after the job ended.
	for _, k := range before {
		if strings.HasPrefix(k, "act.") || strings.HasPrefix(k, "run.") {
			_, err := index.Put(ctx, k, nil)
			require.NoError(t, err)
		}
	}
	// A create that wrote its entries and died before the job: copy the
	// ended job's owner entry under another id.
	var ghost string
	for _, k := range before {
		if strings.HasPrefix(k, "own.") && strings.HasSuffix(k, ".ended") {
			ghost = k[:len(k)-len("ended")] + "ghost"
		}
	}
	require.NotEmpty(t, ghost)
	_, err = index.Put(ctx, ghost, nil)
	require.NoError(t, err)

	unfinished, err := store.Unfinished(ctx, "alice", 0)
	require.NoError(t, err)
	assert.Empty(t, unfinished)
	unfinished, err = store.Unfinished(ctx, "", 0)
	require.NoError(t, err)
	assert.Empty(t, unfinished)
	list, err := store.List(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, []string{"ended"}, ids(list))

	after, err := index.Keys(ctx)
	require.NoError(t, err)
	var entries []string
	for _, k := range after {
		if strings.HasSuffix(k, ".ended") || strings.HasSuffix(k, ".ghost") {
			entries = append(entries, k)
		}
	}
	assert.Len(t, entries, 1, "the stale entries were purged, the owner entry stays: %v", after)
	assert.True(t, strings.HasPrefix(entries[0], "own."), entries)
}

// TestBuildIndexMigratesTheOldLayout writes jobs the way a gateway without
// the index did (straight into the jobs bucket) and checks that the
// one-time build at start makes them listable, once, with replicas
// racing, and that a request replayed from the stream indexes its job too.
func TestBuildIndexMigratesTheOldLayout(t *testing.T) {
	_, kv, srv := newStore(t)
	ctx := t.Context()
	var want []string
	var wantOrg []string
	for i := range 40 {
		j := newJob(fmt.Sprintf("old-%02d", i), []string{"alice", "bob"}[i%2])
		j.CreatedAt = at(i)
		if i%3 == 0 {
			j.Dialect, j.OrganizationId = "rebilly", "acme"
			wantOrg = append([]string{j.GetId()}, wantOrg...)
		}
		if i%4 == 0 {
			j.State = exportv1.JobState_JOB_STATE_COMPLETED
		}
		data, err := proto.Marshal(j)
		require.NoError(t, err)
		_, err = kv.Create(ctx, j.GetId(), data)
		require.NoError(t, err)
		if i%2 == 0 {
			want = append([]string{j.GetId()}, want...)
		}
	}
	// A deployment indexed in the earlier layouts: v1 owner entries
	// without day and minute, v2 organization entries without summaries,
	// and their markers. None of it lists in this layout, and it does not
	// stop the build.
	index, err := srv.JS.KeyValue(ctx, bus.BucketJobIndex)
	require.NoError(t, err)
	putOldLayout(t, index, 10)
	_, err = index.Put(ctx, "meta.built", []byte("2026-01-01T00:00:00Z"))
	require.NoError(t, err)
	_, err = index.Put(ctx, "meta.built.v2", []byte("2026-02-01T00:00:00Z"))
	require.NoError(t, err)
	replicas := make([]*jobstore.Store, 2)
	for i := range replicas {
		var err error
		replicas[i], err = jobstore.Open(ctx, srv.JS)
		require.NoError(t, err)
	}
	before, err := replicas[0].List(ctx, "alice")
	require.NoError(t, err)
	assert.Empty(t, before, "the old layout has no index")
	// One job the new write path indexed before the build: it must not be
	// counted twice.
	_, err = replicas[0].Apply(ctx, requested(mustJob(t, kv, "old-38")))
	require.NoError(t, err)

	var wg sync.WaitGroup
	builtBy := make([]bool, len(replicas))
	for i, r := range replicas {
		wg.Go(func() {
			var err error
			builtBy[i], err = r.BuildIndex(ctx)
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	assert.Contains(t, builtBy, true)
	again, err := replicas[1].BuildIndex(ctx)
	require.NoError(t, err)
	assert.False(t, again, "the build runs once per deployment")

	for _, r := range replicas {
		got, err := r.List(ctx, "alice")
		require.NoError(t, err)
		assert.Equal(t, want, ids(got))
		// Pages and the total, as GET /v1/exports reads them.
		var paged []string
		after := ""
		for n := 0; n < 10; n++ {
			page, err := r.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, After: after, Limit: 7})
			require.NoError(t, err)
			assert.Equal(t, 20, page.Total, "each job counted once")
			paged = append(paged, ids(page.Jobs)...)
			if after = page.Next; after == "" {
				break
			}
		}
		assert.Equal(t, want, paged)
	}
	// An administrator's view: the organization's summaries, from its
	// entries alone.
	org, err := replicas[1].Summaries(ctx, jobstore.Scope{Dialect: "rebilly", Organization: "acme"}, nil)
	require.NoError(t, err)
	assert.Equal(t, wantOrg, ids(org))
	orgPage, err := replicas[0].Find(ctx, jobstore.Query{Scope: jobstore.Scope{Dialect: "rebilly", Organization: "acme"}})
	require.NoError(t, err)
	assert.Equal(t, wantOrg, ids(orgPage.Jobs))
	unfinished, err := replicas[0].Unfinished(ctx, "bob", 0)
	require.NoError(t, err)
	assert.Len(t, unfinished, 20)
	unfinished, err = replicas[0].Unfinished(ctx, "alice", 0)
	require.NoError(t, err)
	assert.Len(t, unfinished, 10, "completed jobs hold no unfinished entry")

	// A job an old gateway creates after the build is indexed when its
	// request comes back through the projection.
	late := newJob("late", "alice")
	late.CreatedAt = at(100)
	data, err := proto.Marshal(late)
	require.NoError(t, err)
	_, err = kv.Create(ctx, "late", data)
	require.NoError(t, err)
	_, err = replicas[0].Apply(ctx, requested(late))
	require.NoError(t, err)
	got, err := replicas[1].List(ctx, "alice")
	require.NoError(t, err)
	assert.Equal(t, append([]string{"late"}, want...), ids(got))
	page, err := replicas[1].Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, Limit: 1})
	require.NoError(t, err)
	assert.Equal(t, 21, page.Total)
	assert.Equal(t, []string{"late"}, ids(page.Jobs))
}

// putOldLayout writes n entries of each earlier layout for jobs old-00
// ... of alice in acme: v1 owner entries (seven tokens) and v1/v2
// organization entries (five tokens, the timestamp fourth).
func putOldLayout(t *testing.T, index jetstream.KeyValue, n int) []string {
	t.Helper()
	alice, acme := sha256.Sum256([]byte("alice")), sha256.Sum256([]byte("acme"))
	var keys []string
	for i := range n {
		keys = append(keys, fmt.Sprintf("own.%x.-.-.-.%019d.old-%02d", alice[:16], i, i),
			fmt.Sprintf("org.rebilly.%x.%019d.old-%02d", acme[:16], i, i))
	}
	for _, k := range keys {
		_, err := index.Put(t.Context(), k, nil)
		require.NoError(t, err)
	}
	return keys
}

func mustJob(t *testing.T, kv jetstream.KeyValue, id string) *exportv1.Job {
	t.Helper()
	e, err := kv.Get(t.Context(), id)
	require.NoError(t, err)
	job := &exportv1.Job{}
	require.NoError(t, proto.Unmarshal(e.Value(), job))
	return job
}

// TestSummariesFollowTheJobs checks that an owner's summaries are those
// of the jobs as stored, after every kind of write, for jobs created,
// replayed and migrated, and that an entry without a summary (a create
// that died between its entry and its job) is read from its job.
func TestSummariesFollowTheJobs(t *testing.T) {
	store, kv, srv := newStore(t)
	ctx := t.Context()
	for i := range 6 {
		require.NoError(t, create(ctx, store, scoped(fmt.Sprintf("s-%d", i), "alice", "rebilly", "acme", exportv1.JobKind_JOB_KIND_RECORDS, i)))
	}
	require.NoError(t, create(ctx, store, scoped("other", "bob", "rebilly", "acme", exportv1.JobKind_JOB_KIND_RECORDS, 3)))
	for _, ev := range []jobstore.Event{queued("s-1", 10), progress("s-1", 11, 50, 123), completed("s-2", 12), failed("s-3", 13, true)} {
		_, err := store.Apply(ctx, ev)
		require.NoError(t, err)
	}
	// Migrated: a job straight in the bucket, indexed by BuildIndex.
	old := scoped("s-old", "alice", "rebilly", "acme", exportv1.JobKind_JOB_KIND_RECORDS, 7)
	data, err := proto.Marshal(old)
	require.NoError(t, err)
	_, err = kv.Create(ctx, old.GetId(), data)
	require.NoError(t, err)
	_, err = store.BuildIndex(ctx)
	require.NoError(t, err)
	// The summary of s-4 lost: its entry back to empty.
	index, err := srv.JS.KeyValue(ctx, bus.BucketJobIndex)
	require.NoError(t, err)
	keys, err := index.Keys(ctx)
	require.NoError(t, err)
	for _, k := range keys {
		if strings.HasPrefix(k, "own.") && strings.HasSuffix(k, ".s-4") {
			_, err := index.Put(ctx, k, nil)
			require.NoError(t, err)
		}
	}

	got, err := store.Summaries(ctx, jobstore.Scope{Owner: "alice", Dialect: "rebilly", Organization: "acme"}, nil)
	require.NoError(t, err)
	want := []string{"s-old", "s-5", "s-4", "s-3", "s-2", "s-1", "s-0"}
	require.Equal(t, want, ids(got))
	for _, sum := range got {
		job, err := store.Get(ctx, sum.GetId())
		require.NoError(t, err)
		assert.True(t, proto.Equal(jobstore.Summary(job), sum), "%s: %v, want %v", sum.GetId(), sum, jobstore.Summary(job))
	}
	kept, err := store.Summaries(ctx, jobstore.Scope{Owner: "alice"}, func(j *exportv1.Job) bool { return j.GetState() == exportv1.JobState_JOB_STATE_COMPLETED })
	require.NoError(t, err)
	assert.Equal(t, []string{"s-2"}, ids(kept))
	org, err := store.Summaries(ctx, jobstore.Scope{Dialect: "rebilly", Organization: "acme"}, nil)
	require.NoError(t, err)
	assert.Len(t, org, 8)
}

// TestSummariesEndWithTheLastRevision: appliers of one job's events in two
// replicas race to write its summary. However their writes interleave,
// the owner and organization entries end with the summary of the job's
// last revision, and they are stored without headers, which every
// listing would otherwise pay for on each entry it reads.
func TestSummariesEndWithTheLastRevision(t *testing.T) {
	store, kv, srv := newStore(t)
	ctx := t.Context()
	index, err := srv.JS.KeyValue(ctx, bus.BucketJobIndex)
	require.NoError(t, err)
	other := jobstore.New(srv.JS, kv, index)
	job := scoped("raced", "alice", "rebilly", "acme", exportv1.JobKind_JOB_KIND_RECORDS, 1)
	require.NoError(t, create(ctx, store, job))
	_, err = store.Apply(ctx, queued("raced", 2))
	require.NoError(t, err)
	var g errgroup.Group
	for w := range 8 {
		s := store
		if w%2 == 1 {
			s = other
		}
		g.Go(func() error {
			for i := w; i < 64; i += 8 {
				if _, err := s.Apply(ctx, progress("raced", 3+i, uint32(i), uint64(100+i))); err != nil {
					return err
				}
			}
			return nil
		})
	}
	require.NoError(t, g.Wait())

	final, err := store.Get(ctx, "raced")
	require.NoError(t, err)
	got, err := store.Summaries(ctx, jobstore.Scope{Owner: "alice"}, nil)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.True(t, proto.Equal(jobstore.Summary(final), got[0]), "owner entry: %v, want %v", got[0], jobstore.Summary(final))
	org, err := store.Summaries(ctx, jobstore.Scope{Dialect: "rebilly", Organization: "acme"}, nil)
	require.NoError(t, err)
	require.Len(t, org, 1)
	assert.True(t, proto.Equal(jobstore.Summary(final), org[0]), "organization entry: %v, want %v", org[0], jobstore.Summary(final))

	stream, err := srv.JS.Stream(ctx, "KV_"+bus.BucketJobIndex)
	require.NoError(t, err)
	keys, err := index.Keys(ctx)
	require.NoError(t, err)
	entries := 0
	for _, k := range keys {
		if !strings.HasSuffix(k, ".raced") || !(strings.HasPrefix(k, "own.") || strings.HasPrefix(k, "org.")) {
			continue
		}
		entries++
		msg, err := stream.GetLastMsgForSubject(ctx, "$KV."+bus.BucketJobIndex+"."+k)
		require.NoError(t, err)
		for h := range msg.Header {
			// The direct get answers with the message's stream,
			// subject, sequence and time; anything else was stored.
			switch h {
			case jetstream.StreamHeader, jetstream.SubjectHeader, jetstream.SequenceHeader, jetstream.TimeStampHeaer:
			default:
				t.Errorf("entry %s is stored with header %s", k, h)
			}
		}
	}
	assert.Equal(t, 2, entries, "the owner and the organization entry")
}

// TestLatestFindsTheNewestMatchWalkingBack: Latest answers the newest of
// an owner's jobs of a kind that keep accepts, from the newest day back,
// whatever other kinds and owners are in between, through a day that
// holds more entries than one direct get answers.
func TestLatestFindsTheNewestMatchWalkingBack(t *testing.T) {
	store, _, _ := newStore(t)
	ctx := t.Context()
	user := exportv1.JobKind_JOB_KIND_USER_DATA
	add := func(id, owner string, kind exportv1.JobKind, full bool, ts time.Time) {
		j := scoped(id, owner, "rocketchat", "", kind, 0)
		j.CreatedAt, j.FullExport = timestamppb.New(ts), full
		require.NoError(t, create(ctx, store, j))
	}
	add("full-old", "alice", user, true, t0.Add(-72*time.Hour))
	add("html-old", "alice", user, false, t0.Add(-71*time.Hour))
	// A busy day: more of alice's user-data entries than one direct get
	// answers, over several minutes.
	busy := t0.Add(-48 * time.Hour)
	for i := range kvbatch.MaxMatching + 10 {
		add(fmt.Sprintf("busy-%04d", i), "alice", user, false, busy.Add(time.Duration(i)*100*time.Millisecond))
	}
	// The newest day holds only other kinds and other owners.
	for i := range 5 {
		add(fmt.Sprintf("room-%d", i), "alice", exportv1.JobKind_JOB_KIND_ROOM, false, t0.Add(time.Duration(i)*time.Minute))
		add(fmt.Sprintf("bob-%d", i), "bob", user, true, t0.Add(time.Duration(i)*time.Minute))
	}

	scope := jobstore.Scope{Owner: "alice", Kind: user}
	full := func(want bool) func(*exportv1.Job) bool {
		return func(j *exportv1.Job) bool { return j.GetFullExport() == want }
	}
	got, err := store.Latest(ctx, scope, full(false))
	require.NoError(t, err)
	require.NotNil(t, got)
	assert.Equal(t, fmt.Sprintf("busy-%04d", kvbatch.MaxMatching+9), got.GetId())
	assert.Equal(t, exportv1.JobState_JOB_STATE_PENDING, got.GetState(), "the job itself, not its summary")

	got, err = store.Latest(ctx, scope, full(true))
	require.NoError(t, err)
	require.NotNil(t, got)
	assert.Equal(t, "full-old", got.GetId(), "bob's newer full exports are not alice's")

	got, err = store.Latest(ctx, jobstore.Scope{Owner: "alice", Kind: exportv1.JobKind_JOB_KIND_RECORDS}, full(false))
	require.NoError(t, err)
	assert.Nil(t, got)
	got, err = store.Latest(ctx, jobstore.Scope{Owner: "nobody", Kind: user}, full(false))
	require.NoError(t, err)
	assert.Nil(t, got)

	// A summary lags its job only for a moment; what Latest answers is
	// the job as stored.
	_, err = store.Apply(ctx, completed("full-old", 10))
	require.NoError(t, err)
	got, err = store.Latest(ctx, scope, full(true))
	require.NoError(t, err)
	assert.Equal(t, exportv1.JobState_JOB_STATE_COMPLETED, got.GetState())

	_, err = store.Latest(ctx, jobstore.Scope{Dialect: "rebilly", Organization: "acme"}, full(false))
	assert.Error(t, err, "Latest is for one owner's jobs")
}

// TestUnfinishedBeforeCountsTheQueue: the queue ahead of a job is every
// owner's unfinished jobs of its kind created before it; ended jobs and
// other kinds do not count.
func TestUnfinishedBeforeCountsTheQueue(t *testing.T) {
	store, _, _ := newStore(t)
	ctx := t.Context()
	user := exportv1.JobKind_JOB_KIND_USER_DATA
	for i, owner := range []string{"alice", "bob", "alice", "carol"} {
		require.NoError(t, create(ctx, store, scoped(fmt.Sprintf("u-%d", i), owner, "rocketchat", "", user, i)))
	}
	require.NoError(t, create(ctx, store, scoped("room-0", "alice", "rocketchat", "", exportv1.JobKind_JOB_KIND_ROOM, 0)))
	count := func(sec int) int {
		t.Helper()
		n, err := store.UnfinishedBefore(ctx, user, at(sec).AsTime())
		require.NoError(t, err)
		return n
	}
	assert.Equal(t, 0, count(0), "nothing before the first")
	assert.Equal(t, 2, count(2), "u-0 and u-1")
	assert.Equal(t, 4, count(100))

	_, err := store.Apply(ctx, completed("u-0", 20))
	require.NoError(t, err)
	_, err = store.Apply(ctx, canceled("u-1", 21))
	require.NoError(t, err)
	assert.Equal(t, 0, count(2), "ended jobs leave the queue")
	assert.Equal(t, 2, count(100))
	n, err := store.UnfinishedBefore(ctx, exportv1.JobKind_JOB_KIND_ROOM, at(100).AsTime())
	require.NoError(t, err)
	assert.Equal(t, 1, n)
}

// TestConcurrentCreatesOfOneOwnerAreAllCounted: every create of one owner
// adds to the owner's counter, so a burst of them contends for it. Each
// job is asked for several times at once (a client retrying, a second
// replica applying the same request), as the bench's fill and a burst of
// scheduled runs do; every job must be created once, counted once and
// listed once.
func TestConcurrentCreatesOfOneOwnerAreAllCounted(t *testing.T) {
	store, _, _ := newStore(t)
	ctx := t.Context()
	const jobs, repeats = 200, 3
	var g errgroup.Group
	var mu sync.Mutex
	created := map[string]int{}
	for i := range jobs * repeats {
		g.Go(func() error {
			j := scoped(fmt.Sprintf("burst-%03d", i%jobs), "alice", "native", "", exportv1.JobKind_JOB_KIND_ROOM, i%jobs)
			// Like the bench's fill: a create that failed is tried
			// again, and one that finds its job created by a twin is
			// done.
			var err error
			for range 5 {
				if err = create(ctx, store, j); err == nil || errors.Is(err, jobstore.ErrExists) {
					break
				}
			}
			if err == nil {
				mu.Lock()
				created[j.GetId()]++
				mu.Unlock()
				return nil
			}
			if errors.Is(err, jobstore.ErrExists) {
				return nil
			}
			return err
		})
	}
	require.NoError(t, g.Wait())
	assert.Len(t, created, jobs)
	for id, n := range created {
		assert.Equal(t, 1, n, "job %s created by one request", id)
	}
	page, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, Limit: 1})
	require.NoError(t, err)
	assert.Equal(t, jobs, page.Total, "the counter")
	all, err := store.List(ctx, "alice")
	require.NoError(t, err)
	want := make([]string, jobs)
	for i := range jobs {
		want[jobs-1-i] = fmt.Sprintf("burst-%03d", i)
	}
	assert.Equal(t, want, ids(all), "the index lists every job once, newest first")
}

// TestCounterAddsTheEarlierSingleKey: a deployment upgraded from a
// version that counted an owner's jobs in one key keeps that count; the
// jobs created since add to it.
func TestCounterAddsTheEarlierSingleKey(t *testing.T) {
	store, _, srv := newStore(t)
	ctx := t.Context()
	index, err := srv.JS.KeyValue(ctx, bus.BucketJobIndex)
	require.NoError(t, err)
	alice := sha256.Sum256([]byte("alice"))
	_, err = index.Put(ctx, fmt.Sprintf("cnt.%x", alice[:16]), []byte("40"))
	require.NoError(t, err)
	for i := range 3 {
		require.NoError(t, create(ctx, store, scoped(fmt.Sprintf("new-%d", i), "alice", "native", "", exportv1.JobKind_JOB_KIND_ROOM, i)))
	}
	page, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}, Limit: 1})
	require.NoError(t, err)
	assert.Equal(t, 43, page.Total)
}

// TestListingsWaitForASlot: with one listing at a time, a listing asked
// for while another runs waits, and gives up when its context ends; once
// the first is done the next runs.
func TestListingsWaitForASlot(t *testing.T) {
	srv := bustest.Start(t)
	ctx := t.Context()
	store, err := jobstore.Open(ctx, srv.JS, jobstore.WithConcurrentListings(1))
	require.NoError(t, err)
	require.NoError(t, create(ctx, store, scoped("a-1", "alice", "rebilly", "acme", exportv1.JobKind_JOB_KIND_RECORDS, 1)))

	inside, release := make(chan struct{}), make(chan struct{})
	var g errgroup.Group
	g.Go(func() error {
		return store.EachSummary(ctx, jobstore.Scope{Owner: "alice"}, func(*exportv1.Job) error {
			close(inside)
			<-release
			return nil
		})
	})
	<-inside
	gone, cancel := context.WithCancel(ctx)
	cancel()
	_, err = store.Find(gone, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}})
	require.ErrorIs(t, err, context.Canceled, "the one slot is taken")
	close(release)
	require.NoError(t, g.Wait())
	page, err := store.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}})
	require.NoError(t, err)
	assert.Equal(t, []string{"a-1"}, ids(page.Jobs))
}
