package recordexport_test

import (
	"encoding/json"
	"fmt"
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

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	sharedconfig "dataport.dev/shared/config"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/procstat"
	"dataport.dev/shared/servicetest"
	"dataport.dev/shared/taskrun/taskruntest"
)

// envSplitBench enables BenchmarkSplitExport (make bench-split-records);
// DATAPORT_BENCH_RECORDS (default 10,000,000) and DATAPORT_BENCH_FORMATS
// (default csv) apply too.
const envSplitBench = "DATAPORT_BENCH_SPLIT"

// splitBenchTaskSecret signs the bench's tasks; the exporter processes
// get it as DATAPORT_TASK_SECRET.
const splitBenchTaskSecret = "split-bench-task-signing-key-0123456789abcdef"

// splitCase is one way to run the same export.
type splitCase struct {
	name      string
	exporters int // record-exporter processes consuming tasks
	parts     int // range parts (1: today's single task)
}

// splitResult is what one case measured.
type splitResult struct {
	splitCase
	format          string
	total, exporter time.Duration // request → completed; → last piece
	join            joinLog
	size, records   uint64
	sha256          string
	cpu             procstat.Times
	// load is the machine's 1-minute load average when the case ended:
	// other work on the machine takes cores from the case.
	load string
}

// joinLog is the archiver's "pieces joined" line.
type joinLog struct {
	Method   string `json:"method"`
	JoinMs   int64  `json:"join_ms"`
	VerifyMs int64  `json:"verify_ms"`
	WriteMs  int64  `json:"write_ms"`
	HashMs   int64  `json:"hash_ms"`
}

