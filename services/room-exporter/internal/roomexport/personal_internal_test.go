package roomexport

import (
	"fmt"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

func TestPersonalFormatKnowsWhomItHid(t *testing.T) {
	say := func(r Renderer, username string) {
		require.NoError(t, r.Message(&sourcev1.ChatMessage{Id: username, User: &sourcev1.UserRef{Username: username}, Text: "hi"}))
	}
	for _, jsonMode := range []bool{true, false} {
		t.Run(fmt.Sprintf("json=%v", jsonMode), func(t *testing.T) {
			f, names := personalFormat(formats()[exportv1.Format_FORMAT_HTML], jsonMode, "job-1", "alice")
			r := f.New(io.Discard, Meta{})
			require.NoError(t, r.Begin(&sourcev1.Room{Id: "GEN", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL}))
			say(r, "carol")
			say(r, "alice")
			say(r, "bob")
			hidden, truncated := names.hidden()
			assert.Equal(t, []string{"bob", "carol"}, hidden, "the caller is not hidden")
			assert.False(t, truncated)

			// A resumed attempt reads only the messages after its
			// checkpoint; the names hidden before come with the checkpoint.
			state, err := r.(resumable).saveState()
			require.NoError(t, err)
			f2, names2 := personalFormat(formats()[exportv1.Format_FORMAT_HTML], jsonMode, "job-1", "alice")
			r2 := f2.New(io.Discard, Meta{})
			require.NoError(t, r2.(resumable).restoreState(state))
			say(r2, "dave")
			hidden, _ = names2.hidden()
			assert.Equal(t, []string{"bob", "carol", "dave"}, hidden)
		})
	}
}

func TestPersonalFormatResumesACheckpointWithoutNames(t *testing.T) {
	// A checkpoint written before the names were kept is the inner
	// renderer's state alone.
	f, names := personalFormat(formats()[exportv1.Format_FORMAT_HTML], false, "job-1", "alice")
	r := f.New(io.Discard, Meta{})
	require.NoError(t, r.(resumable).restoreState([]byte(`{"n":3}`)))
	assert.Equal(t, 3, r.(*hidingRenderer).inner.(*htmlRenderer).n)
	hidden, truncated := names.hidden()
	assert.Empty(t, hidden)
	assert.False(t, truncated)
}

func TestHiddenNamesAreCapped(t *testing.T) {
	p := newPseudonyms("job-1", "alice")
	for i := range MaxHiddenNames + 5 {
		p.name(fmt.Sprintf("user%05d", i))
	}
	hidden, truncated := p.hidden()
	require.Len(t, hidden, MaxHiddenNames)
	assert.True(t, truncated, "the part says it left names out")
	assert.Equal(t, "user00000", hidden[0], "the first names in sort order are kept")
	assert.Equal(t, fmt.Sprintf("user%05d", MaxHiddenNames-1), hidden[MaxHiddenNames-1])
}
