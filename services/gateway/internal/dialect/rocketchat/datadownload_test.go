package rocketchat_test

import (
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/quota"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/demo"
	"dataport.dev/shared/pseudonym"
)

const dataDownload = "/api/v1/users.requestDataDownload"

// seedOperation is the success example of seed 000, verbatim.
const seedOperation = `{
  "requested": false,
  "exportOperation": {
    "_id": "uDSuaW7vGd9B7j8qD",
    "createdAt": "2019-06-07T23:02:13.359Z",
    "userId": "hjwGZafNqExtFNmN7",
    "roomList": [
      {
        "roomId": "GENERAL",
        "roomName": "general",
        "userId": null,
        "exportedCount": 8,
        "status": "completed",
        "targetFile": "general.html",
        "type": "c"
      }
    ],
    "status": "uploading",
    "exportPath": "/tmp/userData/hjwGZafNqExtFNmN7/partial",
    "assetsPath": "/tmp/userData/hjwGZafNqExtFNmN7/partial/assets",
    "fileList": [],
    "generatedFile": "/tmp/zipFiles/hjwGZafNqExtFNmN7.zip",
    "fullExport": false,
    "_updatedAt": "2019-06-07T23:15:00.326Z"
  },
  "success": true
}`

// Fields beyond the seed's: the method's url and
// pendingOperationsBeforeMyRequest at the top; in the operation the
// fields @rocket.chat/core-typings' IExportOperation requires and the
// seed omits (fileId, userNameTable, userData, generatedUserFile,
// generatedAvatar), then Dataport's failure reason, expiry and whether
// the files are gone (each only when it says something).
var (
	extraTop = []string{"url", "pendingOperationsBeforeMyRequest"}
	extraOp  = []string{"fileId", "userNameTable", "userData", "generatedUserFile", "generatedAvatar", "reason", "expiresAt", "filesExpired", "userNameTableTruncated"}
)

var isoMillis = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)

// kind is a JSON value's type as the seed's schema names it.
func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "?"
}

// assertSameShape checks that got has every key of want with a value of
// the same JSON type (nullable lists keys that may also be null, or the
// seed's null may also be a string), and no other keys than extras.
func assertSameShape(t *testing.T, want, got map[string]any, extras []string, nullable ...string) {
	t.Helper()
	for k, wv := range want {
		gv, ok := got[k]
		if !assert.True(t, ok, "missing key %q", k) {
			continue
		}
		if slices.Contains(nullable, k) && (gv == nil || wv == nil) {
			assert.Contains(t, []string{"null", "string"}, kind(gv), "key %q", k)
			continue
		}
		assert.Equal(t, kind(wv), kind(gv), "type of %q", k)
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			assert.Contains(t, extras, k, "unexpected key %q", k)
		}
	}
}

// assertSeedShape compares a users.requestDataDownload answer with seed
// 000's example field by field: the same keys with the same types at the
// top, in exportOperation and in every roomList entry.
func assertSeedShape(t *testing.T, got map[string]any) {
	t.Helper()
	var seed map[string]any
	require.NoError(t, json.Unmarshal([]byte(seedOperation), &seed))
	assertSameShape(t, seed, got, extraTop, "url")
	seedOp := seed["exportOperation"].(map[string]any)
	op, ok := got["exportOperation"].(map[string]any)
	require.True(t, ok, "exportOperation is an object")
	assertSameShape(t, seedOp, op, extraOp)
	seedRoom := seedOp["roomList"].([]any)[0].(map[string]any)
	for _, r := range op["roomList"].([]any) {
		assertSameShape(t, seedRoom, r.(map[string]any), nil, "userId")
	}
	assert.Regexp(t, isoMillis, op["createdAt"])
	assert.Regexp(t, isoMillis, op["_updatedAt"])
}

func operationOf(t *testing.T, body map[string]any) map[string]any {
	t.Helper()
	op, ok := body["exportOperation"].(map[string]any)
	require.True(t, ok, "exportOperation in %v", body)
	return op
}

func room(id, name, status, target, typ string, exported float64, userID any) map[string]any {
	return map[string]any{"roomId": id, "roomName": name, "userId": userID, "exportedCount": exported, "status": status, "targetFile": target, "type": typ}
}

