package roomexport_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	sharedconfig "dataport.dev/shared/config"
	"dataport.dev/shared/taskrun"
)

// The room exports beside a minimal pipeline (issue 14). The parent
// benchmark starts nats-server from bin/ and MinIO as processes of their
// own, publishes its rooms, and runs every case in a child process (this
// test binary again, TestPipelineBenchChild), so the peak RSS it reports
// is the exporter's or the baseline's alone, not the servers' or the
// generator's. Each case runs once per format:
//
//   - dataport: the real export (taskrun.Runner.Export of a room task:
//     checks, replay, rendering, multipart upload with checkpoints,
//     events);
//   - baseline: ordered consumer over the same subject → proto.Unmarshal →
//     the same renderer → one streaming PutObject with a 16 MiB part size
//     (blob.Store.Upload).
//
// The edited room holds every message twice (the original, then an edit
// published a little later, as Rocket.Chat republishes); its baseline reads
// and renders every version, with no deduplication.
//
// Environment:
//
//	DATAPORT_BENCH_ROOMS=1         run at all (make bench-export-rooms sets it;
//	                               the plain `go test -bench .` loop skips it)
//	DATAPORT_BENCH_MESSAGES=N      messages of the full room (1,000,000); the
//	                               edited room has N/2 messages, N versions
//	DATAPORT_BENCH_FORMATS=json,html,jsonl,csv.gz  formats to run (all four)
//	DATAPORT_BENCH_CASES=full,edited  rooms to run (both): full is the room of N
//	                               messages, edited the every-message-edited one
//	DATAPORT_BENCH_ASSETS=stored   every attachment's object is in the assets bucket,
//	                               stored with a SHA-256 checksum (stored, the default),
//	                               or none is (missing); the exporter lists them by
//	                               reference either way, and asks the store about none
//	DATAPORT_NATS_BIN              nats-server binary (bin/nats-server)
//	DATAPORT_BENCH_PROFILE=dir     each child writes dir/<mode>-<room>-<format>.cpu.pprof
//	                               (mode dataport or baseline),
//	                               .allocs.pprof and .peak.heap.pprof (the heap as
//	                               the collection that found the largest live heap
//	                               left it; go tool pprof), and its debug log
//	                               (.log: how long the spooling pass took)
//
// Publishing the 2,000,000 versions takes about a minute on the 2-core dev
// machine; each case then runs once (-benchtime=1x).

const (
	envBenchRooms    = "DATAPORT_BENCH_ROOMS"
	envBenchMessages = "DATAPORT_BENCH_MESSAGES"
	envBenchFormats  = "DATAPORT_BENCH_FORMATS"
	envBenchCases    = "DATAPORT_BENCH_CASES"
	envBenchChild    = "DATAPORT_BENCH_CHILD"
	envBenchProfile  = "DATAPORT_BENCH_PROFILE"
	envBenchAssets   = "DATAPORT_BENCH_ASSETS"
	benchResultTag   = "BENCH-RESULT "
)

// childSpec is what the parent tells a child: which case, and how to reach
// the servers.
type childSpec struct {
	Mode     string      `json:"mode"` // "dataport" or "baseline"
	Format   string      `json:"format"`
	Room     string      `json:"room"`
	NATS     string      `json:"nats"`
	Blob     blob.Config `json:"blob"`
	Bucket   string      `json:"bucket"`
	JobID    string      `json:"job_id"`
	Messages uint64      `json:"messages"`
}

// childResult is what a child reports on stdout.
type childResult struct {
	Elapsed time.Duration `json:"elapsed"`
	Records uint64        `json:"records"`
	Bytes   uint64        `json:"bytes"`
	// Allocated is the heap allocated during the run (runtime/metrics
	// /gc/heap/allocs:bytes), whatever was freed again.
	Allocated uint64 `json:"allocated"`
	// PeakHeap is the largest live heap any collection during the run
	// found (runtime/metrics /gc/heap/live:bytes): what the heap's
	// headroom (GOGC) multiplies into RSS.
	PeakHeap uint64 `json:"peak_heap"`
	// PeakRSS is the child's VmHWM, filled in by the parent from rusage.
	PeakRSS uint64 `json:"-"`
}

