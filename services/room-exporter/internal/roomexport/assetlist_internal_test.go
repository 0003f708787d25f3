package roomexport

import (
	"fmt"
	"hash/maphash"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// TestAttachmentListDedupIsExact: the list yields every file id once, the
// first attachment given with it, in the order first seen, when ids share
// a hash as well as when they do not: a collision must neither drop a new
// attachment nor let a repeat in.
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
		// More entries than a sort run holds (sorterRunRecords), so the
		// hashes are sorted on disk and merged, with some ten entries
		// to each of 1,024 hashes.
		{name: "few hashes, sorted on disk", ids: sorterRunRecords, hash: func(id string) uint64 {
			return maphash.String(seed, id) & 0x3ff
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
				require.NoError(t, l.add(&sourcev1.Attachment{FileId: id, Name: "n" + id, ObjectKey: "k/" + id, ContentType: "text/plain"}))
				want = append(want, id)
				// A repeat of an earlier one, as an edited message brings.
				again := fmt.Sprintf("F%d", i/2)
				require.NoError(t, l.add(&sourcev1.Attachment{FileId: again, Name: "other name"}))
			}
			assert.Equal(t, 2*tc.ids, l.n, "entries, repeats too")
			var got []string
			require.NoError(t, l.each(func(a *sourcev1.Attachment) error {
				assert.Equal(t, "n"+a.GetFileId(), a.GetName(), "the first one's fields")
				assert.Equal(t, "k/"+a.GetFileId(), a.GetObjectKey())
				got = append(got, a.GetFileId())
				return nil
			}))
			assert.Equal(t, want, got)
		})
	}
}
