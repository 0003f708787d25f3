package archive_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/shared/bus"
)

// TestSplitRoomExportIsJoined: the pieces of a split room export become
// the one room document, the last piece leaving out its lead when no
// piece held a message (the JSON document's closing bytes), and the
// archive holds the joined document and every piece's attachments once.
func TestSplitRoomExportIsJoined(t *testing.T) {
	e := start(t)
	const header = "{\"room\":{\"_id\":\"R\"},\n\"messages\":["
	for _, tc := range []struct {
		name    string
		pieces  []pieceSpec
		want    string
		records uint64
	}{
		{"messages in the middle range", []pieceSpec{{header, 0, 0}, {",\n{\"_id\":\"a\"},\n{\"_id\":\"b\"}", 2, 1}, {"\n]}\n", 0, 1}},
			header + "\n{\"_id\":\"a\"},\n{\"_id\":\"b\"}\n]}\n", 2},
		{"no message at all", []pieceSpec{{header, 0, 0}, {"", 0, 1}, {"\n]}\n", 0, 1}}, header + "]}\n", 0},
		{"messages in every range", []pieceSpec{{header + "\n{\"_id\":\"a\"}", 1, 0}, {",\n{\"_id\":\"b\"}", 1, 1},
			{",\n{\"_id\":\"c\"}\n]}\n", 1, 1}}, header + "\n{\"_id\":\"a\"},\n{\"_id\":\"b\"},\n{\"_id\":\"c\"}\n]}\n", 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jobID := fmt.Sprintf("roomsplit-%d", time.Now().UnixNano())
			e.putJob(t, jobID, exportv1.JobKind_JOB_KIND_ROOM)
			for i, s := range tc.pieces {
				doc := e.put(t, bucket, fmt.Sprintf("jobs/%s/parts/%d/general.json", jobID, i), "general.json", "application/json",
					[]byte(s.content), s.records)
				require.NoError(t, e.pub.PublishStatus(t.Context(), bus.EventPart, jobID, fmt.Sprint(i), &exportv1.PartUploaded{
					JobId: jobID, OccurredAt: timestamppb.Now(), Part: uint32(i), PartsTotal: uint32(len(tc.pieces)),
					Kind: exportv1.JobKind_JOB_KIND_ROOM, OwnerId: owner, PartKind: exportv1.PartKind_PART_KIND_ROOM,
					File: doc, Piece: &exportv1.FilePiece{Lead: s.lead},
				}))
			}
			e.waitOutcome(t, jobID)
			require.Zero(t, e.count(t, bus.EventFailed, jobID))
			var done exportv1.ExportCompleted
			e.last(t, bus.EventCompleted, jobID, &done)
			require.Len(t, done.GetFiles(), 1)
			f := done.GetFiles()[0]
			assert.Equal(t, "jobs/"+jobID+"/files/general.json", f.GetObjectKey())
			assert.Equal(t, tc.want, string(e.readObject(t, f.GetObjectKey())))
			assert.Equal(t, sha([]byte(tc.want)), f.GetSha256())
			assert.Equal(t, tc.records, f.GetRecords())
			assert.Nil(t, done.GetArchive(), "no attachments, no zip")
		})
	}

	t.Run("with attachments", func(t *testing.T) {
		jobID := fmt.Sprintf("roomsplitzip-%d", time.Now().UnixNano())
		e.putJob(t, jobID, exportv1.JobKind_JOB_KIND_ROOM)
		png := bytes.Repeat([]byte{0x89, 'P', 'N', 'G'}, 100)
		a1 := e.put(t, assetBucket, "assets/f1/a.png", "assets/f1-a.png", "image/png", png, 1)
		a2 := e.put(t, assetBucket, "assets/f2/b.png", "assets/f2-b.png", "image/png", png[:40], 1)
		specs := []pieceSpec{{header + "\n{\"_id\":\"a\"}", 1, 0}, {",\n{\"_id\":\"b\"}\n]}\n", 1, 1}}
		assets := [][]*exportv1.File{{a1}, {a1, a2}}
		for i, s := range specs {
			doc := e.put(t, bucket, fmt.Sprintf("jobs/%s/parts/%d/general.json", jobID, i), "general.json", "application/json",
				[]byte(s.content), s.records)
			require.NoError(t, e.pub.PublishStatus(t.Context(), bus.EventPart, jobID, fmt.Sprint(i), &exportv1.PartUploaded{
				JobId: jobID, OccurredAt: timestamppb.Now(), Part: uint32(i), PartsTotal: 2,
				Kind: exportv1.JobKind_JOB_KIND_ROOM, OwnerId: owner, PartKind: exportv1.PartKind_PART_KIND_ROOM,
				File: doc, Files: assets[i], Piece: &exportv1.FilePiece{Lead: s.lead},
			}))
		}
		e.waitOutcome(t, jobID)
		require.Zero(t, e.count(t, bus.EventFailed, jobID))
		var done exportv1.ExportCompleted
		e.last(t, bus.EventCompleted, jobID, &done)
		want := header + "\n{\"_id\":\"a\"},\n{\"_id\":\"b\"}\n]}\n"
		require.Len(t, done.GetFiles(), 1)
		assert.Equal(t, want, string(e.readObject(t, done.GetFiles()[0].GetObjectKey())))
		arc := done.GetArchive()
		require.NotNil(t, arc)
		assert.Equal(t, "general.zip", arc.GetName())
		entries := zipEntries(t, e.readObject(t, arc.GetObjectKey()))
		assert.Equal(t, want, string(entries["general.json"]))
		assert.Equal(t, png, entries["assets/f1-a.png"])
		assert.Equal(t, png[:40], entries["assets/f2-b.png"])
		assert.Len(t, entries, 4, "document, two assets, manifest")
	})
}
