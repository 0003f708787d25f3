package native_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/services/gateway/internal/quota"
	"dataport.dev/shared/bus"
)

// create posts body to POST /v1/exports as c and requires a 201.
func create(t *testing.T, e *gatewaytest.Env, c gatewaytest.Creds, body string) map[string]any {
	t.Helper()
	r := e.Do(t, http.MethodPost, "/v1/exports", c, body)
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
	v := r.JSON(t)
	assert.Equal(t, "/v1/exports/"+v["id"].(string), r.Header.Get("Location"))
	return v
}

// invalid asserts that r is a problem document of status naming exactly
// fields in errors.
func invalid(t *testing.T, r gatewaytest.Response, status int, fields ...string) {
	t.Helper()
	require.Equal(t, status, r.Status, "%s", r.Body)
	assert.Equal(t, "application/problem+json", r.Header.Get("Content-Type"))
	p := r.JSON(t)
	assert.EqualValues(t, status, p["status"])
	assert.NotEmpty(t, p["type"])
	assert.NotEmpty(t, p["title"])
	assert.NotEmpty(t, p["detail"])
	var got []string
	errs, _ := p["errors"].([]any)
	for _, e := range errs {
		m := e.(map[string]any)
		assert.NotEmpty(t, m["message"], "every error says what is wrong")
		got = append(got, m["field"].(string))
	}
	assert.Equal(t, fields, got, "%s", r.Body)
}

func TestCreateRoomExport(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	v := create(t, e, gatewaytest.AsAdmin, `{"kind": "room", "format": "html", "name": "staff, January",
		"room": {"id": "`+gatewaytest.RoomPrivate+`", "from": "2024-01-01", "to": "2024-01-31"},
		"notify": {"emails": ["ops@example.com"], "webhooks": ["https://hooks.example.com/dataport?t=1"]}}`)
	assert.Equal(t, "room", v["kind"])
	assert.Equal(t, "html", v["format"])
	assert.Equal(t, "queued", v["state"])
	id := v["id"].(string)

	job := e.Job(t, id)
	assert.Equal(t, gatewaytest.AdminID, job.GetOwnerId())
	assert.Equal(t, "native", job.GetDialect())
	assert.Equal(t, "staff, January", job.GetName())
	assert.Equal(t, []string{"ops@example.com"}, job.GetNotifyEmails())
	assert.Equal(t, []string{"https://hooks.example.com/dataport?t=1"}, job.GetWebhookUrls())
	assert.Equal(t, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), job.GetRoom().GetFrom().AsTime())
	assert.Equal(t, time.Date(2024, 1, 31, 23, 59, 59, 999e6, time.UTC), job.GetRoom().GetTo().AsTime(), "a plain date ends with its day")
	tasks := e.TasksOf(t, "exports.tasks.room", id)
	require.Len(t, tasks, 1)
	assert.Equal(t, "staff.html", tasks[0].GetTargetFile(), "named as Rocket.Chat's rooms.export names it")
	assert.Equal(t, gatewaytest.RoomPrivate, tasks[0].GetRoom().GetRoomId())
	assert.Equal(t, []bus.Event{bus.EventRequested, bus.EventQueued}, e.Events(t, id))

	// The default format of a room export is JSON; the job reads back
	// through the native API like any other.
	v = create(t, e, gatewaytest.AsAdmin, `{"kind": "room", "room": {"id": "GENERAL"}}`)
	assert.Equal(t, "json", v["format"])
	r := e.Do(t, http.MethodGet, "/v1/exports/"+v["id"].(string), gatewaytest.AsAdmin, "")
	require.Equal(t, http.StatusOK, r.Status)
	assert.Equal(t, "room", r.JSON(t)["kind"])
	assert.Nil(t, e.Job(t, v["id"].(string)).GetRoom().GetFrom(), "no dates: the whole history")
}

