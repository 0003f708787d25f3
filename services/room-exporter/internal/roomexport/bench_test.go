package roomexport_test

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/bus"
)

// BenchmarkRoomExport exports a 20k-message room end to end: replay from
// JetStream, JSON rendering, SHA-256 and the multipart upload to MinIO,
// plus the events. The embedded NATS server and MinIO run on the same two
// cores, so msgs/s is a floor, not a capacity figure.
func BenchmarkRoomExport(b *testing.B) {
	const n = 20_000
	h := start(b, nil)
	h.putRoom(b, &sourcev1.Room{Id: "BENCH", Name: "bench", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	h.publishMessages(b, roomMessages("BENCH", n)...)
	ctx := b.Context()

	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := h.exp.Export(ctx, roomTask(fmt.Sprintf("bench-%d", i), "BENCH", nil, nil)); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(n*i)/b.Elapsed().Seconds(), "msgs/s")
}

// TestExportMemoryIsFlat exports rooms of 100, 10k and 100k messages as
// JSON and as HTML and compares the peak of HeapInuse above the idle
// baseline, sampled every 5 ms while each export runs (with GOGC=10, so
// the peak follows live memory rather than GC timing). The process also
// hosts the embedded NATS server, whose file store caches blocks of the
// stream being read.
//
// Measured on the 2-core dev machine (go test -run MemoryIsFlat -v), peak
// above baseline, with the parts written to local disk (two part files,
// upload.go) and the Bloom filters capped at 4 + 1 MiB:
//
//	json     100 messages (   26 KB object): +17.0 MiB
//	json  10,000 messages (  2.1 MB object): + 8.0 MiB
//	json 100,000 messages ( 21.3 MB object): +17.9 MiB
//	html     100 messages (   40 KB object): +17.8 MiB
//	html  10,000 messages (  3.1 MB object): + 8.0 MiB
//	html 100,000 messages ( 31.1 MB object): +17.8 MiB
//
// (the 10,000-message rows started from a baseline some 8 MiB higher,
// left by the 100-message export's NATS server caches). With the history
// read once onto local disk and one part uploading while the next
// renders from two 8 MiB part buffers on the heap:
//
//	json     100 messages (   26 KB object): +23.1 MiB
//	json  10,000 messages (  2.1 MB object): +25.1 MiB
//	json 100,000 messages ( 21.3 MB object): +24.7 MiB
//	html     100 messages (   40 KB object): +24.2 MiB
//	html  10,000 messages (  3.1 MB object): +25.1 MiB
//	html 100,000 messages ( 31.1 MB object): +24.7 MiB
//
// The second part buffer is allocated at the first cut, so a room of one
// part shows one. With the two-pass exporter and one part buffer
// (checkpointed):
//
//	json     100 messages (   26 KB object): +23.4 MiB
//	json  10,000 messages (  2.1 MB object): +18.1 MiB
//	json 100,000 messages ( 21.3 MB object): +18.5 MiB
//	html     100 messages (   40 KB object): +24.5 MiB
//	html  10,000 messages (  3.1 MB object): +18.1 MiB
//	html 100,000 messages ( 31.1 MB object): +24.4 MiB
//
// Before parts were checkpointed (minio-go's own 16 MiB part buffer behind
// a pipe) the same runs peaked at +23.4 to +27.8 MiB; an earlier one-off
// run of that version with more sizes: 50k +32.5 MiB, 200k (52 MB object)
// +32.3 MiB.
//
// The constant was mostly the part buffers (Options.PartSize, 8 MiB by
// default then, the first preallocated, so even a tiny room showed it);
// now it is the spool's buffers and Bloom filters, the table of recent
// ids, the replay's 256-message batch and the embedded NATS server's own
// allocations;
// the object size does not show. The HTML renderer adds
// one reused message buffer and at most maxThreadRoots excerpts of thread
// roots.
func TestExportMemoryIsFlat(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("publishes 110k messages; figures are meaningless under -race")
	}
	h := start(t, nil)
	sizes := []int{100, 10_000, 100_000}
	for _, n := range sizes {
		id := fmt.Sprintf("MEM%d", n)
		h.putRoom(t, &sourcev1.Room{Id: id, Name: id})
		h.publishMessages(t, roomMessages(id, n)...)
	}

	for _, format := range []exportv1.Format{exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_HTML} {
		word := strings.ToLower(strings.TrimPrefix(format.String(), "FORMAT_"))
		t.Run(word, func(t *testing.T) {
			peaks := make(map[int]uint64)
			for _, n := range sizes {
				id := fmt.Sprintf("MEM%d", n)
				task := roomTask("job-"+word+"-"+id, id, nil, nil)
				task.Format = format
				peak, base := peakHeap(t, func() {
					require.NoError(t, h.exp.Export(t.Context(), task))
				})
				peaks[n] = peak - base
				var part exportv1.PartUploaded
				h.event(t, bus.EventPart, task.GetJobId(), &part)
				require.Equal(t, uint64(n), part.GetFile().GetRecords())
				t.Logf("%s %6d messages (%6.1f MB object): baseline HeapInuse %5.1f MiB, peak +%5.1f MiB",
					word, n, float64(part.GetFile().GetSize())/1e6, mib(base), mib(peak-base))
			}
			// Collecting the 100k messages would add some 50 MiB; streaming
			// adds nothing measurable.
			assert.Less(t, peaks[100_000], peaks[10_000]+16<<20,
				"peak heap grows with room size: 10k +%.1f MiB, 100k +%.1f MiB", mib(peaks[10_000]), mib(peaks[100_000]))
		})
	}
}

// peakHeap runs f while sampling HeapInuse and returns the highest sample
// and the baseline taken after a GC just before f.
func peakHeap(t *testing.T, f func()) (peak, base uint64) {
	t.Helper()
	// A low GC target keeps the heap close to what is live, so the peak
	// measures the export rather than when the collector happened to run.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base = ms.HeapInuse

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		var s runtime.MemStats
		for {
			runtime.ReadMemStats(&s)
			peak = max(peak, s.HeapInuse)
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	})
	f()
	stop()
	wg.Wait()
	return max(peak, base), base
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }
