package native_test

import (
	"bytes"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/links"
)

// The native API serves jobs that the other dialects create; these tests
// create them as production does, through the router.

// roomExport creates a JSON export of room as c (an admin) through
// Rocket.Chat's rooms.export and returns its id.
func roomExport(t *testing.T, e *gatewaytest.Env, c gatewaytest.Creds, room string) string {
	t.Helper()
	r := e.Do(t, http.MethodPost, "/api/v1/rooms.export", c, `{"rid": "`+room+`", "type": "file", "format": "json"}`)
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	return r.JSON(t)["exportId"].(string)
}

// recordsExport creates a CSV records export as alice through Rebilly's
// data-exports and returns its id.
func recordsExport(t *testing.T, e *gatewaytest.Env) string {
	t.Helper()
	r := e.Do(t, http.MethodPost, "/data-exports", gatewaytest.APIKey(gatewaytest.UserAPIKey), `{"name":"n","resource":"events","format":"csv"}`)
	require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
	return r.JSON(t)["id"].(string)
}

// apply moves a job on as the exporters' and archiver's events do.
func apply(t *testing.T, e *gatewaytest.Env, ev jobstore.Event) {
	t.Helper()
	_, err := e.Jobs.Apply(t.Context(), ev)
	require.NoError(t, err)
}

// nativeError asserts that r is the native error envelope: exactly an RFC
// 9457 problem of status whose detail is msg, as application/problem+json.
func nativeError(t *testing.T, r gatewaytest.Response, status int, msg string) {
	t.Helper()
	assert.Equal(t, status, r.Status, "%s", r.Body)
	assert.Equal(t, "application/problem+json", r.Header.Get("Content-Type"))
	assert.Equal(t, map[string]any{
		"type": "about:blank", "title": http.StatusText(status), "status": float64(status), "detail": msg,
	}, r.JSON(t))
}

const (
	msgNotFound     = "export not found"
	msgUnauthorized = "missing or invalid credentials: send X-User-Id and X-Auth-Token"
)

func TestGetExport(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	id := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)

	r := e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "")
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
	created := e.Clock.Now().UTC().Format(time.RFC3339)
	traceID := e.Job(t, id).GetTraceId()
	assert.Regexp(t, `^[0-9a-f]{32}$`, traceID, "the creating request's trace")
	assert.Equal(t, map[string]any{
		"id": id, "kind": "room", "format": "json", "state": "pending",
		"progress": map[string]any{"percent": 0.0, "records": 0.0, "bytes": 0.0},
		"files":    []any{}, "error": "", "createdAt": created, "updatedAt": created,
		"traceId": traceID,
	}, r.JSON(t), "an unfinished job has no files, no expiry and no parts")

	// A job of another dialect reads the same way.
	rid := recordsExport(t, e)
	v := e.Do(t, http.MethodGet, "/v1/exports/"+rid, gatewaytest.AsUser, "").JSON(t)
	assert.Equal(t, "records", v["kind"])
	assert.Equal(t, "csv", v["format"])
	assert.Equal(t, e.Job(t, rid).GetTraceId(), v["traceId"])
	assert.Regexp(t, `^[0-9a-f]{32}$`, v["traceId"], "every dialect's jobs carry their trace")
}

// TestGetExportOfSomeoneElse: another user's job answers exactly like a
// job that does not exist (404, not 403), so ids cannot be probed; odd
// ids are just missing jobs, never a 400 or a 5xx.
func TestGetExportOfSomeoneElse(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	id := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)
	missing := e.Do(t, http.MethodGet, "/v1/exports/NoSuchExport00000", gatewaytest.AsAdmin, "")
	nativeError(t, missing, http.StatusNotFound, msgNotFound)

	for _, c := range []gatewaytest.Creds{gatewaytest.AsAdmin2, gatewaytest.AsUser} {
		r := e.Do(t, http.MethodGet, "/v1/exports/"+id, c, "")
		nativeError(t, r, http.StatusNotFound, msgNotFound)
		assert.Equal(t, missing.Body, r.Body, "indistinguishable from a missing job")
	}
	for _, odd := range []string{"..", "a.b", "%2e%2e", "a%20b", "%C3%9C", strings.Repeat("x", 1000)} {
		nativeError(t, e.Do(t, http.MethodGet, "/v1/exports/"+odd, gatewaytest.AsAdmin, ""), http.StatusNotFound, msgNotFound)
	}
}