var benchFormats = map[string]exportv1.Format{
	"json":   exportv1.Format_FORMAT_JSON,
	"html":   exportv1.Format_FORMAT_HTML,
	"jsonl":  exportv1.Format_FORMAT_JSONL,
	"csv.gz": exportv1.Format_FORMAT_CSV,
}

func BenchmarkBesideBaseline(b *testing.B) {
	if os.Getenv(envBenchRooms) == "" {
		b.Skip("set " + envBenchRooms + "=1 (make bench-export-rooms)")
	}
	n := 1_000_000
	if v := os.Getenv(envBenchMessages); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 2 {
			b.Fatalf("%s=%q: want a count of at least 2", envBenchMessages, v)
		}
	}
	formats := []string{"json", "html", "jsonl", "csv.gz"}
	if v := os.Getenv(envBenchFormats); v != "" {
		formats = strings.Split(v, ",")
	}
	for _, f := range formats {
		if _, ok := benchFormats[f]; !ok {
			b.Fatalf("format %q: the room exporter renders json, html, jsonl and csv.gz", f)
		}
	}
	rooms := map[string]bool{"full": true, "edited": true}
	if v := os.Getenv(envBenchCases); v != "" {
		rooms = map[string]bool{}
		for _, c := range strings.Split(v, ",") {
			if c != "full" && c != "edited" {
				b.Fatalf("%s: case %q is not full or edited", envBenchCases, c)
			}
			rooms[c] = true
		}
	}

	natsURL := startNATSProcess(b)
	nc, err := nats.Connect(natsURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	if err := bus.EnsureTopology(b.Context(), js, bustest.Topology()); err != nil {
		b.Fatal(err)
	}
	ms := blobtest.Start(b, bucket, sharedconfig.DefaultAssetBucket)
	bustest.Put(b, js, bus.BucketUsers, "u-owner", owner)
	var assets *benchAssets // stores the attachments' objects unless they are to be missing
	switch v := os.Getenv(envBenchAssets); v {
	case "", "stored":
		assets = startBenchAssets(b.Context(), ms.Store)
	case "missing":
	default:
		b.Fatalf("%s=%q: want stored or missing", envBenchAssets, v)
	}

	start := time.Now()
	var attachments int
	if rooms["full"] {
		bustest.Put(b, js, bus.BucketRooms, "FULL", &sourcev1.Room{Id: "FULL", Name: "full", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		attachments += publishBenchRoom(b, js, assets, "FULL", n, false)
	}
	if rooms["edited"] {
		bustest.Put(b, js, bus.BucketRooms, "EDITED", &sourcev1.Room{Id: "EDITED", Name: "edited", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
		attachments += publishBenchRoom(b, js, assets, "EDITED", n/2, true)
	}
	stored := assets.wait(b)
	b.Logf("published the rooms (%d messages each, %d attachments, %d objects stored) in %s", n, attachments, stored, time.Since(start).Round(time.Millisecond))

	cases := []struct {
		name, room string
		messages   uint64 // what the export holds
		versions   uint64 // what the subject holds
	}{
		{"full", "FULL", uint64(n), uint64(n)},
		{"edited", "EDITED", uint64(n / 2), uint64(n / 2 * 2)},
	}
	run := 0
	for _, c := range cases {
		if !rooms[c.name] {
			continue
		}
		for _, format := range formats {
			if c.name == "edited" && format != "json" {
				continue // the edited room's cost is the replay, not the encoder
			}
			b.Run(c.name+"-"+format, func(b *testing.B) {
				spec := childSpec{Format: format, Room: c.room, NATS: natsURL, Blob: ms.Config, Bucket: bucket, Messages: c.messages}
				for b.Loop() {
					run++
					spec.Mode, spec.JobID = "dataport", fmt.Sprintf("bench-%d", run)
					dp := runBenchChild(b, spec)
					spec.Mode = "baseline"
					base := runBenchChild(b, spec)
					if dp.Records != c.messages {
						b.Fatalf("dataport exported %d messages, want %d", dp.Records, c.messages)
					}
					dpRate := float64(dp.Records) / dp.Elapsed.Seconds()
					baseRate := float64(base.Records) / base.Elapsed.Seconds()
					b.ReportMetric(dpRate, "dataport-msgs/s")
					b.ReportMetric(baseRate, "baseline-msgs/s")
					// Messages/s of the export over versions/s of the
					// baseline: for the edited room that is issue 14's
					// ratio (half the time-based one).
					b.ReportMetric(dpRate/baseRate, "ratio")
					b.ReportMetric(float64(dp.PeakRSS)/(1<<20), "dataport-RSS-MiB")
					b.ReportMetric(float64(base.PeakRSS)/(1<<20), "baseline-RSS-MiB")
					b.ReportMetric(float64(dp.PeakHeap)/(1<<20), "dataport-live-heap-MiB")
					b.ReportMetric(float64(base.PeakHeap)/(1<<20), "baseline-live-heap-MiB")
					b.ReportMetric(float64(dp.Allocated)/float64(dp.Records), "dataport-B/msg")
					b.ReportMetric(float64(base.Allocated)/float64(base.Records), "baseline-B/msg")
					b.Logf("%s %s: dataport %d msgs in %s (%.0f msgs/s, %.1f MB, peak RSS %.1f MiB, live heap %.1f MiB); baseline %d versions in %s (%.0f /s, peak RSS %.1f MiB, live heap %.1f MiB); ratio %.2f",
						c.name, format, dp.Records, dp.Elapsed.Round(time.Millisecond), dpRate, float64(dp.Bytes)/1e6, float64(dp.PeakRSS)/(1<<20), float64(dp.PeakHeap)/(1<<20),
						base.Records, base.Elapsed.Round(time.Millisecond), baseRate, float64(base.PeakRSS)/(1<<20), float64(base.PeakHeap)/(1<<20), dpRate/baseRate)
				}
			})
		}
	}
}

// TestPipelineBenchChild is one case of BenchmarkBesideBaseline, run in a
// process of its own; it does nothing in a normal test run.
func TestPipelineBenchChild(t *testing.T) {
	raw := os.Getenv(envBenchChild)
	if raw == "" {
		t.Skip("run by BenchmarkBesideBaseline")
	}
	var spec childSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(spec.NATS)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	store, err := blob.New(spec.Blob)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	allocs := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(allocs)
	before := allocs[0].Value.Uint64()
	logger := slog.New(slog.DiscardHandler)
	peakProfile := ""
	if dir := os.Getenv(envBenchProfile); dir != "" {
		base := filepath.Join(dir, spec.Mode+"-"+spec.Room+"-"+spec.Format)
		stop := profile(t, base)
		defer stop()
		peakProfile = base + ".peak.heap.pprof"
		logs, err := os.Create(base + ".log")
		if err != nil {
			t.Fatal(err)
		}
		defer logs.Close()
		logger = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	peak := watchHeap(peakProfile)
	var res childResult
	switch spec.Mode {
	case "dataport":
		res, err = runDataport(ctx, t, js, store, spec, logger)
	case "baseline":
		res, err = runBaseline(ctx, js, store, spec)
	default:
		err = fmt.Errorf("mode %q", spec.Mode)
	}
	if err != nil {
		t.Fatal(err)
	}
	metrics.Read(allocs)
	res.Allocated = allocs[0].Value.Uint64() - before
	if res.PeakHeap, err = peak(); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(benchResultTag + string(out))
}

// profile starts a CPU profile at base.cpu.pprof; the returned stop ends
// it and writes the allocations to base.allocs.pprof.
func profile(t *testing.T, base string) (stop func()) {
	cpu, err := os.Create(base + ".cpu.pprof")
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		t.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		cpu.Close()
		f, err := os.Create(base + ".allocs.pprof")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// watchHeap samples the live heap every 10 ms until the returned stop,
// which reports the largest. With a path it also writes the heap profile
// there whenever the live heap is 5% above the largest written so far:
// the profile of the last collection, the one that measured it, so the
// file ends as the heap at its peak (the allocs profile at the end shows
// only what the run left).
func watchHeap(path string) (stop func() (uint64, error)) {
	done := make(chan struct{})
	type result struct {
		peak uint64
		err  error
	}
	out := make(chan result, 1)
	go func() {
		live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		var res result
		var written uint64
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(live)
			v := live[0].Value.Uint64()
			res.peak = max(res.peak, v)
			if path != "" && res.err == nil && v > written+written/20 {
				written = v
				res.err = writeHeapProfile(path)
			}
			select {
			case <-done:
				out <- res
				return
			case <-tick.C:
			}
		}
	}()
	return func() (uint64, error) {
		close(done)
		r := <-out
		return r.peak, r.err
	}
}

func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func runDataport(ctx context.Context, t *testing.T, js jetstream.JetStream, store *blob.Store, spec childSpec, logger *slog.Logger) (childResult, error) {
	runner, err := taskrun.New(ctx, taskrun.Options{JS: js, Store: store, Publisher: bus.NewPublisher(js, nil), Bucket: spec.Bucket,
		Signer: bustest.TaskSigner(t), Name: "roomexport", NotAllowed: roomexport.ReasonNotAllowed, Logger: logger})
	if err != nil {
		return childResult{}, err
	}
	rooms, err := roomexport.New(ctx, roomexport.Options{JS: js, Store: store, Bucket: spec.Bucket, Logger: logger})
	if err != nil {
		return childResult{}, err
	}
	rooms.Register(runner)
	task := roomTask(spec.JobID, spec.Room, nil, nil)
	task.Format = benchFormats[spec.Format]
	began := time.Now()
	if err := runner.Export(ctx, task); err != nil {
		return childResult{}, err
	}
	elapsed := time.Since(began)
	var part exportv1.PartUploaded
	if !lastEvent(ctx, js, bus.EventPart, spec.JobID, &part) {
		return childResult{}, errors.New("no PartUploaded event")
	}
	return childResult{Elapsed: elapsed, Records: part.GetFile().GetRecords(), Bytes: part.GetFile().GetSize()}, nil
}

// lastEvent reads the job's last event of kind ev into m.
func lastEvent(ctx context.Context, js jetstream.JetStream, ev bus.Event, jobID string, m proto.Message) bool {
	subject, err := bus.StatusSubject(ev, jobID)
	if err != nil {
		return false
	}
	events, err := js.Stream(ctx, bus.StreamExportEvents)
	if err != nil {
		return false
	}
	msg, err := events.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		return false
	}
	return proto.Unmarshal(msg.Data, m) == nil
}

// runBaseline is the minimal pipeline: no checks, no checkpoints, no
// events, no deduplication of republished ids.
func runBaseline(ctx context.Context, js jetstream.JetStream, store *blob.Store, spec childSpec) (childResult, error) {
	subject, err := bus.ChatSubject(spec.Room)
	if err != nil {
		return childResult{}, err
	}
	began := time.Now()
	stream, err := js.Stream(ctx, bus.StreamChatMessages)
	if err != nil {
		return childResult{}, err
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return childResult{}, err
	}
	pr, pw := io.Pipe()
	uploaded := make(chan error, 1)
	var info blob.Info
	go func() {
		var err error
		info, err = store.Upload(ctx, spec.Bucket, "baseline/"+spec.Room+"."+spec.Format, pr, "")
		pr.CloseWithError(err)
		uploaded <- err
	}()
	bw := bufio.NewWriterSize(pw, 64<<10)
	var r roomexport.Renderer
	switch spec.Format {
	case "json":
		r = roomexport.NewJSONRenderer(bw)
	case "html":
		r = roomexport.NewHTMLRenderer(bw, roomexport.Meta{Generated: began})
	case "jsonl":
		r = roomexport.NewJSONLRenderer(bw)
	case "csv.gz":
		r = roomexport.NewCSVGzipRenderer(bw)
	}
	var records uint64
	err = func() error {
		if err := r.Begin(&sourcev1.Room{Id: spec.Room, Name: strings.ToLower(spec.Room)}); err != nil {
			return err
		}
		it, err := cons.Messages()
		if err != nil {
			return err
		}
		defer it.Stop()
		var m sourcev1.ChatMessage
		for {
			msg, err := it.Next()
			if err != nil {
				return err
			}
			if err := proto.Unmarshal(msg.Data(), &m); err != nil {
				return err
			}
			if err := r.Message(&m); err != nil {
				return err
			}
			records++
			md, err := msg.Metadata()
			if err != nil {
				return err
			}
			if md.NumPending == 0 {
				break
			}
		}
		if err := r.End(); err != nil {
			return err
		}
		return bw.Flush()
	}()
	pw.CloseWithError(err)
	if uerr := <-uploaded; err == nil {
		err = uerr
	}
	if err != nil {
		return childResult{}, err
	}
	return childResult{Elapsed: time.Since(began), Records: records, Bytes: uint64(info.Size)}, nil
}

// runBenchChild runs one case in a child process and returns its result
// with the child's peak RSS.
func runBenchChild(b *testing.B, spec childSpec) childResult {
	b.Helper()
	raw, err := json.Marshal(spec)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.CommandContext(b.Context(), os.Args[0], "-test.run=^TestPipelineBenchChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), envBenchChild+"="+string(raw))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("%s %s %s: %v\n%s\n%s", spec.Mode, spec.Room, spec.Format, err, out, stderr.String())
	}
	var res childResult
	for line := range strings.SplitSeq(string(out), "\n") {
		if rest, ok := strings.CutPrefix(line, benchResultTag); ok {
			if err := json.Unmarshal([]byte(rest), &res); err != nil {
				b.Fatal(err)
			}
		}
	}
	if res.Records == 0 {
		b.Fatalf("%s %s %s: no result in output:\n%s", spec.Mode, spec.Room, spec.Format, out)
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.PeakRSS = uint64(ru.Maxrss) << 10 // KiB on Linux
	}
	return res
}

// startNATSProcess runs nats-server with JetStream on a free loopback port
// until the benchmark ends and returns its URL.
func startNATSProcess(b *testing.B) string {
	b.Helper()
	bin := os.Getenv("DATAPORT_NATS_BIN")
	if bin == "" {
		dir, err := os.Getwd()
		if err != nil {
			b.Fatal(err)
		}
		for {
			if _, err := os.Stat(filepath.Join(dir, "bin", "nats-server")); err == nil {
				bin = filepath.Join(dir, "bin", "nats-server")
				break
			}
			parent := filepath.Dir(dir)
			if parent == dir {
				b.Fatal("nats-server not found: run `make tools` or set DATAPORT_NATS_BIN")
			}
			dir = parent
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", b.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			nc.Close()
			return url
		}
		if time.Now().After(deadline) {
			b.Fatalf("nats-server did not start: %v\n%s", err, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// editLag is how many messages later a message's edit is published in the
// edited room.
const editLag = 100

// publishBenchRoom publishes n messages of room; with edited, every
// message is published again editLag messages later, edited. It hands
// every attachment to assets (nil: none is stored) and returns how many
// attachments the room has.
func publishBenchRoom(b *testing.B, js jetstream.JetStream, assets *benchAssets, room string, n int, edited bool) int {
	b.Helper()
	subject, err := bus.ChatSubject(room)
	if err != nil {
		b.Fatal(err)
	}
	g := newMessageGen(room)
	var pending, attachments int
	store := func(a *sourcev1.Attachment) {
		attachments++
		assets.add(a)
	}
	publish := func(m *sourcev1.ChatMessage) {
		data, err := proto.Marshal(m)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishAsync(subject, data); err != nil {
			b.Fatal(err)
		}
		if pending++; pending == 2000 {
			waitPublished(b, js)
			pending = 0
		}
	}
	var recent []*sourcev1.ChatMessage // the last editLag originals, for their edits
	for i := range n {
		m := g.message(i)
		publish(m)
		for _, a := range m.GetAttachments() {
			store(a)
		}
		if !edited {
			continue
		}
		recent = append(recent, m)
		if len(recent) > editLag {
			publish(g.edit(recent[0]))
			recent = recent[1:]
		}
	}
	for _, m := range recent {
		publish(g.edit(m))
	}
	waitPublished(b, js)
	return attachments
}

// benchAssets stores attachments' objects in the assets bucket, each key
// once (the rooms' generators name their files alike), on goroutines of
// their own, so the publishing does not wait for the store.
type benchAssets struct {
	store *blob.Store
	ch    chan *sourcev1.Attachment
	keys  map[string]bool
	g     errgroup.Group
}

func startBenchAssets(ctx context.Context, store *blob.Store) *benchAssets {
	s := &benchAssets{store: store, ch: make(chan *sourcev1.Attachment, 1<<16), keys: map[string]bool{}}
	for range 32 {
		s.g.Go(func() error {
			for a := range s.ch {
				// Put, not Upload: Upload's 16 MiB part buffers would
				// raise this process's peak RSS, which a child's
				// ru_maxrss includes (the child starts as a copy of it).
				data := bytes.Repeat([]byte{byte(a.GetSize())}, int(a.GetSize()))
				if _, err := store.Put(ctx, sharedconfig.DefaultAssetBucket, a.GetObjectKey(), data, a.GetContentType()); err != nil {
					for range s.ch {
					}
					return err
				}
			}
			return nil
		})
	}
	return s
}

// add queues a's object; a nil benchAssets stores nothing.
func (s *benchAssets) add(a *sourcev1.Attachment) {
	if s == nil || s.keys[a.GetObjectKey()] {
		return
	}
	s.keys[a.GetObjectKey()] = true
	s.ch <- a
}

// wait returns when every queued object is stored, and how many there are.
func (s *benchAssets) wait(b *testing.B) int {
	if s == nil {
		return 0
	}
	close(s.ch)
	if err := s.g.Wait(); err != nil {
		b.Fatal(err)
	}
	return len(s.keys)
}

// messageGen makes a deterministic room history shaped like the demo data:
// 50 senders, texts of 3 to 40 words with some markup and links, about 8%
// thread replies (their roots republished as the thread grows is the edited
// room's business), 2% attachments, 1% system messages.
type messageGen struct {
	room  string
	rng   *rand.Rand
	users []*sourcev1.UserRef
	roots []string
	base  time.Time
}

var benchWords = strings.Fields(`the quick brown fox jumps over a lazy dog release deploy meeting
tomorrow review please thanks merged ticket customer invoice report draft *urgent* _maybe_
https://example.com/docs/page?id=42&x=1 ok sure lunch coffee build failed passed <tag> "quoted" it's`)

func newMessageGen(room string) *messageGen {
	g := &messageGen{room: room, rng: rand.New(rand.NewPCG(1, 2)), base: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	for i := range 50 {
		g.users = append(g.users, &sourcev1.UserRef{Id: fmt.Sprintf("user%04d", i), Username: fmt.Sprintf("user.%d", i), Name: fmt.Sprintf("User Number %d", i)})
	}
	return g
}

func (g *messageGen) message(i int) *sourcev1.ChatMessage {
	u := g.users[g.rng.IntN(len(g.users))]
	var text strings.Builder
	for w := range 3 + g.rng.IntN(38) {
		if w > 0 {
			text.WriteByte(' ')
		}
		text.WriteString(benchWords[g.rng.IntN(len(benchWords))])
	}
	m := &sourcev1.ChatMessage{
		Id:     fmt.Sprintf("%s%012d", g.room, i),
		RoomId: g.room,
		Text:   text.String(),
		Ts:     timestamppb.New(g.base.Add(time.Duration(i) * 1500 * time.Millisecond)),
		User:   u,
	}
	switch p := g.rng.IntN(100); {
	case p < 1:
		m.SystemType, m.Text = "uj", u.GetUsername()
	case p < 9 && len(g.roots) > 0:
		m.ThreadId = g.roots[g.rng.IntN(len(g.roots))]
	case p < 11:
		id := fmt.Sprintf("file%010d", i)
		// Small files: the bench stores every one, and what listing one
		// costs does not depend on its size unless it is read.
		m.Attachments = []*sourcev1.Attachment{{FileId: id, Name: "report.pdf", ContentType: "application/pdf",
			Size: uint64(1000 + g.rng.IntN(1<<12)), ObjectKey: "assets/" + id, Title: "Quarterly report"}}
	case p < 14:
		m.ThreadCount = uint32(1 + g.rng.IntN(20))
		m.ThreadLastMessage = timestamppb.New(m.GetTs().AsTime().Add(time.Hour))
		if g.roots = append(g.roots, m.GetId()); len(g.roots) > 100 {
			g.roots = g.roots[1:]
		}
	}
	return m
}

// edit is m edited by its sender: a new text, editedAt and editedBy.
func (g *messageGen) edit(m *sourcev1.ChatMessage) *sourcev1.ChatMessage {
	e := proto.CloneOf(m)
	e.Text += " (edited)"
	e.EditedAt = timestamppb.New(m.GetTs().AsTime().Add(time.Duration(30+g.rng.IntN(600)) * time.Second))
	e.EditedBy = m.GetUser()
	return e
}