func TestRequestDataDownloadUnauthorized(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	for _, c := range []gatewaytest.Creds{gatewaytest.Anonymous, {User: gatewaytest.AdminID}, {Token: gatewaytest.AdminToken}, gatewaytest.Token(gatewaytest.AdminID, gatewaytest.UserToken), gatewaytest.Token("hjwGZafNqExtFNmN7", "RScctEHSmLGZGywfIhWyRpyofhKOiMoUIpimhvheU3f")} {
		resp := e.Do(t, http.MethodGet, dataDownload, c, "")
		assert.Equal(t, http.StatusUnauthorized, resp.Status)
		assert.Equal(t, rcUnauthorized, resp.JSON(t), "seed 000's 401 example")
	}
	assert.Zero(t, e.JobCount(t))
}

// TestRequestDataDownloadPlans checks a new request's answer against seed
// 000 and the plan behind it: one part per room of the user, the profile,
// the channel list for a full export, the assets.
func TestRequestDataDownloadPlans(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})

	resp := e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "")
	require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
	body := resp.JSON(t)
	assertSeedShape(t, body)
	op := operationOf(t, body)
	id := op["_id"].(string)
	assert.Regexp(t, `^[0-9A-Za-z]{17}$`, id)
	assert.Equal(t, true, body["requested"])
	assert.Equal(t, true, body["success"])
	assert.Nil(t, body["url"])
	assert.Equal(t, 0.0, body["pendingOperationsBeforeMyRequest"])
	assert.Equal(t, gatewaytest.AdminID, op["userId"])
	assert.Equal(t, "pending", op["status"], "queued, in Rocket.Chat's words")
	assert.Equal(t, false, op["fullExport"])
	assert.Equal(t, []any{
		room(gatewaytest.RoomGeneral, "general", "pending", "general.html", "c", 0, nil),
		room(gatewaytest.RoomPrivate, "staff", "pending", "staff.html", "p", 0, nil),
	}, op["roomList"])
	assert.Equal(t, "jobs/"+id+"/parts", op["exportPath"])
	assert.Equal(t, "jobs/"+id+"/parts/3", op["assetsPath"])
	assert.Equal(t, []any{}, op["fileList"])
	assert.Equal(t, "", op["generatedFile"])
	assert.Equal(t, e.Clock.Now().UTC().Format("2006-01-02T15:04:05.000Z"), op["createdAt"])
	// hideUsers' table is keyed by username; the caller reads as itself.
	assert.Equal(t, map[string]any{"root": "root"}, op["userNameTable"])

	// The operation is a job of the native API.
	job, err := e.Jobs.Get(t.Context(), id)
	require.NoError(t, err)
	assert.Equal(t, exportv1.JobKind_JOB_KIND_USER_DATA, job.GetKind())
	assert.Equal(t, exportv1.Format_FORMAT_HTML, job.GetFormat())
	assert.False(t, job.GetFullExport())
	tasks := e.TasksOf(t, "exports.tasks.user", id)
	type planned struct {
		kind   exportv1.PartKind
		target string
		room   string
	}
	var plan []planned
	for i, task := range tasks {
		assert.Equal(t, uint32(i), task.GetPart())
		assert.Equal(t, uint32(4), task.GetPartsTotal())
		assert.Equal(t, gatewaytest.AdminID, task.GetUserId())
		assert.Equal(t, gatewaytest.AdminID, task.GetOwnerId())
		assert.Equal(t, exportv1.JobKind_JOB_KIND_USER_DATA, task.GetKind())
		assert.False(t, task.GetFullExport())
		plan = append(plan, planned{task.GetPartKind(), task.GetTargetFile(), task.GetRoom().GetRoomId()})
	}
	assert.Equal(t, []planned{
		{exportv1.PartKind_PART_KIND_ROOM, "general.html", gatewaytest.RoomGeneral},
		{exportv1.PartKind_PART_KIND_ROOM, "staff.html", gatewaytest.RoomPrivate},
		{exportv1.PartKind_PART_KIND_USER_PROFILE, "user.html", ""},
		{exportv1.PartKind_PART_KIND_ASSETS, "assets", ""},
	}, plan)

	// Asked again while it runs: the same operation, not requested.
	e.Clock.Advance(time.Second)
	again := e.Do(t, http.MethodGet, dataDownload+"?fullExport=false", gatewaytest.AsAdmin, "").JSON(t)
	assertSeedShape(t, again)
	assert.Equal(t, false, again["requested"])
	assert.Equal(t, id, operationOf(t, again)["_id"])
	assert.Equal(t, 0.0, again["pendingOperationsBeforeMyRequest"])
	// Rocket.Chat compares the parameter with "true" exactly.
	again = e.Do(t, http.MethodGet, dataDownload+"?fullExport=TRUE", gatewaytest.AsAdmin, "").JSON(t)
	assert.Equal(t, id, operationOf(t, again)["_id"])

	// A full export is another kind of operation: JSON files and the
	// channel list.
	e.Clock.Advance(time.Second)
	full := e.Do(t, http.MethodGet, dataDownload+"?fullExport=true", gatewaytest.AsAdmin, "").JSON(t)
	assertSeedShape(t, full)
	assert.Equal(t, true, full["requested"])
	fullOp := operationOf(t, full)
	fullID := fullOp["_id"].(string)
	assert.NotEqual(t, id, fullID)
	assert.Equal(t, true, fullOp["fullExport"])
	assert.Equal(t, 1.0, full["pendingOperationsBeforeMyRequest"], "the HTML operation is ahead of it")
	assert.Equal(t, []any{
		room(gatewaytest.RoomGeneral, "general", "pending", "general.json", "c", 0, nil),
		room(gatewaytest.RoomPrivate, "staff", "pending", "staff.json", "p", 0, nil),
	}, fullOp["roomList"])
	var targets []string
	for _, task := range e.TasksOf(t, "exports.tasks.user", fullID) {
		assert.True(t, task.GetFullExport())
		assert.Equal(t, exportv1.Format_FORMAT_JSON, task.GetFormat())
		targets = append(targets, task.GetTargetFile())
	}
	assert.Equal(t, []string{"general.json", "staff.json", "user.json", "channels.json", "assets"}, targets)
	assert.Equal(t, "jobs/"+fullID+"/parts/4", fullOp["assetsPath"])

	// Any user may download their own data, mail-messages or not; a
	// direct room names the other participant.
	e.Clock.Advance(time.Second)
	mine := e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsUser, "").JSON(t)
	assertSeedShape(t, mine)
	assert.Equal(t, true, mine["requested"])
	assert.Equal(t, 2.0, mine["pendingOperationsBeforeMyRequest"], "both of admin's operations are ahead")
	mineOp := operationOf(t, mine)
	assert.Equal(t, []any{
		room(gatewaytest.RoomDirect, gatewaytest.RoomDirect, "pending", gatewaytest.RoomDirect+".html", "d", 0, gatewaytest.Admin2ID),
		room(gatewaytest.RoomPrivate, "staff", "pending", "staff.html", "p", 0, nil),
	}, mineOp["roomList"])
	// The other participant of the direct room is named by the pseudonym
	// the room exporter writes into that room's file in this download.
	mineID := mineOp["_id"].(string)
	assert.Equal(t, map[string]any{"alice": "alice", "root2": pseudonym.Of(mineID, "root2")}, mineOp["userNameTable"])
	assert.Regexp(t, `^User_[0-9a-f]{10}$`, mineOp["userNameTable"].(map[string]any)["root2"])
}

