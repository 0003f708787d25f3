package rocketchat_test

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
)

const roomsExport = "/api/v1/rooms.export"

// Rocket.Chat's answers, field by field (seed 002, and seed 000 for the
// authentication failure).
var (
	rcUnauthorized = map[string]any{"success": false, "status": "error", "message": "You must be logged in to do this."}
	rcInvalidParam = rcErr("error-invalid-params")
	rcInvalidRoom  = rcErr("error-invalid-room")
	rcInvalidFmt   = rcErr("error-invalid-format")
	rcInvalidDates = rcErr("error-invalid-dates")
	rcNotAllowed   = rcErr("error-not-allowed")
)

func rcErr(errorType string) map[string]any {
	return map[string]any{"success": false, "error": "[" + errorType + "]", "errorType": errorType}
}

func rcErrReason(errorType, reason string) map[string]any {
	return map[string]any{"success": false, "error": reason + " [" + errorType + "]", "errorType": errorType}
}

// The example payload of seed 002.
const seedExample = `{"rid": "iu7jtPAhvEeAS5tNq", "type": "file", "dateFrom": "2000-01-01", "dateTo": "2021-11-25", "format": "html"}`

// TestRoomsExportErrors reproduces every error example of seed 002 and
// the email variant's errors; none of the requests may leave a job, a
// task or an event behind.
func TestRoomsExportErrors(t *testing.T) {
	e := newEnv(t, envOptions{fixtures: true})
	mail := func(extra string) string {
		return `{"rid": "GENERAL", "type": "email", "subject": "Minutes", "messages": ["m1", "m2"]` + extra + `}`
	}
	cases := []struct {
		name   string
		creds  creds
		body   string
		status int
		want   map[string]any
	}{
		// Authorization.
		{"no credentials", anon, seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"no token", creds{user: adminID}, seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"no user id", creds{token: adminToken}, seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"the seed's example token", creds{"d26x6zSkaPSe5gCyy", "Zu-Z6eKzIIz7MCCRGeHi29bYkXZCJ4SxFC0JAasqm92"}, seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"wrong token", creds{adminID, "Zu-Z6eKzIIz7MCCRGeHi29bYkXZCJ4SxFC0JAasqm92"}, seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"another user's token", creds{adminID, userToken}, seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"the stored hash as token", creds{adminID, "0ddf4c0c"}, seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"bad credentials before bad body", creds{adminID, "nope"}, `{`, http.StatusUnauthorized, rcUnauthorized},

		// Invalid Params.
		{"no body", asAdmin, "", http.StatusBadRequest, rcInvalidParam},
		{"not JSON", asAdmin, `rid=GENERAL&type=file`, http.StatusBadRequest, rcInvalidParam},
		{"truncated JSON", asAdmin, `{"rid": "GENERAL", "type": "file"`, http.StatusBadRequest, rcInvalidParam},
		{"JSON array", asAdmin, `[]`, http.StatusBadRequest, rcInvalidParam},
		{"JSON null", asAdmin, `null`, http.StatusBadRequest, rcInvalidParam},
		{"missing rid", asAdmin, `{"type": "file", "format": "json"}`, http.StatusBadRequest, rcInvalidParam},
		{"missing type", asAdmin, `{"rid": "GENERAL", "format": "json"}`, http.StatusBadRequest, rcInvalidParam},
		{"unknown type", asAdmin, `{"rid": "GENERAL", "type": "fax", "format": "json"}`, http.StatusBadRequest, rcInvalidParam},
		{"rid not a string", asAdmin, `{"rid": 42, "type": "file", "format": "json"}`, http.StatusBadRequest, rcInvalidParam},
		{"trailing garbage", asAdmin, `{"rid": "GENERAL", "type": "file", "format": "json"} x`, http.StatusBadRequest, rcInvalidParam},
		{"email without messages", asAdmin, `{"rid": "GENERAL", "type": "email", "subject": "x", "toUsers": ["root"]}`, http.StatusBadRequest,
			rcErrReason("error-invalid-params", "messages must list at least one message id")},
		{"email with no message", asAdmin, mail(`, "messages": []`), http.StatusBadRequest,
			rcErrReason("error-invalid-params", "messages must list at least one message id")},
		{"email without subject", asAdmin, `{"rid": "GENERAL", "type": "email", "toEmails": ["a@example.com"], "messages": ["m1"]}`, http.StatusBadRequest,
			rcErrReason("error-invalid-params", "subject is required")},
		{"email subject with a line break", asAdmin, `{"rid": "GENERAL", "type": "email", "subject": "Hi\r\nBcc: x@evil.test", "toEmails": ["a@example.com"], "messages": ["m1"]}`, http.StatusBadRequest,
			rcErrReason("error-invalid-params", "subject must be a single line")},
		{"email messages not strings", asAdmin, `{"rid": "GENERAL", "type": "email", "subject": "x", "toEmails": ["a@example.com"], "messages": [1]}`, http.StatusBadRequest, rcInvalidParam},
		{"email message id that cannot exist", asAdmin, `{"rid": "GENERAL", "type": "email", "subject": "x", "toEmails": ["a@example.com"], "messages": ["a.b"]}`, http.StatusBadRequest,
			rcErrReason("error-invalid-params", `"a.b" is not a message id`)},
		{"email toEmails not a list", asAdmin, mail(`, "toEmails": "a@example.com"`), http.StatusBadRequest, rcInvalidParam},

		// Invalid Room ID.
		{"unknown room", asAdmin, `{"rid": "NoSuchRoom", "type": "file", "format": "json"}`, http.StatusBadRequest, rcInvalidRoom},
		{"room id that cannot exist", asAdmin, `{"rid": "chat.messages.*", "type": "file", "format": "json"}`, http.StatusBadRequest, rcInvalidRoom},
		{"email to an unknown room", asAdmin, `{"rid": "NoSuchRoom", "type": "email", "subject": "x", "toEmails": ["a@example.com"], "messages": ["m1"]}`, http.StatusBadRequest, rcInvalidRoom},

		// Invalid Format.
		{"missing format", asAdmin, `{"rid": "GENERAL", "type": "file"}`, http.StatusBadRequest, rcInvalidFmt},
		{"unsupported format", asAdmin, `{"rid": "GENERAL", "type": "file", "format": "pdf"}`, http.StatusBadRequest, rcInvalidFmt},
		{"format in capitals", asAdmin, `{"rid": "GENERAL", "type": "file", "format": "JSON"}`, http.StatusBadRequest, rcInvalidFmt},

		// Invalid dates.
		{"dateFrom not a date", asAdmin, `{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "yesterday"}`, http.StatusBadRequest, rcInvalidDates},
		{"dateTo in another layout", asAdmin, `{"rid": "GENERAL", "type": "file", "format": "json", "dateTo": "25/11/2021"}`, http.StatusBadRequest, rcInvalidDates},
		{"impossible day", asAdmin, `{"rid": "GENERAL", "type": "file", "format": "json", "dateTo": "2021-02-30"}`, http.StatusBadRequest, rcInvalidDates},
		{"year zero", asAdmin, `{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "0000-01-01"}`, http.StatusBadRequest, rcInvalidDates},
		{"from after to", asAdmin, `{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "2021-11-26", "dateTo": "2021-11-25"}`, http.StatusBadRequest, rcInvalidDates},
		{"from after to in RFC 3339", asAdmin, `{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "2021-11-25T12:00:00Z", "dateTo": "2021-11-25T11:59:59+00:00"}`, http.StatusBadRequest, rcInvalidDates},

		// Not Allowed.
		{"no mail-messages permission", asUser, `{"rid": "GENERAL", "type": "file", "format": "json"}`, http.StatusBadRequest, rcNotAllowed},
		{"no permission, private room the user is in", asUser, seedExample, http.StatusBadRequest, rcNotAllowed},
		{"no permission says nothing about rooms", asUser, `{"rid": "NoSuchRoom", "type": "file", "format": "json"}`, http.StatusBadRequest, rcNotAllowed},
		{"admin not a member of a private room", asAdmin2, seedExample, http.StatusBadRequest, rcNotAllowed},
		{"admin not a member of a direct room", asAdmin, `{"rid": "DirectRoomId00001", "type": "file", "format": "json"}`, http.StatusBadRequest, rcNotAllowed},
		{"email without permission", asUser, mail(`, "toEmails": ["a@example.com"]`), http.StatusBadRequest, rcNotAllowed},
		{"email from a private room the admin is not in", asAdmin2, `{"rid": "iu7jtPAhvEeAS5tNq", "type": "email", "subject": "x", "toEmails": ["a@example.com"], "messages": ["m1"]}`, http.StatusBadRequest, rcNotAllowed},

		// Email recipients.
		{"email to nobody", asAdmin, mail(""), http.StatusBadRequest, rcErr("error-invalid-recipient")},
		{"email to empty names", asAdmin, mail(`, "toUsers": [""], "toEmails": ["  "]`), http.StatusBadRequest, rcErr("error-invalid-recipient")},
		{"malformed address", asAdmin, mail(`, "toEmails": ["not-an-address"]`), http.StatusBadRequest,
			rcErrReason("error-invalid-email", `Invalid email "not-an-address"`)},
		{"address with a header injection", asAdmin, mail(`, "toEmails": ["a@example.com\r\nBcc: x@evil.test"]`), http.StatusBadRequest,
			rcErrReason("error-invalid-email", `Invalid email "a@example.com\r\nBcc: x@evil.test"`)},
		{"address with a bare line feed", asAdmin, mail(`, "toEmails": ["a@example.com\nx"]`), http.StatusBadRequest,
			rcErrReason("error-invalid-email", `Invalid email "a@example.com\nx"`)},
		{"two addresses in one entry", asAdmin, mail(`, "toEmails": ["a@example.com, b@example.com"]`), http.StatusBadRequest,
			rcErrReason("error-invalid-email", `Invalid email "a@example.com, b@example.com"`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.do(t, http.MethodPost, roomsExport, tc.creds, tc.body)
			assert.Equal(t, tc.status, resp.status)
			assert.Equal(t, "application/json", resp.header.Get("Content-Type"))
			assert.Equal(t, tc.want, resp.json(t))
		})
	}

	// None of these requests may have left a trace.
	assert.Zero(t, e.jobCount(t), "no job may be created")
	for _, name := range []string{bus.StreamExportTasks, bus.StreamExportEvents} {
		s, err := e.nats.JS.Stream(t.Context(), name)
		require.NoError(t, err)
		info, err := s.Info(t.Context())
		require.NoError(t, err)
		assert.Zero(t, info.State.Msgs, "messages on %s", name)
	}
}

