package archive_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/archiver/internal/archive"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/jobview"
	"dataport.dev/shared/logtest"
)

// byReference is a room part's listing of an attachment as the room
// exporter makes it: where its object is and its name, nothing of its
// bytes.
func byReference(key, name, contentType string) *exportv1.File {
	return &exportv1.File{Name: name, Bucket: assetBucket, ObjectKey: key, Records: 1, ContentType: contentType, DescribedOnDelivery: true}
}

// TestRoomArchiveDescribesAttachmentsFromTheBytesItZips: a room part lists
// its attachments by reference only (File.described_on_delivery): one
// stored with its checksum, one stored without (a server-side copy), a
// multipart one, and some whose objects are gone. The archive holds the
// stored ones with their bytes; the archive's manifest and the job's give
// each its true size and SHA-256, which only hashing the bytes copied can
// know; those not found are listed as missing with no entry, the first
// ten named in the log and the count in one more record.
func TestRoomArchiveDescribesAttachmentsFromTheBytesItZips(t *testing.T) {
	e := prepare(t)
	var logs logtest.Buffer
	a, err := archive.New(archive.Config{
		Events: e.events, Jobs: jobview.New(e.jobs, nil), Objects: e.store, Bucket: bucket, Publisher: e.pub,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	require.NoError(t, err)
	e.run(t, a)
	ctx := t.Context()

	jobID := fmt.Sprintf("roomref-%d", time.Now().UnixNano())
	e.putJob(t, jobID, exportv1.JobKind_JOB_KIND_ROOM)
	doc := e.put(t, bucket, "jobs/"+jobID+"/parts/0/general.json", "general.json", "application/json",
		[]byte(`{"messages":[{"attachments":[{"title_link":"assets/r1-a.png"}]}]}`), 1)

	png := bytes.Repeat([]byte{0x89, 'P', 'N', 'G'}, 1000)
	_, err = e.store.Upload(ctx, assetBucket, "assets/r1/a.png", bytes.NewReader(png), "image/png")
	require.NoError(t, err)
	copied := []byte("copied on the server, no checksum kept")
	_, err = e.store.Upload(ctx, assetBucket, "assets/tmp/source.txt", bytes.NewReader(copied), "text/plain")
	require.NoError(t, err)
	_, err = e.store.Compose(ctx, assetBucket, "assets/r2/copied.txt", []blob.ComposeSource{{Key: "assets/tmp/source.txt"}}, "text/plain")
	require.NoError(t, err)
	st, err := e.store.Stat(ctx, assetBucket, "assets/r2/copied.txt")
	require.NoError(t, err)
	_, whole := st.ObjectSHA256()
	require.False(t, whole, "the copy has no whole-object checksum: %q", st.ChecksumSHA256)
	clip := randomBytes(t, blob.PartSize+1<<20)
	info, err := e.store.Upload(ctx, assetBucket, "assets/r3/clip.mp4", bytes.NewReader(clip), "video/mp4")
	require.NoError(t, err)
	require.True(t, strings.HasSuffix(info.ChecksumSHA256, "-2"), "a multipart object: %q", info.ChecksumSHA256)

	files := []*exportv1.File{
		byReference("assets/r1/a.png", "assets/r1-a.png", "image/png"),
		byReference("assets/r2/copied.txt", "assets/r2-copied.txt", ""),
		byReference("assets/r3/clip.mp4", "assets/r3-clip.mp4", "video/mp4"),
	}
	want := []archive.ManifestFile{
		{Name: "general.json", Size: doc.GetSize(), Records: 1, SHA256: doc.GetSha256()},
		{Name: "assets/r1-a.png", Size: uint64(len(png)), Records: 1, SHA256: sha(png)},
		{Name: "assets/r2-copied.txt", Size: uint64(len(copied)), Records: 1, SHA256: sha(copied)},
		{Name: "assets/r3-clip.mp4", Size: uint64(len(clip)), Records: 1, SHA256: sha(clip)},
	}
	const gone = 12
	for i := range gone {
		name := fmt.Sprintf("assets/g%d-gone.txt", i)
		files = append(files, byReference(fmt.Sprintf("assets/g%d/gone.txt", i), name, "text/plain"))
		want = append(want, archive.ManifestFile{Name: name, Missing: true})
	}
	require.NoError(t, e.pub.PublishStatus(ctx, bus.EventPart, jobID, "0", &exportv1.PartUploaded{
		JobId: jobID, OccurredAt: timestamppb.Now(), Part: 0, PartsTotal: 1, Kind: exportv1.JobKind_JOB_KIND_ROOM, OwnerId: owner,
		PartKind: exportv1.PartKind_PART_KIND_ROOM, File: doc, Files: files,
	}))
	e.waitOutcome(t, jobID)
	require.Zero(t, e.count(t, bus.EventFailed, jobID), "missing attachments do not fail the export")
	var done exportv1.ExportCompleted
	e.last(t, bus.EventCompleted, jobID, &done)
	assert.Empty(t, cmpFiles([]*exportv1.File{doc}, done.GetFiles()), "the document stays the job's one file")
	arc := done.GetArchive()
	require.NotNil(t, arc)

	entries := zipEntries(t, e.readObject(t, arc.GetObjectKey()))
	assert.Equal(t, png, entries["assets/r1-a.png"])
	assert.Equal(t, copied, entries["assets/r2-copied.txt"])
	assert.True(t, bytes.Equal(clip, entries["assets/r3-clip.mp4"]), "the multipart attachment's bytes")
	assert.Len(t, entries, 5, "document, three attachments, manifest: no entry for a missing one")

	var inner archive.Manifest
	require.NoError(t, json.Unmarshal(entries[archive.ManifestName], &inner))
	require.Len(t, inner.Parts, 1)
	assert.Equal(t, want, inner.Parts[0].Files, "the archive's manifest")
	wantTotals := archive.ManifestTotals{Files: 4, Size: doc.GetSize() + uint64(len(png)+len(copied)+len(clip)), Records: 4, Missing: gone}
	assert.Equal(t, wantTotals, inner.Totals)

	m := manifestOf(t, e, &done)
	require.Len(t, m.Parts, 1)
	assert.Equal(t, want, m.Parts[0].Files, "the job's manifest")
	assert.Equal(t, wantTotals, m.Totals)
	require.NotNil(t, m.Archive)
	assert.Equal(t, uint64(4), m.Archive.Records)

	named := logs.Records(t, "attachment object missing", jobID)
	assert.Len(t, named, 10, "the first ten by name")
	for _, r := range named {
		assert.Contains(t, r["name"], "-gone.txt")
	}
	counted := logs.Records(t, "attachments listed as missing", jobID)
	require.Len(t, counted, 1, "the rest in one record")
	assert.EqualValues(t, gone, counted[0]["missing"])
}

// TestFilesListedByReferenceAreDescribedWhenDeliveredAsTheyAre: should a
// part delivered file by file (PartsAsFiles) list a file by reference
// only, it is delivered with the size and SHA-256 of its bytes, and the
// job's manifest says the same; one whose object is gone is listed as
// missing and not delivered.
func TestFilesListedByReferenceAreDescribedWhenDeliveredAsTheyAre(t *testing.T) {
	e := start(t)
	jobID := fmt.Sprintf("byref-%d", time.Now().UnixNano())
	e.putJob(t, jobID, exportv1.JobKind_JOB_KIND_RECORDS)
	content := []byte("a,b\n1,2\n")
	_, err := e.store.Upload(t.Context(), assetBucket, "assets/p1/t.csv", bytes.NewReader(content), "text/csv")
	require.NoError(t, err)
	e.publishPart(t, jobID, exportv1.JobKind_JOB_KIND_RECORDS, 0, 1, 0,
		byReference("assets/p1/t.csv", "t.csv", "text/csv"), byReference("assets/p2/gone.csv", "gone.csv", "text/csv"))
	e.waitOutcome(t, jobID)
	require.Zero(t, e.count(t, bus.EventFailed, jobID))
	var done exportv1.ExportCompleted
	e.last(t, bus.EventCompleted, jobID, &done)
	require.Len(t, done.GetFiles(), 1)
	f := done.GetFiles()[0]
	assert.Equal(t, "t.csv", f.GetName())
	assert.Equal(t, uint64(len(content)), f.GetSize())
	assert.Equal(t, sha(content), f.GetSha256())
	assert.False(t, f.GetDescribedOnDelivery(), "delivered described")
	m := manifestOf(t, e, &done)
	require.Len(t, m.Parts, 1)
	assert.Equal(t, []archive.ManifestFile{
		{Name: "t.csv", Size: uint64(len(content)), Records: 1, SHA256: sha(content)},
		{Name: "gone.csv", Missing: true},
	}, m.Parts[0].Files)
}
