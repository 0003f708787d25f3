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
	"dataport.dev/services/gateway/internal/gatewaytest"
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
	e := gatewaytest.New(t, gatewaytest.Options{})
	mail := func(extra string) string {
		return `{"rid": "GENERAL", "type": "email", "subject": "Minutes", "messages": ["m1", "m2"]` + extra + `}`
	}
	cases := []struct {
		name   string
		creds  gatewaytest.Creds
		body   string
		status int
		want   map[string]any
	}{
		// Authorization.
		{"no credentials", gatewaytest.Anonymous, seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"no token", gatewaytest.Creds{User: gatewaytest.AdminID}, seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"no user id", gatewaytest.Creds{Token: gatewaytest.AdminToken}, seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"the seed's example token", gatewaytest.Token("d26x6zSkaPSe5gCyy", "Zu-Z6eKzIIz7MCCRGeHi29bYkXZCJ4SxFC0JAasqm92"), seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"wrong token", gatewaytest.Token(gatewaytest.AdminID, "Zu-Z6eKzIIz7MCCRGeHi29bYkXZCJ4SxFC0JAasqm92"), seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"another user's token", gatewaytest.Token(gatewaytest.AdminID, gatewaytest.UserToken), seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"the stored hash as token", gatewaytest.Token(gatewaytest.AdminID, "0ddf4c0c"), seedExample, http.StatusUnauthorized, rcUnauthorized},
		{"bad credentials before bad body", gatewaytest.Token(gatewaytest.AdminID, "nope"), `{`, http.StatusUnauthorized, rcUnauthorized},

		// Invalid Params.
		{"no body", gatewaytest.AsAdmin, "", http.StatusBadRequest, rcInvalidParam},
		{"not JSON", gatewaytest.AsAdmin, `rid=GENERAL&type=file`, http.StatusBadRequest, rcInvalidParam},
		{"truncated JSON", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file"`, http.StatusBadRequest, rcInvalidParam},
		{"JSON array", gatewaytest.AsAdmin, `[]`, http.StatusBadRequest, rcInvalidParam},
		{"JSON null", gatewaytest.AsAdmin, `null`, http.StatusBadRequest, rcInvalidParam},
		{"missing rid", gatewaytest.AsAdmin, `{"type": "file", "format": "json"}`, http.StatusBadRequest, rcInvalidParam},
		{"missing type", gatewaytest.AsAdmin, `{"rid": "GENERAL", "format": "json"}`, http.StatusBadRequest, rcInvalidParam},
		{"unknown type", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "fax", "format": "json"}`, http.StatusBadRequest, rcInvalidParam},
		{"rid not a string", gatewaytest.AsAdmin, `{"rid": 42, "type": "file", "format": "json"}`, http.StatusBadRequest, rcInvalidParam},
		{"trailing garbage", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "json"} x`, http.StatusBadRequest, rcInvalidParam},
		{"email without messages", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "email", "subject": "x", "toUsers": ["root"]}`, http.StatusBadRequest,
			rcErrReason("error-invalid-params", "messages must list at least one message id")},
		{"email with no message", gatewaytest.AsAdmin, mail(`, "messages": []`), http.StatusBadRequest,
			rcErrReason("error-invalid-params", "messages must list at least one message id")},
		{"email without subject", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "email", "toEmails": ["a@example.com"], "messages": ["m1"]}`, http.StatusBadRequest,
			rcErrReason("error-invalid-params", "subject is required")},
		{"email subject with a line break", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "email", "subject": "Hi\r\nBcc: x@evil.test", "toEmails": ["a@example.com"], "messages": ["m1"]}`, http.StatusBadRequest,
			rcErrReason("error-invalid-params", "subject must be a single line")},
		{"email messages not strings", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "email", "subject": "x", "toEmails": ["a@example.com"], "messages": [1]}`, http.StatusBadRequest, rcInvalidParam},
		{"email message id that cannot exist", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "email", "subject": "x", "toEmails": ["a@example.com"], "messages": ["a.b"]}`, http.StatusBadRequest,
			rcErrReason("error-invalid-params", `"a.b" is not a message id`)},
		{"email toEmails not a list", gatewaytest.AsAdmin, mail(`, "toEmails": "a@example.com"`), http.StatusBadRequest, rcInvalidParam},

		// Invalid Room ID.
		{"unknown room", gatewaytest.AsAdmin, `{"rid": "NoSuchRoom", "type": "file", "format": "json"}`, http.StatusBadRequest, rcInvalidRoom},
		{"room id that cannot exist", gatewaytest.AsAdmin, `{"rid": "chat.messages.*", "type": "file", "format": "json"}`, http.StatusBadRequest, rcInvalidRoom},
		{"email to an unknown room", gatewaytest.AsAdmin, `{"rid": "NoSuchRoom", "type": "email", "subject": "x", "toEmails": ["a@example.com"], "messages": ["m1"]}`, http.StatusBadRequest, rcInvalidRoom},

		// Invalid Format.
		{"missing format", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file"}`, http.StatusBadRequest, rcInvalidFmt},
		{"unsupported format", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "pdf"}`, http.StatusBadRequest, rcInvalidFmt},
		{"format in capitals", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "JSON"}`, http.StatusBadRequest, rcInvalidFmt},
		// The native API's other room formats are not Rocket.Chat's.
		{"jsonl is native only", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "jsonl"}`, http.StatusBadRequest, rcInvalidFmt},
		{"csv.gz is native only", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "csv.gz"}`, http.StatusBadRequest, rcInvalidFmt},
		{"csv is native only", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "csv"}`, http.StatusBadRequest, rcInvalidFmt},

		// Invalid dates.
		{"dateFrom not a date", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "yesterday"}`, http.StatusBadRequest, rcInvalidDates},
		{"dateTo in another layout", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "json", "dateTo": "25/11/2021"}`, http.StatusBadRequest, rcInvalidDates},
		{"impossible day", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "json", "dateTo": "2021-02-30"}`, http.StatusBadRequest, rcInvalidDates},
		{"year zero", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "0000-01-01"}`, http.StatusBadRequest, rcInvalidDates},
		{"from after to", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "2021-11-26", "dateTo": "2021-11-25"}`, http.StatusBadRequest, rcInvalidDates},
		{"from after to in RFC 3339", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "2021-11-25T12:00:00Z", "dateTo": "2021-11-25T11:59:59+00:00"}`, http.StatusBadRequest, rcInvalidDates},

		// Not Allowed.
		{"no mail-messages permission", gatewaytest.AsUser, `{"rid": "GENERAL", "type": "file", "format": "json"}`, http.StatusBadRequest, rcNotAllowed},
		{"no permission, private room the user is in", gatewaytest.AsUser, seedExample, http.StatusBadRequest, rcNotAllowed},
		{"no permission says nothing about rooms", gatewaytest.AsUser, `{"rid": "NoSuchRoom", "type": "file", "format": "json"}`, http.StatusBadRequest, rcNotAllowed},
		{"admin not a member of a private room", gatewaytest.AsAdmin2, seedExample, http.StatusBadRequest, rcNotAllowed},
		{"admin not a member of a direct room", gatewaytest.AsAdmin, `{"rid": "DirectRoomId00001", "type": "file", "format": "json"}`, http.StatusBadRequest, rcNotAllowed},
		{"email without permission", gatewaytest.AsUser, mail(`, "toEmails": ["a@example.com"]`), http.StatusBadRequest, rcNotAllowed},
		{"email from a private room the admin is not in", gatewaytest.AsAdmin2, `{"rid": "iu7jtPAhvEeAS5tNq", "type": "email", "subject": "x", "toEmails": ["a@example.com"], "messages": ["m1"]}`, http.StatusBadRequest, rcNotAllowed},

		// Email recipients.
		{"email to nobody", gatewaytest.AsAdmin, mail(""), http.StatusBadRequest, rcErr("error-invalid-recipient")},
		{"email to empty names", gatewaytest.AsAdmin, mail(`, "toUsers": [""], "toEmails": ["  "]`), http.StatusBadRequest, rcErr("error-invalid-recipient")},
		{"malformed address", gatewaytest.AsAdmin, mail(`, "toEmails": ["not-an-address"]`), http.StatusBadRequest,
			rcErrReason("error-invalid-email", `Invalid email "not-an-address"`)},
		{"address with a header injection", gatewaytest.AsAdmin, mail(`, "toEmails": ["a@example.com\r\nBcc: x@evil.test"]`), http.StatusBadRequest,
			rcErrReason("error-invalid-email", `Invalid email "a@example.com\r\nBcc: x@evil.test"`)},
		{"address with a bare line feed", gatewaytest.AsAdmin, mail(`, "toEmails": ["a@example.com\nx"]`), http.StatusBadRequest,
			rcErrReason("error-invalid-email", `Invalid email "a@example.com\nx"`)},
		{"two addresses in one entry", gatewaytest.AsAdmin, mail(`, "toEmails": ["a@example.com, b@example.com"]`), http.StatusBadRequest,
			rcErrReason("error-invalid-email", `Invalid email "a@example.com, b@example.com"`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.Do(t, http.MethodPost, roomsExport, tc.creds, tc.body)
			assert.Equal(t, tc.status, resp.Status)
			assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
			assert.Equal(t, tc.want, resp.JSON(t))
		})
	}

	// None of these requests may have left a trace.
	assert.Zero(t, e.JobCount(t), "no job may be created")
	for _, name := range []string{bus.StreamExportTasks, bus.StreamExportEvents} {
		s, err := e.NATS.JS.Stream(t.Context(), name)
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
	e := gatewaytest.New(t, gatewaytest.Options{})
	resp := e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin, seedExample)
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
	body := resp.JSON(t)
	id, _ := body["exportId"].(string)
	assert.Equal(t, map[string]any{"success": true, "exportId": id}, body)
	assert.Regexp(t, regexp.MustCompile(`^[0-9A-Za-z]{17}$`), id)

	job, err := e.Jobs.Get(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, exportv1.JobKind_JOB_KIND_ROOM, job.GetKind())
	assert.Equal(t, exportv1.Format_FORMAT_HTML, job.GetFormat())
	assert.Equal(t, "rocketchat", job.GetDialect())
	assert.Equal(t, gatewaytest.AdminID, job.GetOwnerId())
	require.Len(t, job.GetParts(), 1)
	p := job.GetParts()[0]
	assert.Equal(t, exportv1.PartKind_PART_KIND_ROOM, p.GetKind())
	assert.Equal(t, gatewaytest.RoomPrivate, p.GetRoomId())
	assert.Equal(t, "staff", p.GetRoomName())
	assert.Equal(t, "p", p.GetRoomType())
	assert.Equal(t, "staff.html", p.GetTargetFile())
	assert.Equal(t, exportv1.PartState_PART_STATE_PENDING, p.GetState())

	tasks := e.TasksOf(t, "exports.tasks.room", id)
	require.Len(t, tasks, 1)
	task := tasks[0]
	assert.Equal(t, exportv1.PartKind_PART_KIND_ROOM, task.GetPartKind())
	assert.Equal(t, "staff.html", task.GetTargetFile())
	assert.Equal(t, gatewaytest.RoomPrivate, task.GetRoom().GetRoomId())
	assert.Equal(t, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), task.GetRoom().GetFrom().AsTime())
	assert.Equal(t, time.Date(2021, 11, 25, 23, 59, 59, 999_000_000, time.UTC), task.GetRoom().GetTo().AsTime())

	// A public channel is open to anyone with the permission, member or
	// not, and without dates the range stays open.
	resp = e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin2, `{"rid": "GENERAL", "type": "file", "format": "json"}`)
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
	id2 := resp.JSON(t)["exportId"].(string)
	tasks = e.TasksOf(t, "exports.tasks.room", id2)
	require.Len(t, tasks, 1)
	assert.Equal(t, "general.json", tasks[0].GetTargetFile())
	assert.Nil(t, tasks[0].GetRoom().GetFrom())
	assert.Nil(t, tasks[0].GetRoom().GetTo())
}

func TestRoomsExportAcceptsRFC3339(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	resp := e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin,
		`{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "2021-11-25T10:00:00+02:00", "dateTo": "2021-11-25T18:30:00.250Z"}`)
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
	job, err := e.Jobs.Get(t.Context(), resp.JSON(t)["exportId"].(string))
	require.NoError(t, err)
	assert.Equal(t, time.Date(2021, 11, 25, 8, 0, 0, 0, time.UTC), job.GetRoom().GetFrom().AsTime())
	assert.Equal(t, time.Date(2021, 11, 25, 18, 30, 0, 250_000_000, time.UTC), job.GetRoom().GetTo().AsTime())
	assert.Equal(t, exportv1.JobState_JOB_STATE_PENDING, job.GetState())
}

// TestRoomsExportEmail is Rocket.Chat's email variant: usernames resolve
// to their addresses, unknown ones come back in missing, and the mail
// becomes a ROOM_MAIL job whose one task the room-exporter renders.
func TestRoomsExportEmail(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	resp := e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin, `{
		"rid": "iu7jtPAhvEeAS5tNq", "type": "email",
		"toUsers": ["alice", "nobody", "root2", "root"],
		"toEmails": ["Board <board@example.com>", " ", "root@example.com"],
		"subject": "Minutes of today's meeting",
		"messages": ["msgA0000000000001", "msgB0000000000002"]}`)
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
	body := resp.JSON(t)
	id, _ := body["exportId"].(string)
	// root2 has no address: missing, as in Rocket.Chat.
	assert.Equal(t, map[string]any{"missing": []any{"nobody", "root2"}, "success": true, "exportId": id}, body)

	job, err := e.Jobs.Get(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, exportv1.JobKind_JOB_KIND_ROOM_MAIL, job.GetKind())
	assert.Equal(t, exportv1.Format_FORMAT_HTML, job.GetFormat())
	assert.Equal(t, gatewaytest.RoomPrivate, job.GetRoom().GetRoomId())
	assert.Equal(t, []string{"alice@example.com", "board@example.com", "root@example.com"}, job.GetMail().GetToEmails(), "bare, sorted, without duplicates")
	assert.Equal(t, "Minutes of today's meeting", job.GetMail().GetSubject())
	assert.Equal(t, []string{"msgA0000000000001", "msgB0000000000002"}, job.GetMail().GetMessageIds())

	tasks := e.TasksOf(t, "exports.tasks.room", id)
	require.Len(t, tasks, 1)
	assert.Equal(t, exportv1.PartKind_PART_KIND_ROOM_MAIL, tasks[0].GetPartKind())
	assert.Equal(t, exportv1.JobKind_JOB_KIND_ROOM_MAIL, tasks[0].GetKind())
	assert.Equal(t, job.GetMail().GetToEmails(), tasks[0].GetMail().GetToEmails())
	assert.Equal(t, gatewaytest.RoomPrivate, tasks[0].GetRoom().GetRoomId())

	// Only usernames nobody can be mailed at: success, everything
	// missing, and nothing to send.
	before := e.JobCount(t)
	resp = e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "email", "toUsers": ["nobody"], "subject": "", "messages": ["m1"]}`)
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
	assert.Equal(t, map[string]any{"missing": []any{"nobody"}, "success": true}, resp.JSON(t))
	assert.Equal(t, before, e.JobCount(t))

	// Addresses alone are enough, and missing is an empty list.
	resp = e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "email", "toEmails": ["x@example.com"], "subject": "s", "messages": ["m1"]}`)
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
	assert.Equal(t, []any{}, resp.JSON(t)["missing"])
	assert.True(t, strings.HasPrefix(string(resp.Body), `{"missing":[]`), "%s", resp.Body)
}