// TestRoomsExportFile sends seed 002's example call as a member of the
// private room: Rocket.Chat's success answer plus the export id, and one
// room task with inclusive UTC day bounds.
func TestRoomsExportFile(t *testing.T) {
	e := newEnv(t, envOptions{fixtures: true})
	resp := e.do(t, http.MethodPost, roomsExport, asAdmin, seedExample)
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	body := resp.json(t)
	id, _ := body["exportId"].(string)
	assert.Equal(t, map[string]any{"success": true, "exportId": id}, body)
	assert.Regexp(t, regexp.MustCompile(`^[0-9A-Za-z]{17}$`), id)

	job, err := e.jobs.Get(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, exportv1.JobKind_JOB_KIND_ROOM, job.GetKind())
	assert.Equal(t, exportv1.Format_FORMAT_HTML, job.GetFormat())
	assert.Equal(t, "rocketchat", job.GetDialect())
	assert.Equal(t, adminID, job.GetOwnerId())
	require.Len(t, job.GetParts(), 1)
	p := job.GetParts()[0]
	assert.Equal(t, exportv1.PartKind_PART_KIND_ROOM, p.GetKind())
	assert.Equal(t, roomPrivate, p.GetRoomId())
	assert.Equal(t, "staff", p.GetRoomName())
	assert.Equal(t, "p", p.GetRoomType())
	assert.Equal(t, "staff.html", p.GetTargetFile())
	assert.Equal(t, exportv1.PartState_PART_STATE_PENDING, p.GetState())

	tasks := e.tasksOf(t, "exports.tasks.room", id)
	require.Len(t, tasks, 1)
	task := tasks[0]
	assert.Equal(t, exportv1.PartKind_PART_KIND_ROOM, task.GetPartKind())
	assert.Equal(t, "staff.html", task.GetTargetFile())
	assert.Equal(t, roomPrivate, task.GetRoom().GetRoomId())
	assert.Equal(t, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), task.GetRoom().GetFrom().AsTime())
	assert.Equal(t, time.Date(2021, 11, 25, 23, 59, 59, 999_000_000, time.UTC), task.GetRoom().GetTo().AsTime())

	// A public channel is open to anyone with the permission, member or
	// not, and without dates the range stays open.
	resp = e.do(t, http.MethodPost, roomsExport, asAdmin2, `{"rid": "GENERAL", "type": "file", "format": "json"}`)
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	id2 := resp.json(t)["exportId"].(string)
	tasks = e.tasksOf(t, "exports.tasks.room", id2)
	require.Len(t, tasks, 1)
	assert.Equal(t, "general.json", tasks[0].GetTargetFile())
	assert.Nil(t, tasks[0].GetRoom().GetFrom())
	assert.Nil(t, tasks[0].GetRoom().GetTo())
}

