package roomexport_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
)

// TestUnfilteredSpoolPlansTheSame exports rooms as a room too big for the
// spool's Bloom filters is exported (every id record sorted, the window's
// verdict left to the plan's counts), beside the planned render of an
// exporter with its filters: the same bytes in every format, whether the
// speculative render stands (edits in its window), is abandoned during the
// read or at its end (an edit past it), or the part is planned (edits
// crossing parts, an id published four times).
func TestUnfilteredSpoolPlansTheSame(t *testing.T) {
	if testing.Short() {
		t.Skip("publishes 20k messages eight times")
	}
	n := raceMessages(20_000)
	var near []republication
	for i := 100; i+40 < n; i += 7 {
		near = append(near, edit(i, i+40))
	}
	far := append([]republication{edit(3, 5), edit(3, n/2), edit(3, n-1), edit(n/3, n-2)}, near...)
	for _, tc := range []struct {
		name        string
		planned     bool // speculation off
		recent      int
		rs          []republication
		speculative bool
	}{
		{"edits in the window", false, 0, near, true},
		{"an edit past the window, found during the read", false, 0, far, false},
		{"an edit past the window, found at the end", false, 1, far, false},
		{"planned", true, 0, far, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newSpeculationRig(t, func(o *roomexport.Options) {
				roomexport.SetSpeculation(o, tc.planned, tc.recent)
				roomexport.SetSpeculationWindow(o, 64, 0)
				roomexport.SetBloomMaxIDs(o, 1)
			}, func(h *harness) {
				h.putRoom(t, &sourcev1.Room{Id: "NOBLOOM", Name: "nobloom", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
				h.publishMessages(t, append(hostileMessages("NOBLOOM"), republished(bigMessages("NOBLOOM", n), tc.rs...)...)...)
			})
			task := func(id string) *exportv1.ExportTask { return roomTask(id, "NOBLOOM", nil, nil) }
			rig.compare(t, "nobloom", task, tc.speculative)
			for _, format := range speculationFormats {
				id := "nobloom-" + strings.ToLower(strings.TrimPrefix(format.String(), "FORMAT_"))
				spooled := rig.logs.Records(t, "history spooled", id)
				require.Len(t, spooled, 1, id)
				assert.Equal(t, false, spooled[0]["filtered"], "%s: the spool kept no filters", id)
				assert.Equal(t, float64(planned(tc.rs)), spooled[0]["planned"], "%s: every version of a republished id planned", id)
			}
		})
	}
}

// planned is how many versions the republications rs make of the ids
// they republish, first versions included.
func planned(rs []republication) int {
	ids := make(map[int]bool)
	for _, r := range rs {
		ids[r.of] = true
	}
	return len(rs) + len(ids)
}