func TestListExports(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	empty := e.Do(t, http.MethodGet, "/v1/exports", gatewaytest.AsAdmin, "")
	require.Equal(t, http.StatusOK, empty.Status, "%s", empty.Body)
	assert.Equal(t, map[string]any{"items": []any{}, "total": 0.0}, empty.JSON(t), "an empty list, not null")

	var mine []string
	for range 3 {
		mine = append(mine, roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral))
		e.Clock.Advance(time.Second)
	}
	theirs := roomExport(t, e, gatewaytest.AsAdmin2, gatewaytest.RoomGeneral)

	ids := func(c gatewaytest.Creds) ([]string, any) {
		t.Helper()
		r := e.Do(t, http.MethodGet, "/v1/exports", c, "")
		require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
		body := r.JSON(t)
		var out []string
		for _, it := range body["items"].([]any) {
			out = append(out, it.(map[string]any)["id"].(string))
		}
		return out, body["total"]
	}
	got, total := ids(gatewaytest.AsAdmin)
	assert.Equal(t, []string{mine[2], mine[1], mine[0]}, got, "the caller's jobs, newest first")
	assert.Equal(t, 3.0, total)
	got, total = ids(gatewaytest.AsAdmin2)
	assert.Equal(t, []string{theirs}, got)
	assert.Equal(t, 1.0, total)
	got, total = ids(gatewaytest.AsUser)
	assert.Empty(t, got)
	assert.Equal(t, 0.0, total)
}

func TestCancelExport(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	id := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)

	// Someone else's job is missing to them, and stays as it was.
	nativeError(t, e.Do(t, http.MethodPost, "/v1/exports/"+id+"/cancel", gatewaytest.AsAdmin2, ""), http.StatusNotFound, msgNotFound)
	assert.Equal(t, exportv1.JobState_JOB_STATE_PENDING, e.Job(t, id).GetState())
	assert.NotContains(t, e.Events(t, id), bus.EventCanceled)
	nativeError(t, e.Do(t, http.MethodPost, "/v1/exports/NoSuchExport00000/cancel", gatewaytest.AsAdmin, ""), http.StatusNotFound, msgNotFound)

	e.Clock.Advance(time.Minute)
	r := e.Do(t, http.MethodPost, "/v1/exports/"+id+"/cancel", gatewaytest.AsAdmin, "")
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	v := r.JSON(t)
	assert.Equal(t, id, v["id"])
	assert.Equal(t, "canceled", v["state"])
	assert.Equal(t, "canceled by the user", v["error"])
	assert.Equal(t, e.Clock.Now().UTC().Format(time.RFC3339), v["updatedAt"])
	assert.Equal(t, exportv1.JobState_JOB_STATE_CANCELED, e.Job(t, id).GetState())
	assert.Contains(t, e.Events(t, id), bus.EventCanceled, "the exporters hear of it")
	assert.Equal(t, v, e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "").JSON(t), "the answer is the job's view")

	nativeError(t, e.Do(t, http.MethodPost, "/v1/exports/"+id+"/cancel", gatewaytest.AsAdmin, ""),
		http.StatusConflict, "export is canceled and can no longer be canceled")
}

// TestCancelTooLate: a job that has ended, or is finalizing (its files
// are being checked and published), cannot be canceled; the answer is
// 409 and the job keeps its state.
func TestCancelTooLate(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	now := func() *timestamppb.Timestamp { return timestamppb.New(e.Clock.Now()) }
	cases := []struct {
		state string
		to    func(id string) jobstore.Event
	}{
		{"finalizing", func(id string) jobstore.Event {
			return &exportv1.ExportFinalizing{JobId: id, OccurredAt: now()}
		}},
		{"completed", func(id string) jobstore.Event {
			return &exportv1.ExportCompleted{JobId: id, OccurredAt: now()}
		}},
		{"failed", func(id string) jobstore.Event {
			return &exportv1.ExportFailed{JobId: id, OccurredAt: now(), Reason: "disk full"}
		}},
		{"rejected", func(id string) jobstore.Event {
			return &exportv1.ExportFailed{JobId: id, OccurredAt: now(), Reason: "Too many lines in one export", Rejected: true}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.state, func(t *testing.T) {
			id := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)
			apply(t, e, tc.to(id))
			nativeError(t, e.Do(t, http.MethodPost, "/v1/exports/"+id+"/cancel", gatewaytest.AsAdmin, ""),
				http.StatusConflict, "export is "+tc.state+" and can no longer be canceled")
			assert.Equal(t, tc.state, e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "").JSON(t)["state"])
			assert.NotContains(t, e.Events(t, id), bus.EventCanceled)
		})
	}
}

