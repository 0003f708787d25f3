package httpapi_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/links"
)

const roomsExport = "/api/v1/rooms.export"

// TestRoomExportEndToEnd follows one export from the request through the
// projection to the download, with the other services played by hand.
func TestRoomExportEndToEnd(t *testing.T) {
	e := newEnv(t, envOptions{server: true, minio: true, projection: true})
	ctx := t.Context()

	// The example call of seed 002, by a member of the private room.
	resp := e.do(t, http.MethodPost, roomsExport, asAdmin,
		`{"rid": "iu7jtPAhvEeAS5tNq", "type": "file", "dateFrom": "2000-01-01", "dateTo": "2021-11-25", "format": "html"}`)
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	created := resp.json(t)
	id, _ := created["exportId"].(string)
	assert.Equal(t, map[string]any{"success": true, "exportId": id}, created)
	assert.Regexp(t, regexp.MustCompile(`^[0-9A-Za-z]{17}$`), id)

	// Visible at once.
	resp = e.do(t, http.MethodGet, "/v1/exports/"+id, asAdmin, "")
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	first := resp.json(t)
	assert.Contains(t, []any{"pending", "queued"}, first["state"])
	assert.Equal(t, id, first["id"])
	assert.Equal(t, "room", first["kind"])
	assert.Equal(t, "html", first["format"])
	assert.Equal(t, []any{}, first["files"])
	assert.Equal(t, "", first["error"])
	createdAt, err := time.Parse(time.RFC3339, first["createdAt"].(string))
	require.NoError(t, err)
	assert.WithinDuration(t, time.Now(), createdAt, time.Minute)
	assert.True(t, strings.HasSuffix(first["createdAt"].(string), "Z"), "UTC")

	// The task, with inclusive UTC day bounds.
	tasks, err := e.nats.JS.Stream(ctx, bus.StreamExportTasks)
	require.NoError(t, err)
	raw, err := tasks.GetLastMsgForSubject(ctx, "exports.tasks.room")
	require.NoError(t, err)
	assert.Equal(t, id+".task.0", raw.Header.Get(jetstream.MsgIDHeader))
	task := &exportv1.ExportTask{}
	require.NoError(t, proto.Unmarshal(raw.Data, task))
	assert.Equal(t, id, task.GetJobId())
	assert.Equal(t, adminID, task.GetOwnerId())
	assert.Equal(t, exportv1.JobKind_JOB_KIND_ROOM, task.GetKind())
	assert.Equal(t, exportv1.Format_FORMAT_HTML, task.GetFormat())
	assert.Equal(t, uint32(0), task.GetPart())
	assert.Equal(t, uint32(1), task.GetPartsTotal())
	assert.Equal(t, roomPrivate, task.GetRoom().GetRoomId())
	assert.Equal(t, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), task.GetRoom().GetFrom().AsTime())
	assert.Equal(t, time.Date(2021, 11, 25, 23, 59, 59, 999_000_000, time.UTC), task.GetRoom().GetTo().AsTime())

	// The job carries the request's trace, and so does the task.
	job, err := e.jobs.Get(ctx, id)
	require.NoError(t, err)
	assert.Regexp(t, `^[0-9a-f]{32}$`, job.GetTraceId())
	assert.Contains(t, raw.Header.Get("traceparent"), job.GetTraceId())
	assert.Equal(t, "rocketchat", job.GetDialect())

	// The projection applies ExportRequested and ExportQueued.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		r := e.do(t, http.MethodGet, "/v1/exports/"+id, asAdmin, "")
		assert.Equal(c, "queued", r.json(t)["state"])
	}, 10*time.Second, 20*time.Millisecond)

	// Nobody else sees the job, and nobody without credentials.
	for _, c := range []creds{asAdmin2, asUser} {
		r := e.do(t, http.MethodGet, "/v1/exports/"+id, c, "")
		assert.Equal(t, http.StatusNotFound, r.status)
		assert.Equal(t, map[string]any{"error": "export not found"}, r.json(t))
	}
	r := e.do(t, http.MethodGet, "/v1/exports/NoSuchExport00000", asAdmin, "")
	assert.Equal(t, http.StatusNotFound, r.status)
	assert.Equal(t, map[string]any{"error": "export not found"}, r.json(t))
	for _, c := range []creds{anon, {adminID, "wrong"}} {
		r := e.do(t, http.MethodGet, "/v1/exports/"+id, c, "")
		assert.Equal(t, http.StatusUnauthorized, r.status)
		assert.NotEmpty(t, r.json(t)["error"])
		r = e.do(t, http.MethodGet, "/v1/exports", c, "")
		assert.Equal(t, http.StatusUnauthorized, r.status)
	}

	// The exporter uploads the part; the archiver completes the job.
	content := []byte(strings.Repeat(`<p>hello from the staff room</p>`+"\n", 1000))
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	key := "jobs/" + id + "/parts/0/staff.html"
	_, err = e.minio.Store.Upload(ctx, exportBucket, key, bytes.NewReader(content), "text/html; charset=utf-8")
	require.NoError(t, err)
	f := &exportv1.File{Name: "staff.html", ObjectKey: key, Size: uint64(len(content)), Records: 1000, Sha256: sha, ContentType: "text/html; charset=utf-8"}
	// A second file whose name needs escaping in a URL, without a stored
	// content type or checksum.
	notes := []byte("notes\n")
	notesKey := "jobs/" + id + "/files/notes"
	_, err = e.minio.Store.Upload(ctx, exportBucket, notesKey, bytes.NewReader(notes), "")
	require.NoError(t, err)
	g := &exportv1.File{Name: "Ünïcode notes/1 & 2.txt", ObjectKey: notesKey, Size: uint64(len(notes))}
	require.NoError(t, e.pub.PublishStatus(ctx, bus.EventPart, id, "0", &exportv1.PartUploaded{JobId: id, OccurredAt: timestamppb.Now(), Part: 0, PartsTotal: 1, File: f, Kind: exportv1.JobKind_JOB_KIND_ROOM, OwnerId: adminID}))
	require.NoError(t, e.pub.PublishStatus(ctx, bus.EventCompleted, id, "", &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.Now(), Files: []*exportv1.File{f, g}, OwnerId: adminID, Kind: exportv1.JobKind_JOB_KIND_ROOM}))

	var done map[string]any
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		done = e.do(t, http.MethodGet, "/v1/exports/"+id, asAdmin, "").json(t)
		assert.Equal(c, "completed", done["state"])
	}, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, map[string]any{"percent": 100.0, "records": 1000.0, "bytes": float64(len(content) + len(notes))}, done["progress"])
	files, _ := done["files"].([]any)
	require.Len(t, files, 2)
	file := files[0].(map[string]any)
	assert.Equal(t, "staff.html", file["name"])
	assert.Equal(t, float64(len(content)), file["size"])
	assert.Equal(t, 1000.0, file["records"])
	assert.Equal(t, sha, file["sha256"])
	link, err := url.Parse(file["url"].(string))
	require.NoError(t, err)
	assert.Equal(t, e.url+"/v1/exports/"+id+"/files/staff.html", link.Scheme+"://"+link.Host+link.Path)
	expiresAt, err := time.Parse(time.RFC3339, file["expiresAt"].(string))
	require.NoError(t, err)
	assert.Equal(t, link.Query().Get("exp"), strconv.FormatInt(expiresAt.Unix(), 10))
	assert.WithinDuration(t, time.Now().Add(time.Hour), expiresAt, time.Minute)

	// The list has it too.
	list := e.do(t, http.MethodGet, "/v1/exports", asAdmin, "").json(t)
	assert.Equal(t, 1.0, list["total"])
	items, _ := list["items"].([]any)
	require.Len(t, items, 1)
	assert.Equal(t, id, items[0].(map[string]any)["id"])
	other := e.do(t, http.MethodGet, "/v1/exports", asUser, "").json(t)
	assert.Equal(t, map[string]any{"items": []any{}, "total": 0.0}, other)

	// Download through the signed link, without credentials.
	dl := e.doURL(t, http.MethodGet, link.String(), anon, "")
	require.Equal(t, http.StatusOK, dl.status, "%s", dl.body)
	assert.True(t, bytes.Equal(content, dl.body), "downloaded bytes differ")
	assert.Equal(t, "text/html; charset=utf-8", dl.header.Get("Content-Type"))
	assert.Equal(t, strconv.Itoa(len(content)), dl.header.Get("Content-Length"))
	assert.Equal(t, `attachment; filename=staff.html`, dl.header.Get("Content-Disposition"))
	assert.Equal(t, `"`+sha+`"`, dl.header.Get("ETag"))
	assert.Equal(t, sha, dl.header.Get("X-Checksum-Sha256"))
	assert.Equal(t, "nosniff", dl.header.Get("X-Content-Type-Options"), "an HTML export is never sniffed into something else")

	notesLink := files[1].(map[string]any)["url"].(string)
	assert.Contains(t, notesLink, "/files/%C3%9Cn%C3%AFcode%20notes%2F1%20&%202.txt?")
	dl = e.doURL(t, http.MethodGet, notesLink, anon, "")
	require.Equal(t, http.StatusOK, dl.status, "%s", dl.body)
	assert.Equal(t, notes, dl.body)
	assert.Equal(t, "application/octet-stream", dl.header.Get("Content-Type"))
	assert.Equal(t, `attachment; filename*=utf-8''%C3%9Cn%C3%AFcode%20notes%2F1%20&%202.txt`, dl.header.Get("Content-Disposition"))
	assert.Empty(t, dl.header.Get("X-Checksum-Sha256"))
	assert.NotEmpty(t, dl.header.Get("ETag"))

	q := link.Query()
	withQuery := func(exp, sig string) string {
		u := *link
		v := url.Values{}
		v.Set("exp", exp)
		v.Set("sig", sig)
		u.RawQuery = v.Encode()
		return u.String()
	}
	tampered := []byte(q.Get("sig"))
	tampered[0] ^= 1
	past := time.Now().Add(-time.Minute).Unix()
	cases := []struct {
		name   string
		url    string
		status int
	}{
		{"tampered signature", withQuery(q.Get("exp"), string(tampered)), http.StatusForbidden},
		{"extended expiry", withQuery(strconv.FormatInt(time.Now().Add(48*time.Hour).Unix(), 10), q.Get("sig")), http.StatusForbidden},
		{"no signature", e.url + "/v1/exports/" + id + "/files/staff.html", http.StatusForbidden},
		{"another file's name", strings.Replace(link.String(), "staff.html", "other.html", 1), http.StatusForbidden},
		{"expired", withQuery(strconv.FormatInt(past, 10), links.Signature(linkSecret, id, "staff.html", past)), http.StatusGone},
		{"signed, but no such file", signed(e.url, id, "other.html"), http.StatusNotFound},
		{"signed, but no such job", signed(e.url, "NoSuchExport00000", "staff.html"), http.StatusNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.doURL(t, http.MethodGet, tc.url, anon, "")
			assert.Equal(t, tc.status, r.status)
			assert.NotEmpty(t, r.json(t)["error"])
		})
	}
}