// TestCreateRoomExportLineFormats creates room exports in the native
// API's formats beyond Rocket.Chat's: the format reads back as asked and
// the file is named with its extension.
func TestCreateRoomExportLineFormats(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	for _, tc := range []struct {
		format string
		want   exportv1.Format
		file   string
	}{
		{"jsonl", exportv1.Format_FORMAT_JSONL, "staff.jsonl"},
		{"csv.gz", exportv1.Format_FORMAT_CSV, "staff.csv.gz"},
	} {
		t.Run(tc.format, func(t *testing.T) {
			v := create(t, e, gatewaytest.AsAdmin, `{"kind": "room", "format": "`+tc.format+`", "room": {"id": "`+gatewaytest.RoomPrivate+`"}}`)
			assert.Equal(t, tc.format, v["format"])
			id := v["id"].(string)
			assert.Equal(t, tc.want, e.Job(t, id).GetFormat())
			tasks := e.TasksOf(t, "exports.tasks.room", id)
			require.Len(t, tasks, 1)
			assert.Equal(t, tc.file, tasks[0].GetTargetFile())
			assert.Equal(t, tc.want, tasks[0].GetFormat())
			r := e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "")
			require.Equal(t, http.StatusOK, r.Status)
			assert.Equal(t, tc.format, r.JSON(t)["format"])
		})
	}
}

func TestCreateUserDataExport(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	v := create(t, e, gatewaytest.AsUser, `{"kind": "user-data"}`)
	assert.Equal(t, "user-data", v["kind"])
	assert.Equal(t, "html", v["format"])
	job := e.Job(t, v["id"].(string))
	assert.False(t, job.GetFullExport())
	tasks := e.TasksOf(t, "exports.tasks.user", job.GetId())
	var targets []string
	for _, tk := range tasks {
		targets = append(targets, tk.GetTargetFile())
	}
	// alice is in the private and the direct room; the direct room has no
	// name and is named by its id.
	assert.Equal(t, []string{gatewaytest.RoomDirect + ".html", "staff.html", "user.html", "assets"}, targets)

	v = create(t, e, gatewaytest.AsUser, `{"kind": "user-data", "format": "json", "userData": {"fullExport": true}}`)
	assert.Equal(t, "json", v["format"])
	job = e.Job(t, v["id"].(string))
	assert.True(t, job.GetFullExport())
	assert.Len(t, e.TasksOf(t, "exports.tasks.user", job.GetId()), 5, "rooms, profile, channel list and assets")
	assert.Len(t, v["parts"], 5, "the view lists the plan")
}

func TestCreateRecordsExport(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	v := create(t, e, gatewaytest.AsUser, `{"kind": "records", "format": "jsonl", "name": "approved USD",
		"records": {"resource": "transactions", "fields": ["id", "amount", "currency"], "filter": "currency:USD", "sort": "-createdTime",
			"q": "card", "dateRange": {"start": "2024-01-01", "end": "2024-02-01"},
			"chunking": {"maxRows": 1000, "maxBytes": 1048576, "gzip": true}},
		"notify": {"emails": ["alice@example.com"]}}`)
	assert.Equal(t, "records", v["kind"])
	assert.Equal(t, "jsonl", v["format"])
	job := e.Job(t, v["id"].(string))
	assert.Equal(t, gatewaytest.Org, job.GetOrganizationId(), "the caller's default organization")
	assert.Equal(t, gatewaytest.Org, job.GetScope().GetOrganizationId())
	sc := job.GetRecords()
	assert.Equal(t, "transactions", sc.GetResource())
	assert.Equal(t, []string{"id", "amount", "currency"}, sc.GetFields())
	assert.Equal(t, "currency:USD", sc.GetFilter())
	assert.Equal(t, "-createdTime", sc.GetSort())
	assert.Equal(t, "card", sc.GetQ())
	assert.Equal(t, time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), sc.GetDateRange().GetFrom().AsTime())
	assert.EqualValues(t, 1000, sc.GetMaxRowsPerChunk())
	assert.EqualValues(t, 1<<20, sc.GetMaxBytesPerChunk())
	assert.True(t, sc.GetGzipChunks())
	tasks := e.TasksOf(t, "exports.tasks.records", job.GetId())
	require.Len(t, tasks, 1)
	assert.Equal(t, "transactions", tasks[0].GetRecords().GetResource())

	// Defaults: CSV of the resource's default columns; a resource outside
	// organizations needs none.
	v = create(t, e, gatewaytest.AsAdmin, `{"kind": "records", "records": {"resource": "messages"}}`)
	assert.Equal(t, "csv", v["format"])
	assert.NotEmpty(t, e.Job(t, v["id"].(string)).GetRecords().GetFields())
	v = create(t, e, gatewaytest.AsUser, `{"kind": "records", "records": {"resource": "events", "organizationId": "acme"}}`)
	assert.Equal(t, gatewaytest.Org, e.Job(t, v["id"].(string)).GetOrganizationId())
}

