package recordexport_test

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	// The baseline is deliberately the plain client, outside blob's
	// boundary: it is the minimal pipeline Dataport is measured against.
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/record-exporter/internal/recordexport"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/taskrun"
	"dataport.dev/shared/taskrun/taskruntest"
)

// Environment of BenchmarkRecordExports (make bench-export-records sets
// the first; the others are optional).
const (
	// envBench enables the harness: it generates a million records, which
	// the generic `go test -bench .` of every module should not do.
	envBench = "DATAPORT_BENCH_EXPORT"
	// envRecords is the number of records (default 1,000,000).
	envRecords = "DATAPORT_BENCH_RECORDS"
	// envFormats limits the formats ("csv,json,xml" by default).
	envFormats = "DATAPORT_BENCH_FORMATS"
	// envProfile names a directory for a CPU profile of each Dataport run.
	envProfile = "DATAPORT_BENCH_PROFILE"
)

const benchOrg = "bench"

// BenchmarkRecordExports runs the real csv, json and xml record exports
// of one organization's transactions (the runner, scope check, filter,
// renderer, upload) beside a minimal pipeline over the same subject in the
// same process: ordered consumer → protobuf decode → the standard
// library's encoder → one streaming minio-go PutObject with 16 MiB parts.
// NATS (bin/nats-server) and MinIO (bin/minio) run as their own processes,
// so the peak RSS is the exporter's alone. It prints rows/s, the ratio to
// the baseline, peak RSS and peak live heap per case.
func BenchmarkRecordExports(b *testing.B) {
	if os.Getenv(envBench) == "" {
		b.Skipf("set %s=1 (make bench-export-records) to run the export harness", envBench)
	}
	n := 1_000_000
	if s := os.Getenv(envRecords); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n <= 0 {
			b.Fatalf("%s=%q: want a positive number", envRecords, s)
		}
	}
	formats := []string{"csv", "json", "xml"}
	if s := os.Getenv(envFormats); s != "" {
		formats = strings.Split(s, ",")
	}
	h := newHarness(b, n)
	type row struct {
		format         string
		dataport, base measurement
	}
	var rows []row
	for _, f := range formats {
		var r row
		r.format = f
		b.Run(f+"/baseline", func(b *testing.B) {
			for b.Loop() {
				r.base = h.measure(b, func(ctx context.Context) (uint64, error) { return h.baseline(ctx, f) })
			}
			r.base.report(b)
		})
		b.Run(f+"/dataport", func(b *testing.B) {
			for b.Loop() {
				r.dataport = h.measure(b, func(ctx context.Context) (uint64, error) { return h.dataport(ctx, b, f) })
			}
			r.dataport.report(b)
		})
		rows = append(rows, r)
	}
	fmt.Printf("\nrecord exports of %d records, GOMAXPROCS=%d\n", n, runtime.GOMAXPROCS(0))
	fmt.Printf("%-6s %15s %15s %6s %13s %13s %13s %13s %10s\n", "format", "dataport rows/s", "baseline rows/s", "ratio",
		"dataport RSS", "baseline RSS", "dataport heap", "CPU µs/row", "CPU ratio")
	for _, r := range rows {
		dc, bc := r.dataport.cpuPerRow(), r.base.cpuPerRow()
		fmt.Printf("%-6s %15.0f %15.0f %6.2f %9.1f MiB %9.1f MiB %9.1f MiB %6.2f/%-6.2f %10.2f\n", r.format, r.dataport.rate(), r.base.rate(),
			r.dataport.rate()/r.base.rate(), mib(r.dataport.peakRSS), mib(r.base.peakRSS), mib(r.dataport.peakHeap), dc, bc, bc/dc)
	}
}

// harness holds the servers and the generated records.
type harness struct {
	n        int
	js       jetstream.JetStream
	store    *blob.Store
	cfg      blob.Config
	subject  string
	x        taskruntest.Exporter
	operator *sourcev1.User
	seq      atomic.Int64
}

const benchBucket = "bench-exports"

