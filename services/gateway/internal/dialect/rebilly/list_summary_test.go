package rebilly_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/schedule"
	"dataport.dev/shared/bus"
)

// TestListFromSummariesAnswersAsFromJobs lists a varied set of exports
// (every state, formats, resources, client ids, recipients, records
// counts, files, a schedule with runs, deleted exports and a deleted run)
// with many queries (offsets within, at and past the count among them), as each owner and as an
// administrator of the organization (everyone's exports, from the
// organization's entries), then wipes the summaries from the owner and
// organization entries, so that the list reads every job in full, and checks
// that every answer and its Pagination-* headers are byte for byte the
// same: the index's summaries are those of the jobs as stored, after
// every kind of write. TestSummariesCarryEveryListedField shows that a
// summary filters, sorts and searches as its whole job does.
func TestListFromSummariesAnswersAsFromJobs(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	formats := []string{"csv", "json", "xml", "pdf"}
	resources := []string{"transactions", "users", "rooms", "events"}
	for i := range 16 {
		body := fmt.Sprintf(`{"name":"Export %d","resource":%q,"format":%q}`, i%5, resources[i%4], formats[(i/2)%4])
		if i%3 == 0 {
			body = fmt.Sprintf(`{"name":"Export %d","resource":%q,"format":%q,"emailNotification":["ops@example.com"]}`, i%5, resources[i%4], formats[(i/2)%4])
		}
		method, path := http.MethodPost, base
		if i%4 == 1 {
			method, path = http.MethodPut, base+fmt.Sprintf("/mine-%d", i)
		}
		r := e.do(t, method, path, key([]string{aliceKey, bobKey}[i%5/4]), body)
		require.Contains(t, []int{http.StatusCreated, http.StatusOK}, r.status, "%s", r.body)
	}
	r := e.do(t, http.MethodPost, base, key(aliceKey), `{"name":"Daily","resource":"events","format":"csv","recurring":{"instruction":"FREQ=DAILY","start":"2020-01-01T00:00:00Z"}}`)
	require.Equal(t, http.StatusCreated, r.status, "%s", r.body)

	// Two runs of the schedule: it shows the newer, and both are listed.
	daily := r.obj(t)["id"].(string)
	sched, _, err := e.sched.Get(ctx, daily)
	require.NoError(t, err)
	for _, h := range []int{1, 2} {
		occ := now.Add(time.Duration(h) * time.Hour)
		require.NoError(t, e.d.RunSchedule(ctx, sched, occ, schedule.RunID(daily, occ)))
	}

	page, err := e.jobs.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Owner: "alice"}})
	require.NoError(t, err)
	require.NotEmpty(t, page.Jobs)
	at := func(m int) *timestamppb.Timestamp { return timestamppb.New(now.Add(time.Duration(m) * time.Minute)) }
	for i, j := range page.Jobs {
		id := j.GetId()
		var evs []jobstore.Event
		switch i % 6 {
		case 1:
			evs = append(evs, &exportv1.ExportQueued{JobId: id, OccurredAt: at(i)})
		case 2:
			evs = append(evs, &exportv1.ExportProgress{JobId: id, OccurredAt: at(i), PartsTotal: 1, Progress: &exportv1.Progress{Percent: 30, Records: uint64(100 * i)}})
		case 3:
			evs = append(evs, &exportv1.ExportCompleted{JobId: id, OccurredAt: at(i), Files: []*exportv1.File{{Name: "export.csv", ObjectKey: "jobs/" + id + "/export.csv", Size: 10, Records: uint64(i)}}})
		case 4:
			evs = append(evs, &exportv1.ExportFailed{JobId: id, OccurredAt: at(i), Reason: "boom", Rejected: i%2 == 0})
		case 5:
			evs = append(evs, &exportv1.ExportCanceled{JobId: id, OccurredAt: at(i), Reason: "user asked"})
		}
		for _, ev := range evs {
			_, err := e.jobs.Apply(ctx, ev)
			require.NoError(t, err)
		}
	}

	// Deleted exports (a one-off export of each owner and a run) leave
	// every list and its count.
	var deleted []string
	for _, who := range []string{aliceKey, bobKey} {
		r := e.do(t, http.MethodGet, base+"?sort=id&limit=2", key(who), "")
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		var items []map[string]any
		require.NoError(t, json.Unmarshal([]byte(r.body), &items))
		require.Len(t, items, 2)
		id := items[1]["id"].(string)
		require.Equal(t, http.StatusNoContent, e.do(t, http.MethodDelete, base+"/"+id, key(who), "").status)
		deleted = append(deleted, id)
	}
	require.NoError(t, e.sched.Hide(ctx, schedule.RunID(daily, now.Add(time.Hour))))

	queries := []string{"", "sort=name", "sort=-format,name&limit=3&offset=2", "filter=status:completed", "filter=status:failed,canceled&sort=-updatedTime",
		"filter=format:csv;resource:rooms", "sort=recordCount", "sort=-recordCount,createdTime&limit=4", "filter=recordCount:>150", "q=export%202",
		"q=MINE", "sort=emailNotification,-id", "filter=emailNotification:ops@example.com", "sort=scheduledTime&offset=5", "limit=0",
		"sort=-userId&expand=user", "sort=status", "offset=1000", "sort=updatedTime&limit=1&offset=7",
		"offset=3&limit=2&sort=name", "filter=status:completed&offset=1&limit=2", "q=export&offset=2&limit=3&sort=-createdTime,name",
		"sort=-scheduledTime,id&offset=4&limit=4", "filter=status:pending,completed;format:csv&sort=-recordCount&offset=1",
		"q=daily", "filter=name:Daily&sort=-updatedTime", "sort=id&offset=3&limit=1000", "limit=1&offset=2147483648"}
	orgBase := "/experimental/organizations/acme/data-exports"
	answer := func() []string {
		var out []string
		for _, ask := range []struct{ who, path string }{{aliceKey, base}, {bobKey, base}, {adminKey, base}, {adminKey, orgBase}, {bobKey, orgBase}} {
			for _, q := range queries {
				r := e.do(t, http.MethodGet, ask.path+"?"+q, key(ask.who), "")
				require.Equal(t, http.StatusOK, r.status, "%s: %s", q, r.body)
				h := r.header
				out = append(out, fmt.Sprintf("%s %s %s\n%s %s %s\n%s", ask.who, ask.path, q, h.Get("Pagination-Total"), h.Get("Pagination-Limit"), h.Get("Pagination-Offset"), r.body))
			}
		}
		return out
	}
	fromSummaries := answer()
	for _, a := range fromSummaries {
		for _, id := range deleted {
			assert.NotContains(t, a, `"id":"`+id+`"`, "deleted exports are not listed")
		}
	}
	// Every owner's exports once: the count of the administrator's
	// organization-wide list is the sum of the owners', hidden ones left out.
	all := e.do(t, http.MethodGet, orgBase+"?limit=0", key(adminKey), "").header.Get("Pagination-Total")
	mine := e.do(t, http.MethodGet, base+"?limit=0", key(aliceKey), "").header.Get("Pagination-Total")
	bobs := e.do(t, http.MethodGet, base+"?limit=0", key(bobKey), "").header.Get("Pagination-Total")
	assert.Equal(t, all, fmt.Sprint(atoi(t, mine)+atoi(t, bobs)))
	// The administrator sees everyone's exports, more than any owner.
	require.Contains(t, fromSummaries[2*len(queries)], "bob")
	require.Contains(t, fromSummaries[2*len(queries)], "alice")

	index, err := e.nats.JS.KeyValue(ctx, bus.BucketJobIndex)
	require.NoError(t, err)
	keys, err := index.Keys(ctx)
	require.NoError(t, err)
	wiped := map[string]int{}
	for _, k := range keys {
		fam, _, _ := strings.Cut(k, ".")
		if fam == "own" && strings.Count(k, ".") == 8 || fam == "org" && strings.Count(k, ".") == 5 {
			_, err := index.Put(ctx, k, nil)
			require.NoError(t, err)
			wiped[fam]++
		}
	}
	require.Positive(t, wiped["own"])
	require.Equal(t, wiped["own"], wiped["org"], "every export is in its organization's entries")
	fromJobs := answer()
	for i := range fromJobs {
		assert.Equal(t, fromJobs[i], fromSummaries[i])
	}
}