// TestUserNameTableNamesWhoWroteOnlyInAChannel: carol shares no direct
// room with the caller and only wrote in #general; the room part says
// its file hid her, and the table names her by the pseudonym the room
// exporter wrote there (pseudonym.Of with the operation's id, which
// roomexport's tests check against the file).
func TestUserNameTableNamesWhoWroteOnlyInAChannel(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{Projection: true})
	first := e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "").JSON(t)
	op := operationOf(t, first)
	id := op["_id"].(string)
	assert.Equal(t, map[string]any{"root": "root"}, op["userNameTable"], "nobody is known to be hidden yet")

	require.NoError(t, e.Pub.PublishStatus(t.Context(), bus.EventPart, id, "0", &exportv1.PartUploaded{
		JobId: id, OccurredAt: timestamppb.Now(), Part: 0, PartsTotal: 4, File: &exportv1.File{Name: "general.html", Records: 8},
		HiddenUsernames: []string{"carol"},
	}))
	gatewaytest.Eventually(t, func(c *assert.CollectT) {
		body := e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "").JSON(t)
		op := operationOf(t, body)
		assert.Equal(c, id, op["_id"])
		assert.Equal(c, map[string]any{"root": "root", "carol": pseudonym.Of(id, "carol")}, op["userNameTable"])
		assert.NotContains(c, op, "userNameTableTruncated", "every hidden name is listed")
	})

	// A part that hid more people than it could name says so, and so
	// does the answer.
	require.NoError(t, e.Pub.PublishStatus(t.Context(), bus.EventPart, id, "1", &exportv1.PartUploaded{
		JobId: id, OccurredAt: timestamppb.Now(), Part: 1, PartsTotal: 4, File: &exportv1.File{Name: "staff.html", Records: 3},
		HiddenUsernames: []string{"dave"}, HiddenUsernamesTruncated: true,
	}))
	gatewaytest.Eventually(t, func(c *assert.CollectT) {
		op := operationOf(t, e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "").JSON(t))
		assert.Equal(c, pseudonym.Of(id, "dave"), op["userNameTable"].(map[string]any)["dave"])
		assert.Equal(c, true, op["userNameTableTruncated"])
	})
}

