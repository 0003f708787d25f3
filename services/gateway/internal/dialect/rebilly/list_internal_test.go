package rebilly

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/links"
	"dataport.dev/shared/recordquery"
)

// testAPI is an API with links only: what rendering an item needs.
func testAPI() *API {
	return &API{links: links.New("https://dl.example", []byte("0123456789abcdef0123456789abcdef"), time.Hour, time.Now)}
}

// compareField is how the list compared two items by a field before it
// kept sort values (sortValue): the reference the selection's order is
// checked against.
func compareField(a, b item, f string) int {
	va, _ := itemValue(a, f)
	vb, _ := itemValue(b, f)
	switch x := va.(type) {
	case string:
		y, _ := vb.(string)
		return cmp.Compare(strings.ToLower(x), strings.ToLower(y))
	case float64:
		y, _ := vb.(float64)
		return cmp.Compare(x, y)
	case time.Time:
		y, _ := vb.(time.Time)
		return x.Compare(y)
	case []string:
		y, _ := vb.([]string)
		return cmp.Compare(strings.Join(x, ","), strings.Join(y, ","))
	case nil:
		if vb == nil {
			return 0
		}
		return -1
	}
	return 0
}

// TestSelectionListsAsTheSortedList checks the list's bounded selection
// against the list as it was first written: every item rendered, sorted
// stably with compareField and the id, schedules first and then the jobs
// newest first, and sliced at offset and limit. Exports are added in a
// shuffled order (as an organization's summaries stream), with many
// equal sort values, equal times and equal shown ids, for every sort key,
// both directions, several keys at once, and offsets and limits around
// and beyond the count.
func TestSelectionListsAsTheSortedList(t *testing.T) {
	d := testAPI()
	// u1 is shown its client ids: several exports share one.
	viewer := scope{user: &sourcev1.User{Id: "u1"}, base: "https://gw/organizations/acme/data-exports", org: "acme"}
	t0 := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	var entries []entry
	for i := range 6 {
		sched := &exportv1.Job{Id: fmt.Sprintf("sched-%d", i), OwnerId: "u1", Dialect: dialectName, OrganizationId: "acme",
			Name: []string{"Daily", "daily", "Weekly"}[i%3], Format: exportv1.Format_FORMAT_CSV,
			Records:   &exportv1.RecordsScope{Resource: "transactions"},
			CreatedAt: timestamppb.New(t0), UpdatedAt: timestamppb.New(t0.Add(time.Duration(i%2) * time.Hour)),
			Recurrence: &exportv1.Recurrence{Instruction: "FREQ=DAILY", Start: timestamppb.New(t0)}}
		if i%2 == 0 {
			sched.Recurrence.Next = timestamppb.New(t0.Add(24 * time.Hour))
		}
		if i == 5 {
			// Shown by the same id as a one-off export below.
			sched.ClientId = "client-3"
		}
		entries = append(entries, entry{job: sched, schedule: true})
	}
	states := []exportv1.JobState{exportv1.JobState_JOB_STATE_PENDING, exportv1.JobState_JOB_STATE_COMPLETED,
		exportv1.JobState_JOB_STATE_FAILED, exportv1.JobState_JOB_STATE_CANCELED}
	var jobs []*exportv1.Job
	for i := range 120 {
		j := &exportv1.Job{
			Id: fmt.Sprintf("job-%03d", i), OwnerId: []string{"u1", "u2", "U3"}[i%3], Dialect: dialectName, OrganizationId: "acme",
			Kind: exportv1.JobKind_JOB_KIND_RECORDS, Name: []string{"Export", "export", "Other", ""}[i%4],
			Format: []exportv1.Format{exportv1.Format_FORMAT_CSV, exportv1.Format_FORMAT_JSON}[i%2],
			State:  states[i%len(states)], CreatedAt: timestamppb.New(t0.Add(time.Duration(i%7) * time.Minute)),
			UpdatedAt: timestamppb.New(t0.Add(time.Duration(i%11) * time.Second)),
			Records:   &exportv1.RecordsScope{Resource: []string{"transactions", "customers"}[i%2]},
		}
		if i%5 == 0 {
			j.ClientId = fmt.Sprintf("client-%d", i%4)
			j.NotifyEmails = []string{"Ops@example.com"}
			j.Records.Fields = []string{"id", "Amount"}
		}
		if i%3 != 0 {
			j.Progress = &exportv1.Progress{Records: uint64(i % 9)}
		}
		jobs = append(jobs, jobstore.Summary(j))
	}
	// The first order: schedules, then the jobs newest first.
	slices.SortFunc(jobs, jobstore.NewestFirst)
	for _, j := range jobs {
		entries = append(entries, entry{job: j})
	}
	reference := func(keys []recordquery.SortKey, offset, limit int) []string {
		items := make([]item, len(entries))
		for i, e := range entries {
			items[i] = d.render(e, viewer, nil)
		}
		slices.SortStableFunc(items, func(a, b item) int {
			for _, k := range keys {
				c := compareField(a, b, k.Field)
				if k.Desc {
					c = -c
				}
				if c != 0 {
					return c
				}
			}
			return cmp.Compare(a.ID, b.ID)
		})
		lo := min(offset, len(items))
		var out []string
		for _, it := range items[lo : lo+min(limit, len(items)-lo)] {
			out = append(out, it.ID+" "+it.UpdatedTime+" "+it.Status)
		}
		return out
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var sorts [][]recordquery.SortKey
	for _, f := range itemFields {
		sorts = append(sorts, []recordquery.SortKey{{Field: f}}, []recordquery.SortKey{{Field: f, Desc: true}})
	}
	sorts = append(sorts,
		[]recordquery.SortKey{{Field: "createdTime", Desc: true}, {Field: "name"}},
		[]recordquery.SortKey{{Field: "status"}, {Field: "userId", Desc: true}, {Field: "recordCount"}},
		[]recordquery.SortKey{{Field: "scheduledTime"}, {Field: "emailNotification", Desc: true}})
	for _, keys := range sorts {
		for _, page := range [][2]int{{0, 100}, {0, 5}, {3, 7}, {120, 10}, {125, 1000}, {200, 5}, {0, 0}, {maxOffset, maxLimit}} {
			offset, limit := page[0], page[1]
			sel := newSelection(keys, offset+limit)
			order := rng.Perm(len(entries))
			for i, at := range order {
				e := entries[at]
				l := sel.listing(e, d.render(e, viewer, nil))
				if e.schedule {
					l.schedule = at
				}
				sel.add(l)
				if len(sel.kept) > min(offset+limit, i+1) {
					t.Fatalf("%v: %d kept of %d added for offset %d limit %d", keys, len(sel.kept), i+1, offset, limit)
				}
			}
			var got []string
			for _, e := range sel.page(offset) {
				it := d.render(e, viewer, nil)
				got = append(got, it.ID+" "+it.UpdatedTime+" "+it.Status)
			}
			if want := reference(keys, offset, limit); !slices.Equal(got, want) {
				t.Errorf("sort %v offset %d limit %d:\n got %q\nwant %q", keys, offset, limit, got, want)
			}
			if sel.total != len(entries) {
				t.Errorf("total %d, want %d", sel.total, len(entries))
			}
		}
	}
}

// TestSortValuesCompareAsCompareField: the sort values taken once per
// export order any two exports as compareField does.
func TestSortValuesCompareAsCompareField(t *testing.T) {
	s1, s2 := "2026-05-01T09:00:00Z", "2026-05-01T08:59:59Z"
	items := []item{
		{ID: "a", Name: "Export", Format: "csv", Status: "failed", RecordCount: 3, CreatedTime: s1, UpdatedTime: s2, ScheduledTime: &s1, Fields: []string{"A", "b"}, EmailNotification: []string{}},
		{ID: "B", Name: "export", Format: "json", Status: "completed", RecordCount: 12, CreatedTime: s2, UpdatedTime: s1, Fields: []string{"a"}, EmailNotification: []string{"x@y.z"}},
		{ID: "c", Name: "", Format: "csv", Status: "pending", CreatedTime: s1, UpdatedTime: s1, ScheduledTime: &s2, Fields: []string{}, EmailNotification: []string{"X@y.z"}},
		{ID: "c", Name: "Ä", Format: "xml", Status: "queued", RecordCount: 3, CreatedTime: "not a time", UpdatedTime: s1, Fields: []string{"a", "B"}, EmailNotification: []string{}},
	}
	for _, f := range itemFields {
		for _, a := range items {
			for _, b := range items {
				want := compareField(a, b, f)
				if got := sortValueOf(a, f).compare(sortValueOf(b, f)); got != want {
					t.Errorf("%s of %+v and %+v: %d, compareField %d", f, a, b, got, want)
				}
			}
		}
	}
}