func newHarness(b *testing.B, n int) *harness {
	b.Helper()
	ctx := b.Context()
	nc := startNATS(b)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if err := bus.EnsureTopology(ctx, js, bustest.Topology()); err != nil {
		b.Fatal(err)
	}
	ms := blobtest.Start(b, benchBucket)
	h := &harness{n: n, js: js, store: ms.Store, cfg: ms.Config}
	h.subject, err = bus.RecordSubject("transactions", benchOrg)
	if err != nil {
		b.Fatal(err)
	}
	user := &sourcev1.User{Id: "bench-operator", Username: "bench", Roles: []string{"admin", "compliance-officer"}}
	bustest.Put(b, js, bus.BucketUsers, user.GetId(), user)
	bustest.Put(b, js, bus.BucketOrgMembers, user.GetId()+"."+benchOrg, &sourcev1.OrganizationMembership{UserId: user.GetId(), OrganizationId: benchOrg})
	start := time.Now()
	publishRecords(b, js, h.subject, n)
	b.Logf("published %d records in %v", n, time.Since(start).Round(time.Millisecond))

	r, err := taskrun.New(ctx, taskrun.Options{JS: js, Store: ms.Store, Publisher: bus.NewPublisher(js, nil), Bucket: benchBucket,
		Signer: bustest.TaskSigner(b), Name: "recordexport", NotAllowed: recordexport.ReasonNotAllowed,
		ProgressRecords: recordexport.DefaultProgressRecords})
	if err != nil {
		b.Fatal(err)
	}
	x, err := recordexport.New(ctx, recordexport.Options{JS: js, Store: ms.Store, Bucket: benchBucket, TempDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	x.Register(r)
	h.x = taskruntest.Exporter{Runner: r}
	h.operator = user
	return h
}

// dataport runs one real export of every record as a records task of a
// fresh job and returns the rows it wrote.
func (h *harness) dataport(ctx context.Context, b *testing.B, format string) (uint64, error) {
	id := fmt.Sprintf("bench-%s-%d", format, h.seq.Add(1))
	bustest.Put(b, h.js, bus.BucketJobs, id, &exportv1.Job{Id: id, Name: "bench", State: exportv1.JobState_JOB_STATE_PROCESSING, Kind: exportv1.JobKind_JOB_KIND_RECORDS})
	f := map[string]exportv1.Format{"csv": exportv1.Format_FORMAT_CSV, "json": exportv1.Format_FORMAT_JSON, "xml": exportv1.Format_FORMAT_XML}[format]
	task := &exportv1.ExportTask{JobId: id, Kind: exportv1.JobKind_JOB_KIND_RECORDS, PartKind: exportv1.PartKind_PART_KIND_RECORDS,
		Format: f, OwnerId: h.operator.GetId(), PartsTotal: 1, Records: &exportv1.RecordsScope{Resource: "transactions"},
		Scope: access.ScopeFor(h.operator, benchOrg)}
	if err := h.x.Export(ctx, task); err != nil {
		return 0, err
	}
	var part exportv1.PartUploaded
	if !taskruntest.LastEvent(b, h.js, bus.EventPart, id, &part) {
		return 0, errors.New("no part event")
	}
	return part.GetFile().GetRecords(), nil
}

// baseline is the minimal pipeline: ordered consumer over the subject,
// decode, the standard library's encoder, one streaming PutObject.
func (h *harness) baseline(ctx context.Context, format string) (uint64, error) {
	client, err := minio.New(h.cfg.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(h.cfg.AccessKey, h.cfg.SecretKey, ""), Region: h.cfg.Region})
	if err != nil {
		return 0, err
	}
	stream, err := h.js.Stream(ctx, bus.StreamRecords)
	if err != nil {
		return 0, err
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{h.subject}})
	if err != nil {
		return 0, err
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(256))
	if err != nil {
		return 0, err
	}
	defer it.Stop()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		_, err := client.PutObject(ctx, benchBucket, fmt.Sprintf("baseline/%s-%d", format, h.seq.Add(1)), pr, -1,
			minio.PutObjectOptions{PartSize: 16 << 20, ContentType: "application/octet-stream"})
		pr.CloseWithError(err)
		done <- err
	}()
	bw := bufio.NewWriterSize(pw, 64<<10)
	enc := newBaselineEncoder(format, bw)
	var rows uint64
	var rec sourcev1.Record
	for rows < uint64(h.n) {
		msg, err := it.Next()
		if err != nil {
			pw.CloseWithError(err)
			<-done
			return rows, err
		}
		rec.Reset()
		if err := proto.Unmarshal(msg.Data(), &rec); err != nil {
			pw.CloseWithError(err)
			<-done
			return rows, err
		}
		if err := enc.write(&rec); err != nil {
			pw.CloseWithError(err)
			<-done
			return rows, err
		}
		rows++
	}
	err = enc.end()
	if err == nil {
		err = bw.Flush()
	}
	pw.CloseWithError(err)
	if uerr := <-done; err == nil {
		err = uerr
	}
	return rows, err
}