// TestRequestDataDownloadFollowsTheJob publishes the other services'
// events by hand and watches the operation move through Rocket.Chat's
// words, its rooms through pending, exporting and completed.
func TestRequestDataDownloadFollowsTheJob(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{Projection: true})
	ctx := t.Context()
	first := e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "").JSON(t)
	op := operationOf(t, first)
	id := op["_id"].(string)
	created := op["_updatedAt"].(string)

	get := func(c *assert.CollectT) map[string]any {
		resp := e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "")
		assert.Equal(c, http.StatusOK, resp.Status)
		body := resp.JSON(t)
		assert.Equal(c, false, body["requested"])
		return operationOf(t, body)
	}
	publish := func(ev bus.Event, suffix string, m jobstore.Event) {
		require.NoError(t, e.Pub.PublishStatus(ctx, ev, id, suffix, m))
	}
	now := func() *timestamppb.Timestamp { return timestamppb.New(time.Now()) }

	// Room 0 is half done.
	publish(bus.EventProgress, "0.4", &exportv1.ExportProgress{JobId: id, OccurredAt: now(), Part: 0, PartsTotal: 4, Progress: &exportv1.Progress{Percent: 50, Records: 4}})
	gatewaytest.Eventually(t, func(c *assert.CollectT) {
		op := get(c)
		assert.Equal(c, "exporting", op["status"])
		rooms := op["roomList"].([]any)
		assert.Equal(c, room(gatewaytest.RoomGeneral, "general", "exporting", "general.html", "c", 4, nil), rooms[0])
		assert.Equal(c, room(gatewaytest.RoomPrivate, "staff", "pending", "staff.html", "p", 0, nil), rooms[1])
		assert.NotEqual(c, created, op["_updatedAt"], "_updatedAt moves")
	})

	// Room 0 uploaded with 8 messages (the seed's count), then the rest.
	publish(bus.EventPart, "0", &exportv1.PartUploaded{JobId: id, OccurredAt: now(), Part: 0, PartsTotal: 4, File: &exportv1.File{Name: "general.html", Records: 8}})
	gatewaytest.Eventually(t, func(c *assert.CollectT) {
		rooms := get(c)["roomList"].([]any)
		assert.Equal(c, room(gatewaytest.RoomGeneral, "general", "completed", "general.html", "c", 8, nil), rooms[0])
	})
	publish(bus.EventPart, "1", &exportv1.PartUploaded{JobId: id, OccurredAt: now(), Part: 1, PartsTotal: 4, File: &exportv1.File{Name: "staff.html", Records: 3}})
	publish(bus.EventPart, "2", &exportv1.PartUploaded{JobId: id, OccurredAt: now(), Part: 2, PartsTotal: 4, File: &exportv1.File{Name: "user.html", Records: 1}})
	publish(bus.EventPart, "3", &exportv1.PartUploaded{JobId: id, OccurredAt: now(), Part: 3, PartsTotal: 4, Files: []*exportv1.File{{Name: "assets/a-x.png", Bucket: "dataport-assets"}}})
	publish(bus.EventFinalizing, "", &exportv1.ExportFinalizing{JobId: id, OccurredAt: now()})
	gatewaytest.Eventually(t, func(c *assert.CollectT) {
		op := get(c)
		assert.Equal(c, "compressing", op["status"])
		assert.Equal(c, []any{
			room(gatewaytest.RoomGeneral, "general", "completed", "general.html", "c", 8, nil),
			room(gatewaytest.RoomPrivate, "staff", "completed", "staff.html", "p", 3, nil),
		}, op["roomList"])
		assert.Equal(c, "", op["generatedFile"])
	})

	zip := &exportv1.File{Name: "dataport-" + id + ".zip", ObjectKey: "jobs/" + id + "/files/dataport-" + id + ".zip", Size: 2048, Sha256: "ab12", ContentType: "application/zip", Records: 12}
	completedAt := time.Now()
	publish(bus.EventCompleted, "", &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.New(completedAt), Files: []*exportv1.File{zip}, OwnerId: gatewaytest.AdminID, Kind: exportv1.JobKind_JOB_KIND_USER_DATA})
	var done map[string]any
	gatewaytest.Eventually(t, func(c *assert.CollectT) {
		done = e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "").JSON(t)
		assert.Equal(c, "completed", operationOf(t, done)["status"])
	})
	assertSeedShape(t, done)
	assert.Equal(t, false, done["requested"])
	op = operationOf(t, done)
	assert.Equal(t, zip.GetObjectKey(), op["generatedFile"])
	assert.Equal(t, true, op["generatedUserFile"])
	assert.Equal(t, false, op["generatedAvatar"], "the profile part came without an avatar")
	url, _ := done["url"].(string)
	assert.Regexp(t, `^`+regexp.QuoteMeta(e.URL+"/v1/exports/"+id+"/files/"+zip.GetName())+`\?exp=\d+&sig=[0-9a-f]+$`, url)
	files := op["fileList"].([]any)
	require.Len(t, files, 1)
	f := files[0].(map[string]any)
	assert.Equal(t, zip.GetName(), f["name"])
	assert.Equal(t, 2048.0, f["size"])
	assert.Equal(t, "application/zip", f["type"])
	assert.NotEmpty(t, f["url"])
	expires, err := time.Parse(time.RFC3339, op["expiresAt"].(string))
	require.NoError(t, err)
	assert.WithinDuration(t, completedAt.Add(gatewaytest.Retention), expires, time.Second)

	// The same operation through the native API, where the zip is a file.
	native := e.Do(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "").JSON(t)
	assert.Equal(t, "completed", native["state"])
	assert.Equal(t, zip.GetName(), native["files"].([]any)[0].(map[string]any)["name"])

	// The sweeper deletes the files: no links any more, and a new
	// request is allowed at once.
	publish(bus.EventExpired, "", &exportv1.ExportExpired{JobId: id, OccurredAt: now()})
	gatewaytest.Eventually(t, func(c *assert.CollectT) {
		job, err := e.Jobs.Get(ctx, id)
		assert.NoError(c, err)
		assert.True(c, job.GetFilesExpired())
	})
	e.Clock.Advance(time.Second)
	next := e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "").JSON(t)
	assert.Equal(t, true, next["requested"])
	nextID := operationOf(t, next)["_id"].(string)
	assert.NotEqual(t, id, nextID)

	// A failed operation says why; it is the answer for the rest of the
	// interval, then a new request goes through.
	require.NoError(t, e.Pub.PublishStatus(ctx, bus.EventFailed, nextID, "", &exportv1.ExportFailed{JobId: nextID, OccurredAt: now(), Reason: "room GENERAL could not be read: stream unavailable"}))
	var failed map[string]any
	gatewaytest.Eventually(t, func(c *assert.CollectT) {
		failed = e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "").JSON(t)
		assert.Equal(c, "failed", operationOf(t, failed)["status"])
	})
	assertSeedShape(t, failed)
	assert.Equal(t, false, failed["requested"])
	assert.Nil(t, failed["url"])
	assert.Equal(t, nextID, operationOf(t, failed)["_id"])
	assert.Equal(t, "room GENERAL could not be read: stream unavailable", operationOf(t, failed)["reason"])

	e.Clock.Advance(gatewaytest.DataDownloadInterval - time.Second)
	assert.Equal(t, false, e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "").JSON(t)["requested"], "still inside the interval")
	e.Clock.Advance(time.Second)
	retry := e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "").JSON(t)
	assert.Equal(t, true, retry["requested"], "the interval is over")
	assert.NotEqual(t, nextID, operationOf(t, retry)["_id"])
}

