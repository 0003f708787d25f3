package rebilly_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/schedule"
)

// TestPutUpdatesAPendingExport: "a data export may be changed as long as
// it is still pending" (Rebilly's PUT /data-exports/{id}). An export no
// exporter has taken yet is updated under the same id; the list shows it
// once, with the new settings; it can be updated again and deleted.
func TestPutUpdatesAPendingExport(t *testing.T) {
	e := newEnv(t)
	created := e.do(t, http.MethodPost, base, key(aliceKey), csvBody)
	require.Equal(t, http.StatusCreated, created.status, "%s", created.body)
	id := created.obj(t)["id"].(string)
	old := e.getJob(t, id)
	require.LessOrEqual(t, old.GetState(), exportv1.JobState_JOB_STATE_QUEUED, "precondition: not started")

	changed := `{"name":"July, in JSON","resource":"transactions","format":"json","fields":["id","amount"],
	 "arguments":{"filter":"status:declined"},"emailNotification":["ops@example.com"],"dateRange":{"start":"-30 days","end":"today"}}`
	r := e.do(t, http.MethodPut, base+"/"+id, key(aliceKey), changed)
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	it := r.obj(t)
	assert.Equal(t, id, it["id"], "the same export")
	assert.Equal(t, "July, in JSON", it["name"])
	assert.Equal(t, "json", it["format"])
	assert.Equal(t, []any{"id", "amount"}, it["fields"])
	assert.Equal(t, map[string]any{"filter": "status:declined", "sort": "", "q": ""}, it["arguments"])
	assert.Equal(t, created.obj(t)["createdTime"], it["createdTime"], "requested when it was first requested")
	assert.Equal(t, []any{map[string]any{"rel": "self", "href": publicURL + base + "/" + id}}, it["_links"])

	// What runs is the new export; the old one will not.
	replaced := e.getJob(t, id)
	assert.Equal(t, exportv1.JobState_JOB_STATE_CANCELED, replaced.GetState())
	assert.Equal(t, "replaced by an update", replaced.GetError())
	got := e.do(t, http.MethodGet, base+"/"+id, key(aliceKey), "")
	require.Equal(t, http.StatusOK, got.status)
	assert.Equal(t, "json", got.obj(t)["format"])
	list := e.do(t, http.MethodGet, base, key(aliceKey), "").list(t)
	require.Len(t, list, 1, "listed once")
	assert.Equal(t, id, list[0]["id"])
	assert.Equal(t, "json", list[0]["format"])
	current := e.storedJob(t, "alice", id)
	assert.NotEqual(t, id, current.GetId(), "stored under a key of its own")
	assert.Equal(t, exportv1.Format_FORMAT_JSON, current.GetFormat())
	assert.Equal(t, "status:declined", current.GetRecords().GetFilter())
	assert.Equal(t, "alice", current.GetOwnerId())
	assert.Equal(t, "acme", current.GetOrganizationId())
	assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodGet, base+"/"+id, key(bobKey), "").status, "still only alice's")
	assert.Equal(t, http.StatusOK, e.do(t, http.MethodPut, base+"/"+id, key(aliceKey), changed).status, "repeating the update is harmless")

	// Again, and once more than allowed.
	for i := 1; ; i++ {
		r := e.do(t, http.MethodPut, base+"/"+id, key(aliceKey), strings.Replace(changed, "July, in JSON", "take "+strconv.Itoa(i), 1))
		if r.status == http.StatusConflict {
			assert.Greater(t, i, 10, "at least ten updates")
			break
		}
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		require.Equal(t, "take "+strconv.Itoa(i), e.do(t, http.MethodGet, base+"/"+id, key(aliceKey), "").obj(t)["name"])
		require.Less(t, i, 100)
	}
	require.Len(t, e.do(t, http.MethodGet, base, key(aliceKey), "").list(t), 1)

	recurring := `{"name":"n","resource":"events","format":"csv","recurring":{"instruction":"FREQ=DAILY"}}`
	r = e.do(t, http.MethodPut, base+"/"+id, key(aliceKey), recurring)
	assert.Equal(t, http.StatusUnprocessableEntity, r.status, "a one-off export stays one-off: %s", r.body)

	assert.Equal(t, http.StatusNoContent, e.do(t, http.MethodDelete, base+"/"+id, key(aliceKey), "").status)
	assert.Equal(t, http.StatusNotFound, e.do(t, http.MethodGet, base+"/"+id, key(aliceKey), "").status)
	assert.Empty(t, e.do(t, http.MethodGet, base, key(aliceKey), "").list(t))
	assert.Equal(t, exportv1.JobState_JOB_STATE_CANCELED, e.getJob(t, e.storedJobAny(t, "alice", id).GetId()).GetState(), "deleting cancels what was running")
}

// storedJobAny is the newest job shown as clientID, replaced or not.
func (e *env) storedJobAny(t *testing.T, owner, clientID string) *exportv1.Job {
	t.Helper()
	page, err := e.jobs.Find(t.Context(), jobstore.Query{Scope: jobstore.Scope{Owner: owner},
		Keep: func(j *exportv1.Job) bool { return j.GetClientId() == clientID }})
	require.NoError(t, err)
	require.NotEmpty(t, page.Jobs)
	newest := page.Jobs[0]
	for _, j := range page.Jobs {
		if j.GetUpdatedAt().AsTime().After(newest.GetUpdatedAt().AsTime()) {
			newest = j
		}
	}
	return newest
}