// TestListOfManyExports lists more exports than one direct get or one
// batch of hidden marks holds, some of them deleted, as the
// organization's administrator (every owner's, streamed from the
// organization's entries) and as alice, who owns half of them (her
// owner entries, bucket by bucket), and checks each page and
// Pagination-Total against the exports as written: the bounded list
// counts every visible match and keeps the order of the sort keys, the
// id, and newest first.
func TestListOfManyExports(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	const n = 2600
	fillOrgOwned(t, e, n, time.Second, func(i int) string {
		if i%2 == 0 {
			return "alice"
		}
		return fmt.Sprintf("owner-%04d", i%1000)
	})
	_, err := e.jobs.BuildIndex(ctx)
	require.NoError(t, err)
	hidden := map[int]bool{}
	for i := 0; i < n; i += 13 {
		require.NoError(t, e.sched.Hide(ctx, fmt.Sprintf("org-%07d", i)))
		hidden[i] = true
	}
	// What the list must answer: export i as written by fillOrg, alice's
	// the even ones, completed too.
	type export struct {
		i    int
		name string
	}
	want := func(keep func(i int) bool, less func(a, b export) int, offset, limit int) (string, []string) {
		var all []export
		for i := range n {
			if keep(i) && !hidden[i] {
				all = append(all, export{i, fmt.Sprintf("Export %d", i%7)})
			}
		}
		slices.SortStableFunc(all, less)
		var ids []string
		for _, x := range all[min(offset, len(all)):min(offset+limit, len(all))] {
			ids = append(ids, fmt.Sprintf("org-%07d", x.i))
		}
		return fmt.Sprint(len(all)), ids
	}
	newest := func(a, b export) int { return b.i - a.i }
	byName := func(a, b export) int {
		if c := strings.Compare(strings.ToLower(a.name), strings.ToLower(b.name)); c != 0 {
			return c
		}
		return a.i - b.i
	}
	completed := func(i int) bool { return i%2 == 0 }
	every := func(int) bool { return true }
	for _, tc := range []struct {
		who, query    string
		keep          func(int) bool
		less          func(a, b export) int
		offset, limit int
	}{
		{adminKey, "limit=5&sort=-createdTime,name&filter=status:completed", completed, newest, 0, 5},
		{adminKey, "limit=7&offset=1100&sort=-createdTime", every, newest, 1100, 7},
		{adminKey, "limit=4&offset=3&sort=name", every, byName, 3, 4},
		{adminKey, "limit=1000&offset=1990&sort=name,createdTime", every, byName, 1990, 1000},
		{adminKey, "offset=2500&filter=status:failed", func(i int) bool { return i%2 == 1 }, newest, 2500, 100},
		{adminKey, "offset=2147483648&limit=1000", every, newest, 1 << 31, 1000},
		{aliceKey, "limit=6&offset=1200&sort=-name,-createdTime", every, func(a, b export) int { return -byName(a, b) }, 1200, 6},
		{aliceKey, "limit=3", completed, newest, 0, 3},
		{aliceKey, "limit=0&q=export%203", func(i int) bool { return i%2 == 0 && i%7 == 3 }, newest, 0, 0},
	} {
		r := e.do(t, http.MethodGet, base+"?"+tc.query, key(tc.who), "")
		require.Equal(t, http.StatusOK, r.status, "%s: %s", tc.query, r.body)
		keep := tc.keep
		if tc.who == aliceKey {
			keep = func(i int) bool { return i%2 == 0 && tc.keep(i) }
		}
		total, ids := want(keep, tc.less, tc.offset, tc.limit)
		var items []map[string]any
		require.NoError(t, json.Unmarshal([]byte(r.body), &items))
		var got []string
		for _, it := range items {
			got = append(got, it["id"].(string))
		}
		assert.Equal(t, total, r.header.Get("Pagination-Total"), "%s as %s", tc.query, tc.who)
		assert.Equal(t, ids, got, "%s as %s", tc.query, tc.who)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	require.NoError(t, err)
	return n
}