// TestRequestDataDownloadInterval: a completed operation is the answer,
// with its link, for the request interval after it was requested.
func TestRequestDataDownloadInterval(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{Projection: true})
	ctx := t.Context()
	id := operationOf(t, e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsUser, "").JSON(t))["_id"].(string)
	zip := &exportv1.File{Name: "data.zip", ObjectKey: "jobs/" + id + "/files/data.zip", Size: 10}
	require.NoError(t, e.Pub.PublishStatus(ctx, bus.EventCompleted, id, "", &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.Now(), Files: []*exportv1.File{zip}}))
	gatewaytest.Eventually(t, func(c *assert.CollectT) {
		job, err := e.Jobs.Get(ctx, id)
		assert.NoError(c, err)
		assert.Equal(c, exportv1.JobState_JOB_STATE_COMPLETED, job.GetState())
	})
	e.Clock.Advance(gatewaytest.DataDownloadInterval - time.Millisecond)
	body := e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsUser, "").JSON(t)
	assert.Equal(t, false, body["requested"])
	assert.Equal(t, id, operationOf(t, body)["_id"])
	assert.NotNil(t, body["url"])

	e.Clock.Advance(time.Millisecond)
	body = e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsUser, "").JSON(t)
	assert.Equal(t, true, body["requested"])
	assert.NotEqual(t, id, operationOf(t, body)["_id"])
	assert.Nil(t, body["url"])
}