// txn is a transaction with the default columns, for the standard
// library's reflective encoders.
type txn struct {
	XMLName     xml.Name `json:"-" xml:"record"`
	ID          string   `json:"id" xml:"id"`
	CustomerID  string   `json:"customerId" xml:"customerId"`
	Amount      float64  `json:"amount" xml:"amount"`
	Currency    string   `json:"currency" xml:"currency"`
	Status      string   `json:"status" xml:"status"`
	Type        string   `json:"type" xml:"type"`
	Gateway     string   `json:"gateway" xml:"gateway"`
	Description string   `json:"description" xml:"description"`
	CreatedTime string   `json:"createdTime" xml:"createdTime"`
}

func txnOf(r *sourcev1.Record) txn {
	f := r.GetFields().GetFields()
	return txn{
		ID: f["id"].GetStringValue(), CustomerID: f["customerId"].GetStringValue(), Amount: f["amount"].GetNumberValue(),
		Currency: f["currency"].GetStringValue(), Status: f["status"].GetStringValue(), Type: f["type"].GetStringValue(),
		Gateway: f["gateway"].GetStringValue(), Description: f["description"].GetStringValue(),
		CreatedTime: f["createdTime"].GetStringValue(),
	}
}

type baselineEncoder struct {
	write func(*sourcev1.Record) error
	end   func() error
}

func newBaselineEncoder(format string, w io.Writer) baselineEncoder {
	switch format {
	case "csv":
		cw := csv.NewWriter(w)
		cw.UseCRLF = true
		cells := make([]string, 9)
		_ = cw.Write([]string{"id", "customerId", "amount", "currency", "status", "type", "gateway", "description", "createdTime"})
		return baselineEncoder{
			write: func(r *sourcev1.Record) error {
				t := txnOf(r)
				cells[0], cells[1], cells[2], cells[3], cells[4] = t.ID, t.CustomerID, strconv.FormatFloat(t.Amount, 'f', -1, 64), t.Currency, t.Status
				cells[5], cells[6], cells[7], cells[8] = t.Type, t.Gateway, t.Description, t.CreatedTime
				return cw.Write(cells)
			},
			end: func() error { cw.Flush(); return cw.Error() },
		}
	case "json":
		enc := json.NewEncoder(w)
		n := 0
		_, _ = io.WriteString(w, "[")
		return baselineEncoder{
			write: func(r *sourcev1.Record) error {
				if n > 0 {
					_, _ = io.WriteString(w, ",")
				}
				n++
				return enc.Encode(txnOf(r))
			},
			end: func() error { _, err := io.WriteString(w, "]\n"); return err },
		}
	case "xml":
		enc := xml.NewEncoder(w)
		_, _ = io.WriteString(w, xml.Header+`<records resource="transactions">`)
		return baselineEncoder{
			write: func(r *sourcev1.Record) error { return enc.Encode(txnOf(r)) },
			end: func() error {
				if err := enc.Flush(); err != nil {
					return err
				}
				_, err := io.WriteString(w, "</records>\n")
				return err
			},
		}
	}
	fail := func() error { return fmt.Errorf("no baseline for format %q", format) }
	return baselineEncoder{write: func(*sourcev1.Record) error { return fail() }, end: fail}
}

// measurement is one run.
type measurement struct {
	rows     uint64
	elapsed  time.Duration
	peakRSS  uint64 // VmHWM after resetting it at the start
	peakHeap uint64 // highest sampled live heap
	// cpu is the process's user and system time during the run: on a
	// shared machine it is steadier than the wall clock.
	cpu time.Duration
}

func (m measurement) rate() float64 { return float64(m.rows) / m.elapsed.Seconds() }

func (m measurement) cpuPerRow() float64 { return float64(m.cpu.Microseconds()) / float64(m.rows) }

