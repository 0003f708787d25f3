package archive_test

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/archiver/internal/archive"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
)

var created = time.Date(2026, 5, 1, 9, 30, 0, 0, time.UTC)

// putJob stores the job record the gateway would have written.
func (e *env) putJob(t *testing.T, jobID string, kind exportv1.JobKind) {
	t.Helper()
	data, err := proto.Marshal(&exportv1.Job{Id: jobID, OwnerId: owner, Kind: kind, CreatedAt: timestamppb.New(created)})
	require.NoError(t, err)
	_, err = e.jobs.Put(t.Context(), jobID, data)
	require.NoError(t, err)
}

// put stores content under bucket/key and returns the File record an
// exporter would report for it, named name.
func (e *env) put(t *testing.T, bkt, key, name, contentType string, content []byte, records uint64) *exportv1.File {
	t.Helper()
	_, err := e.store.Upload(t.Context(), bkt, key, bytes.NewReader(content), contentType)
	require.NoError(t, err)
	sum := sha256.Sum256(content)
	f := &exportv1.File{Name: name, ObjectKey: key, Size: uint64(len(content)), Records: records, Sha256: hex.EncodeToString(sum[:]), ContentType: contentType}
	if bkt != bucket {
		f.Bucket = bkt
	}
	return f
}

// readObject reads a whole (small) object.
func (e *env) readObject(t *testing.T, key string) []byte {
	t.Helper()
	rc, _, err := e.store.Open(t.Context(), bucket, key)
	require.NoError(t, err)
	defer rc.Close()
	data, err := io.ReadAll(rc)
	require.NoError(t, err)
	return data
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// entry is what a test expects of one archive entry.
type entry struct {
	name    string
	content []byte
	method  uint16
}

// userData uploads the parts of a realistic user-data download and
// returns the parts' files and the entries the archive should hold.
func userData(t *testing.T, e *env, jobID string) ([][]*exportv1.File, []entry) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	png := make([]byte, 64<<10)
	for i := range png {
		png[i] = byte(rng.Uint32())
	}
	userHTML := []byte("<html><body><h1>alice</h1></body></html>")
	general := bytes.Repeat([]byte("<p>hello general</p>\n"), 5000)
	dup := []byte("<p>a second room also called general</p>")
	evil := []byte("escape attempt")
	report := []byte("%PDF-1.4 not really")
	p := "jobs/" + jobID + "/parts/"
	parts := [][]*exportv1.File{
		{e.put(t, bucket, p+"0/user.html", "user.html", "text/html", userHTML, 1)},
		{e.put(t, bucket, p+"1/general.html", "general.html", "text/html", general, 5000)},
		{e.put(t, bucket, p+"2/general.html", "General.html", "text/html", dup, 1)},
		{
			e.put(t, assetBucket, "assets/f1/photo.png", "assets/f1-photo.png", "image/png", png, 0),
			e.put(t, assetBucket, "assets/f2/report.pdf", `assets\..\..\f2-re:port.pdf`, "application/pdf", report, 0),
			e.put(t, bucket, p+"3/evil", "/../../etc/passwd\x00\n", "text/plain", evil, 0),
		},
		{e.put(t, bucket, p+"4/manifest.json", "manifest.json", "application/json", []byte(`{"fake":true}`), 0)},
		// An assets part of a user who uploaded nothing.
		{},
	}
	want := []entry{
		{"user.html", userHTML, zip.Deflate},
		{"general.html", general, zip.Deflate},
		{"General (2).html", dup, zip.Deflate},
		{"assets/f1-photo.png", png, zip.Store},
		{"assets/f2-re_port.pdf", report, zip.Deflate},
		{"etc/passwd__", evil, zip.Deflate},
		{"manifest (2).json", []byte(`{"fake":true}`), zip.Deflate},
	}
	return parts, want
}