// TestRequestDataDownloadCanceledDoesNotBlock: the owner canceled the
// operation, so asking again starts a new one.
func TestRequestDataDownloadCanceledDoesNotBlock(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	id := operationOf(t, e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsUser, "").JSON(t))["_id"].(string)
	_, err := e.Jobs.Apply(t.Context(), &exportv1.ExportCanceled{JobId: id, OccurredAt: timestamppb.Now(), Reason: "canceled by user"})
	require.NoError(t, err)
	body := e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsUser, "").JSON(t)
	assert.Equal(t, true, body["requested"])
	assert.NotEqual(t, id, operationOf(t, body)["_id"])
}

// TestRequestDataDownloadDemoData plans downloads over the demo data set
// as the seeder loads it: every demo user's roomList is exactly the rooms
// the data set makes them a member of.
func TestRequestDataDownloadDemoData(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{MinIO: true, NoFixtures: true})
	d := demo.Generate()
	require.NoError(t, demo.Seed(t.Context(), e.NATS.JS, e.MinIO.Store, gatewaytest.AssetBucket, d, slog.New(slog.DiscardHandler)))

	for _, du := range d.Users {
		u := du.User
		t.Run(u.GetUsername(), func(t *testing.T) {
			want := map[string]map[string]any{}
			for _, m := range d.Memberships {
				if m.GetUserId() != u.GetId() {
					continue
				}
				r, ok := d.Room(m.GetRoomId())
				require.True(t, ok)
				name, typ := r.GetName(), map[sourcev1.RoomType]string{sourcev1.RoomType_ROOM_TYPE_CHANNEL: "c", sourcev1.RoomType_ROOM_TYPE_PRIVATE: "p", sourcev1.RoomType_ROOM_TYPE_DIRECT: "d"}[r.GetType()]
				var other any
				if typ == "d" {
					name = r.GetId()
					for _, n := range r.GetUsernames() {
						if n != u.GetUsername() {
							o, ok := d.User(n)
							require.True(t, ok)
							other = o.User.GetId()
						}
					}
				}
				want[r.GetId()] = room(r.GetId(), name, "pending", name+".json", typ, 0, other)
			}
			require.NotEmpty(t, want)

			resp := e.Do(t, http.MethodGet, dataDownload+"?fullExport=true", gatewaytest.Token(u.GetId(), du.AuthToken), "")
			require.Equal(t, http.StatusOK, resp.Status, "%s", resp.Body)
			body := resp.JSON(t)
			assertSeedShape(t, body)
			got := map[string]map[string]any{}
			for _, r := range operationOf(t, body)["roomList"].([]any) {
				rm := r.(map[string]any)
				got[rm["roomId"].(string)] = rm
			}
			assert.Equal(t, want, got)
			assert.Equal(t, slices.Sorted(maps.Keys(want)), slices.Sorted(maps.Keys(got)))
		})
	}
}

