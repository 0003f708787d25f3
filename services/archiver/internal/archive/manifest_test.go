package archive_test

import (
	"archive/zip"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/archiver/internal/archive"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/objects"
)

// manifestOf reads the manifest a completed job carries and checks its
// record against the object.
func manifestOf(t *testing.T, e *env, done *exportv1.ExportCompleted) archive.Manifest {
	t.Helper()
	mf := done.GetManifest()
	require.NotNil(t, mf, "every completed job carries a manifest")
	assert.Equal(t, "manifest.json", mf.GetName())
	assert.Equal(t, "application/json", mf.GetContentType())
	data := e.readObject(t, mf.GetObjectKey())
	assert.EqualValues(t, len(data), mf.GetSize())
	assert.Equal(t, sha(data), mf.GetSha256())
	var m archive.Manifest
	require.NoError(t, json.Unmarshal(data, &m))
	return m
}

// TestEveryCompletedJobCarriesAManifest: records in chunks, room mails and
// room documents delivered as they are, and user-data zips, each get
// manifest.json beside their files, naming every delivered file with its
// size, SHA-256 and record count, which match the files' bytes.
func TestEveryCompletedJobCarriesAManifest(t *testing.T) {
	e := start(t)
	for i, kind := range []exportv1.JobKind{exportv1.JobKind_JOB_KIND_RECORDS, exportv1.JobKind_JOB_KIND_ROOM_MAIL, exportv1.JobKind_JOB_KIND_ROOM} {
		t.Run(kind.String(), func(t *testing.T) {
			jobID := fmt.Sprintf("manifest%d-%d", i, time.Now().UnixNano())
			e.putJob(t, jobID, kind)
			var files []*exportv1.File
			for n := range 3 - i {
				name := fmt.Sprintf("f.%d.csv", n)
				files = append(files, e.put(t, bucket, fmt.Sprintf("jobs/%s/parts/0/%s", jobID, name), name, "text/csv",
					bytes.Repeat([]byte{byte('a' + n)}, 100+n), uint64(10+n)))
			}
			e.publishPart(t, jobID, kind, 0, 1, 0, files...)
			e.waitOutcome(t, jobID)
			var done exportv1.ExportCompleted
			e.last(t, bus.EventCompleted, jobID, &done)
			m := manifestOf(t, e, &done)
			assert.Equal(t, jobID, m.JobID)
			assert.Equal(t, archive.ManifestVersion, m.Version)
			assert.Equal(t, "2026-05-01T09:30:00Z", m.Created)
			require.Len(t, m.Files, len(files))
			var total archive.ManifestTotals
			for j, f := range files {
				data := e.readObject(t, f.GetObjectKey())
				want := archive.ManifestFile{Name: f.GetName(), Size: uint64(len(data)), Records: f.GetRecords(), SHA256: sha(data)}
				assert.Equal(t, want, m.Files[j])
				total.Files++
				total.Size += want.Size
				total.Records += want.Records
			}
			require.Len(t, m.Parts, 1)
			assert.Equal(t, m.Files, m.Parts[0].Files)
			assert.Equal(t, total, m.Totals)
			assert.Nil(t, done.GetArchive(), "no attachments, no archive")
		})
	}

	t.Run("user data", func(t *testing.T) {
		jobID := fmt.Sprintf("manifest-zip-%d", time.Now().UnixNano())
		e.putJob(t, jobID, exportv1.JobKind_JOB_KIND_USER_DATA)
		p := "jobs/" + jobID + "/parts/"
		user := e.put(t, bucket, p+"0/user.json", "user.json", "application/json", []byte(`{"name":"alice"}`), 1)
		asset := e.put(t, assetBucket, "assets/f1/a.txt", "assets/f1-a.txt", "text/plain", []byte("an asset"), 1)
		gone := &exportv1.File{Name: "assets/f2-gone.png", Bucket: assetBucket, ObjectKey: "assets/f2/gone.png", Missing: true}
		e.publishPart(t, jobID, exportv1.JobKind_JOB_KIND_USER_DATA, 0, 2, 0, user)
		e.publishPart(t, jobID, exportv1.JobKind_JOB_KIND_USER_DATA, 1, 2, 0, asset, gone)
		e.waitOutcome(t, jobID)
		require.Zero(t, e.count(t, bus.EventFailed, jobID), "a missing asset does not fail the download")
		var done exportv1.ExportCompleted
		e.last(t, bus.EventCompleted, jobID, &done)
		require.Len(t, done.GetFiles(), 1)
		zipped := done.GetFiles()[0]
		m := manifestOf(t, e, &done)
		data := e.readObject(t, zipped.GetObjectKey())
		assert.Equal(t, []archive.ManifestFile{{Name: zipped.GetName(), Size: uint64(len(data)), Records: 2, SHA256: sha(data)}}, m.Files)
		require.Len(t, m.Parts, 2)
		assert.Equal(t, []archive.ManifestFile{
			{Name: "assets/f1-a.txt", Size: asset.GetSize(), Records: 1, SHA256: asset.GetSha256()},
			{Name: "assets/f2-gone.png", Missing: true},
		}, m.Parts[1].Files)
		assert.Equal(t, archive.ManifestTotals{Files: 2, Size: user.GetSize() + asset.GetSize(), Records: 2, Missing: 1}, m.Totals)
		entries := zipEntries(t, data)
		assert.NotContains(t, entries, "assets/f2-gone.png", "a missing asset has no entry")
		assert.Contains(t, entries, "assets/f1-a.txt")
	})
}