func TestZipArchive(t *testing.T) {
	e := start(t)
	jobID := fmt.Sprintf("zip-%d", time.Now().UnixNano())
	e.putJob(t, jobID, exportv1.JobKind_JOB_KIND_USER_DATA)
	parts, want := userData(t, e, jobID)
	for i, files := range parts {
		e.publishPart(t, jobID, exportv1.JobKind_JOB_KIND_USER_DATA, i, len(parts), 0, files...)
	}
	e.waitOutcome(t, jobID)
	require.EqualValues(t, 1, e.count(t, bus.EventCompleted, jobID), "completed events")
	var done exportv1.ExportCompleted
	e.last(t, bus.EventCompleted, jobID, &done)
	require.Len(t, done.GetFiles(), 1)
	f := done.GetFiles()[0]
	assert.Equal(t, "dataport-"+jobID+".zip", f.GetName())
	assert.Equal(t, "jobs/"+jobID+"/files/dataport-"+jobID+".zip", f.GetObjectKey())
	assert.Equal(t, "application/zip", f.GetContentType())
	assert.EqualValues(t, 5002, f.GetRecords())

	data := e.readObject(t, f.GetObjectKey())
	assert.EqualValues(t, len(data), f.GetSize(), "size in ExportCompleted")
	assert.Equal(t, sha(data), f.GetSha256(), "sha256 in ExportCompleted")

	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	require.NoError(t, err)
	require.Len(t, zr.File, len(want)+1, "entries")
	contents := map[string][]byte{}
	for i, zf := range zr.File {
		assert.True(t, zf.Modified.Equal(created), "%s modified %v", zf.Name, zf.Modified)
		rc, err := zf.Open()
		require.NoError(t, err)
		b, err := io.ReadAll(rc)
		require.NoError(t, err, zf.Name)
		contents[zf.Name] = b
		if i < len(want) {
			assert.Equal(t, want[i].name, zf.Name, "entry %d", i)
			assert.Equal(t, want[i].method, zf.Method, "method of %s", zf.Name)
			assert.Equal(t, sha(want[i].content), sha(b), "content of %s", zf.Name)
		}
	}
	last := zr.File[len(zr.File)-1]
	require.Equal(t, archive.ManifestName, last.Name, "manifest is the last entry")

	var m archive.Manifest
	require.NoError(t, json.Unmarshal(contents[archive.ManifestName], &m))
	assert.Equal(t, 1, m.Version)
	assert.Equal(t, jobID, m.JobID)
	assert.Equal(t, "user_data", m.Kind)
	assert.Equal(t, "2026-05-01T09:30:00Z", m.Created)
	require.Len(t, m.Parts, len(parts))
	var n int
	var size uint64
	for i, mp := range m.Parts {
		assert.EqualValues(t, i, mp.Part)
		require.Len(t, mp.Files, len(parts[i]))
		for j, mf := range mp.Files {
			assert.Equal(t, want[n].name, mf.Name)
			assert.Equal(t, parts[i][j].GetSha256(), mf.SHA256)
			// Every entry's bytes hash to what the manifest says.
			assert.Equal(t, mf.SHA256, sha(contents[mf.Name]), "manifest sha256 of %s", mf.Name)
			assert.EqualValues(t, len(contents[mf.Name]), mf.Size)
			size += mf.Size
			n++
		}
	}
	assert.Equal(t, archive.ManifestTotals{Files: len(want), Size: size, Records: 5002}, m.Totals)
}