func TestCreateRecurringExport(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	v := create(t, e, gatewaytest.AsUser, `{"kind": "records", "records": {"resource": "events", "dateRange": {"start": "-1 day", "end": "now"}},
		"recurring": {"instruction": "FREQ=DAILY;BYHOUR=6", "start": "2030-01-01T00:00:00Z"}}`)
	id := v["id"].(string)
	rec := v["recurrence"].(map[string]any)
	assert.Equal(t, "FREQ=DAILY;BYHOUR=6", rec["instruction"])
	assert.Equal(t, "2030-01-01T00:00:00Z", rec["start"])
	assert.Equal(t, "2030-01-01T06:00:00Z", rec["next"])
	assert.Equal(t, 0, e.JobCount(t), "a schedule is no job; its runs will be")

	r := e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsUser, "")
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	assert.Equal(t, rec, r.JSON(t)["recurrence"])
	nativeError(t, e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, ""), http.StatusNotFound, msgNotFound)
}

func TestCreateRefusesBadInput(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	room := func(extra string) string { return `{"kind": "room", "room": {"id": "GENERAL"}` + extra + `}` }
	cases := []struct {
		name, body string
		status     int
		fields     []string
	}{
		{"not JSON", `kind=room`, http.StatusBadRequest, []string{"body"}},
		{"an array", `[{"kind": "room"}]`, http.StatusBadRequest, []string{"body"}},
		{"malformed", `{"kind": "room"`, http.StatusBadRequest, []string{"body"}},
		{"trailing data", `{"kind": "room"} {}`, http.StatusBadRequest, []string{"body"}},
		{"unknown field", `{"kind": "room", "colour": "red"}`, http.StatusBadRequest, []string{"colour"}},
		{"misspelt nested field", `{"kind": "room", "room": {"rid": "GENERAL"}}`, http.StatusBadRequest, []string{"rid"}},
		{"wrong type", `{"kind": 3}`, http.StatusBadRequest, []string{"kind"}},
		{"wrong nested type", `{"kind": "records", "records": {"fields": "id"}}`, http.StatusBadRequest, []string{"records.fields"}},
		{"no kind", `{}`, http.StatusUnprocessableEntity, []string{"kind"}},
		{"unknown kind", `{"kind": "room-mail"}`, http.StatusUnprocessableEntity, []string{"kind"}},
		{"format of another kind", room(`, "format": "csv"`), http.StatusUnprocessableEntity, []string{"format"}},
		{"long name", room(`, "name": "` + strings.Repeat("n", 256) + `"`), http.StatusUnprocessableEntity, []string{"name"}},
		{"no room", `{"kind": "room"}`, http.StatusUnprocessableEntity, []string{"room.id"}},
		{"odd room id", `{"kind": "room", "room": {"id": "a.b"}}`, http.StatusUnprocessableEntity, []string{"room.id"}},
		{"bad from", `{"kind": "room", "room": {"id": "GENERAL", "from": "yesterday"}}`, http.StatusUnprocessableEntity, []string{"room.from"}},
		{"bad to", `{"kind": "room", "room": {"id": "GENERAL", "to": "2024-13-01"}}`, http.StatusUnprocessableEntity, []string{"room.to"}},
		{"reversed range", `{"kind": "room", "room": {"id": "GENERAL", "from": "2024-02-01", "to": "2024-01-01"}}`, http.StatusUnprocessableEntity, []string{"room.to"}},
		{"options of another kind", room(`, "records": {"resource": "events"}`), http.StatusUnprocessableEntity, []string{"records"}},
		{"a room that recurs", room(`, "recurring": {"instruction": "FREQ=DAILY"}`), http.StatusUnprocessableEntity, []string{"recurring"}},
		{"user-data format against fullExport", `{"kind": "user-data", "format": "json"}`, http.StatusUnprocessableEntity, []string{"format"}},
		{"records without resource", `{"kind": "records"}`, http.StatusUnprocessableEntity, []string{"records.resource"}},
		{"unknown resource", `{"kind": "records", "records": {"resource": "invoices"}}`, http.StatusUnprocessableEntity, []string{"records.resource"}},
		{"unknown column", `{"kind": "records", "records": {"resource": "events", "fields": ["nope"]}}`, http.StatusUnprocessableEntity, []string{"records.fields"}},
		{"no columns", `{"kind": "records", "records": {"resource": "events", "fields": []}}`, http.StatusUnprocessableEntity, []string{"records.fields"}},
		{"bad filter and sort", `{"kind": "records", "records": {"resource": "events", "filter": "nope:1", "sort": "-nope"}}`, http.StatusUnprocessableEntity,
			[]string{"records.filter", "records.sort"}},
		{"half a date range", `{"kind": "records", "records": {"resource": "events", "dateRange": {"start": "today"}}}`, http.StatusUnprocessableEntity,
			[]string{"records.dateRange.end"}},
		{"tiny chunks", `{"kind": "records", "records": {"resource": "events", "chunking": {"maxRows": 1, "maxBytes": 10}}}`, http.StatusUnprocessableEntity,
			[]string{"records.chunking.maxRows", "records.chunking.maxBytes"}},
		{"bad organization id", `{"kind": "records", "records": {"resource": "events", "organizationId": "a b"}}`, http.StatusUnprocessableEntity,
			[]string{"records.organizationId"}},
		{"no instruction", `{"kind": "records", "records": {"resource": "events"}, "recurring": {}}`, http.StatusUnprocessableEntity, []string{"recurring.instruction"}},
		{"bad instruction", `{"kind": "records", "records": {"resource": "events"}, "recurring": {"instruction": "FREQ=SOMETIMES"}}`, http.StatusUnprocessableEntity,
			[]string{"recurring.instruction"}},
		{"too frequent", `{"kind": "records", "records": {"resource": "events"}, "recurring": {"instruction": "FREQ=MINUTELY"}}`, http.StatusUnprocessableEntity,
			[]string{"recurring"}},
		{"bad start", `{"kind": "records", "records": {"resource": "events"}, "recurring": {"instruction": "FREQ=DAILY", "start": "soon"}}`, http.StatusUnprocessableEntity,
			[]string{"recurring.start"}},
		{"bad email", room(`, "notify": {"emails": ["ok@example.com", "Eve <eve@example.com>", "x@y\r\nBcc: z@w"]}`), http.StatusUnprocessableEntity,
			[]string{"notify.emails[1]", "notify.emails[2]"}},
		{"too many emails", room(`, "notify": {"emails": [` + strings.Repeat(`"a@example.com",`, 10) + `"a@example.com"]}`), http.StatusUnprocessableEntity,
			[]string{"notify.emails"}},
		{"webhooks into the host or cluster", room(`, "notify": {"webhooks": ["http://127.0.0.1:8080/x", "http://169.254.169.254/latest/meta-data", "http://localhost/", "http://[::1]/", "http://10.0.0.7/"]}`),
			http.StatusUnprocessableEntity, []string{"notify.webhooks[0]", "notify.webhooks[1]", "notify.webhooks[2]", "notify.webhooks[3]", "notify.webhooks[4]"}},
		{"webhooks of another shape", room(`, "notify": {"webhooks": ["ftp://hooks.example.com/", "https://user:pw@hooks.example.com/", "hooks.example.com/x"]}`),
			http.StatusUnprocessableEntity, []string{"notify.webhooks[0]", "notify.webhooks[1]", "notify.webhooks[2]"}},
		{"too many webhooks", room(`, "notify": {"webhooks": [` + strings.Repeat(`"https://h.example.com/",`, 5) + `"https://h.example.com/"]}`),
			http.StatusUnprocessableEntity, []string{"notify.webhooks"}},
		{"every problem at once", `{"kind": "records", "name": "a\nb", "format": "html", "records": {"resource": "events", "fields": ["nope"]}}`,
			http.StatusUnprocessableEntity, []string{"name", "format", "records.fields"}},
		{"too large", `{"kind": "room", "name": "` + strings.Repeat("x", 70<<10) + `"}`, http.StatusRequestEntityTooLarge, []string{"body"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			invalid(t, e.Do(t, http.MethodPost, "/v1/exports", gatewaytest.AsAdmin, tc.body), tc.status, tc.fields...)
		})
	}
	assert.Equal(t, 0, e.JobCount(t), "no refused request created a job")
}