// TestViewOfAnEndedJob: a completed job lists its files with freshly
// signed links and says when they are deleted; a job of several parts
// shows where each stands; notifications show per channel.
func TestViewOfAnEndedJob(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	// A data download has a part per room and the user's profile.
	r := e.Do(t, http.MethodGet, "/api/v1/users.requestDataDownload", gatewaytest.AsUser, "")
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	id := r.JSON(t)["exportOperation"].(map[string]any)["_id"].(string)

	pending := e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsUser, "").JSON(t)
	assert.Equal(t, "user-data", pending["kind"])
	parts := pending["parts"].([]any)
	require.Greater(t, len(parts), 1)
	for i, p := range parts {
		p := p.(map[string]any)
		assert.Equal(t, float64(i), p["part"])
		assert.Equal(t, "pending", p["state"])
		assert.Contains(t, []any{"room", "user-profile", "channels", "assets"}, p["kind"])
		assert.NotEmpty(t, p["targetFile"])
	}

	completedAt := e.Clock.Now().Add(time.Minute)
	files := []*exportv1.File{
		{Name: "dataport-" + id + ".zip", ObjectKey: "jobs/" + id + "/files/export.zip", Size: 1234, Records: 56, Sha256: strings.Repeat("ab", 32)},
		{Name: "Ünïcode notes/1 & 2.txt", ObjectKey: "jobs/" + id + "/files/notes", Size: 6},
	}
	apply(t, e, &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.New(completedAt), Files: files})
	apply(t, e, &exportv1.NotificationSent{JobId: id, OccurredAt: timestamppb.New(completedAt), Recipients: []string{"alice@example.com"}})
	apply(t, e, &exportv1.NotificationSent{JobId: id, OccurredAt: timestamppb.New(completedAt), Channel: "webhook.0123456789abcdef", Recipients: []string{"https://hooks.example.com/x"}, Error: "503 Service Unavailable"})

	v := e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsUser, "").JSON(t)
	assert.Equal(t, "completed", v["state"])
	assert.Equal(t, map[string]any{"percent": 100.0, "records": 56.0, "bytes": 1240.0}, v["progress"])
	assert.Equal(t, completedAt.Add(gatewaytest.Retention).UTC().Format(time.RFC3339), v["expiresAt"])
	assert.Nil(t, v["filesExpired"], "absent while the files are there")
	for _, p := range v["parts"].([]any) {
		assert.Equal(t, "completed", p.(map[string]any)["state"])
	}
	at := completedAt.UTC().Format(time.RFC3339)
	assert.Equal(t, []any{
		map[string]any{"channel": "email", "recipients": []any{"alice@example.com"}, "at": at},
		map[string]any{"channel": "webhook.0123456789abcdef", "recipients": []any{"https://hooks.example.com/x"}, "error": "503 Service Unavailable", "at": at},
	}, v["notifications"])

	got := v["files"].([]any)
	require.Len(t, got, 2)
	for i, f := range files {
		fv := got[i].(map[string]any)
		assert.Equal(t, f.GetName(), fv["name"])
		assert.Equal(t, float64(f.GetSize()), fv["size"])
		assert.Equal(t, float64(f.GetRecords()), fv["records"])
		assert.Equal(t, f.GetSha256(), fv["sha256"])
		link, err := url.Parse(fv["url"].(string))
		require.NoError(t, err)
		assert.Equal(t, e.URL+links.Path(id, f.GetName()), link.Scheme+"://"+link.Host+link.EscapedPath(), "the link names the file, escaped")
		exp, err := time.Parse(time.RFC3339, fv["expiresAt"].(string))
		require.NoError(t, err)
		assert.Equal(t, strconv.FormatInt(exp.Unix(), 10), link.Query().Get("exp"))
		assert.NoError(t, links.New(e.URL, gatewaytest.LinkSecret(), gatewaytest.LinkTTL, nil).Verify(id, f.GetName(), link.Query().Get("exp"), link.Query().Get("sig")))
	}

	// The sweeper deleted them: still listed, without links.
	apply(t, e, &exportv1.ExportExpired{JobId: id, OccurredAt: timestamppb.New(completedAt.Add(gatewaytest.Retention))})
	v = e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsUser, "").JSON(t)
	assert.Equal(t, true, v["filesExpired"])
	for _, f := range v["files"].([]any) {
		assert.NotContains(t, f, "url")
		assert.NotContains(t, f, "expiresAt")
	}
}

