package procstat_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"dataport.dev/shared/procstat"
)

// TestSampleHeapSeesWhatIsHeld: 64 MiB held across a garbage collection
// while the sampler runs shows in its peak, not in its start.
func TestSampleHeapSeesWhatIsHeld(t *testing.T) {
	runtime.GC()
	stop := procstat.SampleHeap()
	held := make([]byte, 64<<20)
	runtime.GC()
	time.Sleep(20 * time.Millisecond) // the sampler ticks every millisecond
	idle, peak := stop()
	runtime.KeepAlive(held)
	assert.Less(t, idle, uint64(64<<20), "the start does not count what was allocated later")
	assert.GreaterOrEqual(t, peak, uint64(64<<20), "the peak holds the 64 MiB")
}
