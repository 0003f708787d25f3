package plan_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/plan"
)

func ptr(s string) *string { return &s }

var now = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

// fields as two dialects name them: the same checks report each in the
// caller's words.
var (
	rebillyNames = plan.RecordsFields{Resource: "resource", Fields: "fields", Filter: "arguments.filter", Sort: "arguments.sort", DateRange: "dateRange"}
	nativeNames  = plan.RecordsFields{Resource: "records.resource", Fields: "records.fields", Filter: "records.filter", Sort: "records.sort", DateRange: "records.dateRange"}
)

func fieldsOf(bad []plan.Invalid) []string {
	var out []string
	for _, b := range bad {
		out = append(out, b.Field)
	}
	return out
}

func TestRecords(t *testing.T) {
	lim := plan.RecordsLimits{MaxFields: 2, MaxRows: 10, MaxBytes: 20}
	sc, bad, err := plan.Records(t.Context(), plan.Catalog{}, plan.RecordsRequest{Resource: ptr("events"), MaxRowsPerChunk: 5, GzipChunks: true,
		DateRange: &plan.DateRangeRequest{Start: ptr("-7 days"), End: ptr("today")}}, nativeNames, now, time.UTC, lim)
	require.NoError(t, err)
	require.Nil(t, bad)
	assert.NotEmpty(t, sc.GetFields(), "the resource's default columns")
	assert.EqualValues(t, 10, sc.GetMaxRows())
	assert.EqualValues(t, 20, sc.GetMaxBytes())
	assert.EqualValues(t, 5, sc.GetMaxRowsPerChunk())
	assert.True(t, sc.GetGzipChunks())
	assert.Equal(t, "createdTime", sc.GetDateRange().GetField())
	assert.Equal(t, now.AddDate(0, 0, -7), sc.GetDateRange().GetFrom().AsTime())

	cases := []struct {
		name   string
		req    plan.RecordsRequest
		names  plan.RecordsFields
		fields []string
	}{
		{"no resource", plan.RecordsRequest{}, rebillyNames, []string{"resource"}},
		{"unknown resource", plan.RecordsRequest{Resource: ptr("invoices")}, nativeNames, []string{"records.resource"}},
		{"too many fields", plan.RecordsRequest{Resource: ptr("events"), Fields: []string{"id", "appId", "revenue"}}, rebillyNames, []string{"fields"}},
		{"a field twice", plan.RecordsRequest{Resource: ptr("events"), Fields: []string{"id", "id"}}, nativeNames, []string{"records.fields"}},
		{"filter and sort", plan.RecordsRequest{Resource: ptr("events"), Filter: "nope:1", Sort: "nope"}, rebillyNames,
			[]string{"arguments.filter", "arguments.sort"}},
		{"reversed range", plan.RecordsRequest{Resource: ptr("events"), DateRange: &plan.DateRangeRequest{Start: ptr("today"), End: ptr("-1 day")}},
			nativeNames, []string{"records.dateRange.end"}},
		{"range without ends", plan.RecordsRequest{Resource: ptr("events"), DateRange: &plan.DateRangeRequest{Field: ptr("nope")}},
			rebillyNames, []string{"dateRange.field", "dateRange.start", "dateRange.end"}},
		{"range on a number", plan.RecordsRequest{Resource: ptr("events"), DateRange: &plan.DateRangeRequest{Start: ptr("today"), End: ptr("now"), Field: ptr("revenue")}},
			rebillyNames, []string{"dateRange.field"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sc, bad, err := plan.Records(t.Context(), plan.Catalog{}, tc.req, tc.names, now, time.UTC, lim)
			require.NoError(t, err)
			assert.Nil(t, sc)
			assert.Equal(t, tc.fields, fieldsOf(bad))
		})
	}
}

func TestEmailsAndRecurrence(t *testing.T) {
	got, bad := plan.Emails([]string{"a@example.com", "B <b@example.com>", "c@example.com"}, "notify.emails", 3)
	assert.Equal(t, []string{"a@example.com", "c@example.com"}, got)
	assert.Equal(t, []string{"notify.emails[1]"}, fieldsOf(bad))
	_, bad = plan.Emails([]string{"a@example.com", "b@example.com"}, "emailNotification", 1)
	assert.Equal(t, []string{"emailNotification"}, fieldsOf(bad))

	rec, bad := plan.Recurrence(ptr("FREQ=DAILY;BYHOUR=6"), nil, "recurring", now, time.Hour)
	require.Nil(t, bad)
	assert.Equal(t, time.Date(2026, 3, 11, 6, 0, 0, 0, time.UTC), rec.GetNext().AsTime())
	for _, tc := range []struct {
		instruction, start *string
		fields             []string
	}{
		{nil, nil, []string{"recurring.instruction"}},
		{ptr("FREQ=SOMETIMES"), nil, []string{"recurring.instruction"}},
		{ptr("FREQ=MINUTELY"), nil, []string{"recurring"}},
		{ptr("FREQ=DAILY"), ptr("tomorrow"), []string{"recurring.start"}},
	} {
		_, bad := plan.Recurrence(tc.instruction, tc.start, "recurring", now, time.Hour)
		assert.Equal(t, tc.fields, fieldsOf(bad))
	}
}

func TestRoomPlans(t *testing.T) {
	general := &sourcev1.Room{Id: "GENERAL", Name: "general", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL}
	direct := &sourcev1.Room{Id: "D1", Type: sourcev1.RoomType_ROOM_TYPE_DIRECT}
	job := &exportv1.Job{}
	from, to, err := plan.DateRange("2024-01-01", "2024-01-01")
	require.NoError(t, err)
	assert.Equal(t, 24*time.Hour-time.Millisecond, to.AsTime().Sub(from.AsTime()), "a plain date is its whole day")
	tasks := plan.RoomExport(job, general, from, to, ".html")
	require.Len(t, tasks, 1)
	assert.Equal(t, "general.html", tasks[0].GetTargetFile())
	assert.Equal(t, "general", job.GetParts()[0].GetRoomName())
	assert.Equal(t, "c", job.GetParts()[0].GetRoomType())
	_, _, err = plan.DateRange("2024-02-01", "2024-01-01")
	assert.Error(t, err)

	// A second room named like the first falls back to its id.
	twin := &sourcev1.Room{Id: "G2", Name: "general", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL}
	var targets []string
	for _, tk := range plan.DataDownload(&sourcev1.User{Id: "u"}, []*sourcev1.Room{general, twin, direct}, true, ".json") {
		targets = append(targets, tk.GetTargetFile())
	}
	assert.Equal(t, []string{"general.json", "G2.json", "D1.json", "user.json", "channels.json", "assets"}, targets)
}