// TestZipRedelivery packages the same job twice, as a redelivered last
// part or a second replica would: one object, byte for byte the same.
func TestZipRedelivery(t *testing.T) {
	e := start(t)
	jobID := fmt.Sprintf("again-%d", time.Now().UnixNano())
	files, _ := userData(t, e, jobID)
	parts := make([]*exportv1.PartUploaded, len(files))
	for i, fs := range files {
		parts[i] = &exportv1.PartUploaded{JobId: jobID, Part: uint32(i), PartsTotal: uint32(len(files)), Files: fs}
	}
	z := &archive.Zip{Objects: e.store, Bucket: bucket}
	job := archive.Job{ID: jobID, Kind: exportv1.JobKind_JOB_KIND_USER_DATA, Created: created}

	first, err := z.Package(t.Context(), job, parts)
	require.NoError(t, err)
	a := e.readObject(t, first[0].GetObjectKey())
	second, err := z.Package(t.Context(), job, parts)
	require.NoError(t, err)
	b := e.readObject(t, second[0].GetObjectKey())

	assert.True(t, proto.Equal(first[0], second[0]), "file records differ: %v vs %v", first[0], second[0])
	assert.Equal(t, sha(a), sha(b), "archive bytes differ")
	objs, err := e.store.List(t.Context(), bucket, "jobs/"+jobID+"/files/")
	require.NoError(t, err)
	assert.Len(t, objs, 1, "archive objects")
}

// TestZipCorruptedPart checks that a part whose bytes differ from its
// record fails the job naming the file, and leaves no archive.
func TestZipCorruptedPart(t *testing.T) {
	tests := []struct {
		name       string
		corrupt    func(t *testing.T, e *env, f *exportv1.File)
		wantReason []string
	}{
		{
			name: "same size, other bytes",
			corrupt: func(t *testing.T, e *env, f *exportv1.File) {
				b := bytes.Repeat([]byte("<p>HELLO general</p>\n"), 5000)
				_, err := e.store.Upload(t.Context(), bucket, f.GetObjectKey(), bytes.NewReader(b), "text/html")
				require.NoError(t, err)
			},
			wantReason: []string{"part 1 (general.html) failed verification", "sha256"},
		},
		{
			name: "truncated",
			corrupt: func(t *testing.T, e *env, f *exportv1.File) {
				_, err := e.store.Upload(t.Context(), bucket, f.GetObjectKey(), bytes.NewReader([]byte("<p>")), "text/html")
				require.NoError(t, err)
			},
			wantReason: []string{"part 1 (general.html) failed verification", "bytes"},
		},
		{
			name: "missing asset",
			corrupt: func(t *testing.T, e *env, _ *exportv1.File) {
				require.NoError(t, e.store.Delete(t.Context(), assetBucket, "assets/f1/photo.png"))
			},
			wantReason: []string{"part 3 (assets/f1-photo.png) failed verification", "missing"},
		},
	}
	e := start(t)
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			jobID := fmt.Sprintf("bad%d-%d", i, time.Now().UnixNano())
			parts, _ := userData(t, e, jobID)
			tt.corrupt(t, e, parts[1][0])
			for n, files := range parts {
				e.publishPart(t, jobID, exportv1.JobKind_JOB_KIND_USER_DATA, n, len(parts), 0, files...)
			}
			e.waitOutcome(t, jobID)
			require.EqualValues(t, 1, e.count(t, bus.EventFailed, jobID), "failed events")
			assert.Zero(t, e.count(t, bus.EventCompleted, jobID), "completed events")
			var failed exportv1.ExportFailed
			e.last(t, bus.EventFailed, jobID, &failed)
			for _, w := range tt.wantReason {
				assert.Contains(t, failed.GetReason(), w)
			}
			assertWorded(t, failed.GetReason(), jobID)
			_, err := e.store.Stat(t.Context(), bucket, "jobs/"+jobID+"/files/dataport-"+jobID+".zip")
			assert.ErrorIs(t, err, blob.ErrNotFound, "no archive object")
			ups, err := e.store.ListIncompleteUploads(t.Context(), bucket, "jobs/"+jobID+"/")
			require.NoError(t, err)
			assert.Empty(t, ups, "unfinished uploads left")
		})
	}
}