// TestPollingNeverCountsAsACreate: Rocket.Chat clients poll by repeating
// users.requestDataDownload. Only the request that starts an operation is
// charged; a poll answering with the running (or recent) one never is,
// and never gets a 429, even with every slot and the minute's rate spent.
func TestPollingNeverCountsAsACreate(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{Projection: true, Limits: &quota.Options{MaxConcurrent: 1, RatePerMinute: 2}})
	ctx := t.Context()
	first := e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "")
	require.Equal(t, http.StatusOK, first.Status, "%s", first.Body)
	require.Equal(t, true, first.JSON(t)["requested"])
	id := operationOf(t, first.JSON(t))["_id"].(string)

	for i := range 10 {
		r := e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "")
		require.Equal(t, http.StatusOK, r.Status, "poll %d: %s", i, r.Body)
		assert.Equal(t, false, r.JSON(t)["requested"])
		assert.Equal(t, id, operationOf(t, r.JSON(t))["_id"])
	}
	refused := e.Do(t, http.MethodPost, "/api/v1/rooms.export", gatewaytest.AsAdmin, `{"rid":"`+gatewaytest.RoomPrivate+`","type":"file","format":"json"}`)
	require.Equal(t, http.StatusTooManyRequests, refused.Status, "the running download holds the one slot: %s", refused.Body)
	assert.Equal(t, false, refused.JSON(t)["success"])
	assert.Contains(t, refused.JSON(t)["error"], "at most 1")

	// The download ends; its slot comes back through the projection.
	require.NoError(t, e.Pub.PublishStatus(ctx, bus.EventCompleted, id, "", &exportv1.ExportCompleted{JobId: id, OccurredAt: timestamppb.Now(),
		Files: []*exportv1.File{{Name: "data.zip", ObjectKey: "jobs/" + id + "/files/data.zip", Size: 10}}}))
	gatewaytest.Eventually(t, func(c *assert.CollectT) {
		job, err := e.Jobs.Get(ctx, id)
		assert.NoError(c, err)
		assert.Equal(c, exportv1.JobState_JOB_STATE_COMPLETED, job.GetState())
	})
	for range 5 {
		r := e.Do(t, http.MethodGet, dataDownload, gatewaytest.AsAdmin, "")
		require.Equal(t, http.StatusOK, r.Status, "a completed operation within the interval is answered, not charged")
		assert.NotNil(t, r.JSON(t)["url"])
	}
	// The minute's first charge was the download, the refused rooms.export
	// the second: the rate is spent until the next minute.
	e.Clock.Advance(time.Minute)
	assert.Equal(t, http.StatusOK, e.Do(t, http.MethodPost, "/api/v1/rooms.export", gatewaytest.AsAdmin, `{"rid":"`+gatewaytest.RoomPrivate+`","type":"file","format":"json"}`).Status)
}
