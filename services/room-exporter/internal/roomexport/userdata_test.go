package roomexport_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
)

const assetBucket = "dataport-assets"

func (h *harness) putKV(t testing.TB, bucketName, key string, m proto.Message) {
	t.Helper()
	bustest.Put(t, h.js, bucketName, key, m)
}

func (h *harness) putAsset(t testing.TB, key, contentType string, data []byte) {
	t.Helper()
	require.NoError(t, h.store.EnsureBucket(t.Context(), assetBucket))
	_, err := h.store.Upload(t.Context(), assetBucket, key, bytes.NewReader(data), contentType)
	require.NoError(t, err)
}

func userTask(jobID string, part uint32, kind exportv1.PartKind, format exportv1.Format) *exportv1.ExportTask {
	return &exportv1.ExportTask{
		JobId: jobID, OccurredAt: timestamppb.Now(), Kind: exportv1.JobKind_JOB_KIND_USER_DATA,
		Format: format, OwnerId: "ualice", UserId: "ualice", Part: part, PartsTotal: 5, PartKind: kind,
		Scope: &exportv1.Scope{UserId: "ualice", Permissions: []string{string(access.PermViewCRoom)}},
	}
}

// userDataFixture is alice, member of #general and of a direct room with
// bob, with two files of her own (one whose object is gone), one of
// bob's, and a file in a room of bob's she is not in.
func userDataFixture(t *testing.T, h *harness) (pdf []byte) {
	t.Helper()
	alice := &sourcev1.UserRef{Id: "ualice", Username: "alice", Name: "Alice Example"}
	bob := &sourcev1.UserRef{Id: "ubob", Username: "bob", Name: "Bob"}
	h.putKV(t, bus.BucketUsers, "ualice", &sourcev1.User{
		Id: "ualice", Username: "alice", Name: "Alice Example", Email: "alice@example.com", Roles: []string{"user"},
		AuthTokenSha256: strings.Repeat("a", 64), ApiKeySha256: strings.Repeat("b", 64), CreatedAt: timestamppb.New(base),
	})
	h.putRoom(t, &sourcev1.Room{Id: "GEN", Name: "general", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	h.putRoom(t, &sourcev1.Room{Id: "ualiceubob", Type: sourcev1.RoomType_ROOM_TYPE_DIRECT, Usernames: []string{"alice", "bob"}})
	h.putRoom(t, &sourcev1.Room{Id: "OTHER", Name: "other", Type: sourcev1.RoomType_ROOM_TYPE_PRIVATE})
	h.putKV(t, bus.BucketMemberships, "ualice.GEN", &sourcev1.Membership{UserId: "ualice", RoomId: "GEN", Roles: []string{"owner"}, JoinedAt: timestamppb.New(base)})
	h.putKV(t, bus.BucketMemberships, "ualice.ualiceubob", &sourcev1.Membership{UserId: "ualice", RoomId: "ualiceubob", JoinedAt: timestamppb.New(base)})
	h.putKV(t, bus.BucketMemberships, "ubob.OTHER", &sourcev1.Membership{UserId: "ubob", RoomId: "OTHER"})

	pdf = []byte("%PDF-1.4 alice's report")
	h.putAsset(t, "assets/FA1/report.pdf", "application/pdf", pdf)
	h.putAsset(t, "assets/FB1/bob.txt", "text/plain", []byte("bob's"))
	h.putAsset(t, "assets/FO1/secret.txt", "text/plain", []byte("not for alice"))
	msg := func(id, room string, u *sourcev1.UserRef, i int, text string, atts ...*sourcev1.Attachment) *sourcev1.ChatMessage {
		return &sourcev1.ChatMessage{Id: id, RoomId: room, User: u, Ts: timestamppb.New(msgTime(i)), Text: text, Attachments: atts}
	}
	h.publishMessages(t,
		msg("g1", "GEN", alice, 1, "hello <script>alert(1)</script>"),
		msg("g2", "GEN", alice, 2, "my report", &sourcev1.Attachment{FileId: "FA1", Name: "report.pdf", ContentType: "application/pdf", ObjectKey: "assets/FA1/report.pdf"}),
		msg("g3", "GEN", bob, 3, "bob's file", &sourcev1.Attachment{FileId: "FB1", Name: "bob.txt", ObjectKey: "assets/FB1/bob.txt"}),
		msg("d1", "ualiceubob", alice, 4, "lost file", &sourcev1.Attachment{FileId: "FA2", Name: "gone.png", ObjectKey: "assets/FA2/gone.png"}),
		msg("d2", "ualiceubob", bob, 5, "hi alice"),
		// An edit of g2 republishes the same attachment.
		msg("g2", "GEN", alice, 2, "my report (edited)", &sourcev1.Attachment{FileId: "FA1", Name: "report.pdf", ContentType: "application/pdf", ObjectKey: "assets/FA1/report.pdf"}),
		msg("o1", "OTHER", bob, 6, "not alice's room", &sourcev1.Attachment{FileId: "FO1", Name: "secret.txt", ObjectKey: "assets/FO1/secret.txt"}),
	)
	return pdf
}

func TestExportUserData(t *testing.T) {
	h := start(t, nil)
	pdf := userDataFixture(t, h)
	const jobID = "job-userdata"

	t.Run("room part of a direct room uses the target file", func(t *testing.T) {
		task := userTask(jobID, 0, exportv1.PartKind_PART_KIND_ROOM, exportv1.Format_FORMAT_HTML)
		task.Room = &exportv1.RoomScope{RoomId: "ualiceubob"}
		task.TargetFile = "direct-alice-bob.html"
		h.publishTask(t, jobID+".task.0", task)
		var part exportv1.PartUploaded
		h.event(t, bus.EventPart, jobID, &part)
		require.Equal(t, uint32(0), part.GetPart())
		assert.Equal(t, "jobs/"+jobID+"/parts/0/direct-alice-bob.html", part.GetFile().GetObjectKey())
		assert.Equal(t, "direct-alice-bob.html", part.GetFile().GetName())
		assert.Equal(t, uint64(2), part.GetFile().GetRecords())
		assert.Equal(t, exportv1.JobKind_JOB_KIND_USER_DATA, part.GetKind())
		p := parsePage(t, h.download(t, part.GetFile().GetObjectKey()))
		// A personal download names other people by pseudonym, as
		// Rocket.Chat's (hideUsers); the room export keeps names.
		assert.Contains(t, text(p.tag("h1")[0]), "Direct messages: alice, "+roomexport.Pseudonym(jobID, "bob"))
		assert.NotNil(t, p.byID("m-d1"))
		assert.NotNil(t, p.byID("m-d2"))
	})

	t.Run("room part in JSON is Rocket.Chat's JSON lines, others pseudonymised", func(t *testing.T) {
		job := jobID + "-json-lines"
		task := userTask(job, 0, exportv1.PartKind_PART_KIND_ROOM, exportv1.Format_FORMAT_JSON)
		task.Room = &exportv1.RoomScope{RoomId: "GEN"}
		task.TargetFile = "general.json"
		h.publishTask(t, job+".task.0", task)
		var part exportv1.PartUploaded
		h.event(t, bus.EventPart, job, &part)
		assert.Equal(t, "general.json", part.GetFile().GetName())
		assert.Equal(t, "application/x-ndjson", part.GetFile().GetContentType())
		assert.Equal(t, uint64(3), part.GetFile().GetRecords())
		data := string(h.download(t, part.GetFile().GetObjectKey()))
		bobAs := roomexport.Pseudonym(job, "bob")
		assert.Regexp(t, `^User_[0-9a-f]{10}$`, bobAs)
		// Rocket.Chat's getMessageData, field for field and in its order.
		want := `{"msg":"hello <script>alert(1)</script>","username":"alice","ts":"2026-05-01T09:01:00.001Z"}` + "\n" +
			`{"msg":"my report (edited)","username":"alice","ts":"2026-05-01T09:02:00.002Z","attachments":[{"type":"file","title":"report.pdf","title_link":"assets/FA1-report.pdf","url":"assets/FA1-report.pdf","remote":false,"fileId":"FA1","fileName":"report.pdf"}]}` + "\n" +
			`{"msg":"bob's file","username":"` + bobAs + `","ts":"2026-05-01T09:03:00.003Z","attachments":[{"type":"file","title":"bob.txt","title_link":"assets/FB1-bob.txt","url":"assets/FB1-bob.txt","remote":false,"fileId":"FB1","fileName":"bob.txt"}]}` + "\n"
		assert.Equal(t, want, data)
		assert.NotContains(t, data, "bob\"", "bob's username is not in alice's download")
		assert.NotContains(t, data, "ubob")
		// bob only wrote in the channel: the announcement tells the
		// gateway whom the file hid, for the userNameTable.
		assert.Equal(t, []string{"bob"}, part.GetHiddenUsernames())
		assert.False(t, part.GetHiddenUsernamesTruncated())
	})

	t.Run("room part in HTML pseudonymises others too", func(t *testing.T) {
		job := jobID + "-html-hidden"
		task := userTask(job, 0, exportv1.PartKind_PART_KIND_ROOM, exportv1.Format_FORMAT_HTML)
		task.Room = &exportv1.RoomScope{RoomId: "ualiceubob"}
		h.publishTask(t, job+".task.0", task)
		var part exportv1.PartUploaded
		h.event(t, bus.EventPart, job, &part)
		data := string(h.download(t, part.GetFile().GetObjectKey()))
		bobAs := roomexport.Pseudonym(job, "bob")
		p := parsePage(t, []byte(data))
		assert.Contains(t, text(p.tag("h1")[0]), "Direct messages: alice, "+bobAs)
		assert.Contains(t, text(p.byID("m-d1")), "Alice Example @alice", "alice's own name stays")
		assert.Contains(t, text(p.byID("m-d2")), bobAs+" @"+bobAs)
		assert.NotContains(t, data, "Bob")
		assert.NotContains(t, data, "@bob")
	})

	t.Run("profile json", func(t *testing.T) {
		job := jobID + "-profile"
		h.publishTask(t, job+".task.1", userTask(job, 1, exportv1.PartKind_PART_KIND_USER_PROFILE, exportv1.Format_FORMAT_JSON))
		var part exportv1.PartUploaded
		h.event(t, bus.EventPart, job, &part)
		assert.Equal(t, "jobs/"+job+"/parts/1/user.json", part.GetFile().GetObjectKey())
		assert.Empty(t, part.GetFiles(), "alice has no avatar: the profile alone")
		data := h.download(t, part.GetFile().GetObjectKey())
		assert.NotContains(t, string(data), strings.Repeat("a", 64), "no token hash")
		assert.NotContains(t, string(data), strings.Repeat("b", 64), "no API key hash")
		var doc map[string]any
		require.NoError(t, json.Unmarshal(data, &doc))
		assert.Equal(t, "ualice", doc["_id"])
		assert.Equal(t, "alice", doc["username"])
		assert.Equal(t, []any{map[string]any{"address": "alice@example.com"}}, doc["emails"])
		assert.Equal(t, map[string]any{"rooms": float64(2), "messages": float64(6)}, doc["counts"])
		rooms, _ := doc["rooms"].([]any)
		require.Len(t, rooms, 2)
		names := []any{rooms[0].(map[string]any)["_id"], rooms[1].(map[string]any)["_id"]}
		assert.ElementsMatch(t, []any{"GEN", "ualiceubob"}, names, "alice's rooms only")

		var progress exportv1.ExportProgress
		h.event(t, bus.EventProgress, job, &progress)
		assert.Equal(t, uint32(100), progress.GetProgress().GetPercent())
		assert.Equal(t, uint64(1), progress.GetProgress().GetRecords())
	})

	t.Run("profile html", func(t *testing.T) {
		job := jobID + "-profile-html"
		h.publishTask(t, job+".task.1", userTask(job, 1, exportv1.PartKind_PART_KIND_USER_PROFILE, exportv1.Format_FORMAT_HTML))
		var part exportv1.PartUploaded
		h.event(t, bus.EventPart, job, &part)
		assert.Equal(t, "user.html", part.GetFile().GetName())
		data := h.download(t, part.GetFile().GetObjectKey())
		p := parsePage(t, data)
		assert.Empty(t, p.tag("script"))
		body := text(p.tag("main")[0])
		assert.Contains(t, body, "alice@example.com")
		assert.Contains(t, body, "general")
		assert.Contains(t, body, "Direct messages: alice, bob")
		assert.NotContains(t, string(data), strings.Repeat("a", 64))
	})

	t.Run("channels", func(t *testing.T) {
		job := jobID + "-channels"
		h.publishTask(t, job+".task.2", userTask(job, 2, exportv1.PartKind_PART_KIND_CHANNELS, exportv1.Format_FORMAT_JSON))
		var part exportv1.PartUploaded
		h.event(t, bus.EventPart, job, &part)
		assert.Equal(t, "channels.json", part.GetFile().GetName())
		assert.Equal(t, uint64(2), part.GetFile().GetRecords())
		// JSON lines, as Rocket.Chat writes channels.json: one room a line.
		data := h.download(t, part.GetFile().GetObjectKey())
		assert.Equal(t, "application/x-ndjson", part.GetFile().GetContentType())
		lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
		require.Len(t, lines, 2, "%s", data)
		var rooms []map[string]any
		for _, l := range lines {
			var r map[string]any
			require.NoError(t, json.Unmarshal([]byte(l), &r), "line %q", l)
			rooms = append(rooms, r)
		}
		byID := map[string]map[string]any{}
		for _, r := range rooms {
			byID[r["_id"].(string)] = r
		}
		assert.Equal(t, map[string]any{
			"_id": "GEN", "name": "general", "t": "c", "msgs": float64(4),
			"joinedAt": "2026-05-01T09:00:00.000Z", "roles": []any{"owner"},
		}, byID["GEN"])
		assert.Equal(t, "d", byID["ualiceubob"]["t"])
		assert.Equal(t, []any{"alice", "bob"}, byID["ualiceubob"]["usernames"])
	})

	t.Run("assets by reference", func(t *testing.T) {
		job := jobID + "-assets"
		h.publishTask(t, job+".task.3", userTask(job, 3, exportv1.PartKind_PART_KIND_ASSETS, exportv1.Format_FORMAT_HTML))
		var part exportv1.PartUploaded
		h.event(t, bus.EventPart, job, &part)
		assert.Nil(t, part.GetFile(), "a multi-file part lists its files in files")
		sum := sha256.Sum256(pdf)
		bobs := sha256.Sum256([]byte("bob's"))
		// Every file of the messages alice's download holds, bob's in
		// #general too (Rocket.Chat's download copies them all); the
		// file of a room she is not in is not among them. A file whose
		// object is gone is listed as missing, for the manifest.
		want := []*exportv1.File{{
			Name: "assets/FA2-gone.png", Bucket: assetBucket, ObjectKey: "assets/FA2/gone.png", Missing: true,
		}, {
			Name: "assets/FA1-report.pdf", Bucket: assetBucket, ObjectKey: "assets/FA1/report.pdf",
			Size: uint64(len(pdf)), Records: 1, Sha256: hex.EncodeToString(sum[:]), ContentType: "application/pdf",
		}, {
			Name: "assets/FB1-bob.txt", Bucket: assetBucket, ObjectKey: "assets/FB1/bob.txt",
			Size: 5, Records: 1, Sha256: hex.EncodeToString(bobs[:]), ContentType: "text/plain",
		}}
		require.Len(t, part.GetFiles(), 3, "each file once, missing objects listed as missing: %v", part.GetFiles())
		for i := range want {
			assert.True(t, proto.Equal(want[i], part.GetFiles()[i]), "got %v", part.GetFiles()[i])
		}
		assert.Empty(t, h.objects(t, job), "nothing is copied")

		var progress exportv1.ExportProgress
		h.event(t, bus.EventProgress, job, &progress)
		assert.Equal(t, uint32(100), progress.GetProgress().GetPercent())
		assert.Equal(t, uint64(2), progress.GetProgress().GetRecords())
	})

	t.Run("another user's data is refused", func(t *testing.T) {
		for _, other := range []string{"nobody", "ubob"} {
			job := jobID + "-other-" + other
			task := userTask(job, 1, exportv1.PartKind_PART_KIND_USER_PROFILE, exportv1.Format_FORMAT_JSON)
			task.UserId = other
			h.publishTask(t, job+".task.1", task)
			var failed exportv1.ExportFailed
			h.event(t, bus.EventFailed, job, &failed)
			assert.Equal(t, roomexport.ReasonNotAllowed, failed.GetReason())
			assert.True(t, failed.GetRejected())
		}
	})
}

func TestExportRoomMail(t *testing.T) {
	h := start(t, nil)
	h.putRoom(t, &sourcev1.Room{Id: "MAIL", Name: "mailroom", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	msgs := roomMessages("MAIL", 8)
	msgs[6].Text = "*important* <script>alert(1)</script>"
	// msgs[5]'s report.pdf is in the assets bucket; this one is gone.
	msgs[6].Attachments = []*sourcev1.Attachment{{FileId: "F6", Name: "gone.png", ContentType: "image/png", Size: 99, ObjectKey: "assets/F6/gone.png"}}
	pdf := bytes.Repeat([]byte("%"), 1234)
	h.putAsset(t, "assets/F5/report.pdf", "application/pdf", pdf)
	edit := proto.Clone(msgs[6]).(*sourcev1.ChatMessage)
	edit.Text = "*important*, corrected <script>alert(1)</script>"
	edit.EditedAt = timestamppb.New(msgTime(7).Add(time.Second))
	h.publishMessages(t, append(msgs, edit)...)

	const jobID = "job-mail"
	task := &exportv1.ExportTask{
		JobId: jobID, OccurredAt: timestamppb.Now(), Kind: exportv1.JobKind_JOB_KIND_ROOM_MAIL, Format: exportv1.Format_FORMAT_HTML,
		OwnerId: "u-owner", PartsTotal: 1, PartKind: exportv1.PartKind_PART_KIND_ROOM_MAIL, Scope: access.ScopeFor(owner, ""),
		Room: &exportv1.RoomScope{RoomId: "MAIL"},
		Mail: &exportv1.MailScope{
			ToEmails: []string{"x@example.com"}, Subject: "Selected",
			MessageIds: []string{msgs[6].GetId(), msgs[5].GetId(), "no-such-message", msgs[6].GetId()},
		},
	}
	h.publishTask(t, jobID+".task.0", task)
	var part exportv1.PartUploaded
	h.event(t, bus.EventPart, jobID, &part)
	require.Len(t, part.GetFiles(), 3, "both bodies and the one file still there")
	htmlFile, txtFile := part.GetFiles()[0], part.GetFiles()[1]
	// The file a message carries follows the bodies, by reference, for
	// the notifier to attach or link.
	att := part.GetFiles()[2]
	pdfSum := sha256.Sum256(pdf)
	assert.Equal(t, "F5-report.pdf", att.GetName())
	assert.Equal(t, roomexport.MailAssetName("F5", "report.pdf"), att.GetName())
	assert.Equal(t, assetBucket, att.GetBucket())
	assert.Equal(t, "assets/F5/report.pdf", att.GetObjectKey())
	assert.Equal(t, uint64(len(pdf)), att.GetSize())
	assert.Equal(t, hex.EncodeToString(pdfSum[:]), att.GetSha256())
	assert.Equal(t, "application/pdf", att.GetContentType())
	assert.Equal(t, "mail.html", htmlFile.GetName())
	assert.Equal(t, "text/html; charset=utf-8", htmlFile.GetContentType())
	assert.Equal(t, "jobs/"+jobID+"/parts/0/mail.html", htmlFile.GetObjectKey())
	assert.Equal(t, "mail.txt", txtFile.GetName())
	assert.Equal(t, "text/plain; charset=utf-8", txtFile.GetContentType())
	assert.Equal(t, uint64(2), htmlFile.GetRecords(), "found ids only")

	body := h.download(t, htmlFile.GetObjectKey())
	sum := sha256.Sum256(body)
	assert.Equal(t, hex.EncodeToString(sum[:]), htmlFile.GetSha256())
	assert.False(t, bytes.HasPrefix(body, []byte("<!DOCTYPE")), "a fragment, not a page")
	p := parsePage(t, body)
	assert.Empty(t, p.tag("script"))
	var shown []string
	for _, n := range p.all(func(n *html.Node) bool { return hasClass(n, "msg") }) {
		shown = append(shown, attr(n, "id"))
	}
	assert.Equal(t, []string{"m-" + msgs[5].GetId(), "m-" + msgs[6].GetId()}, shown, "selected messages in room order, once")
	m6 := p.byID("m-" + msgs[6].GetId())
	assert.Contains(t, text(m6), "corrected <script>", "the last version, as text")
	assert.Equal(t, "important", text(within(m6, "strong")[0]))
	assert.Empty(t, within(p.byID("m-"+msgs[5].GetId()), "a"), "no links to files a mail does not carry")
	assert.Contains(t, text(p.byID("m-"+msgs[5].GetId())), "report.pdf")

	txt := string(h.download(t, txtFile.GetObjectKey()))
	assert.Contains(t, txt, "Messages from mailroom")
	assert.Contains(t, txt, "*important*, corrected <script>alert(1)</script>")
	assert.Contains(t, txt, "[attachment: report.pdf, application/pdf, 1.2 kB]")
	assert.Contains(t, txt, "[attachment: gone.png (missing: the file is no longer available), image/png, 99 B]", "a missing file is named as missing")
	assert.Contains(t, text(m6), "gone.png (missing: the file is no longer available)")
	assert.NotContains(t, txt, msgs[0].GetText())
}

func TestExportHTMLRoom(t *testing.T) {
	h := start(t, nil)
	h.putRoom(t, &sourcev1.Room{Id: "HTML", Name: "general", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL, Topic: "Talk"})
	h.publishMessages(t, roomMessages("HTML", 10)...)
	const jobID = "job-html"
	task := roomTask(jobID, "HTML", at(2), at(7))
	task.Format = exportv1.Format_FORMAT_HTML
	h.publishTask(t, jobID+".task.0", task)
	var part exportv1.PartUploaded
	h.event(t, bus.EventPart, jobID, &part)
	assert.Equal(t, "general.html", part.GetFile().GetName())
	assert.Equal(t, "text/html; charset=utf-8", part.GetFile().GetContentType())
	assert.Equal(t, uint64(6), part.GetFile().GetRecords())
	p := parsePage(t, h.download(t, part.GetFile().GetObjectKey()))
	assert.Len(t, p.all(func(n *html.Node) bool { return hasClass(n, "msg") }), 6)
	assert.Contains(t, text(p.tag("header")[0]), "Messages from 2026-05-01 09:02:00 UTC to 2026-05-01 09:07:00 UTC")
	reply := p.byID("m-HTML-m000003")
	require.NotNil(t, reply)
	assert.True(t, hasClass(reply, "reply"))
	assert.True(t, hasClass(p.byID("m-HTML-m000004"), "sys"))
	assert.Contains(t, text(p.byID("m-HTML-m000004")), "carol joined the room")
}

func TestExportCanceledJobDeletesUploadedParts(t *testing.T) {
	h := start(t, nil)
	userDataFixture(t, h)
	const jobID = "job-cancel-parts"
	h.putJob(t, jobID, exportv1.JobState_JOB_STATE_PROCESSING)

	// Part 1 is done before the user cancels.
	h.publishTask(t, jobID+".task.1", userTask(jobID, 1, exportv1.PartKind_PART_KIND_USER_PROFILE, exportv1.Format_FORMAT_JSON))
	var part exportv1.PartUploaded
	h.event(t, bus.EventPart, jobID, &part)
	require.Equal(t, []string{"jobs/" + jobID + "/parts/1/user.json"}, h.objects(t, jobID))

	// The projection has marked part 1 completed when the cancel lands:
	// the later parts' tasks delete its file, nobody else would.
	h.putJobRecord(t, &exportv1.Job{Id: jobID, State: exportv1.JobState_JOB_STATE_CANCELED, Kind: exportv1.JobKind_JOB_KIND_USER_DATA,
		Parts: []*exportv1.PartStatus{{Part: 1, State: exportv1.PartState_PART_STATE_COMPLETED}, {Part: 2}, {Part: 3}}})
	h.publishTask(t, jobID+".task.2", userTask(jobID, 2, exportv1.PartKind_PART_KIND_CHANNELS, exportv1.Format_FORMAT_JSON))
	h.publishTask(t, jobID+".task.3", userTask(jobID, 3, exportv1.PartKind_PART_KIND_ASSETS, exportv1.Format_FORMAT_JSON))
	h.waitTasksSettled(t, 3)

	assert.Empty(t, h.objects(t, jobID), "the canceled job's parts are gone")
	assert.Equal(t, uint64(1), h.eventCount(t, bus.EventPart, jobID), "no part announced after the cancel")
	assert.Zero(t, h.eventCount(t, bus.EventFailed, jobID), "a canceled job is not failed")
}

// TestExportProfileCarriesTheAvatar: the avatar the host platform
// published for the user (assets bucket, avatars/<username>) goes with
// the profile part as "avatar", by reference, and counts as a record;
// a user without one gets the profile alone (the profile subtests of
// TestExportUserData).
func TestExportProfileCarriesTheAvatar(t *testing.T) {
	h := start(t, nil)
	userDataFixture(t, h)
	png := []byte("\x89PNG\r\n\x1a\nalice's face")
	h.putAsset(t, "avatars/alice", "image/png", png)
	const job = "job-avatar"

	h.publishTask(t, job+".task.1", userTask(job, 1, exportv1.PartKind_PART_KIND_USER_PROFILE, exportv1.Format_FORMAT_JSON))
	var part exportv1.PartUploaded
	h.event(t, bus.EventPart, job, &part)
	assert.Nil(t, part.GetFile())
	require.Len(t, part.GetFiles(), 2)
	assert.Equal(t, "user.json", part.GetFiles()[0].GetName())
	sum := sha256.Sum256(png)
	avatar := part.GetFiles()[1]
	assert.Equal(t, roomexport.AvatarFile, avatar.GetName())
	assert.Equal(t, "avatar", avatar.GetName(), "Rocket.Chat's name, without an extension")
	assert.Equal(t, assetBucket, avatar.GetBucket())
	assert.Equal(t, "avatars/alice", avatar.GetObjectKey())
	assert.Equal(t, "image/png", avatar.GetContentType())
	assert.Equal(t, uint64(len(png)), avatar.GetSize())
	assert.Equal(t, hex.EncodeToString(sum[:]), avatar.GetSha256())
	assert.Equal(t, uint64(1), avatar.GetRecords())
	assert.Equal(t, []string{"jobs/" + job + "/parts/1/user.json"}, h.objects(t, job), "the avatar is not copied")

	var progress exportv1.ExportProgress
	h.event(t, bus.EventProgress, job, &progress)
	assert.Equal(t, uint64(2), progress.GetProgress().GetRecords(), "profile and avatar")
}