// zipEntries reads every entry of a zip.
func zipEntries(t *testing.T, data []byte) map[string][]byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	out := map[string][]byte{}
	for _, zf := range zr.File {
		rc, err := zf.Open()
		require.NoError(t, err)
		b, err := io.ReadAll(rc)
		require.NoError(t, err)
		rc.Close()
		out[zf.Name] = b
	}
	return out
}

// TestRoomExportWithAttachmentsIsZipped: a room part that announces
// attachments beside its document delivers the document as the job's
// file and a zip of document, assets/ and manifest as its archive; a
// missing attachment is listed as missing, never an entry or a failure.
func TestRoomExportWithAttachmentsIsZipped(t *testing.T) {
	e := start(t)
	jobID := fmt.Sprintf("roomzip-%d", time.Now().UnixNano())
	e.putJob(t, jobID, exportv1.JobKind_JOB_KIND_ROOM)
	doc := e.put(t, bucket, "jobs/"+jobID+"/parts/0/general.json", "general.json", "application/json",
		[]byte(`{"messages":[{"attachments":[{"title_link":"assets/f1-a.png"}]}]}`), 1)
	png := bytes.Repeat([]byte{0x89, 'P', 'N', 'G'}, 1000)
	asset := e.put(t, assetBucket, "assets/f1/a.png", "assets/f1-a.png", "image/png", png, 1)
	gone := &exportv1.File{Name: "assets/f2-gone.txt", Bucket: assetBucket, ObjectKey: "assets/f2/gone.txt", Missing: true}
	require.NoError(t, e.pub.PublishStatus(t.Context(), bus.EventPart, jobID, "0", &exportv1.PartUploaded{
		JobId: jobID, OccurredAt: timestamppb.Now(), Part: 0, PartsTotal: 1, Kind: exportv1.JobKind_JOB_KIND_ROOM, OwnerId: owner,
		PartKind: exportv1.PartKind_PART_KIND_ROOM, File: doc, Files: []*exportv1.File{asset, gone},
	}))
	e.waitOutcome(t, jobID)
	require.Zero(t, e.count(t, bus.EventFailed, jobID))
	var done exportv1.ExportCompleted
	e.last(t, bus.EventCompleted, jobID, &done)
	assert.Empty(t, cmpFiles([]*exportv1.File{doc}, done.GetFiles()), "the document stays the job's one file")
	arc := done.GetArchive()
	require.NotNil(t, arc)
	assert.Equal(t, "general.zip", arc.GetName())
	data := e.readObject(t, arc.GetObjectKey())
	assert.EqualValues(t, len(data), arc.GetSize())
	assert.Equal(t, sha(data), arc.GetSha256())
	entries := zipEntries(t, data)
	assert.Equal(t, png, entries["assets/f1-a.png"])
	assert.Equal(t, sha(e.readObject(t, doc.GetObjectKey())), sha(entries["general.json"]))
	assert.NotContains(t, entries, "assets/f2-gone.txt")
	var inner archive.Manifest
	require.NoError(t, json.Unmarshal(entries[archive.ManifestName], &inner))
	want := []archive.ManifestFile{
		{Name: "general.json", Size: doc.GetSize(), Records: 1, SHA256: doc.GetSha256()},
		{Name: "assets/f1-a.png", Size: asset.GetSize(), Records: 1, SHA256: asset.GetSha256()},
		{Name: "assets/f2-gone.txt", Missing: true},
	}
	require.Len(t, inner.Parts, 1)
	assert.Equal(t, want, inner.Parts[0].Files)
	assert.Equal(t, 1, inner.Totals.Missing)

	m := manifestOf(t, e, &done)
	assert.Equal(t, []archive.ManifestFile{{Name: "general.json", Size: doc.GetSize(), Records: 1, SHA256: doc.GetSha256()}}, m.Files)
	require.NotNil(t, m.Archive)
	assert.Equal(t, archive.ManifestFile{Name: "general.zip", Size: uint64(len(data)), Records: 2, SHA256: sha(data)}, *m.Archive)
	assert.Equal(t, inner.Parts, m.Parts)
}

