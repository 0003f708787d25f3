package roomexport

import (
	"fmt"
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
	for _, tc := range []struct {
		name string
		hash func(string) uint64
	}{
		{name: "seeded hash"},
		{name: "every id one hash", hash: func(string) uint64 { return 7 }},
		{name: "two hashes", hash: func(id string) uint64 { return uint64(len(id) % 2) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := newAttachmentList()
			defer l.close()
			if tc.hash != nil {
				l.hash = tc.hash
			}
			var want []string
			for i := range 300 {
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
