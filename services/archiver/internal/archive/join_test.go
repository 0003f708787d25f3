package archive_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/archiver/internal/archive"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
)

// countingStore is the store with its reads counted, keeping Compose and
// Delete, which the joiner looks for.
type countingStore struct {
	*blob.Store
	opens atomic.Int32
}

func (c *countingStore) Open(ctx context.Context, bucket, key string) (io.ReadCloser, blob.Info, error) {
	c.opens.Add(1)
	return c.Store.Open(ctx, bucket, key)
}

// pieceSpec is one piece of a split export as a range part reports it.
type pieceSpec struct {
	content string
	records uint64
	lead    uint32
}

// pieces uploads the pieces as range parts do and returns their reports.
func (e *env) pieces(t *testing.T, jobID, name string, specs []pieceSpec, limits *exportv1.FilePiece) []*exportv1.PartUploaded {
	t.Helper()
	parts := make([]*exportv1.PartUploaded, len(specs))
	for i, s := range specs {
		key := fmt.Sprintf("jobs/%s/parts/%d/%s", jobID, i, name)
		info, err := e.store.Upload(t.Context(), bucket, key, bytes.NewReader([]byte(s.content)), "application/json")
		require.NoError(t, err)
		piece := &exportv1.FilePiece{Lead: s.lead}
		if limits != nil {
			piece.MaxRows, piece.MaxBytes = limits.GetMaxRows(), limits.GetMaxBytes()
		}
		parts[i] = &exportv1.PartUploaded{JobId: jobID, Part: uint32(i), PartsTotal: uint32(len(specs)),
			Kind: exportv1.JobKind_JOB_KIND_RECORDS, OwnerId: owner, Piece: piece,
			File: &exportv1.File{Name: name, ObjectKey: key, Size: uint64(info.Size), Records: s.records, Sha256: info.SHA256,
				ChecksumSha256: info.ChecksumSHA256, ContentType: "application/json"}}
	}
	return parts
}

func (e *env) read(t *testing.T, key string) []byte {
	t.Helper()
	body, _, err := e.store.Open(t.Context(), bucket, key)
	require.NoError(t, err)
	defer body.Close()
	b, err := io.ReadAll(body)
	require.NoError(t, err)
	return b
}

func rows(seed string, n int) string {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, ",\n{\"id\":\"%s-%d\"}", seed, i)
	}
	return b.String()
}

