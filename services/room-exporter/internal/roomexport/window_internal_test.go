package roomexport

import (
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestWindowIndexFindsEveryEntry drives the window's index through
// insertions, removals and the ring's growth with hashes that share 64
// home slots, so probes run long and removals shift them back, and
// checks it against a map after every step.
func TestWindowIndexFindsEveryEntry(t *testing.T) {
	if raceEnabled {
		// One goroutine and twenty million lookups: half a minute under
		// the race detector for nothing it could find. make test-unit
		// runs this one without -race (NORACE_TESTS).
		t.Skip("checks the index against a map after each of 20,000 steps")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const versions = 1000
	w := newWindow(versions, 1<<30, 1)
	live := map[idHash]uint64{}
	var gone []idHash
	next := uint64(0)
	for step := range 20_000 {
		// The window fills to its bound, then as many leave as come.
		if w.n < versions && (step < 3*versions || rng.IntN(2) == 0) {
			hid := idHash{a: uint64(rng.IntN(64)), b: next}
			num := w.out + uint64(w.n)
			w.push(pending{version: version{seq: next + 1}, hid: hid, keyed: true})
			w.index.put(hid, num)
			live[hid] = num
			next++
		} else if w.n > 0 {
			e := w.ring[w.head]
			w.pop()
			delete(live, e.hid)
			gone = append(gone, e.hid)
		}
		if step%61 != 0 {
			continue
		}
		for hid, num := range live {
			got, ok := w.index.get(hid)
			require.True(t, ok, "step %d: %v not found", step, hid)
			require.Equal(t, num, got, "step %d: %v", step, hid)
		}
		for _, hid := range gone[max(0, len(gone)-16):] {
			_, ok := w.index.get(hid)
			require.False(t, ok, "step %d: %v found after it left", step, hid)
		}
	}
	require.Equal(t, versions+1, len(w.ring), "the ring grew to its bound")
}