func TestDownloadRefusesUnfinishedJobs(t *testing.T) {
	e := newEnv(t, envOptions{server: true})
	resp := e.do(t, http.MethodPost, roomsExport, asAdmin, `{"rid": "GENERAL", "type": "file", "format": "json"}`)
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	id := resp.json(t)["exportId"].(string)

	// Without dates the range stays open at both ends.
	tasks, err := e.nats.JS.Stream(t.Context(), bus.StreamExportTasks)
	require.NoError(t, err)
	raw, err := tasks.GetLastMsgForSubject(t.Context(), "exports.tasks.room")
	require.NoError(t, err)
	task := &exportv1.ExportTask{}
	require.NoError(t, proto.Unmarshal(raw.Data, task))
	assert.Equal(t, roomGeneral, task.GetRoom().GetRoomId())
	assert.Nil(t, task.GetRoom().GetFrom())
	assert.Nil(t, task.GetRoom().GetTo())

	r := e.doURL(t, http.MethodGet, signed(e.url, id, "general.json"), anon, "")
	assert.Equal(t, http.StatusNotFound, r.status)
	assert.Equal(t, map[string]any{"error": "file not found"}, r.json(t))
}

func TestUnknownRoutes(t *testing.T) {
	e := newEnv(t, envOptions{server: true})
	for _, path := range []string{"/", "/v1/exports/a/b", "/v2/exports"} {
		r := e.do(t, http.MethodGet, path, asAdmin, "")
		assert.Equal(t, http.StatusNotFound, r.status, path)
		assert.Equal(t, map[string]any{"error": "not found"}, r.json(t), path)
	}
	// Below a dialect's prefix, the dialect's shape.
	r := e.do(t, http.MethodGet, "/api/v1/rooms.nope", asAdmin, "")
	assert.Equal(t, http.StatusNotFound, r.status)
	assert.Equal(t, map[string]any{"success": false, "error": "not found [error-not-found]", "errorType": "error-not-found"}, r.json(t))
	r = e.do(t, http.MethodGet, roomsExport, asAdmin, "")
	assert.Equal(t, http.StatusMethodNotAllowed, r.status)
	assert.Equal(t, map[string]any{"success": false, "error": "method not allowed [error-method-not-allowed]", "errorType": "error-method-not-allowed"}, r.json(t))
	r = e.do(t, http.MethodPatch, "/v1/exports", asAdmin, "")
	assert.Equal(t, http.StatusMethodNotAllowed, r.status)
	assert.Equal(t, map[string]any{"error": "method not allowed"}, r.json(t))
}