func (m measurement) report(b *testing.B) {
	b.ReportMetric(m.rate(), "rows/s")
	b.ReportMetric(mib(m.peakRSS), "peak-RSS-MiB")
	b.ReportMetric(mib(m.peakHeap), "peak-heap-MiB")
	b.ReportMetric(float64(m.cpu.Microseconds())/float64(m.rows), "cpu-µs/row")
	b.ReportMetric(0, "ns/op") // one export per run: rows/s is the figure
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// measure runs f with the process's peak RSS reset and the live heap
// sampled, optionally under a CPU profile.
func (h *harness) measure(b *testing.B, f func(context.Context) (uint64, error)) measurement {
	b.Helper()
	runtime.GC()
	debug.FreeOSMemory()
	// Writing 5 to clear_refs resets VmHWM to the current RSS (Linux).
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Logf("cannot reset peak RSS: %v", err)
	}
	stop := make(chan struct{})
	var peakHeap atomic.Uint64
	var wg sync.WaitGroup
	wg.Go(func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > peakHeap.Load() {
				peakHeap.Store(v)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	if dir := os.Getenv(envProfile); dir != "" {
		p, err := os.Create(filepath.Join(dir, strings.ReplaceAll(b.Name(), "/", "_")+".cpu.pprof"))
		if err == nil {
			_ = pprof.StartCPUProfile(p)
			defer func() { pprof.StopCPUProfile(); p.Close() }()
		}
	}
	cpu0 := processCPU(b)
	start := time.Now()
	rows, err := f(b.Context())
	elapsed := time.Since(start)
	cpu := processCPU(b) - cpu0
	close(stop)
	wg.Wait()
	if err != nil {
		b.Fatal(err)
	}
	if rows != uint64(h.n) {
		b.Fatalf("exported %d rows, want %d", rows, h.n)
	}
	return measurement{rows: rows, elapsed: elapsed, peakRSS: vmHWM(b), peakHeap: peakHeap.Load(), cpu: cpu}
}

// processCPU is the user and system time the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Logf("getrusage: %v", err)
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// vmHWM is the process's peak resident set size.
func vmHWM(b *testing.B) uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Logf("peak RSS: %v", err)
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// publishRecords publishes n transactions of benchOrg, shaped like the
// demo data set's, with asynchronous publishes.
func publishRecords(b *testing.B, js jetstream.JetStream, subject string, n int) {
	b.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	token := func(n int) string {
		s := make([]byte, n)
		for i := range s {
			s[i] = alnum[rng.IntN(len(alnum))]
		}
		return string(s)
	}
	customers := make([]string, 300)
	for i := range customers {
		customers[i] = "cus_" + token(12)
	}
	pick := func(s []string) string { return s[rng.IntN(len(s))] }
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range n {
		created := base.Add(time.Duration(i) * 7 * time.Second)
		id := "txn_" + token(17)
		amount := float64(100+rng.IntN(99900)) / 100
		fields := map[string]*structpb.Value{
			"id":          structpb.NewStringValue(id),
			"customerId":  structpb.NewStringValue(pick(customers)),
			"amount":      structpb.NewNumberValue(amount),
			"currency":    structpb.NewStringValue(pick([]string{"USD", "EUR", "GBP", "JPY"})),
			"status":      structpb.NewStringValue(pick([]string{"approved", "approved", "approved", "declined", "pending"})),
			"type":        structpb.NewStringValue(pick([]string{"sale", "sale", "authorize", "refund"})),
			"gateway":     structpb.NewStringValue(pick([]string{"stripe", "adyen", "braintree"})),
			"description": structpb.NewStringValue(fmt.Sprintf("Order #%d — %s", 10000+i, pick([]string{"T-shirt", "Mug \"Classic\"", "Sticker, large", "Hoodie"}))),
			"createdTime": structpb.NewStringValue(created.Format(time.RFC3339)),
		}
		data, err := proto.Marshal(&sourcev1.Record{Id: id, Resource: "transactions", OrganizationId: benchOrg,
			CreatedTime: timestamppb.New(created), UpdatedTime: timestamppb.New(created), Fields: &structpb.Struct{Fields: fields}})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishAsync(subject, data); err != nil {
			b.Fatal(err)
		}
		// Below the client's 4,000 outstanding publishes, past which
		// PublishAsync gives up after a short stall on a busy machine.
		if i%2048 == 2047 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("publishing stalled")
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("publishing stalled")
	}
}

// startNATS runs bin/nats-server with JetStream on a free loopback port
// as its own process, so its memory is not the exporter's, and connects.
func startNATS(b *testing.B) *nats.Conn {
	b.Helper()
	bin := "nats-server"
	if root, ok := findRoot(); ok {
		if p := filepath.Join(root, "bin", "nats-server"); fileExists(p) {
			bin = p
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(bin, "-js", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-sd", b.TempDir())
	if err := cmd.Start(); err != nil {
		b.Fatalf("start %s: %v (run make tools)", bin, err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := nats.Connect(url)
		if err == nil {
			b.Cleanup(nc.Close)
			return nc
		}
		if time.Now().After(deadline) {
			b.Fatalf("nats-server at %s: %v", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func findRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if fileExists(filepath.Join(dir, "go.work")) || fileExists(filepath.Join(dir, "Makefile")) && fileExists(filepath.Join(dir, "shared")) {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
