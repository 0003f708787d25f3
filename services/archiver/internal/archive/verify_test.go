package archive_test

import (
	"bytes"
	"context"
	"crypto/rand"
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

// countingReads is the object store with its reading path counted: every
// Open is a download of an object's bytes.
type countingReads struct {
	archive.Objects
	opens atomic.Int32
}

func (c *countingReads) Open(ctx context.Context, bucket, key string) (io.ReadCloser, blob.Info, error) {
	c.opens.Add(1)
	return c.Objects.Open(ctx, bucket, key)
}

// uploaded stores content under the job's part key as an exporter does
// (blob.Upload) and returns the File record it reports, with the store's
// checksum unless withoutChecksum (an exporter that does not carry it yet).
func (e *env) uploaded(t *testing.T, jobID string, part int, name string, content []byte, withoutChecksum bool) *exportv1.File {
	t.Helper()
	key := fmt.Sprintf("jobs/%s/parts/%d/%s", jobID, part, name)
	info, err := e.store.Upload(t.Context(), bucket, key, bytes.NewReader(content), "text/csv")
	require.NoError(t, err)
	f := &exportv1.File{Name: name, ObjectKey: key, Size: uint64(info.Size), Records: 1, Sha256: info.SHA256,
		ChecksumSha256: info.ChecksumSHA256, ContentType: "text/csv"}
	if withoutChecksum {
		f.ChecksumSha256 = ""
	}
	return f
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return b
}

// The archiver verifies what the exporter wrote from the checksums the
// store keeps, without downloading the objects again: a multipart object
// with its recorded checksum and a small one recorded with only its
// SHA-256 (as an exporter that does not report the checksum yet) complete
// with no object read, and every SHA-256 is still in the files.
func TestVerifiesWithoutReading(t *testing.T) {
	e := prepare(t)
	reads := &countingReads{Objects: e.store}
	e.run(t, e.archiver(t, archive.NewDefaultPackager(reads, bucket)))
	jobID := fmt.Sprintf("noread-%d", time.Now().UnixNano())

	big := e.uploaded(t, jobID, 0, "big.csv", randomBytes(t, blob.PartSize+3<<20), false)
	small := e.uploaded(t, jobID, 1, "small.csv", []byte("id,amount\r\n1,2\r\n"), true)
	require.Contains(t, big.GetChecksumSha256(), "-2", "a multipart object")
	kind := exportv1.JobKind_JOB_KIND_RECORDS
	e.publishPart(t, jobID, kind, 0, 2, 0, big)
	e.publishPart(t, jobID, kind, 1, 2, 1, small)
	e.waitOutcome(t, jobID)

	files := e.completedFiles(t, jobID)
	assert.Empty(t, cmpFiles([]*exportv1.File{big, small}, files), "files differ (-want +got)")
	for _, f := range files {
		assert.Len(t, f.GetSha256(), 64, f.GetName())
	}
	assert.Zero(t, reads.opens.Load(), "objects downloaded to verify them")
}

// What the checksums cannot vouch for is still caught: an object replaced
// after it was reported (same size, other bytes), with or without a
// recorded checksum, fails without a read; a multipart object recorded
// without its checksum is read once and verified the old way.
func TestVerificationCatchesOtherBytes(t *testing.T) {
	e := prepare(t)
	reads := &countingReads{Objects: e.store}
	pkg := &archive.PartsAsFiles{Objects: reads, Bucket: bucket}
	job := archive.Job{ID: "verify", Kind: exportv1.JobKind_JOB_KIND_RECORDS}
	part := func(f *exportv1.File) []*exportv1.PartUploaded {
		return []*exportv1.PartUploaded{{JobId: job.ID, Part: 0, PartsTotal: 1, File: f}}
	}
	overwrite := func(t *testing.T, f *exportv1.File) {
		t.Helper()
		other := randomBytes(t, int(f.GetSize()))
		_, err := e.store.Upload(t.Context(), bucket, f.GetObjectKey(), bytes.NewReader(other), "text/csv")
		require.NoError(t, err)
	}

	for _, tc := range []struct {
		name            string
		size            int
		withoutChecksum bool
	}{
		{"multipart-with-checksum", blob.PartSize + 1<<20, false},
		{"small-with-checksum", 4 << 10, false},
		{"small-with-sha256-only", 4 << 10, true},
		{"one-full-part-with-sha256-only", blob.PartSize, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := e.uploaded(t, job.ID, 0, tc.name+".csv", randomBytes(t, tc.size), tc.withoutChecksum)
			before := reads.opens.Load()
			_, err := pkg.Package(t.Context(), job, part(f))
			require.NoError(t, err, "the object as reported verifies")

			overwrite(t, f)
			_, err = pkg.Package(t.Context(), job, part(f))
			require.Error(t, err)
			assert.True(t, bus.IsPermanent(err), "a mismatch fails the job: %v", err)
			assert.Contains(t, bus.ReasonFor(t.Context(), err), "failed verification")
			assert.Equal(t, before, reads.opens.Load(), "decided without reading the object")
		})
	}

	t.Run("multipart-with-sha256-only-is-read", func(t *testing.T) {
		content := randomBytes(t, blob.PartSize+1<<20)
		f := e.uploaded(t, job.ID, 0, "old.csv", content, true)
		before := reads.opens.Load()
		_, err := pkg.Package(t.Context(), job, part(f))
		require.NoError(t, err)
		assert.Equal(t, before+1, reads.opens.Load(), "read once to verify")

		overwrite(t, f)
		_, err = pkg.Package(t.Context(), job, part(f))
		require.Error(t, err)
		assert.True(t, bus.IsPermanent(err), "%v", err)
		sum := sha256.Sum256(content)
		assert.Equal(t, hex.EncodeToString(sum[:]), f.GetSha256())
	})
}