// TestPartsDeliveredAsTheyAre covers the kinds whose parts are their
// files: chunked records parts become several files in order, and a room
// mail job delivers mail.html and mail.txt for the notifier.
func TestPartsDeliveredAsTheyAre(t *testing.T) {
	e := start(t)
	tests := []struct {
		kind  exportv1.JobKind
		names [][]string
	}{
		{exportv1.JobKind_JOB_KIND_RECORDS, [][]string{{"tx.1.csv.gz", "tx.2.csv.gz", "tx.3.csv.gz"}}},
		{exportv1.JobKind_JOB_KIND_ROOM_MAIL, [][]string{{"mail.html", "mail.txt"}}},
		{exportv1.JobKind_JOB_KIND_ROOM, [][]string{{"general.json"}}},
	}
	for i, tt := range tests {
		t.Run(tt.kind.String(), func(t *testing.T) {
			jobID := fmt.Sprintf("plain%d-%d", i, time.Now().UnixNano())
			var want []*exportv1.File
			for p, names := range tt.names {
				var files []*exportv1.File
				for _, n := range names {
					files = append(files, e.put(t, bucket, fmt.Sprintf("jobs/%s/parts/%d/%s", jobID, p, n), n, "application/octet-stream", []byte("content of "+n), 2))
				}
				e.publishPart(t, jobID, tt.kind, p, len(tt.names), 0, files...)
				want = append(want, files...)
			}
			e.waitOutcome(t, jobID)
			require.EqualValues(t, 1, e.count(t, bus.EventCompleted, jobID), "completed events")
			var done exportv1.ExportCompleted
			e.last(t, bus.EventCompleted, jobID, &done)
			assert.Equal(t, tt.kind, done.GetKind())
			assert.Empty(t, cmpFiles(want, done.GetFiles()))
		})
	}
}

func TestSanitizeName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"general.html", "general.html"},
		{"assets/f1-photo.png", "assets/f1-photo.png"},
		{"../../etc/passwd", "etc/passwd"},
		{"/abs/path.txt", "abs/path.txt"},
		{`C:\Windows\system32`, "C_/Windows/system32"},
		{"a/./b/../c", "a/b/c"},
		{"line\r\nbreak.txt", "line__break.txt"},
		{"bidi\u202egnp.exe", "bidi_gnp.exe"},
		{"trailing. ", "trailing"},
		{"..", "file"},
		{"", "file"},
		{"bad\xffutf8", "bad_utf8"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			assert.Equal(t, tt.want, archive.SanitizeName(tt.in))
		})
	}
}

// TestDataDownloadZipIsNamedAsRocketChatNamesIt: tools that read
// Rocket.Chat's downloads expect "YYYY-MM-DD-<display name>[-data].zip";
// the object stays under the job's own key.
func TestDataDownloadZipIsNamedAsRocketChatNamesIt(t *testing.T) {
	e := start(t)
	for _, tc := range []struct {
		full bool
		want string
	}{
		{false, created.UTC().Format("2006-01-02") + "-Alice_Liddell.zip"},
		{true, created.UTC().Format("2006-01-02") + "-Alice_Liddell-data.zip"},
	} {
		jobID := fmt.Sprintf("named-%t-%d", tc.full, time.Now().UnixNano())
		data, err := proto.Marshal(&exportv1.Job{Id: jobID, OwnerId: owner, Kind: exportv1.JobKind_JOB_KIND_USER_DATA,
			CreatedAt: timestamppb.New(created), Name: "Alice Liddell", FullExport: tc.full})
		require.NoError(t, err)
		_, err = e.jobs.Put(t.Context(), jobID, data)
		require.NoError(t, err)
		f := e.put(t, bucket, "jobs/"+jobID+"/parts/0/user.html", "user.html", "text/html", []byte("<p>me</p>"), 1)
		e.publishPart(t, jobID, exportv1.JobKind_JOB_KIND_USER_DATA, 0, 1, 0, f)
		e.waitOutcome(t, jobID)
		var done exportv1.ExportCompleted
		e.last(t, bus.EventCompleted, jobID, &done)
		require.Len(t, done.GetFiles(), 1)
		assert.Equal(t, tc.want, done.GetFiles()[0].GetName())
		assert.Equal(t, "jobs/"+jobID+"/files/dataport-"+jobID+".zip", done.GetFiles()[0].GetObjectKey())
	}
}