func TestCreateRefusesWhatTheCallerMayNotExport(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	// Without the permission to export rooms (admins have it), whatever
	// the room.
	nativeError(t, e.Do(t, http.MethodPost, "/v1/exports", gatewaytest.AsUser, `{"kind": "room", "room": {"id": "`+gatewaytest.RoomPrivate+`"}}`),
		http.StatusForbidden, "you lack the permission to export rooms (mail-messages)")
	// A private room the caller is not in answers like one that does not
	// exist.
	for _, id := range []string{gatewaytest.RoomPrivate, "NoSuchRoom000000"} {
		invalid(t, e.Do(t, http.MethodPost, "/v1/exports", gatewaytest.AsAdmin2, `{"kind": "room", "room": {"id": "`+id+`"}}`), http.StatusNotFound, "room.id")
	}
	// Likewise an organization the caller is not a member of.
	for _, org := range []string{"globex", gatewaytest.Org} {
		invalid(t, e.Do(t, http.MethodPost, "/v1/exports", gatewaytest.AsAdmin,
			`{"kind": "records", "records": {"resource": "events", "organizationId": "`+org+`"}}`), http.StatusNotFound, "records.organizationId")
	}
	// Organization records outside any organization.
	invalid(t, e.Do(t, http.MethodPost, "/v1/exports", gatewaytest.AsAdmin, `{"kind": "records", "records": {"resource": "transactions"}}`),
		http.StatusUnprocessableEntity, "records.resource")
	nativeError(t, e.Do(t, http.MethodPost, "/v1/exports", gatewaytest.Anonymous, `{"kind": "user-data"}`), http.StatusUnauthorized, msgUnauthorized)
	assert.Equal(t, 0, e.JobCount(t))
}