// TestJoinPieces: the pieces of a split export become one file under the
// job's files prefix, byte for byte their concatenation (a piece's lead
// left out when no earlier piece held a row), with the SHA-256 of those
// bytes; composed server-side when every piece but the last reaches S3's
// part minimum (the file then read once, for its SHA-256), streamed
// otherwise (each piece read once). Joining again gives the same file,
// with the pieces and once they are cleaned up.
func TestJoinPieces(t *testing.T) {
	e := prepare(t)
	big1, big2 := rows("a", blob.MinPartSize), rows("b", blob.MinPartSize+100)
	for _, tc := range []struct {
		name   string
		specs  []pieceSpec
		want   string
		opens  int32
		method string
	}{
		{"compose", []pieceSpec{{"[\n" + big1[2:], 10, 0}, {big2, 20, 1}, {",\n{\"id\":\"c\"}\n]\n", 1, 1}},
			"[\n" + big1[2:] + big2 + ",\n{\"id\":\"c\"}\n]\n", 1, "compose"},
		{"compose past an empty piece", []pieceSpec{{"[\n" + big1[2:], 10, 0}, {"", 0, 1}, {big2 + "\n]\n", 20, 1}},
			"[\n" + big1[2:] + big2 + "\n]\n", 1, "compose"},
		// The first range matched nothing: its header-only piece is under
		// the part minimum, so the file is streamed, the next piece's
		// comma left out.
		{"a header-only first piece, streamed", []pieceSpec{{"[", 0, 0}, {big1, 10, 1}, {big2 + "\n]\n", 20, 1}},
			"[" + big1[1:] + big2 + "\n]\n", 3, "stream"},
		{"small pieces streamed", []pieceSpec{{"[", 0, 0}, {"", 0, 1}, {",\n{\"id\":1}", 1, 1}, {",\n{\"id\":2}\n]\n", 1, 1}},
			"[\n{\"id\":1},\n{\"id\":2}\n]\n", 3, "stream"},
		{"no rows at all", []pieceSpec{{"[", 0, 0}, {"", 0, 1}, {"\n]\n", 0, 1}}, "[\n]\n", 2, "stream"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jobID := fmt.Sprintf("join-%d", time.Now().UnixNano())
			reads := &countingStore{Store: e.store}
			pkg := archive.NewDefaultPackager(reads, bucket)
			parts := e.pieces(t, jobID, "transactions.json", tc.specs, nil)
			files, err := pkg.Package(t.Context(), archive.Job{ID: jobID, Kind: exportv1.JobKind_JOB_KIND_RECORDS}, parts)
			require.NoError(t, err)
			require.Len(t, files, 1)
			f := files[0]
			sum := sha256.Sum256([]byte(tc.want))
			var records uint64
			for _, s := range tc.specs {
				records += s.records
			}
			assert.Equal(t, "transactions.json", f.GetName())
			assert.Equal(t, "jobs/"+jobID+"/files/transactions.json", f.GetObjectKey())
			assert.EqualValues(t, len(tc.want), f.GetSize())
			assert.Equal(t, records, f.GetRecords())
			assert.Equal(t, hex.EncodeToString(sum[:]), f.GetSha256())
			assert.Equal(t, "application/json", f.GetContentType())
			assert.True(t, bytes.Equal([]byte(tc.want), e.read(t, f.GetObjectKey())), "joined bytes")
			assert.Equal(t, tc.opens, reads.opens.Load(), "object reads (%s)", tc.method)
			job := archive.Job{ID: jobID, Kind: exportv1.JobKind_JOB_KIND_RECORDS}
			again, err := pkg.Package(t.Context(), job, parts)
			require.NoError(t, err, "joined again, as after a crash before the completion was stored")
			assert.Empty(t, cmpFiles(files, again))

			pkg.(archive.Cleaner).Clean(t.Context(), job, parts)
			for _, p := range parts {
				_, err := e.store.Stat(t.Context(), bucket, p.GetFile().GetObjectKey())
				assert.ErrorIs(t, err, blob.ErrNotFound, "piece %d deleted", p.GetPart())
			}
			again, err = pkg.Package(t.Context(), job, parts)
			require.NoError(t, err, "joined again after the pieces are gone")
			assert.Empty(t, cmpFiles(files, again))
		})
	}

	t.Run("a changed piece fails verification", func(t *testing.T) {
		jobID := fmt.Sprintf("join-bad-%d", time.Now().UnixNano())
		parts := e.pieces(t, jobID, "t.json", []pieceSpec{{"[", 0, 0}, {"\n]\n", 0, 1}}, nil)
		_, err := e.store.Upload(t.Context(), bucket, parts[1].GetFile().GetObjectKey(), bytes.NewReader([]byte("\n}\n")), "")
		require.NoError(t, err)
		_, err = archive.NewDefaultPackager(e.store, bucket).Package(t.Context(), archive.Job{ID: jobID}, parts)
		require.Error(t, err)
		assert.True(t, bus.IsPermanent(err))
		assert.Contains(t, bus.Reason(err), "part 1 (t.json) failed verification")
	})

	t.Run("parts mixing pieces and files fail", func(t *testing.T) {
		jobID := fmt.Sprintf("join-mixed-%d", time.Now().UnixNano())
		parts := e.pieces(t, jobID, "t.json", []pieceSpec{{"[", 0, 0}, {"\n]\n", 0, 1}}, nil)
		parts[1].Piece = nil
		_, err := archive.NewDefaultPackager(e.store, bucket).Package(t.Context(), archive.Job{ID: jobID}, parts)
		require.Error(t, err)
		assert.True(t, bus.IsPermanent(err))
	})
}

// TestJoinedExportOverItsCapsIsRejected: a range checks the caps for its
// own rows only; the archiver checks the joined file and rejects the job
// in the exporter's words, deleting the pieces.
func TestJoinedExportOverItsCapsIsRejected(t *testing.T) {
	e := start(t)
	for _, tc := range []struct {
		name   string
		limits *exportv1.FilePiece
		reason string
	}{
		{"rows", &exportv1.FilePiece{MaxRows: 3}, archive.ReasonTooManyRows},
		{"bytes", &exportv1.FilePiece{MaxBytes: 20}, archive.ReasonTooMuchData},
		{"within both", &exportv1.FilePiece{MaxRows: 4, MaxBytes: 200}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jobID := fmt.Sprintf("caps-%s-%d", tc.name[:4], time.Now().UnixNano())
			parts := e.pieces(t, jobID, "t.json", []pieceSpec{{"[\n{\"id\":1}", 1, 0}, {",\n{\"id\":2},\n{\"id\":3}", 2, 1}, {",\n{\"id\":4}\n]\n", 1, 1}}, tc.limits)
			for i, p := range parts {
				require.NoError(t, e.pub.PublishStatus(t.Context(), bus.EventPart, jobID, fmt.Sprint(i), p))
			}
			e.waitOutcome(t, jobID)
			if tc.reason == "" {
				var done exportv1.ExportCompleted
				e.last(t, bus.EventCompleted, jobID, &done)
				require.Len(t, done.GetFiles(), 1)
				assert.EqualValues(t, 4, done.GetFiles()[0].GetRecords())
				return
			}
			var failed exportv1.ExportFailed
			e.last(t, bus.EventFailed, jobID, &failed)
			assert.True(t, failed.GetRejected())
			assert.Contains(t, failed.GetReason(), tc.reason)
			for _, p := range parts {
				_, err := e.store.Stat(t.Context(), bucket, p.GetFile().GetObjectKey())
				assert.ErrorIs(t, err, blob.ErrNotFound, "piece %d deleted", p.GetPart())
			}
		})
	}
}
