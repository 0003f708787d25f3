package procstat

import (
	"runtime/metrics"
	"time"
)

// SampleHeap samples this process's live heap (what the last GC marked)
// every millisecond until the returned function is called, which answers
// the live heap at the start and the largest seen. In-process benchmarks
// report with it what a case holds at once, which B/op, counting every
// byte allocated and freed, does not say.
func SampleHeap() func() (idle, peak uint64) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	read := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	idle := read()
	done, result := make(chan struct{}), make(chan uint64)
	go func() {
		peak := idle
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				result <- peak
				return
			case <-tick.C:
				peak = max(peak, read())
			}
		}
	}()
	return func() (uint64, uint64) {
		close(done)
		return idle, <-result
	}
}
