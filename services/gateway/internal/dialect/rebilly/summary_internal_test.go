package rebilly

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/recordquery"
)

// TestSummariesCarryEveryListedField is the list's contract with
// jobstore.Summary: the list filters, sorts and searches items rendered
// from summaries, so every field those read must come out of a summary
// exactly as out of the whole job (and listedFields, what the list takes
// of every export, as render gives them), for one-off exports and for schedules
// with a run, in every state, with and without the optional fields.
func TestSummariesCarryEveryListedField(t *testing.T) {
	d := testAPI()
	viewers := []scope{
		{user: &sourcev1.User{Id: "u1"}, base: "https://gw/data-exports"},
		{user: &sourcev1.User{Id: "admin"}, base: "https://gw/organizations/acme/data-exports", org: "acme"},
	}
	t0 := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	states := []exportv1.JobState{exportv1.JobState_JOB_STATE_PENDING, exportv1.JobState_JOB_STATE_QUEUED,
		exportv1.JobState_JOB_STATE_PROCESSING, exportv1.JobState_JOB_STATE_FINALIZING, exportv1.JobState_JOB_STATE_COMPLETED,
		exportv1.JobState_JOB_STATE_FAILED, exportv1.JobState_JOB_STATE_REJECTED, exportv1.JobState_JOB_STATE_CANCELED}
	var jobs []*exportv1.Job
	for i := range 48 {
		j := &exportv1.Job{
			Id: fmt.Sprintf("job-%02d", i), OwnerId: []string{"u1", "u2"}[i%2], Dialect: dialectName, OrganizationId: "acme",
			Kind: exportv1.JobKind_JOB_KIND_RECORDS, Name: fmt.Sprintf("Export %d", i%7),
			Format: []exportv1.Format{exportv1.Format_FORMAT_CSV, exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_XML, exportv1.Format_FORMAT_PDF}[i%4],
			State:  states[i%len(states)], CreatedAt: timestamppb.New(t0.Add(time.Duration(i%5) * time.Minute)),
			UpdatedAt: timestamppb.New(t0.Add(time.Duration(i) * time.Minute)), TraceId: "trace", Error: "it broke",
			Records: &exportv1.RecordsScope{Resource: []string{"transactions", "customers", "invoices"}[i%3],
				Filter: "status:approved", Sort: "-createdTime", Q: "usd"},
		}
		if i%3 == 0 {
			j.ClientId = fmt.Sprintf("client-%d", i)
			j.NotifyEmails = []string{"ops@example.com"}
			j.Records.Fields = []string{"id", "amount"}
			j.Records.DateRange = &exportv1.DateRange{Start: "2026-01-01", End: "2026-02-01", Field: "createdTime"}
		}
		if i%4 != 0 {
			j.Progress = &exportv1.Progress{Percent: 40, Records: uint64(i * 10), Bytes: 999}
		}
		if j.GetState() == exportv1.JobState_JOB_STATE_COMPLETED {
			j.Files = []*exportv1.File{{Name: "export.csv", Size: 10}}
		}
		if i%5 == 0 {
			j.ParentId = "sched-1"
		}
		jobs = append(jobs, j)
	}
	sched := &exportv1.Job{Id: "sched-1", OwnerId: "u1", Dialect: dialectName, OrganizationId: "acme", Name: "Daily",
		Format: exportv1.Format_FORMAT_CSV, Records: &exportv1.RecordsScope{Resource: "transactions"},
		CreatedAt: timestamppb.New(t0), UpdatedAt: timestamppb.New(t0),
		Recurrence: &exportv1.Recurrence{Instruction: "FREQ=DAILY", Start: timestamppb.New(t0), Next: timestamppb.New(t0.Add(24 * time.Hour))}}

	var pairs [][2]entry
	for _, j := range jobs {
		pairs = append(pairs, [2]entry{{job: j}, {job: jobstore.Summary(j)}})
		if j.GetParentId() != "" {
			pairs = append(pairs, [2]entry{{job: sched, schedule: true, run: j}, {job: sched, schedule: true, run: jobstore.Summary(j)}})
		}
	}
	pairs = append(pairs, [2]entry{{job: sched, schedule: true}, {job: sched, schedule: true}})
	for _, v := range viewers {
		for _, p := range pairs {
			full, sum := d.render(p[0], v, nil), d.render(p[1], v, nil)
			// What the list takes of every export it considers.
			listed := listedFields(p[1], v)
			for _, f := range itemFields {
				a, aok := itemValue(full, f)
				b, bok := itemValue(sum, f)
				if aok != bok || !reflect.DeepEqual(a, b) || compareField(full, sum, f) != 0 {
					t.Errorf("%s as %s: %s is %v in the job, %v in its summary", full.ID, v.user.GetId(), f, a, b)
				}
				if c, cok := itemValue(listed, f); cok != bok || !reflect.DeepEqual(c, b) {
					t.Errorf("%s as %s: %s is %v in the listed fields, %v rendered", full.ID, v.user.GetId(), f, c, b)
				}
			}
			for _, q := range []string{"", "usd", "export 3", "csv", "completed", "u2", "client", "job-1"} {
				if matchText(full, q) != matchText(sum, q) {
					t.Errorf("%s: q=%q differs", full.ID, q)
				}
			}
			for _, expr := range []string{"status:completed", "format:csv,json;resource:invoices", "recordCount:>100", "userId:u2", "fields:id"} {
				f, err := recordquery.ParseFilter(expr)
				if err != nil {
					t.Fatal(err)
				}
				if filterMemo(f)(full) != filterMemo(f)(sum) {
					t.Errorf("%s: filter %q differs", full.ID, expr)
				}
			}
		}
	}
}

