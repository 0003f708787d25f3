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
	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/links"
)

const roomsExport = "/api/v1/rooms.export"

// TestRoomExportEndToEnd follows one export from the request through the
// projection to the download, with the other services played by hand.
func TestRoomExportEndToEnd(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{MinIO: true, Projection: true})
	ctx := t.Context()

	// The example call of seed 002, by a member of the private room.
	resp := e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin,
		`{"rid": "iu7jtPAhvEeAS5tNq", "type": "file", "dateFrom": "2000-01-01", "dateTo": "2021-11-25", "format": "html"}`)
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
	created := resp.JSON(t)
	id, _ := created["exportId"].(string)
	assert.Equal(t, map[string]any{"success": true, "exportId": id}, created)
	assert.Regexp(t, regexp.MustCompile(`^[0-9A-Za-z]{17}$`), id)

	// Visible at once.
	resp = e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "")
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
	first := resp.JSON(t)
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
	tasks, err := e.NATS.JS.Stream(ctx, bus.StreamExportTasks)
	require.NoError(t, err)
	raw, err := tasks.GetLastMsgForSubject(ctx, "exports.tasks.room")
	require.NoError(t, err)
	assert.Equal(t, id+".task.0", raw.Header.Get(jetstream.MsgIDHeader))
	task := &exportv1.ExportTask{}
	require.NoError(t, proto.Unmarshal(raw.Data, task))
	assert.Equal(t, id, task.GetJobId())
	assert.Equal(t, gatewaytest.AdminID, task.GetOwnerId())
	assert.Equal(t, exportv1.JobKind_JOB_KIND_ROOM, task.GetKind())
	assert.Equal(t, exportv1.Format_FORMAT_HTML, task.GetFormat())
	assert.Equal(t, uint32(0), task.GetPart())
	assert.Equal(t, uint32(1), task.GetPartsTotal())
	assert.Equal(t, gatewaytest.RoomPrivate, task.GetRoom().GetRoomId())
	assert.Equal(t, time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), task.GetRoom().GetFrom().AsTime())
	assert.Equal(t, time.Date(2021, 11, 25, 23, 59, 59, 999_000_000, time.UTC), task.GetRoom().GetTo().AsTime())

	// The job carries the request's trace, and so does the task.
	job, err := e.Jobs.Get(ctx, id)
	require.NoError(t, err)
	assert.Regexp(t, `^[0-9a-f]{32}$`, job.GetTraceId())
	assert.Contains(t, raw.Header.Get("traceparent"), job.GetTraceId())
	assert.Equal(t, "rocketchat", job.GetDialect())

	// The projection applies ExportRequested and ExportQueued.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		r := e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "")
		assert.Equal(c, "queued", r.JSON(t)["state"])
	}, 10*time.Second, 20*time.Millisecond)

	// Nobody else sees the job, and nobody without credentials.
	for _, c := range []gatewaytest.Creds{gatewaytest.AsAdmin2, gatewaytest.AsUser} {
		r := e.Do(t, http.MethodGet, "/v1/exports/"+id, c, "")
		assert.Equal(t, http.StatusNotFound, r.Status)
		assert.Equal(t, problem(http.StatusNotFound, "export not found"), r.JSON(t))
	}
	r := e.Do(t, http.MethodGet, "/v1/exports/NoSuchExport00000", gatewaytest.AsAdmin, "")
	assert.Equal(t, http.StatusNotFound, r.Status)
	assert.Equal(t, problem(http.StatusNotFound, "export not found"), r.JSON(t))
	for _, c := range []gatewaytest.Creds{gatewaytest.Anonymous, gatewaytest.Token(gatewaytest.AdminID, "wrong")} {
		r := e.Do(t, http.MethodGet, "/v1/exports/"+id, c, "")
		assert.Equal(t, http.StatusUnauthorized, r.Status)
		assert.NotEmpty(t, r.JSON(t)["detail"])
		r = e.Do(t, http.MethodGet, "/v1/exports", c, "")
		assert.Equal(t, http.StatusUnauthorized, r.Status)
	}

	// The exporter uploads the part; the archiver completes the job.
	content := []byte(strings.Repeat(`<p>hello from the staff room</p>`+"\n", 1000))
	sum := sha256.Sum256(content)
	sha := hex.EncodeToString(sum[:])
	key := "jobs/" + id + "/parts/0/staff.html"
	_, err = e.MinIO.Store.Upload(ctx, gatewaytest.ExportBucket, key, bytes.NewReader(content), "text/html; charset=utf-8")
	require.NoError(t, err)
	f := &exportv1.File{Name: "staff.html", ObjectKey: key, Size: uint64(len(content)), Records: 1000, Sha256: sha, ContentType: "text/html; charset=utf-8"}
	// A second file whose name needs escaping in a URL, without a stored
	// content type or checksum.
	notes := []byte("notes\n")
	notesKey := "jobs/" + id + "/files/notes"
	_, err = e.MinIO.Store.Upload(ctx, gatewaytest.ExportBucket, notesKey, bytes.NewReader(notes), "")
	require.NoError(t, err)
	g := &exportv1.File{Name: "Ünïcode notes/1 & 2.txt", ObjectKey: notesKey, Size: uint64(len(notes))}
	require.NoError(t, e.Pub.PublishStatus(ctx, bus.EventPart, id, "0", &exportv1.PartUploaded{JobId: id, OccurredAt: timestamppb.Now(), Part: 0, PartsTotal: 1, File: f, Kind: exportv1.JobKind_JOB_KIND_ROOM, OwnerId: gatewaytest.AdminID}))
	require.NoError(t, e.Pub.PublishStatus(ctx, bus.EventCompleted, id, "", &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.Now(), Files: []*exportv1.File{f, g}, OwnerId: gatewaytest.AdminID, Kind: exportv1.JobKind_JOB_KIND_ROOM}))

	var done map[string]any
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		done = e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "").JSON(t)
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
	assert.Equal(t, e.URL+"/v1/exports/"+id+"/files/staff.html", link.Scheme+"://"+link.Host+link.Path)
	expiresAt, err := time.Parse(time.RFC3339, file["expiresAt"].(string))
	require.NoError(t, err)
	assert.Equal(t, link.Query().Get("exp"), strconv.FormatInt(expiresAt.Unix(), 10))
	assert.WithinDuration(t, time.Now().Add(time.Hour), expiresAt, time.Minute)

	// The list has it too.
	list := e.Do(t, http.MethodGet, "/v1/exports", gatewaytest.AsAdmin, "").JSON(t)
	assert.Equal(t, 1.0, list["total"])
	items, _ := list["items"].([]any)
	require.Len(t, items, 1)
	assert.Equal(t, id, items[0].(map[string]any)["id"])
	other := e.Do(t, http.MethodGet, "/v1/exports", gatewaytest.AsUser, "").JSON(t)
	assert.Equal(t, map[string]any{"items": []any{}, "total": 0.0}, other)

	// Download through the signed link, without credentials.
	dl := e.DoURL(t, http.MethodGet, link.String(), gatewaytest.Anonymous, "")
	require.Equal(t, http.StatusOK, dl.Status, "%s", dl.Body)
	assert.True(t, bytes.Equal(content, dl.Body), "downloaded bytes differ")
	assert.Equal(t, "text/html; charset=utf-8", dl.Header.Get("Content-Type"))
	assert.Equal(t, strconv.Itoa(len(content)), dl.Header.Get("Content-Length"))
	assert.Equal(t, `attachment; filename=staff.html`, dl.Header.Get("Content-Disposition"))
	assert.Equal(t, `"`+sha+`"`, dl.Header.Get("ETag"))
	assert.Equal(t, sha, dl.Header.Get("X-Checksum-Sha256"))
	assert.Equal(t, "nosniff", dl.Header.Get("X-Content-Type-Options"), "an HTML export is never sniffed into something else")

	notesLink := files[1].(map[string]any)["url"].(string)
	assert.Contains(t, notesLink, "/files/%C3%9Cn%C3%AFcode%20notes%2F1%20&%202.txt?")
	dl = e.DoURL(t, http.MethodGet, notesLink, gatewaytest.Anonymous, "")
	require.Equal(t, http.StatusOK, dl.Status, "%s", dl.Body)
	assert.Equal(t, notes, dl.Body)
	assert.Equal(t, "application/octet-stream", dl.Header.Get("Content-Type"))
	assert.Equal(t, `attachment; filename*=utf-8''%C3%9Cn%C3%AFcode%20notes%2F1%20&%202.txt`, dl.Header.Get("Content-Disposition"))
	assert.Empty(t, dl.Header.Get("X-Checksum-Sha256"))
	assert.NotEmpty(t, dl.Header.Get("ETag"))

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
		{"no signature", e.URL + "/v1/exports/" + id + "/files/staff.html", http.StatusForbidden},
		{"another file's name", strings.Replace(link.String(), "staff.html", "other.html", 1), http.StatusForbidden},
		{"expired", withQuery(strconv.FormatInt(past, 10), links.Signature(gatewaytest.LinkSecret(), id, "staff.html", past)), http.StatusGone},
		{"signed, but no such file", gatewaytest.SignedLink(e.URL, id, "other.html"), http.StatusNotFound},
		{"signed, but no such job", gatewaytest.SignedLink(e.URL, "NoSuchExport00000", "staff.html"), http.StatusNotFound},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.DoURL(t, http.MethodGet, tc.url, gatewaytest.Anonymous, "")
			assert.Equal(t, tc.status, r.Status)
			assert.NotEmpty(t, r.JSON(t)["detail"])
		})
	}
}