func TestExtraRoutesShareTheRouter(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.router.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	rec := httptest.NewRecorder()
	e.router.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	assert.Equal(t, http.StatusNoContent, rec.Code)
}

func TestPanicsBecome500(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.router.HandleFunc("/boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	rec := httptest.NewRecorder()
	e.router.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/boom", nil))
	assert.Equal(t, http.StatusInternalServerError, rec.Code)
	assert.JSONEq(t, `{"error": "internal error"}`, rec.Body.String())
}

// signed is a valid link to a job's file, expiring in an hour.
func signed(base, id, name string) string {
	exp := time.Now().Add(time.Hour).Unix()
	return base + links.Path(id, name) + "?exp=" + strconv.FormatInt(exp, 10) + "&sig=" + links.Signature(linkSecret, id, name, exp)
}

// TestNativeViewOfExpiredFiles: once the sweeper deleted a job's files the
// native API still lists them, without links, and says so.
func TestNativeViewOfExpiredFiles(t *testing.T) {
	e := newEnv(t, envOptions{server: true})
	ctx := t.Context()
	resp := e.do(t, http.MethodPost, "/api/v1/rooms.export", asAdmin, `{"rid": "GENERAL", "type": "file", "format": "json"}`)
	require.Equal(t, http.StatusOK, resp.status, "%s", resp.body)
	id := resp.json(t)["exportId"].(string)
	f := &exportv1.File{Name: "general.json", ObjectKey: "jobs/" + id + "/parts/0/general.json", Size: 10, Records: 2}
	_, err := e.jobs.Apply(ctx, &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.Now(), Files: []*exportv1.File{f}})
	require.NoError(t, err)

	file := e.do(t, http.MethodGet, "/v1/exports/"+id, asAdmin, "").json(t)["files"].([]any)[0].(map[string]any)
	assert.NotEmpty(t, file["url"])

	_, err = e.jobs.Apply(ctx, &exportv1.ExportExpired{JobId: id, OccurredAt: timestamppb.Now()})
	require.NoError(t, err)
	view := e.do(t, http.MethodGet, "/v1/exports/"+id, asAdmin, "").json(t)
	assert.Equal(t, true, view["filesExpired"])
	assert.Equal(t, []any{map[string]any{"name": "general.json", "size": 10.0, "records": 2.0, "sha256": ""}}, view["files"])
}
