package roomexport_test

import (
	"encoding/json"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/logtest"
)

// TestRoomExportListsTheAttachmentsItsDocumentLinksTo: a room export
// announces its document in file and, beside it in files, the files the
// document's messages link to (assets/<id>-<name>), as they are shown: an
// edited message's latest attachment only, none of a message out of
// range, each once. They are listed by reference, whether their objects
// are there or not (the archive's copy finds that out); one that names no
// object at all is missing already.
func TestRoomExportListsTheAttachmentsItsDocumentLinksTo(t *testing.T) {
	h := start(t, nil)
	h.putRoom(t, &sourcev1.Room{Id: "ROOMA", Name: "with-files", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	h.putAsset(t, "assets/F1/report.pdf", "application/pdf", []byte("%PDF-1.4 the report"))
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
		msg("m4", 4, att("F1", "report.pdf", "application/pdf"), // the same file again
			&sourcev1.Attachment{FileId: "F6", Name: "lost.txt"}), // no object at all
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
	want := []*exportv1.File{{
		Name: "assets/F1-report.pdf", Bucket: assetBucket, ObjectKey: "assets/F1/report.pdf",
		Records: 1, ContentType: "application/pdf", DescribedOnDelivery: true,
	}, {
		Name: "assets/F3-new.txt", Bucket: assetBucket, ObjectKey: "assets/F3/new.txt",
		Records: 1, ContentType: "text/plain", DescribedOnDelivery: true,
	}, {
		Name: "assets/F4-gone.png", Bucket: assetBucket, ObjectKey: "assets/F4/gone.png",
		Records: 1, ContentType: "image/png", DescribedOnDelivery: true,
	}, {
		Name: "assets/F6-lost.txt", Bucket: assetBucket, Missing: true,
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
	assert.Subset(t, links, []string{"assets/F1-report.pdf", "assets/F3-new.txt", "assets/F4-gone.png", "assets/F6-lost.txt"})
	assert.NotContains(t, links, "assets/F2-old.txt")
}

// TestRoomExportLeavesDescribingAttachmentsToTheArchive: on real MinIO,
// the room exporter lists an attachment stored with a SHA-256 checksum,
// one stored without (a server-side copy, which keeps no whole-object
// checksum) and one whose object is gone alike: by reference, with no
// size or SHA-256, which the archiver takes from the bytes it zips (the
// archiver's TestRoomArchiveDescribesAttachmentsFromTheBytesItZips). Had
// the exporter asked the store about any, the three would differ.
func TestRoomExportLeavesDescribingAttachmentsToTheArchive(t *testing.T) {
	var logs logtest.Buffer
	h := start(t, func(o *config) {
		o.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	h.putRoom(t, &sourcev1.Room{Id: "ROOMS", Name: "sums", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	h.putAsset(t, "assets/C1/checked.txt", "text/plain", []byte("uploaded with its checksum"))
	h.putAsset(t, "assets/tmp/source.txt", "text/plain", []byte("copied on the server, no checksum kept"))
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
		&sourcev1.ChatMessage{Id: "s3", RoomId: "ROOMS", User: u, Ts: timestamppb.New(msgTime(3)), Text: "gone",
			Attachments: []*sourcev1.Attachment{{FileId: "C3", Name: "gone.txt", ObjectKey: "assets/C3/gone.txt"}}},
	)
	const jobID = "job-room-sums"
	h.publishTask(t, jobID+".task", roomTask(jobID, "ROOMS", nil, nil))
	var part exportv1.PartUploaded
	h.event(t, bus.EventPart, jobID, &part)

	want := []*exportv1.File{{
		Name: "assets/C1-checked.txt", Bucket: assetBucket, ObjectKey: "assets/C1/checked.txt", Records: 1, DescribedOnDelivery: true,
	}, {
		Name: "assets/C2-copied.txt", Bucket: assetBucket, ObjectKey: "assets/C2/copied.txt", Records: 1, DescribedOnDelivery: true,
	}, {
		Name: "assets/C3-gone.txt", Bucket: assetBucket, ObjectKey: "assets/C3/gone.txt", Records: 1, DescribedOnDelivery: true,
	}}
	require.Len(t, part.GetFiles(), len(want), "%v", part.GetFiles())
	for i := range want {
		assert.True(t, proto.Equal(want[i], part.GetFiles()[i]), "want %v, got %v", want[i], part.GetFiles()[i])
	}
	listed := logs.Records(t, "room attachments listed", jobID)
	require.Len(t, listed, 1)
	assert.EqualValues(t, 3, listed[0]["attachments"])
}