// TestPartialPartEventsAreNotReports: the finished files a canceled part
// announces (partial) never complete a job.
func TestPartialPartEventsAreNotReports(t *testing.T) {
	e := start(t)
	jobID := fmt.Sprintf("partial-%d", time.Now().UnixNano())
	f := e.put(t, bucket, "jobs/"+jobID+"/parts/0/tx.0.csv", "tx.0.csv", "text/csv", []byte("a,b\n"), 1)
	require.NoError(t, e.pub.PublishStatus(t.Context(), bus.EventPart, jobID, "partial.0", &exportv1.PartUploaded{
		JobId: jobID, OccurredAt: timestamppb.Now(), Part: 0, PartsTotal: 1, Kind: exportv1.JobKind_JOB_KIND_RECORDS,
		OwnerId: owner, Files: []*exportv1.File{f}, Partial: true,
	}))
	require.EventuallyWithT(t, func(c *assert.CollectT) { e.settled(t, c) }, waitFor, tick)
	assert.Zero(t, e.count(t, bus.EventFinalizing, jobID))
	assert.Zero(t, e.count(t, bus.EventCompleted, jobID))
}

// TestAttachmentListIsReadBack: a room part with more attachments than fit
// its event lists them in an object (PartUploaded.attachment_list); the
// archive and the manifest are those of the same attachments announced
// inline, and a list whose bytes changed fails the job with a sentence.
func TestAttachmentListIsReadBack(t *testing.T) {
	e := start(t)
	png := bytes.Repeat([]byte{0x89, 'P', 'N', 'G'}, 500)
	var listed []*exportv1.File
	for i := range 3 {
		listed = append(listed, e.put(t, assetBucket, fmt.Sprintf("assets/l%d/a.png", i), fmt.Sprintf("assets/l%d-a.png", i), "image/png", png, 1))
	}
	var buf bytes.Buffer
	for _, f := range listed {
		_, err := protodelim.MarshalTo(&buf, f)
		require.NoError(t, err)
	}
	publish := func(jobID string, list []byte) {
		e.putJob(t, jobID, exportv1.JobKind_JOB_KIND_ROOM)
		doc := e.put(t, bucket, "jobs/"+jobID+"/parts/0/general.json", "general.json", "application/json", []byte(`{"messages":[]}`), 0)
		lf := e.put(t, bucket, objects.AttachmentListKey(jobID, 0), "attachments.list.pb", "application/x-protobuf", buf.Bytes(), uint64(len(listed)))
		if list != nil {
			// Changed after the part announced it.
			e.put(t, bucket, objects.AttachmentListKey(jobID, 0), "attachments.list.pb", "application/x-protobuf", list, uint64(len(listed)))
		}
		require.NoError(t, e.pub.PublishStatus(t.Context(), bus.EventPart, jobID, "0", &exportv1.PartUploaded{
			JobId: jobID, OccurredAt: timestamppb.Now(), Part: 0, PartsTotal: 1, Kind: exportv1.JobKind_JOB_KIND_ROOM, OwnerId: owner,
			PartKind: exportv1.PartKind_PART_KIND_ROOM, File: doc, AttachmentList: lf,
		}))
		e.waitOutcome(t, jobID)
	}

	jobID := fmt.Sprintf("roomlist-%d", time.Now().UnixNano())
	publish(jobID, nil)
	require.Zero(t, e.count(t, bus.EventFailed, jobID))
	var done exportv1.ExportCompleted
	e.last(t, bus.EventCompleted, jobID, &done)
	require.NotNil(t, done.GetArchive())
	entries := zipEntries(t, e.readObject(t, done.GetArchive().GetObjectKey()))
	for _, f := range listed {
		assert.Equal(t, png, entries[f.GetName()], f.GetName())
	}
	m := manifestOf(t, e, &done)
	require.Len(t, m.Parts, 1)
	assert.Len(t, m.Parts[0].Files, 1+len(listed), "the document and every listed attachment")
	assert.NotContains(t, entries, "attachments.list.pb", "the list is not delivered")

	bad := fmt.Sprintf("roomlist-bad-%d", time.Now().UnixNano())
	publish(bad, buf.Bytes()[:buf.Len()-1])
	var failed exportv1.ExportFailed
	e.last(t, bus.EventFailed, bad, &failed)
	assert.Contains(t, failed.GetReason(), "The list of the export's attachments was changed after it was written")
	assert.NotContains(t, failed.GetReason(), "jobs/", "no object key in the user's reason")
}