func TestDownloadRefusesUnfinishedJobs(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	resp := e.Do(t, http.MethodPost, roomsExport, gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "json"}`)
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
	id := resp.JSON(t)["exportId"].(string)

	// Without dates the range stays open at both ends.
	tasks, err := e.NATS.JS.Stream(t.Context(), bus.StreamExportTasks)
	require.NoError(t, err)
	raw, err := tasks.GetLastMsgForSubject(t.Context(), "exports.tasks.room")
	require.NoError(t, err)
	task := &exportv1.ExportTask{}
	require.NoError(t, proto.Unmarshal(raw.Data, task))
	assert.Equal(t, gatewaytest.RoomGeneral, task.GetRoom().GetRoomId())
	assert.Nil(t, task.GetRoom().GetFrom())
	assert.Nil(t, task.GetRoom().GetTo())

	r := e.DoURL(t, http.MethodGet, gatewaytest.SignedLink(e.URL, id, "general.json"), gatewaytest.Anonymous, "")
	assert.Equal(t, http.StatusNotFound, r.Status)
	assert.Equal(t, problem(http.StatusNotFound, "file not found"), r.JSON(t))
}

func TestUnknownRoutes(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	for _, path := range []string{"/", "/v1/exports/a/b", "/v2/exports"} {
		r := e.Do(t, http.MethodGet, path, gatewaytest.AsAdmin, "")
		assert.Equal(t, http.StatusNotFound, r.Status, path)
		assert.Equal(t, problem(http.StatusNotFound, "not found"), r.JSON(t), path)
	}
	// Below a dialect's prefix, the dialect's shape.
	r := e.Do(t, http.MethodGet, "/api/v1/rooms.nope", gatewaytest.AsAdmin, "")
	assert.Equal(t, http.StatusNotFound, r.Status)
	assert.Equal(t, map[string]any{"success": false, "error": "not found [error-not-found]", "errorType": "error-not-found"}, r.JSON(t))
	r = e.Do(t, http.MethodGet, roomsExport, gatewaytest.AsAdmin, "")
	assert.Equal(t, http.StatusMethodNotAllowed, r.Status)
	assert.Equal(t, map[string]any{"success": false, "error": "method not allowed [error-method-not-allowed]", "errorType": "error-method-not-allowed"}, r.JSON(t))
	r = e.Do(t, http.MethodPatch, "/v1/exports", gatewaytest.AsAdmin, "")
	assert.Equal(t, http.StatusMethodNotAllowed, r.Status)
	assert.Equal(t, problem(http.StatusMethodNotAllowed, "method not allowed"), r.JSON(t))
}

func TestExtraRoutesShareTheRouter(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	e.Router.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	rec := httptest.NewRecorder()
	e.Router.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	assert.Equal(t, http.StatusNoContent, rec.Code)
}

func TestPanicsBecome500(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	e.Router.HandleFunc("/boom", func(http.ResponseWriter, *http.Request) { panic("boom") })
	rec := httptest.NewRecorder()
	e.Router.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/boom", nil))
	assert.Equal(t, http.StatusInternalServerError, rec.Code)
	assert.JSONEq(t, `{"type": "about:blank", "title": "Internal Server Error", "status": 500, "detail": "internal error"}`, rec.Body.String())
}

// TestNativeViewOfExpiredFiles: once the sweeper deleted a job's files the
// native API still lists them, without links, and says so.
func TestNativeViewOfExpiredFiles(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	ctx := t.Context()
	resp := e.Do(t, http.MethodPost, "/api/v1/rooms.export", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "json"}`)
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
	id := resp.JSON(t)["exportId"].(string)
	f := &exportv1.File{Name: "general.json", ObjectKey: "jobs/" + id + "/parts/0/general.json", Size: 10, Records: 2}
	_, err := e.Jobs.Apply(ctx, &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.Now(), Files: []*exportv1.File{f}})
	require.NoError(t, err)

	file := e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "").JSON(t)["files"].([]any)[0].(map[string]any)
	assert.NotEmpty(t, file["url"])

	_, err = e.Jobs.Apply(ctx, &exportv1.ExportExpired{JobId: id, OccurredAt: timestamppb.Now()})
	require.NoError(t, err)
	view := e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "").JSON(t)
	assert.Equal(t, true, view["filesExpired"])
	assert.Equal(t, []any{map[string]any{"name": "general.json", "size": 10.0, "records": 2.0, "sha256": ""}}, view["files"])
}

// problem is the native error body (RFC 9457) of status with detail.
func problem(status int, detail string) map[string]any {
	return map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": float64(status), "detail": detail}
}