// TestCheapFieldsAreTheListedOnes pins what a list that filters and sorts
// only by cheap fields (cheapQuery) takes of an undecoded summary to what
// listedFields gives of the job: every value such a filter, sort or the
// order's tie-break reads, for the owner and for an administrator, with
// and without a client id.
func TestCheapFieldsAreTheListedOnes(t *testing.T) {
	viewers := []scope{
		{user: &sourcev1.User{Id: "u1"}, base: "https://gw/data-exports"},
		{user: &sourcev1.User{Id: "admin"}, base: "https://gw/organizations/acme/data-exports", org: "acme"},
	}
	t0 := time.Date(2026, 5, 1, 9, 0, 0, 500, time.UTC)
	for i := range 36 {
		j := &exportv1.Job{Id: fmt.Sprintf("job-%02d", i), OwnerId: []string{"u1", "u2"}[i%2], Dialect: dialectName, OrganizationId: "acme",
			State: exportv1.JobState(i % 9), CreatedAt: timestamppb.New(t0.Add(time.Duration(i%5) * time.Minute)),
			UpdatedAt: timestamppb.New(t0.Add(time.Duration(i) * time.Second))}
		if i%3 == 0 {
			j.ClientId = fmt.Sprintf("mine-%d", i)
		}
		if i == 5 {
			j.CreatedAt = nil
		}
		if i%4 == 1 {
			j.ParentId = "sched-1"
		}
		for _, v := range viewers {
			want := listedFields(entry{job: j}, v)
			got := cheapFields(jobstore.LazyOf(j), v, true)
			for _, f := range cheapFilterFields {
				var wk, gk []byte
				assert.Equal(t, string(appendFieldKey(wk, want, f)), string(appendFieldKey(gk, got, f)), "%s %s", j.GetId(), f)
			}
			for _, f := range cheapSortFields {
				assert.Equal(t, sortValueOf(want, f), sortValueOf(got, f), "%s %s", j.GetId(), f)
			}
			assert.Equal(t, want.ID, got.ID)
		}
	}
	for _, tc := range []struct {
		filter, sort, q string
		cheap, user     bool
	}{
		{"status:completed", "-createdTime", "", true, false},
		{"", "", "", true, false},
		{"userId:u1", "updatedTime,id", "", true, true},
		{"status:completed", "-userId", "", true, true},
		{"name:x", "-createdTime", "", false, false},
		{"status:completed", "recordCount", "", false, false},
		{"createdTime:2026-05-01T09:00:00Z", "", "", false, false},
		{"", "", "export", false, false},
	} {
		f, err := recordquery.ParseFilter(tc.filter)
		require.NoError(t, err)
		keys, err := recordquery.ParseSort(tc.sort)
		require.NoError(t, err)
		cheap, user := cheapQuery(f, keys, tc.q)
		assert.Equal(t, tc.cheap, cheap, "%+v", tc)
		assert.Equal(t, tc.user, user && cheap, "%+v", tc)
	}
}
