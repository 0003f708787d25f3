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

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
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

// BenchmarkExportMemory exports rooms of 100, 10k and 100k messages, as
// JSON and as HTML, in this process, and reports each export's peak
// HeapInuse above the idle baseline (sampled every 5 ms, with GOGC=10 so
// the peak follows live memory rather than GC timing) and the 100k peak
// over the 10k one: memory flat in the export's size is a ratio near 1.
// The process also hosts the embedded NATS server, whose file store caches
// blocks of the stream being read, and MinIO's client; the exporter's own
// RSS, alone in its process and at up to 10,000,000 messages, is
// BenchmarkBesideBaseline's (docs/BENCHMARKS.md).
//
//	go test -run '^$' -bench ExportMemory -benchtime=1x ./internal/roomexport/
func BenchmarkExportMemory(b *testing.B) {
	if roomexport.RaceEnabled {
		b.Skip("the race detector's shadow memory distorts heap figures")
	}
	h := start(b, nil)
	sizes := []int{100, 10_000, 100_000}
	for _, n := range sizes {
		id := fmt.Sprintf("MEM%d", n)
		h.putRoom(b, &sourcev1.Room{Id: id, Name: id})
		h.publishMessages(b, roomMessages(id, n)...)
	}
	run := 0
	for _, format := range []exportv1.Format{exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_HTML} {
		word := strings.ToLower(strings.TrimPrefix(format.String(), "FORMAT_"))
		b.Run(word, func(b *testing.B) {
			for b.Loop() {
				peaks := make(map[int]uint64)
				for _, n := range sizes {
					run++
					id := fmt.Sprintf("MEM%d", n)
					task := roomTask(fmt.Sprintf("job-mem-%d", run), id, nil, nil)
					task.Format = format
					peak, base := peakHeap(b, func() {
						if err := h.exp.Export(b.Context(), task); err != nil {
							b.Fatal(err)
						}
					})
					peaks[n] = peak - base
					var part exportv1.PartUploaded
					h.event(b, bus.EventPart, task.GetJobId(), &part)
					if got := part.GetFile().GetRecords(); got != uint64(n) {
						b.Fatalf("%s: exported %d messages, want %d", id, got, n)
					}
					b.Logf("%s %6d messages (%6.1f MB object): baseline HeapInuse %5.1f MiB, peak +%5.1f MiB",
						word, n, float64(part.GetFile().GetSize())/1e6, mib(base), mib(peak-base))
				}
				for _, n := range sizes {
					b.ReportMetric(mib(peaks[n]), fmt.Sprintf("heap-%d-MiB", n))
				}
				b.ReportMetric(float64(peaks[100_000])/float64(max(peaks[10_000], 1)), "heap-100k/10k")
			}
		})
	}
}

// peakHeap runs f while sampling HeapInuse and returns the highest sample
// and the baseline taken after a GC just before f.
func peakHeap(t testing.TB, f func()) (peak, base uint64) {
	t.Helper()
	// A low GC target keeps the heap close to what is live, so the peak
	// measures the export rather than when the collector happened to run.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base = ms.HeapInuse

	ctx, stop := context.WithCancel(t.Context())
	defer stop()
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