func TestCreateIsIdempotent(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	send := func(key, body string) gatewaytest.Response {
		h := http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {key}}
		return e.Send(t, http.MethodPost, e.URL+"/v1/exports", gatewaytest.AsAdmin, h, body)
	}
	body := `{"kind": "room", "room": {"id": "GENERAL"}}`
	first := send("k-1", body)
	require.Equal(t, http.StatusCreated, first.Status, "%s", first.Body)
	again := send("k-1", body)
	assert.Equal(t, http.StatusCreated, again.Status)
	assert.Equal(t, first.JSON(t)["id"], again.JSON(t)["id"], "the replay answers the first export")
	assert.Equal(t, 1, e.JobCount(t))

	// The same key with another body is the caller's mistake.
	other := send("k-1", `{"kind": "room", "room": {"id": "GENERAL"}, "format": "html"}`)
	assert.Equal(t, http.StatusUnprocessableEntity, other.Status)
	assert.Equal(t, "application/problem+json", other.Header.Get("Content-Type"))
	assert.Contains(t, other.JSON(t)["detail"], "Idempotency-Key")
	assert.NotEqual(t, first.JSON(t)["id"], send("k-2", body).JSON(t)["id"], "a new key, a new export")
	assert.Equal(t, 2, e.JobCount(t))
}

func TestCreateQuota(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{Limits: &quota.Options{MaxConcurrent: 1}})
	create(t, e, gatewaytest.AsAdmin, `{"kind": "user-data"}`)
	r := e.Do(t, http.MethodPost, "/v1/exports", gatewaytest.AsAdmin, `{"kind": "room", "room": {"id": "GENERAL"}}`)
	require.Equal(t, http.StatusTooManyRequests, r.Status, "%s", r.Body)
	assert.NotEmpty(t, r.Header.Get("Retry-After"))
	assert.Empty(t, r.Header.Get("Location"))
	assert.Equal(t, "application/problem+json", r.Header.Get("Content-Type"))
	p := r.JSON(t)
	assert.EqualValues(t, 429, p["status"])
	assert.Contains(t, p["detail"], "at most 1")
	assert.Equal(t, 1, e.JobCount(t))
	// Another user has a quota of their own.
	v := create(t, e, gatewaytest.AsUser, `{"kind": "user-data"}`)
	assert.Equal(t, exportv1.JobKind_JOB_KIND_USER_DATA, e.Job(t, v["id"].(string)).GetKind())
}