// TestDownload: a signed link is the only credential a download needs;
// everything else about it is checked before the file is read.
func TestDownload(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{MinIO: true})
	ctx := t.Context()
	id := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)
	content := []byte(`[{"msg":"<script>alert(1)</script>"}]`)
	key := "jobs/" + id + "/parts/0/general.json"
	_, err := e.MinIO.Store.Upload(ctx, gatewaytest.ExportBucket, key, bytes.NewReader(content), "application/json")
	require.NoError(t, err)
	sum := strings.Repeat("0f", 32)
	apply(t, e, &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.New(e.Clock.Now()), Files: []*exportv1.File{
		{Name: "general.json", ObjectKey: key, Size: uint64(len(content)), Sha256: sum, ContentType: "application/json"},
		// Recorded, but its object is gone.
		{Name: "lost.json", ObjectKey: "jobs/" + id + "/parts/0/lost.json", Size: 1},
	}})
	file := e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "").JSON(t)["files"].([]any)[0].(map[string]any)
	link := file["url"].(string)

	// Anyone holding the link, with or without credentials of their own.
	for _, c := range []gatewaytest.Creds{gatewaytest.Anonymous, gatewaytest.AsUser} {
		dl := e.DoURL(t, http.MethodGet, link, c, "")
		require.Equal(t, http.StatusOK, dl.Status, "%s", dl.Body)
		assert.Equal(t, content, dl.Body)
		assert.Equal(t, "application/json", dl.Header.Get("Content-Type"))
		assert.Equal(t, strconv.Itoa(len(content)), dl.Header.Get("Content-Length"))
		assert.Equal(t, "attachment; filename=general.json", dl.Header.Get("Content-Disposition"))
		assert.Equal(t, `"`+sum+`"`, dl.Header.Get("ETag"))
		assert.Equal(t, sum, dl.Header.Get("X-Checksum-Sha256"))
		assert.Equal(t, "private, no-store", dl.Header.Get("Cache-Control"), "the link is a credential")
		assert.Equal(t, "nosniff", dl.Header.Get("X-Content-Type-Options"))
	}

	u, err := url.Parse(link)
	require.NoError(t, err)
	q := u.Query()
	withQuery := func(v url.Values) string {
		c := *u
		c.RawQuery = v.Encode()
		return c.String()
	}
	tampered := []byte(q.Get("sig"))
	tampered[len(tampered)-1] ^= 1
	past := time.Now().Add(-time.Second).Unix()
	expired := url.Values{"exp": {strconv.FormatInt(past, 10)}, "sig": {links.Signature(gatewaytest.LinkSecret(), id, "general.json", past)}}
	otherKey := url.Values{"exp": q["exp"], "sig": {links.Signature([]byte("another-secret"), id, "general.json", mustInt(t, q.Get("exp")))}}

	other := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)
	cases := []struct {
		name, url string
		status    int
		msg       string
	}{
		{"no signature", e.URL + links.Path(id, "general.json"), http.StatusForbidden, "invalid download link"},
		{"tampered signature", withQuery(url.Values{"exp": q["exp"], "sig": {string(tampered)}}), http.StatusForbidden, "invalid download link"},
		{"signed with another key", withQuery(otherKey), http.StatusForbidden, "invalid download link"},
		{"not a number as expiry", withQuery(url.Values{"exp": {"soon"}, "sig": q["sig"]}), http.StatusForbidden, "invalid download link"},
		{"another job's signature", strings.Replace(link, id, other, 1), http.StatusForbidden, "invalid download link"},
		{"expired", withQuery(expired), http.StatusGone, "download link expired; fetch the export again for a fresh link"},
		{"signed, job not completed", gatewaytest.SignedLink(e.URL, other, "general.json"), http.StatusNotFound, "file not found"},
		{"signed, no such file", gatewaytest.SignedLink(e.URL, id, "other.json"), http.StatusNotFound, "file not found"},
		{"signed, object gone", gatewaytest.SignedLink(e.URL, id, "lost.json"), http.StatusNotFound, "file not found"},
		{"signed, no such job", gatewaytest.SignedLink(e.URL, "NoSuchExport00000", "general.json"), http.StatusNotFound, msgNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nativeError(t, e.DoURL(t, http.MethodGet, tc.url, gatewaytest.AsAdmin, ""), tc.status, tc.msg)
		})
	}

	// Once the sweeper deleted the files, a link minted before then still
	// verifies, but the files are gone, not missing.
	apply(t, e, &exportv1.ExportExpired{JobId: id, OccurredAt: timestamppb.New(e.Clock.Now())})
	nativeError(t, e.DoURL(t, http.MethodGet, link, gatewaytest.Anonymous, ""), http.StatusGone,
		"the export's files have expired and were deleted; request a new export")
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	require.NoError(t, err)
	return n
}