func TestRoomsExportAcceptsRFC3339(t *testing.T) {
	e := newEnv(t, envOptions{fixtures: true})
	resp := e.do(t, http.MethodPost, roomsExport, asAdmin,
		`{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "2021-11-25T10:00:00+02:00", "dateTo": "2021-11-25T18:30:00.250Z"}`)
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	job, err := e.jobs.Get(t.Context(), resp.json(t)["exportId"].(string))
	require.NoError(t, err)
	assert.Equal(t, time.Date(2021, 11, 25, 8, 0, 0, 0, time.UTC), job.GetRoom().GetFrom().AsTime())
	assert.Equal(t, time.Date(2021, 11, 25, 18, 30, 0, 250_000_000, time.UTC), job.GetRoom().GetTo().AsTime())
	assert.Equal(t, exportv1.JobState_JOB_STATE_PENDING, job.GetState())
}

// TestRoomsExportEmail is Rocket.Chat's email variant: usernames resolve
// to their addresses, unknown ones come back in missing, and the mail
// becomes a ROOM_MAIL job whose one task the room-exporter renders.
func TestRoomsExportEmail(t *testing.T) {
	e := newEnv(t, envOptions{fixtures: true})
	resp := e.do(t, http.MethodPost, roomsExport, asAdmin, `{
		"rid": "iu7jtPAhvEeAS5tNq", "type": "email",
		"toUsers": ["alice", "nobody", "root2", "root"],
		"toEmails": ["Board <board@example.com>", " ", "root@example.com"],
		"subject": "Minutes of today's meeting",
		"messages": ["msgA0000000000001", "msgB0000000000002"]}`)
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	body := resp.json(t)
	id, _ := body["exportId"].(string)
	// root2 has no address: missing, as in Rocket.Chat.
	assert.Equal(t, map[string]any{"missing": []any{"nobody", "root2"}, "success": true, "exportId": id}, body)

	job, err := e.jobs.Get(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, exportv1.JobKind_JOB_KIND_ROOM_MAIL, job.GetKind())
	assert.Equal(t, exportv1.Format_FORMAT_HTML, job.GetFormat())
	assert.Equal(t, roomPrivate, job.GetRoom().GetRoomId())
	assert.Equal(t, []string{"alice@example.com", "board@example.com", "root@example.com"}, job.GetMail().GetToEmails(), "bare, sorted, without duplicates")
	assert.Equal(t, "Minutes of today's meeting", job.GetMail().GetSubject())
	assert.Equal(t, []string{"msgA0000000000001", "msgB0000000000002"}, job.GetMail().GetMessageIds())

	tasks := e.tasksOf(t, "exports.tasks.room", id)
	require.Len(t, tasks, 1)
	assert.Equal(t, exportv1.PartKind_PART_KIND_ROOM_MAIL, tasks[0].GetPartKind())
	assert.Equal(t, exportv1.JobKind_JOB_KIND_ROOM_MAIL, tasks[0].GetKind())
	assert.Equal(t, job.GetMail().GetToEmails(), tasks[0].GetMail().GetToEmails())
	assert.Equal(t, roomPrivate, tasks[0].GetRoom().GetRoomId())

	// Only usernames nobody can be mailed at: success, everything
	// missing, and nothing to send.
	before := e.jobCount(t)
	resp = e.do(t, http.MethodPost, roomsExport, asAdmin, `{"rid": "GENERAL", "type": "email", "toUsers": ["nobody"], "subject": "", "messages": ["m1"]}`)
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	assert.Equal(t, map[string]any{"missing": []any{"nobody"}, "success": true}, resp.json(t))
	assert.Equal(t, before, e.jobCount(t))

	// Addresses alone are enough, and missing is an empty list.
	resp = e.do(t, http.MethodPost, roomsExport, asAdmin, `{"rid": "GENERAL", "type": "email", "toEmails": ["x@example.com"], "subject": "s", "messages": ["m1"]}`)
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	assert.Equal(t, []any{}, resp.json(t)["missing"])
	assert.True(t, strings.HasPrefix(string(resp.body), `{"missing":[]`), "%s", resp.body)
}