// BenchmarkSplitExport exports one big record stream into one file with
// one record-exporter process and with two (the real binaries, each
// taking one task at a time, as a one-CPU pod would), the archiver
// process joining the pieces, NATS and MinIO as their own processes:
//
//   - 1 exporter, 1 part: today's unsplit export, the reference;
//   - 1 exporter, 2 parts: the ranges one after the other, which adds the
//     join and nothing else;
//   - 2 exporters, 2 parts and 2 exporters, 4 parts: the ranges at once.
//
// Every case must produce the same file (size, records and SHA-256). It
// prints the time from the tasks' publication to ExportCompleted, the
// exporters' share of it and the join's (compose or stream, then the
// read that hashes a composed file), the speedup over the reference and
// the CPU each process used, which shows what the 2 cores were spent on.
func BenchmarkSplitExport(b *testing.B) {
	if os.Getenv(envSplitBench) == "" {
		b.Skipf("set %s=1 (make bench-split-records) to run the split export harness", envSplitBench)
	}
	n := 10_000_000
	if s := os.Getenv(envRecords); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			b.Fatalf("%s=%q: want a positive number", envRecords, s)
		}
	}
	formats := []string{"csv"}
	if s := os.Getenv(envFormats); s != "" {
		formats = strings.Split(s, ",")
	}
	bins := servicetest.Build(b, "record-exporter", "archiver")
	nc, natsPid := startNATSProcess(b)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ms := blobtest.Start(b, sharedconfig.DefaultExportBucket)
	env := []string{
		"DATAPORT_ENV=development",
		"DATAPORT_NATS_URL=" + nc.ConnectedUrl(),
		"DATAPORT_S3_ENDPOINT=" + ms.Config.Endpoint,
		"DATAPORT_S3_ACCESS_KEY=" + ms.Config.AccessKey,
		"DATAPORT_S3_SECRET_KEY=" + ms.Config.SecretKey,
		"DATAPORT_TASK_SECRET=" + splitBenchTaskSecret,
		"DATAPORT_EXPORTER_CONCURRENCY=1",
		// bus.Consume's iterator holds the next task while the one slot
		// is busy, and the held task's ack wait runs: past it, the task is
		// redelivered and the range runs twice (harmless, the same bytes,
		// but a range's time again). A queued range would wait a whole
		// range here, so the ack wait covers that.
		"DATAPORT_TASK_ACK_WAIT=30m",
		"DATAPORT_LOG_LEVEL=info",
		// Room for 10,000,000 rows and their bytes.
		"DATAPORT_RECORD_MAX_BYTES=" + strconv.Itoa(1<<44),
	}
	joins := make(chan joinLog, 16)
	archiver := servicetest.Start(b, filepath.Join(bins, "archiver"), "archiver", env, func(line []byte) {
		var l struct {
			Msg string `json:"msg"`
			joinLog
		}
		if json.Unmarshal(line, &l) == nil && l.Msg == "pieces joined" {
			joins <- l.joinLog
		}
	})
	exporters := []*servicetest.Process{servicetest.Start(b, filepath.Join(bins, "record-exporter"), "exporter-1", env, nil)}

	subject, err := bus.RecordSubject("transactions", benchOrg)
	if err != nil {
		b.Fatal(err)
	}
	user := &sourcev1.User{Id: "bench-operator", Username: "bench", Roles: []string{"admin", "compliance-officer"}}
	bustest.Put(b, js, bus.BucketUsers, user.GetId(), user)
	bustest.Put(b, js, bus.BucketOrgMembers, user.GetId()+"."+benchOrg, &sourcev1.OrganizationMembership{UserId: user.GetId(), OrganizationId: benchOrg})
	start := time.Now()
	publishRecords(b, js, subject, n)
	b.Logf("published %d records in %v", n, time.Since(start).Round(time.Millisecond))
	stream, err := js.Stream(b.Context(), bus.StreamRecords)
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
		m := procstat.Processes{"nats-server": natsPid, "minio": minioPid, "archiver": archiver.Pid(), "bench": os.Getpid()}
		for _, x := range exporters {
			m[x.Name] = x.Pid()
		}
		return m
	}

	cases := []splitCase{{"1 exporter, unsplit", 1, 1}, {"1 exporter, 2 ranges", 1, 2}, {"2 exporters, 2 ranges", 2, 2}, {"2 exporters, 4 ranges", 2, 4}}
	var results []splitResult
	pub := bus.NewPublisher(js, nil)
	signer, err := bus.NewTaskSigner([]byte(splitBenchTaskSecret))
	if err != nil {
		b.Fatal(err)
	}
	seq := 0
	for _, format := range formats {
		f, ok := exportv1.Format_value["FORMAT_"+strings.ToUpper(strings.ReplaceAll(format, "-", "_"))]
		if !ok {
			b.Fatalf("format %q", format)
		}
		for _, c := range cases {
			for len(exporters) < c.exporters {
				exporters = append(exporters, servicetest.Start(b, filepath.Join(bins, "record-exporter"),
					fmt.Sprintf("exporter-%d", len(exporters)+1), env, nil))
			}
			seq++
			id := fmt.Sprintf("split-%s-%d", format, seq)
			bustest.Put(b, js, bus.BucketJobs, id, &exportv1.Job{Id: id, Name: "bench", State: exportv1.JobState_JOB_STATE_PROCESSING, Kind: exportv1.JobKind_JOB_KIND_RECORDS})
			before := servicetest.CPUTimes(b, procs())
			t0 := time.Now()
			span := last.Sequence - first.Sequence + 1
			for i := range c.parts {
				task := &exportv1.ExportTask{JobId: id, Kind: exportv1.JobKind_JOB_KIND_RECORDS, PartKind: exportv1.PartKind_PART_KIND_RECORDS,
					Format: exportv1.Format(f), OwnerId: user.GetId(), Part: uint32(i), PartsTotal: uint32(c.parts),
					Records: &exportv1.RecordsScope{Resource: "transactions"}, Scope: access.ScopeFor(user, benchOrg)}
				if c.parts > 1 {
					// As plan.Split plans them.
					task.RecordRange = &exportv1.RecordRange{FirstSeq: first.Sequence + span*uint64(i)/uint64(c.parts),
						LastSeq: first.Sequence + span*uint64(i+1)/uint64(c.parts) - 1}
				}
				taskSubject, err := bus.TaskSubject(bus.TaskRecords)
				if err != nil {
					b.Fatal(err)
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
			r := splitResult{splitCase: c, format: format, total: total, exporter: lastPart.GetOccurredAt().AsTime().Sub(t0),
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
			if r.records != uint64(n) {
				b.Fatalf("%s: %d records, want %d", c.name, r.records, n)
			}
			if len(results) > 0 && results[len(results)-1].format == format && results[len(results)-1].sha256 != r.sha256 {
				b.Fatalf("%s: the file differs from the unsplit export's (sha256 %s, not %s)", c.name, r.sha256, results[len(results)-1].sha256)
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
	fmt.Printf("\nsplit record export of %d records into one file, %d CPUs, exporters take one task at a time\n", n, runtime.NumCPU())
	fmt.Printf("%-6s %-22s %9s %11s %7s %10s %8s %-8s %9s %8s %5s  %s\n", "format", "case", "total s", "rows/s", "speedup",
		"exporter s", "join s", "method", "write s", "hash s", "load", "CPU s by process")
	var ref time.Duration
	for _, r := range results {
		if r.parts == 1 {
			ref = r.total
		}
		fmt.Printf("%-6s %-22s %9.2f %11.0f %7.2f %10.2f %8.2f %-8s %9.2f %8.2f %5s  %s\n", r.format, r.name, r.total.Seconds(),
			float64(r.records)/r.total.Seconds(), ref.Seconds()/r.total.Seconds(), r.exporter.Seconds(), float64(r.join.JoinMs)/1000,
			r.join.Method, float64(r.join.WriteMs)/1000, float64(r.join.HashMs)/1000, r.load,
			r.cpu.Line("exporter-1", "exporter-2", "nats-server", "minio", "archiver", "bench"))
	}
	if len(results) > 0 {
		fmt.Printf("file: %.1f MiB; peak RSS: %s\n", mib(results[0].size), servicetest.PeakRSSLine(b, append(exporters, archiver)...))
	}
}

// startNATSProcess is startNATS with the server's process id.
func startNATSProcess(b *testing.B) (*nats.Conn, int) {
	b.Helper()
	nc := startNATS(b)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(nc.ConnectedUrl(), "nats://"))
	return nc, servicetest.Find(b, "nats-server", "-p "+port)
}