// TestErrorEnvelope: whatever goes wrong on a native route, the answer is
// a problem document (RFC 9457) with a 4xx, whether the handler, the router or the
// gateway's middleware answers.
func TestErrorEnvelope(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{MaxBody: 64})
	id := roomExport(t, e, gatewaytest.AsAdmin, gatewaytest.RoomGeneral)
	big := `{"pad": "` + strings.Repeat("x", 100) + `"}`
	cases := []struct {
		name, method, path string
		creds              gatewaytest.Creds
		body               string
		status             int
		msg                string
	}{
		{"list without credentials", http.MethodGet, "/v1/exports", gatewaytest.Anonymous, "", http.StatusUnauthorized, msgUnauthorized},
		{"get without credentials", http.MethodGet, "/v1/exports/" + id, gatewaytest.Anonymous, "", http.StatusUnauthorized, msgUnauthorized},
		{"cancel without credentials", http.MethodPost, "/v1/exports/" + id + "/cancel", gatewaytest.Anonymous, "", http.StatusUnauthorized, msgUnauthorized},
		{"wrong token", http.MethodGet, "/v1/exports/" + id, gatewaytest.Token(gatewaytest.AdminID, gatewaytest.UserToken), "", http.StatusUnauthorized, msgUnauthorized},
		{"user id alone", http.MethodGet, "/v1/exports", gatewaytest.Creds{User: gatewaytest.AdminID}, "", http.StatusUnauthorized, msgUnauthorized},
		{"another dialect's API key", http.MethodGet, "/v1/exports", gatewaytest.APIKey(gatewaytest.UserAPIKey), "", http.StatusUnauthorized, msgUnauthorized},
		{"another dialect's bearer key", http.MethodGet, "/v1/exports", gatewaytest.Bearer(gatewaytest.UserAPIKey), "", http.StatusUnauthorized, msgUnauthorized},
		{"unknown route", http.MethodGet, "/v1/nope", gatewaytest.AsAdmin, "", http.StatusNotFound, "not found"},
		{"below a job", http.MethodGet, "/v1/exports/" + id + "/nope", gatewaytest.AsAdmin, "", http.StatusNotFound, "not found"},
		{"create without credentials", http.MethodPost, "/v1/exports", gatewaytest.Anonymous, `{"kind": "room"}`, http.StatusUnauthorized, msgUnauthorized},
		{"replace the collection", http.MethodPut, "/v1/exports", gatewaytest.AsAdmin, `{"kind": "room"}`, http.StatusMethodNotAllowed, "method not allowed"},
		{"delete", http.MethodDelete, "/v1/exports/" + id, gatewaytest.AsAdmin, "", http.StatusMethodNotAllowed, "method not allowed"},
		{"cancel by GET", http.MethodGet, "/v1/exports/" + id + "/cancel", gatewaytest.AsAdmin, "", http.StatusMethodNotAllowed, "method not allowed"},
		{"oversized body", http.MethodPost, "/v1/exports/" + id + "/cancel", gatewaytest.AsAdmin, big, http.StatusRequestEntityTooLarge, "the request body must be at most 64 bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			nativeError(t, e.Do(t, tc.method, tc.path, tc.creds, tc.body), tc.status, tc.msg)
		})
	}
	assert.Equal(t, exportv1.JobState_JOB_STATE_PENDING, e.Job(t, id).GetState(), "no refused request touched the job")
}
