package roomexport_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/logtest"
)

// TestRoomExportListsTheAttachmentsItsDocumentLinksTo: a room export
// announces its document in file and, beside it in files, the files the
// document's messages link to (assets/<id>-<name>), as they are shown: an
// edited message's latest attachment only, none of a message out of
// range, each once, and a file whose object is gone as missing.
func TestRoomExportListsTheAttachmentsItsDocumentLinksTo(t *testing.T) {
	h := start(t, nil)
	h.putRoom(t, &sourcev1.Room{Id: "ROOMA", Name: "with-files", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	report := []byte("%PDF-1.4 the report")
	h.putAsset(t, "assets/F1/report.pdf", "application/pdf", report)
	h.putAsset(t, "assets/F2/old.txt", "text/plain", []byte("replaced by an edit"))
	h.putAsset(t, "assets/F3/new.txt", "text/plain", []byte("the edit's file"))
	h.putAsset(t, "assets/F5/late.txt", "text/plain", []byte("after the range"))
	u := &sourcev1.UserRef{Id: "u1", Username: "ann"}
	att := func(id, name, ct string) *sourcev1.Attachment {
		return &sourcev1.Attachment{FileId: id, Name: name, ContentType: ct, ObjectKey: "assets/" + id + "/" + name}
	}
	msg := func(id string, i int, atts ...*sourcev1.Attachment) *sourcev1.ChatMessage {
		return &sourcev1.ChatMessage{Id: id, RoomId: "ROOMA", User: u, Ts: timestamppb.New(msgTime(i)), Text: "m " + id, Attachments: atts}
	}
	h.publishMessages(t,
		msg("m1", 1, att("F1", "report.pdf", "application/pdf")),
		msg("m2", 2, att("F2", "old.txt", "text/plain")),
		msg("m3", 3, att("F4", "gone.png", "image/png")),
		msg("m4", 4, att("F1", "report.pdf", "application/pdf")), // the same file again
		msg("m5", 9, att("F5", "late.txt", "text/plain")),
		msg("m2", 2, att("F3", "new.txt", "text/plain")), // m2 edited
	)
	const jobID = "job-room-assets"
	h.publishTask(t, jobID+".task", roomTask(jobID, "ROOMA", nil, at(5)))
	var part exportv1.PartUploaded
	h.event(t, bus.EventPart, jobID, &part)

	require.NotNil(t, part.GetFile(), "the document is the part's file")
	assert.Equal(t, "with-files.json", part.GetFile().GetName())
	assert.Equal(t, uint64(4), part.GetFile().GetRecords())
	assert.Equal(t, exportv1.PartKind_PART_KIND_ROOM, part.GetPartKind())
	sum := sha256.Sum256(report)
	edit := sha256.Sum256([]byte("the edit's file"))
	want := []*exportv1.File{{
		Name: "assets/F1-report.pdf", Bucket: assetBucket, ObjectKey: "assets/F1/report.pdf",
		Size: uint64(len(report)), Records: 1, Sha256: hex.EncodeToString(sum[:]), ContentType: "application/pdf",
	}, {
		Name: "assets/F3-new.txt", Bucket: assetBucket, ObjectKey: "assets/F3/new.txt",
		Size: uint64(len("the edit's file")), Records: 1, Sha256: hex.EncodeToString(edit[:]), ContentType: "text/plain",
	}, {
		Name: "assets/F4-gone.png", Bucket: assetBucket, ObjectKey: "assets/F4/gone.png", ContentType: "image/png", Missing: true,
	}}
	require.Len(t, part.GetFiles(), len(want), "%v", part.GetFiles())
	for i := range want {
		assert.True(t, proto.Equal(want[i], part.GetFiles()[i]), "want %v, got %v", want[i], part.GetFiles()[i])
	}

	// The document links to exactly those names.
	var doc struct {
		Messages []struct {
			ID          string `json:"_id"`
			Attachments []struct {
				TitleLink string `json:"title_link"`
			} `json:"attachments"`
		} `json:"messages"`
	}
	require.NoError(t, json.Unmarshal(h.download(t, part.GetFile().GetObjectKey()), &doc))
	var links []string
	for _, m := range doc.Messages {
		for _, a := range m.Attachments {
			links = append(links, a.TitleLink)
		}
	}
	assert.Subset(t, links, []string{"assets/F1-report.pdf", "assets/F3-new.txt", "assets/F4-gone.png"})
	assert.NotContains(t, links, "assets/F2-old.txt")
}

// TestRoomExportDescribesAttachmentsFromTheirChecksums: on real MinIO, an
// attachment stored with a SHA-256 checksum (as blob.Store.Upload and any
// S3 PUT with x-amz-checksum-sha256 store it) is listed with its size and
// SHA-256 from its metadata, without reading it, and one stored without
// (here a server-side copy, which keeps no whole-object checksum) is read
// once; the manifest's sizes and SHA-256s are right either way, and the
// part's log says how many were read.
func TestRoomExportDescribesAttachmentsFromTheirChecksums(t *testing.T) {
	for _, ahead := range []bool{false, true} {
		t.Run(map[bool]string{false: "after-the-render", true: "beside-the-render"}[ahead], func(t *testing.T) {
			testDescribesAttachmentsFromTheirChecksums(t, ahead)
		})
	}
}

func testDescribesAttachmentsFromTheirChecksums(t *testing.T, ahead bool) {
	var logs logtest.Buffer
	h := start(t, func(o *config) {
		o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		roomexport.SetListAhead(&o.Options, ahead)
	})
	h.putRoom(t, &sourcev1.Room{Id: "ROOMS", Name: "sums", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	checked := []byte("uploaded with its checksum")
	h.putAsset(t, "assets/C1/checked.txt", "text/plain", checked)
	copied := []byte("copied on the server, no checksum kept")
	h.putAsset(t, "assets/tmp/source.txt", "text/plain", copied)
	_, err := h.store.Compose(t.Context(), assetBucket, "assets/C2/copied.txt",
		[]blob.ComposeSource{{Key: "assets/tmp/source.txt"}}, "text/plain")
	require.NoError(t, err)
	st, err := h.store.Stat(t.Context(), assetBucket, "assets/C2/copied.txt")
	require.NoError(t, err)
	_, whole := st.ObjectSHA256()
	require.False(t, whole, "the copy has no whole-object checksum: %q", st.ChecksumSHA256)

	u := &sourcev1.UserRef{Id: "u1", Username: "ann"}
	h.publishMessages(t,
		&sourcev1.ChatMessage{Id: "s1", RoomId: "ROOMS", User: u, Ts: timestamppb.New(msgTime(1)), Text: "checked",
			Attachments: []*sourcev1.Attachment{{FileId: "C1", Name: "checked.txt", ObjectKey: "assets/C1/checked.txt"}}},
		&sourcev1.ChatMessage{Id: "s2", RoomId: "ROOMS", User: u, Ts: timestamppb.New(msgTime(2)), Text: "copied",
			Attachments: []*sourcev1.Attachment{{FileId: "C2", Name: "copied.txt", ObjectKey: "assets/C2/copied.txt"}}},
	)
	const jobID = "job-room-sums"
	h.publishTask(t, jobID+".task", roomTask(jobID, "ROOMS", nil, nil))
	var part exportv1.PartUploaded
	h.event(t, bus.EventPart, jobID, &part)

	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	want := []*exportv1.File{{
		Name: "assets/C1-checked.txt", Bucket: assetBucket, ObjectKey: "assets/C1/checked.txt",
		Size: uint64(len(checked)), Records: 1, Sha256: sum(checked), ContentType: "text/plain",
	}, {
		Name: "assets/C2-copied.txt", Bucket: assetBucket, ObjectKey: "assets/C2/copied.txt",
		Size: uint64(len(copied)), Records: 1, Sha256: sum(copied), ContentType: "text/plain",
	}}
	require.Len(t, part.GetFiles(), len(want), "%v", part.GetFiles())
	for i := range want {
		assert.True(t, proto.Equal(want[i], part.GetFiles()[i]), "want %v, got %v", want[i], part.GetFiles()[i])
	}
	listed := logs.Records(t, "room attachments listed", jobID)
	require.Len(t, listed, 1)
	assert.EqualValues(t, 2, listed[0]["attachments"])
	assert.EqualValues(t, 0, listed[0]["missing"])
	assert.EqualValues(t, 1, listed[0]["read_in_full"], "only the object without a checksum is read")
}