// TestRunIDsNameTheirSchedule: a run's id fits Rebilly's 50 characters and
// starts with an id of its schedule: the schedule's own client id when that
// fits, else the schedule's stored id; both resolve.
func TestRunIDsNameTheirSchedule(t *testing.T) {
	e := newEnv(t)
	rule := `"recurring":{"instruction":"FREQ=DAILY;BYHOUR=6;BYMINUTE=0;BYSECOND=0","start":"2026-06-15T00:00:00Z"}`
	occ := time.Date(2026, 6, 15, 6, 0, 0, 0, time.UTC)
	unix := strconv.FormatInt(occ.Unix(), 10)
	long := strings.Repeat("l", 50)
	for _, id := range []string{"daily", long} {
		r := e.do(t, http.MethodPut, base+"/"+id, key(aliceKey), `{"name":"`+id[:5]+`","resource":"events","format":"csv",`+rule+`}`)
		require.Equal(t, http.StatusCreated, r.status, "%s", r.body)
	}
	// An export alice made under the id a run would take keeps it.
	require.Equal(t, http.StatusCreated, e.do(t, http.MethodPut, base+"/weekly-"+unix, key(aliceKey), csvBody).status)
	require.Equal(t, http.StatusCreated, e.do(t, http.MethodPut, base+"/weekly", key(aliceKey),
		`{"name":"weekl","resource":"events","format":"csv",`+rule+`}`).status)

	s := schedule.New(e.sched, e.d.RunSchedule, schedule.Options{Now: func() time.Time { return occ.Add(time.Second) }})
	require.NoError(t, s.Tick(t.Context()))

	byName := map[string][]string{}
	for _, it := range e.do(t, http.MethodGet, base, key(aliceKey), "").list(t) {
		byName[it["name"].(string)] = append(byName[it["name"].(string)], it["id"].(string))
	}
	require.Contains(t, byName["daily"], "daily-"+unix, "named after the schedule's client id")
	require.Len(t, byName["lllll"], 2)
	require.Len(t, byName["weekl"], 2)
	for _, name := range []string{"daily", "lllll", "weekl"} {
		for _, id := range byName[name] {
			assert.LessOrEqual(t, len(id), 50, "%s fits Rebilly's id", id)
			got := e.do(t, http.MethodGet, base+"/"+id, key(aliceKey), "")
			require.Equal(t, http.StatusOK, got.status, "%s resolves: %s", id, got.body)
			assert.Equal(t, id, got.obj(t)["id"])
			if got.obj(t)["recurring"] != nil {
				continue
			}
			// A run: what precedes its time names the schedule.
			sched := id[:strings.LastIndexByte(id, '-')]
			it := e.do(t, http.MethodGet, base+"/"+sched, key(aliceKey), "").obj(t)
			assert.Equal(t, name, it["name"], "%s names its schedule", id)
			assert.NotNil(t, it["recurring"])
		}
	}
	assert.Equal(t, http.StatusOK, e.do(t, http.MethodGet, base+"/weekly-"+unix, key(aliceKey), "").status)
	assert.Equal(t, "July transactions", e.do(t, http.MethodGet, base+"/weekly-"+unix, key(aliceKey), "").obj(t)["name"],
		"the export made first keeps its id")

	// The shown ids of future runs are reserved; a run is not changed by PUT.
	for _, id := range []string{"daily-1781589600", "daily-1"} {
		assert.Equal(t, http.StatusConflict, e.do(t, http.MethodPut, base+"/"+id, key(aliceKey), csvBody).status, id)
	}
	assert.Equal(t, http.StatusConflict, e.do(t, http.MethodPost, base, key(aliceKey), `{"id":"daily-2",`+csvBody[1:]).status)
	assert.Equal(t, http.StatusCreated, e.do(t, http.MethodPut, base+"/daily-1", key(bobKey), csvBody).status, "bob has no schedule daily")
	assert.Equal(t, http.StatusCreated, e.do(t, http.MethodPut, base+"/daily-x", key(aliceKey), csvBody).status, "not a run's shape")
	r := e.do(t, http.MethodPut, base+"/daily-"+unix, key(aliceKey), strings.Replace(csvBody, `"csv"`, `"json"`, 1))
	assert.Equal(t, http.StatusConflict, r.status, "%s", r.body)
}

// TestConcurrentUpdates: updates racing for the same pending export leave
// one export under its id, with one of the updates; a loser is told to
// retry, never left with a second copy.
func TestConcurrentUpdates(t *testing.T) {
	e := newEnv(t)
	id := e.do(t, http.MethodPost, base, key(aliceKey), csvBody).obj(t)["id"].(string)
	names := []string{"first", "second", "third", "fourth"}
	statuses := make(chan int, len(names))
	for _, n := range names {
		go func() {
			statuses <- e.do(t, http.MethodPut, base+"/"+id, key(aliceKey), strings.Replace(csvBody, "July transactions", n, 1)).status
		}()
	}
	ok := 0
	for range names {
		switch s := <-statuses; s {
		case http.StatusOK:
			ok++
		case http.StatusConflict:
		default:
			t.Fatalf("status %d", s)
		}
	}
	assert.Positive(t, ok)
	list := e.do(t, http.MethodGet, base, key(aliceKey), "").list(t)
	require.Len(t, list, 1, "one export")
	assert.Equal(t, id, list[0]["id"])
	assert.Contains(t, names, list[0]["name"])
	got := e.do(t, http.MethodGet, base+"/"+id, key(aliceKey), "").obj(t)
	assert.Equal(t, list[0]["name"], got["name"])
	r := e.do(t, http.MethodPut, base+"/"+id, key(aliceKey), strings.Replace(csvBody, "July transactions", "after", 1))
	require.Equal(t, http.StatusOK, r.status, "%s", r.body)
	assert.Equal(t, "after", e.do(t, http.MethodGet, base+"/"+id, key(aliceKey), "").obj(t)["name"])
}
