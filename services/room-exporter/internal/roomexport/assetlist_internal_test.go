package roomexport

import (
	"fmt"
	"hash/maphash"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/blob"
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

// TestAssetListerFindsEveryDescription: what the lister described it
// gives back, each attachment its own description, past the growth of
// its index and when attachments share a hash; an attachment it did not
// describe it reports as not described.
func TestAssetListerFindsEveryDescription(t *testing.T) {
	for _, tc := range []struct {
		name string
		mask uint64
	}{
		{name: "seeded hash", mask: ^uint64(0)},
		{name: "every key one of 256 hashes", mask: 0xff},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := (&Exporter{}).listAhead(t.Context())
			defer l.stop()
			l.hash = func(a *sourcev1.Attachment) uint64 { return l.seededHash(a) & tc.mask }
			attachment := func(i int) *sourcev1.Attachment {
				id := fmt.Sprintf("F%d", i)
				return &sourcev1.Attachment{FileId: id, Name: "n" + id, ObjectKey: "k/" + id}
			}
			const n = 3000
			for i := range n {
				a := attachment(i)
				d := described{file: &exportv1.File{Name: a.GetName(), Size: uint64(i)}, read: i%3 == 0, done: true}
				if i%5 == 0 {
					d = described{err: blob.ErrNotFound, done: true}
				}
				require.NoError(t, l.keep(a, d))
			}
			for i := range n {
				d, err := l.result(attachment(i))
				require.NoError(t, err)
				require.True(t, d.done, i)
				if i%5 == 0 {
					assert.ErrorIs(t, d.err, blob.ErrNotFound, i)
					continue
				}
				assert.Equal(t, "nF"+fmt.Sprint(i), d.file.GetName())
				assert.Equal(t, uint64(i), d.file.GetSize())
				assert.Equal(t, i%3 == 0, d.read, i)
			}
			d, err := l.result(attachment(n))
			require.NoError(t, err)
			assert.False(t, d.done, "never described")
			other := attachment(1)
			other.Name = "renamed"
			d, err = l.result(other)
			require.NoError(t, err)
			assert.False(t, d.done, "described under another name")
		})
	}
}
