package rebilly_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/bus"
)

// TestListFromSummariesAnswersAsFromJobs lists a varied set of exports
// (every state, formats, resources, client ids, recipients, records
// counts, files, a schedule) with many queries, as each owner and as an
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

	queries := []string{"", "sort=name", "sort=-format,name&limit=3&offset=2", "filter=status:completed", "filter=status:failed,canceled&sort=-updatedTime",
		"filter=format:csv;resource:rooms", "sort=recordCount", "sort=-recordCount,createdTime&limit=4", "filter=recordCount:>150", "q=export%202",
		"q=MINE", "sort=emailNotification,-id", "filter=emailNotification:ops@example.com", "sort=scheduledTime&offset=5", "limit=0",
		"sort=-userId&expand=user", "sort=status", "offset=1000", "sort=updatedTime&limit=1&offset=7"}
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
