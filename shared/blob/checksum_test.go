package blob_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
)

// Upload computes the object's SHA-256 as it streams and has the store
// verify and keep a SHA-256 checksum, which Stat returns without reading
// the object: whole for an object stored in one request, composite for a
// multipart one.
func TestUploadChecksums(t *testing.T) {
	srv := blobtest.Start(t, "sums")
	s := srv.Store
	for _, tc := range []struct {
		name  string
		size  int64
		parts int // 0: one request
	}{
		{"empty", 0, 0},
		{"within-a-read", 60 << 10, 0},
		{"small", 3 * mib, 0},
		{"one-full-part", blob.PartSize, 1},
		{"two-full-parts", 2 * blob.PartSize, 2},
		{"three-parts", 2*blob.PartSize + 5, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := digest(t, newGen(7, tc.size))
			wantHex := hex.EncodeToString(want[:])
			info, err := s.Upload(t.Context(), "sums", tc.name, newGen(7, tc.size), "")
			require.NoError(t, err)
			assert.Equal(t, tc.size, info.Size)
			assert.Equal(t, wantHex, info.SHA256)

			st, err := s.Stat(t.Context(), "sums", tc.name)
			require.NoError(t, err)
			assert.Equal(t, info.ChecksumSHA256, st.ChecksumSHA256, "the store keeps the checksum Upload reported")
			assert.Empty(t, st.SHA256)
			match, decided := st.HasSHA256(wantHex)
			other := sha256.Sum256([]byte("something else"))
			otherMatch, otherDecided := st.HasSHA256(hex.EncodeToString(other[:]))
			sum, whole := st.ObjectSHA256()
			switch tc.parts {
			case 0:
				assert.Equal(t, base64.StdEncoding.EncodeToString(want[:]), st.ChecksumSHA256)
				assert.True(t, whole, "an object stored in one request has its SHA-256 in its checksum")
				assert.Equal(t, wantHex, sum)
				assert.True(t, match && decided)
				assert.True(t, !otherMatch && otherDecided)
			case 1:
				assert.True(t, strings.HasSuffix(st.ChecksumSHA256, "-1"), st.ChecksumSHA256)
				assert.False(t, whole, "a composite checksum does not give the object's SHA-256")
				assert.True(t, match && decided)
				assert.True(t, !otherMatch && otherDecided)
			default:
				assert.True(t, strings.HasSuffix(st.ChecksumSHA256, "-"+string(rune('0'+tc.parts))), st.ChecksumSHA256)
				assert.False(t, whole, "a composite checksum does not give the object's SHA-256")
				assert.False(t, decided, "a composite of several parts cannot be tied to the whole SHA-256")
			}

			rc, _, err := s.Open(t.Context(), "sums", tc.name)
			require.NoError(t, err)
			defer rc.Close()
			assert.Equal(t, want, digest(t, rc))
		})
	}

	t.Run("StoreRefusesWrongChecksum", func(t *testing.T) {
		wrong := sha256.Sum256([]byte("not these bytes"))
		err := s.PutWithChecksumForTest(t.Context(), "sums", "wrong", []byte("these bytes"), base64.StdEncoding.EncodeToString(wrong[:]))
		require.Error(t, err)
		_, err = s.Stat(t.Context(), "sums", "wrong")
		assert.ErrorIs(t, err, blob.ErrNotFound)

		right := sha256.Sum256([]byte("these bytes"))
		require.NoError(t, s.PutWithChecksumForTest(t.Context(), "sums", "right", []byte("these bytes"), base64.StdEncoding.EncodeToString(right[:])))
	})

	t.Run("PutKeepsTheWholeChecksum", func(t *testing.T) {
		data := []byte("a small file from memory")
		want := sha256.Sum256(data)
		info, err := s.Put(t.Context(), "sums", "put", data, "text/plain")
		require.NoError(t, err)
		assert.Equal(t, hex.EncodeToString(want[:]), info.SHA256)
		st, err := s.Stat(t.Context(), "sums", "put")
		require.NoError(t, err)
		assert.Equal(t, int64(len(data)), st.Size)
		assert.Equal(t, "text/plain", st.ContentType)
		sum, whole := st.ObjectSHA256()
		assert.True(t, whole)
		assert.Equal(t, hex.EncodeToString(want[:]), sum)
	})

	t.Run("NoChecksumDecidesNothing", func(t *testing.T) {
		match, decided := blob.Info{}.HasSHA256(hex.EncodeToString(make([]byte, sha256.Size)))
		assert.False(t, match || decided)
		_, whole := blob.Info{}.ObjectSHA256()
		assert.False(t, whole)
	})
}
