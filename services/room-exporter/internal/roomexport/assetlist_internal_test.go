package roomexport

import (
	"fmt"
	"hash/maphash"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// TestAttachmentListDedupIsExact: the list keeps every file id once, in
// the order first seen, when ids share a hash as well as when they do
// not: a collision must neither drop a new attachment nor let a repeat
// in.
func TestAttachmentListDedupIsExact(t *testing.T) {
	seed := maphash.MakeSeed()
	for _, tc := range []struct {
		name string
		ids  int
		hash func(string) uint64
	}{
		{name: "seeded hash", ids: 300},
		{name: "every id one hash", ids: 300, hash: func(string) uint64 { return 7 }},
		{name: "two hashes", ids: 300, hash: func(id string) uint64 { return uint64(len(id) % 2) }},
		// Enough ids for the index to grow three times, rehashing from
		// the file, with some five ids to each of 1,024 hashes.
		{name: "few hashes, growing", ids: 5000, hash: func(id string) uint64 {
			h := maphash.String(seed, id) & 0x3ff
			return h<<offsetBits | h
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newAttachmentList()
			defer l.close()
			if tc.hash != nil {
				l.hash = tc.hash
			}
			var want []string
			for i := range tc.ids {
				id := fmt.Sprintf("F%d", i)
				added, err := l.add(&sourcev1.Attachment{FileId: id, Name: "n" + id, ObjectKey: "k/" + id, ContentType: "text/plain"})
				require.NoError(t, err)
				assert.True(t, added, id)
				want = append(want, id)
				// A repeat of an earlier one, as an edited message brings.
				again := fmt.Sprintf("F%d", i/2)
				added, err = l.add(&sourcev1.Attachment{FileId: again, Name: "other name"})
				require.NoError(t, err)
				assert.False(t, added, "%s again", again)
			}
			var got []string
			require.NoError(t, l.each(func(a *sourcev1.Attachment) error {
				assert.Equal(t, "n"+a.GetFileId(), a.GetName(), "the first one's fields")
				assert.Equal(t, "k/"+a.GetFileId(), a.GetObjectKey())
				got = append(got, a.GetFileId())
				return nil
			}))
			assert.Equal(t, want, got)
			assert.Equal(t, len(want), l.n)
		})
	}
}
