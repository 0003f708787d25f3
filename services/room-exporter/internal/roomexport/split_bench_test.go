package roomexport_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	sharedconfig "dataport.dev/shared/config"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/procstat"
	"dataport.dev/shared/servicetest"
	"dataport.dev/shared/taskrun/taskruntest"
)

// envSplitRoomBench runs BenchmarkSplitRoomExport (make
// bench-split-rooms); DATAPORT_BENCH_MESSAGES is the room's size
// (10,000,000) and DATAPORT_BENCH_FORMATS its formats (json) there too.
const envSplitRoomBench = "DATAPORT_BENCH_SPLIT_ROOMS"

// splitRoomBenchSecret signs the bench's tasks; the processes get it as
// DATAPORT_TASK_SECRET.
const splitRoomBenchSecret = "split-room-bench-task-signing-key-0123456789"

// pageDigest is the SHA-256 of an HTML page without its "Exported …"
// line: every case renders the page at another time, and the rest must be
// the same bytes.
func pageDigest(b *testing.B, store *blob.Store, bucket, key string) string {
	b.Helper()
	body, _, err := store.Open(b.Context(), bucket, key)
	if err != nil {
		b.Fatal(err)
	}
	defer body.Close()
	r := bufio.NewReaderSize(body, 1<<20)
	h := sha256.New()
	for header := true; header; {
		line, err := r.ReadBytes('\n')
		if err != nil {
			b.Fatalf("page %s: %v", key, err)
		}
		if !bytes.HasPrefix(line, []byte(`<p class="info generated">`)) {
			h.Write(line)
		}
		header = !bytes.Equal(line, []byte("<main>\n"))
	}
	if _, err := io.Copy(h, r); err != nil {
		b.Fatalf("page %s: %v", key, err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// roomSplitCase is one way to run the same room export.
type roomSplitCase struct {
	name      string
	exporters int // room-exporter processes consuming tasks
	parts     int // ranges (1: today's single task)
}

type roomSplitResult struct {
	roomSplitCase
	format          string
	total, exporter time.Duration // request → completed; → last piece announced
	join            roomJoinLog
	size, records   uint64
	sha256          string
	cpu             procstat.Times
	load            string
}

// roomJoinLog is the archiver's "pieces joined" line.
type roomJoinLog struct {
	Method  string `json:"method"`
	JoinMs  int64  `json:"join_ms"`
	WriteMs int64  `json:"write_ms"`
	HashMs  int64  `json:"hash_ms"`
}

// BenchmarkSplitRoomExport exports one big room into one document with
// one room-exporter process and with two (the real binaries, each taking
// one task at a time, as a one-CPU pod would), the archiver process
// joining the pieces, NATS and MinIO as their own processes:
//
//   - 1 exporter, unsplit: today's export, the reference;
//   - 1 exporter, 2 ranges: the ranges one after the other, which adds
//     the split's own costs (id tables, merge, render stage, join);
//   - 2 exporters, 2 ranges and 2 exporters, 4 ranges: the ranges at once.
//
// The room's messages are edited within about 100 messages, as chat is,
// so no range renders twice. Every case must produce the same document
// (size, messages, SHA-256).
func BenchmarkSplitRoomExport(b *testing.B) {
	if os.Getenv(envSplitRoomBench) == "" {
		b.Skipf("set %s=1 (make bench-split-rooms) to run the split room export harness", envSplitRoomBench)
	}
	n := 10_000_000
	if s := os.Getenv(envBenchMessages); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			b.Fatalf("%s=%q: want a positive number", envBenchMessages, s)
		}
	}
	formats := []string{"json"}
	if s := os.Getenv(envBenchFormats); s != "" {
		formats = strings.Split(s, ",")
	}
	bins := servicetest.Build(b, "room-exporter", "archiver")
	url := startNATSProcess(b)
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "nats://"))
	natsPid := servicetest.Find(b, "nats-server", "-p "+port)
	ms := blobtest.Start(b, sharedconfig.DefaultExportBucket)
	env := []string{
		"DATAPORT_ENV=development",
		"DATAPORT_NATS_URL=" + url,
		"DATAPORT_S3_ENDPOINT=" + ms.Config.Endpoint,
		"DATAPORT_S3_ACCESS_KEY=" + ms.Config.AccessKey,
		"DATAPORT_S3_SECRET_KEY=" + ms.Config.SecretKey,
		"DATAPORT_TASK_SECRET=" + splitRoomBenchSecret,
		"DATAPORT_EXPORTER_CONCURRENCY=1",
		// A queued range waits a whole range behind the one slot.
		"DATAPORT_TASK_ACK_WAIT=30m",
		"DATAPORT_LOG_LEVEL=info",
	}
	joins := make(chan roomJoinLog, 16)
	archiver := servicetest.Start(b, filepath.Join(bins, "archiver"), "archiver", env, func(line []byte) {
		var l struct {
			Msg string `json:"msg"`
			roomJoinLog
		}
		if json.Unmarshal(line, &l) == nil && l.Msg == "pieces joined" {
			joins <- l.roomJoinLog
		}
	})
	exporters := []*servicetest.Process{servicetest.Start(b, filepath.Join(bins, "room-exporter"), "exporter-1", env, nil)}

	const roomID = "BIGROOM"
	user := &sourcev1.User{Id: "bench-operator", Username: "bench", Roles: []string{"admin", "compliance-officer"}}
	bustest.Put(b, js, bus.BucketUsers, user.GetId(), user)
	bustest.Put(b, js, bus.BucketRooms, roomID, &sourcev1.Room{Id: roomID, Name: "big-room", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	start := time.Now()
	publishSplitBenchRoom(b, js, roomID, n)
	b.Logf("published %d messages in %v", n, time.Since(start).Round(time.Millisecond))
	subject, err := bus.ChatSubject(roomID)
	if err != nil {
		b.Fatal(err)
	}
	stream, err := js.Stream(b.Context(), bus.StreamChatMessages)
	if err != nil {
		b.Fatal(err)
	}
	first, err := stream.GetMsg(b.Context(), 1, jetstream.WithGetMsgSubject(subject))
	if err != nil {
		b.Fatal(err)
	}
	last, err := stream.GetLastMsgForSubject(b.Context(), subject)
	if err != nil {
		b.Fatal(err)
	}
	minioPid := servicetest.Find(b, "minio", ms.Config.Endpoint)
	procs := func() procstat.Processes {
		m := procstat.Processes{"nats-server": natsPid, "minio": minioPid, "archiver": archiver.Pid()}
		for _, x := range exporters {
			m[x.Name] = x.Pid()
		}
		return m
	}
	cases := []roomSplitCase{{"1 exporter, unsplit", 1, 1}, {"1 exporter, 2 ranges", 1, 2}, {"2 exporters, 2 ranges", 2, 2}, {"2 exporters, 4 ranges", 2, 4}}
	pub := bus.NewPublisher(js, nil)
	signer, err := bus.NewTaskSigner([]byte(splitRoomBenchSecret))
	if err != nil {
		b.Fatal(err)
	}
	taskSubject, err := bus.TaskSubject(bus.TaskRoom)
	if err != nil {
		b.Fatal(err)
	}
	var results []roomSplitResult
	seq := 0
	for _, format := range formats {
		f, ok := benchFormats[format]
		if !ok {
			b.Fatalf("format %q", format)
		}
		for _, c := range cases {
			for len(exporters) < c.exporters {
				exporters = append(exporters, servicetest.Start(b, filepath.Join(bins, "room-exporter"),
					fmt.Sprintf("exporter-%d", len(exporters)+1), env, nil))
			}
			seq++
			id := fmt.Sprintf("roomsplit-%s-%d", format, seq)
			bustest.Put(b, js, bus.BucketJobs, id, &exportv1.Job{Id: id, Name: "bench", State: exportv1.JobState_JOB_STATE_PROCESSING, Kind: exportv1.JobKind_JOB_KIND_ROOM})
			before := servicetest.CPUTimes(b, procs())
			t0 := time.Now()
			span := last.Sequence - first.Sequence + 1
			for i := range c.parts {
				task := &exportv1.ExportTask{JobId: id, Kind: exportv1.JobKind_JOB_KIND_ROOM, PartKind: exportv1.PartKind_PART_KIND_ROOM,
					Format: f, OwnerId: user.GetId(), Part: uint32(i), PartsTotal: uint32(c.parts),
					Room: &exportv1.RoomScope{RoomId: roomID}, Scope: access.ScopeFor(user, "")}
				if c.parts > 1 {
					// As plan.Split.RoomTasks plans them.
					task.RoomRange = &exportv1.RecordRange{FirstSeq: first.Sequence + span*uint64(i)/uint64(c.parts),
						LastSeq: first.Sequence + span*uint64(i+1)/uint64(c.parts) - 1}
				}
				if err := pub.PublishTask(b.Context(), signer, taskSubject, id+".task."+strconv.Itoa(i), task); err != nil {
					b.Fatal(err)
				}
			}
			done, failed := taskruntest.WaitOutcome(b, js, id, time.Hour)
			if failed != nil {
				b.Fatalf("%s: failed: %s", c.name, failed.GetReason())
			}
			total := time.Since(t0)
			var lastPart exportv1.PartUploaded
			if !taskruntest.LastEvent(b, js, bus.EventPart, id, &lastPart) {
				b.Fatal("no part event")
			}
			r := roomSplitResult{roomSplitCase: c, format: format, total: total, exporter: lastPart.GetOccurredAt().AsTime().Sub(t0),
				cpu: servicetest.CPUTimes(b, procs()).Since(before), load: procstat.LoadAverage()}
			if c.parts > 1 {
				select {
				case r.join = <-joins:
				case <-time.After(10 * time.Second):
					b.Fatal("no join logged")
				}
			}
			if len(done.GetFiles()) != 1 {
				b.Fatalf("%s: %d files", c.name, len(done.GetFiles()))
			}
			file := done.GetFiles()[0]
			r.size, r.records, r.sha256 = file.GetSize(), file.GetRecords(), file.GetSha256()
			if f == exportv1.Format_FORMAT_HTML {
				r.sha256 = pageDigest(b, ms.Store, sharedconfig.DefaultExportBucket, file.GetObjectKey())
			}
			if r.records != uint64(n) {
				b.Fatalf("%s: %d messages, want %d", c.name, r.records, n)
			}
			if len(results) > 0 && results[len(results)-1].format == format && results[len(results)-1].sha256 != r.sha256 {
				b.Fatalf("%s: the document differs from the unsplit export's (sha256 %s, not %s)", c.name, r.sha256, results[len(results)-1].sha256)
			}
			results = append(results, r)
			b.Logf("%s %s: %v (exporters %v, join %+v)", format, c.name, total.Round(time.Millisecond), r.exporter.Round(time.Millisecond), r.join)
			// Free the disk for the next case.
			for _, key := range blobtest.Keys(b, ms.Store, sharedconfig.DefaultExportBucket, objects.JobPrefix(id)) {
				if err := ms.Store.Delete(b.Context(), sharedconfig.DefaultExportBucket, key); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	fmt.Printf("\nsplit room export of %d messages into one document, %d CPUs, exporters take one task at a time\n", n, runtime.NumCPU())
	fmt.Printf("%-6s %-22s %9s %11s %7s %10s %8s %-8s %9s %8s %5s  %s\n", "format", "case", "total s", "msg/s", "speedup",
		"exporter s", "join s", "method", "write s", "hash s", "load", "CPU s by process")
	var ref time.Duration
	for _, r := range results {
		if r.parts == 1 {
			ref = r.total
		}
		fmt.Printf("%-6s %-22s %9.2f %11.0f %7.2f %10.2f %8.2f %-8s %9.2f %8.2f %5s  %s\n", r.format, r.name, r.total.Seconds(),
			float64(r.records)/r.total.Seconds(), ref.Seconds()/r.total.Seconds(), r.exporter.Seconds(), float64(r.join.JoinMs)/1000,
			r.join.Method, float64(r.join.WriteMs)/1000, float64(r.join.HashMs)/1000, r.load,
			r.cpu.Line("exporter-1", "exporter-2", "nats-server", "minio", "archiver"))
	}
	if len(results) > 0 {
		fmt.Printf("document: %.1f MiB; peak RSS: %s\n", mib(results[0].size), servicetest.PeakRSSLine(b, append(exporters, archiver)...))
	}
}

// publishSplitBenchRoom publishes n messages of the pipeline bench's
// shape without attachments (whose look-ups in the assets bucket would
// be the same in every case), every hundredth one edited some 100
// messages later.
func publishSplitBenchRoom(b *testing.B, js jetstream.JetStream, room string, n int) {
	b.Helper()
	subject, err := bus.ChatSubject(room)
	if err != nil {
		b.Fatal(err)
	}
	g := newMessageGen(room)
	pending := 0
	publish := func(m *sourcev1.ChatMessage) {
		data, err := proto.Marshal(m)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishAsync(subject, data); err != nil {
			b.Fatal(err)
		}
		if pending++; pending == 4000 {
			waitPublished(b, js)
			pending = 0
		}
	}
	var edits []*sourcev1.ChatMessage
	for i := range n {
		m := g.message(i)
		m.Attachments = nil
		publish(m)
		if i%100 == 0 {
			edits = append(edits, m)
		}
		if len(edits) > 0 && i%100 == 99 {
			publish(g.edit(edits[0]))
			edits = edits[1:]
		}
	}
	for _, m := range edits {
		publish(g.edit(m))
	}
	waitPublished(b, js)
}
