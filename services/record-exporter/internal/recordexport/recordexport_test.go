package recordexport_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/record-exporter/internal/recordexport"
	"dataport.dev/shared/access"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/blobtest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/demo"
	"dataport.dev/shared/taskrun"
	"dataport.dev/shared/taskrun/taskruntest"
)

const (
	bucket      = "dataport-exports"
	assetBucket = "dataport-assets"
)

// env is a record exporter on real servers (embedded JetStream with the
// project's topology, real MinIO) with the demo data set seeded.
type env struct {
	ns    *bustest.Server
	store *blob.Store
	pub   *bus.Publisher
	data  *demo.Dataset
	tmp   string
	seq   int
}

func setup(t *testing.T) *env {
	t.Helper()
	ns := bustest.Start(t)
	ms := blobtest.Start(t, bucket, assetBucket)
	ctx := t.Context()
	d := demo.Generate()
	require.NoError(t, demo.Seed(ctx, ns.JS, ms.Store, assetBucket, d, slog.New(slog.DiscardHandler)))
	e := &env{ns: ns, store: ms.Store, pub: bus.NewPublisher(ns.JS, nil), data: d, tmp: t.TempDir()}
	// The tests' exports run as an operator of acme who may read every
	// room and user; the records they expect are acme's.
	e.putKV(t, bus.BucketUsers, operator.GetId(), operator)
	e.putKV(t, bus.BucketOrgMembers, operator.GetId()+"."+testOrg, &sourcev1.OrganizationMembership{UserId: operator.GetId(), OrganizationId: testOrg})
	for res, recs := range d.Records {
		var own []*sourcev1.Record
		for _, r := range recs {
			if r.GetOrganizationId() == testOrg {
				own = append(own, r)
			}
		}
		d.Records[res] = own
	}
	return e
}

// testOrg is the organization of the tests' record exports.
const testOrg = "acme"

// operator owns the tests' exports.
var operator = &sourcev1.User{Id: "operator", Username: "operator", Roles: []string{"admin", "compliance-officer"}}

func (e *env) putKV(t testing.TB, bucket, key string, m proto.Message) {
	t.Helper()
	bustest.Put(t, e.ns.JS, bucket, key, m)
}

// config is what a test may change: the records kind's options and the
// runner's. Logger and Now of the kind are the runner's too unless the
// test sets the runner's own.
type config struct {
	recordexport.Options
	Runner taskrun.Options
}

// exporter is the record exporter as its main builds it: a runner with
// the records kind registered.
func (e *env) exporter(t *testing.T, configure func(*config)) taskruntest.Exporter {
	t.Helper()
	o := config{
		Options: recordexport.Options{JS: e.ns.JS, Store: e.store, Bucket: bucket, TempDir: e.tmp},
		Runner: taskrun.Options{JS: e.ns.JS, Store: e.store, Publisher: e.pub, Bucket: bucket, Signer: bustest.TaskSigner(t),
			Name: "recordexport", NotAllowed: recordexport.ReasonNotAllowed, ProgressRecords: recordexport.DefaultProgressRecords},
	}
	if configure != nil {
		configure(&o)
	}
	if o.Runner.Logger == nil {
		o.Runner.Logger = o.Logger
	}
	if o.Runner.Now == nil {
		o.Runner.Now = o.Now
	}
	r, err := taskrun.New(t.Context(), o.Runner)
	require.NoError(t, err)
	x, err := recordexport.New(t.Context(), o.Options)
	require.NoError(t, err)
	x.Register(r)
	return taskruntest.Exporter{Runner: r}
}

// task returns a records task of a fresh job whose KV record exists.
func (e *env) task(t *testing.T, format exportv1.Format, scope *exportv1.RecordsScope) *exportv1.ExportTask {
	t.Helper()
	e.seq++
	id := fmt.Sprintf("job%d", e.seq)
	e.putJob(t, &exportv1.Job{Id: id, Name: "Test export " + id, State: exportv1.JobState_JOB_STATE_PROCESSING, Kind: exportv1.JobKind_JOB_KIND_RECORDS})
	return &exportv1.ExportTask{JobId: id, Kind: exportv1.JobKind_JOB_KIND_RECORDS, PartKind: exportv1.PartKind_PART_KIND_RECORDS,
		Format: format, OwnerId: operator.GetId(), PartsTotal: 1, Records: scope, Scope: access.ScopeFor(operator, testOrg)}
}

func (e *env) putJob(t testing.TB, job *exportv1.Job) {
	t.Helper()
	bustest.Put(t, e.ns.JS, bus.BucketJobs, job.GetId(), job)
}

// event returns the job's last status event of a kind.
func (e *env) event(t *testing.T, ev bus.Event, jobID string, m proto.Message) bool {
	t.Helper()
	return taskruntest.LastEvent(t, e.ns.JS, ev, jobID, m)
}

func (e *env) part(t *testing.T, jobID string) *exportv1.PartUploaded {
	t.Helper()
	var p exportv1.PartUploaded
	require.True(t, e.event(t, bus.EventPart, jobID, &p), "PartUploaded of %s", jobID)
	return &p
}

func (e *env) download(t *testing.T, f *exportv1.File) []byte {
	t.Helper()
	rc, info, err := e.store.Open(t.Context(), bucket, f.GetObjectKey())
	require.NoError(t, err)
	defer rc.Close()
	b, err := io.ReadAll(rc)
	require.NoError(t, err)
	assert.EqualValues(t, f.GetSize(), info.Size)
	assert.EqualValues(t, len(b), f.GetSize())
	sum := sha256.Sum256(b)
	assert.Equal(t, hex.EncodeToString(sum[:]), f.GetSha256())
	// The store's checksum travels with the file, so the archiver can
	// verify it without this download.
	st, err := e.store.Stat(t.Context(), bucket, f.GetObjectKey())
	require.NoError(t, err)
	assert.NotEmpty(t, f.GetChecksumSha256())
	assert.Equal(t, st.ChecksumSHA256, f.GetChecksumSha256())
	return b
}

func (e *env) objects(t *testing.T, prefix string) []string {
	t.Helper()
	return blobtest.Keys(t, e.store, bucket, prefix)
}

func readCSV(t *testing.T, b []byte) [][]string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	require.NoError(t, err)
	return recs
}

func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func field(r *sourcev1.Record, name string) string {
	v := r.GetFields().GetFields()[name]
	if s, ok := v.GetKind().(interface{ GetStringValue() string }); ok {
		_ = s
	}
	switch {
	case v == nil:
		return ""
	case v.GetStringValue() != "":
		return v.GetStringValue()
	}
	return num(v.GetNumberValue())
}

func safe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func TestRecordExports(t *testing.T) {
	e := setup(t)
	x := e.exporter(t, nil)
	txns := e.data.Records[demo.ResourceTransactions]
	events := e.data.Records[demo.ResourceEvents]

	t.Run("csv of all transactions equals the records in order", func(t *testing.T) {
		task := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions"})
		require.NoError(t, x.Export(t.Context(), task))
		p := e.part(t, task.GetJobId())
		require.NotNil(t, p.GetFile())
		assert.Empty(t, p.GetFiles())
		assert.Equal(t, "transactions.csv", p.GetFile().GetName())
		assert.Equal(t, "jobs/"+task.GetJobId()+"/parts/0/transactions.csv", p.GetFile().GetObjectKey())
		assert.EqualValues(t, len(txns), p.GetFile().GetRecords())
		rows := readCSV(t, e.download(t, p.GetFile()))
		require.Len(t, rows, len(txns)+1)
		assert.Equal(t, []string{"id", "customerId", "amount", "currency", "status", "type", "gateway", "description", "createdTime", "updatedTime"}, rows[0])
		injected := 0
		for i, r := range txns {
			row := rows[i+1]
			assert.Equal(t, r.GetId(), row[0])
			assert.Equal(t, field(r, "customerId"), row[1])
			assert.Equal(t, field(r, "amount"), row[2])
			assert.Equal(t, safe(field(r, "description")), row[7])
			assert.Equal(t, r.GetCreatedTime().AsTime().UTC().Format(time.RFC3339), row[8])
			if strings.HasPrefix(field(r, "description"), "=") {
				injected++
				assert.True(t, strings.HasPrefix(row[7], "'="), "formula neutralised: %q", row[7])
			}
		}
		assert.Positive(t, injected, "demo data has formula cells")
		var prog exportv1.ExportProgress
		require.True(t, e.event(t, bus.EventProgress, task.GetJobId(), &prog))
		assert.EqualValues(t, 100, prog.GetProgress().GetPercent())
		assert.EqualValues(t, len(txns), prog.GetProgress().GetRecords())
	})

	// The expected selection, computed without recordquery.
	var want []*sourcev1.Record
	from, to := demo.BaseTime.Add(10*24*time.Hour), demo.BaseTime.Add(70*24*time.Hour)
	for _, r := range txns {
		ct := r.GetCreatedTime().AsTime()
		if field(r, "status") == "approved" && (field(r, "currency") == "USD" || field(r, "currency") == "EUR") &&
			!ct.Before(from) && !ct.After(to) && strings.Contains(strings.ToLower(field(r, "description")), "plan") {
			want = append(want, r)
		}
	}
	slices.SortStableFunc(want, func(a, b *sourcev1.Record) int {
		x, y := a.GetFields().GetFields()["amount"].GetNumberValue(), b.GetFields().GetFields()["amount"].GetNumberValue()
		switch {
		case x > y:
			return -1
		case x < y:
			return 1
		}
		return strings.Compare(a.GetId(), b.GetId())
	})
	require.NotEmpty(t, want)
	scope := func() *exportv1.RecordsScope {
		return &exportv1.RecordsScope{Resource: "transactions", Fields: []string{"id", "amount", "currency", "createdTime"},
			Filter: "status:approved;currency:USD,EUR", Sort: "-amount,id", Q: "PLAN",
			DateRange: &exportv1.DateRange{Field: "createdTime", From: timestamppb.New(from), To: timestamppb.New(to)}}
	}

	t.Run("filter sort q fields and date range", func(t *testing.T) {
		for _, mem := range []int64{0, 4 << 10} { // in memory, and spilled runs
			t.Run(fmt.Sprintf("sort memory %d", mem), func(t *testing.T) {
				xs := e.exporter(t, func(o *config) { o.SortMemory = mem })
				task := e.task(t, exportv1.Format_FORMAT_CSV, scope())
				require.NoError(t, xs.Export(t.Context(), task))
				rows := readCSV(t, e.download(t, e.part(t, task.GetJobId()).GetFile()))
				require.Len(t, rows, len(want)+1)
				assert.Equal(t, []string{"id", "amount", "currency", "createdTime"}, rows[0])
				for i, r := range want {
					assert.Equal(t, []string{r.GetId(), field(r, "amount"), field(r, "currency"), r.GetCreatedTime().AsTime().Format(time.RFC3339)}, rows[i+1])
				}
				left, err := os.ReadDir(e.tmp)
				require.NoError(t, err)
				assert.Empty(t, left, "sort runs removed")
			})
		}
	})

	t.Run("every format parses back to the records", func(t *testing.T) {
		check := func(t *testing.T, ids []string) {
			t.Helper()
			require.Len(t, ids, len(want))
			for i, r := range want {
				assert.Equal(t, r.GetId(), ids[i])
			}
		}
		t.Run("json", func(t *testing.T) {
			task := e.task(t, exportv1.Format_FORMAT_JSON, scope())
			require.NoError(t, x.Export(t.Context(), task))
			f := e.part(t, task.GetJobId()).GetFile()
			assert.Equal(t, "transactions.json", f.GetName())
			var got []map[string]any
			require.NoError(t, json.Unmarshal(e.download(t, f), &got))
			var ids []string
			for i, o := range got {
				ids = append(ids, o["id"].(string))
				if i < len(want) {
					assert.Equal(t, want[i].GetFields().GetFields()["amount"].GetNumberValue(), o["amount"])
				}
			}
			check(t, ids)
		})
		t.Run("json-api", func(t *testing.T) {
			task := e.task(t, exportv1.Format_FORMAT_JSON_API, scope())
			require.NoError(t, x.Export(t.Context(), task))
			f := e.part(t, task.GetJobId()).GetFile()
			assert.Equal(t, "application/vnd.api+json", f.GetContentType())
			var doc struct {
				Data []struct {
					Type       string         `json:"type"`
					ID         string         `json:"id"`
					Attributes map[string]any `json:"attributes"`
				} `json:"data"`
			}
			require.NoError(t, json.Unmarshal(e.download(t, f), &doc))
			var ids []string
			for _, d := range doc.Data {
				assert.Equal(t, "transactions", d.Type)
				assert.Equal(t, d.ID, d.Attributes["id"])
				assert.Len(t, d.Attributes, 4)
				ids = append(ids, d.ID)
			}
			check(t, ids)
		})
		t.Run("jsonl", func(t *testing.T) {
			task := e.task(t, exportv1.Format_FORMAT_JSONL, scope())
			require.NoError(t, x.Export(t.Context(), task))
			body := e.download(t, e.part(t, task.GetJobId()).GetFile())
			var ids []string
			for line := range strings.SplitSeq(strings.TrimSuffix(string(body), "\n"), "\n") {
				var o map[string]any
				require.NoError(t, json.Unmarshal([]byte(line), &o))
				ids = append(ids, o["id"].(string))
			}
			check(t, ids)
		})
		t.Run("xml", func(t *testing.T) {
			task := e.task(t, exportv1.Format_FORMAT_XML, scope())
			require.NoError(t, x.Export(t.Context(), task))
			var doc struct {
				Records []struct {
					ID       string `xml:"id,attr"`
					Currency string `xml:"currency"`
				} `xml:"record"`
			}
			require.NoError(t, xml.Unmarshal(e.download(t, e.part(t, task.GetJobId()).GetFile()), &doc))
			var ids []string
			for i, r := range doc.Records {
				ids = append(ids, r.ID)
				if i < len(want) {
					assert.Equal(t, field(want[i], "currency"), r.Currency)
				}
			}
			check(t, ids)
		})
		t.Run("pdf", func(t *testing.T) {
			task := e.task(t, exportv1.Format_FORMAT_PDF, scope())
			require.NoError(t, x.Export(t.Context(), task))
			body := e.download(t, e.part(t, task.GetJobId()).GetFile())
			assert.True(t, bytes.HasPrefix(body, []byte("%PDF-1.4")))
			assert.True(t, bytes.HasSuffix(body, []byte("%%EOF\n")))
			pages := bytes.Count(body, []byte("/Type /Page "))
			assert.Contains(t, string(body), fmt.Sprintf("/Type /Pages /Count %d ", pages))
			// 4 columns fit one page width; rows per page is about 40.
			assert.InDelta(t, (len(want)+39)/40, pages, 1)
			assert.Contains(t, string(body), "/Title (Test export "+task.GetJobId()+")")
		})
	})

	t.Run("raw export chunks by rows with gzip", func(t *testing.T) {
		task := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "events", MaxRowsPerChunk: 1200, GzipChunks: true})
		task.TargetFile = "4.payment.abc123"
		require.NoError(t, x.Export(t.Context(), task))
		p := e.part(t, task.GetJobId())
		assert.Nil(t, p.GetFile())
		require.Len(t, p.GetFiles(), (len(events)+1199)/1200)
		total := 0
		for n, f := range p.GetFiles() {
			assert.Equal(t, fmt.Sprintf("4.payment.abc123.%d.csv.gz", n), f.GetName())
			assert.Equal(t, "jobs/"+task.GetJobId()+"/parts/0/"+f.GetName(), f.GetObjectKey())
			assert.Equal(t, "application/gzip", f.GetContentType())
			zr, err := gzip.NewReader(bytes.NewReader(e.download(t, f)))
			require.NoError(t, err)
			raw, err := io.ReadAll(zr)
			require.NoError(t, err)
			rows := readCSV(t, raw)
			assert.Equal(t, "id", rows[0][0], "every chunk has the header")
			assert.EqualValues(t, len(rows)-1, f.GetRecords())
			assert.LessOrEqual(t, len(rows)-1, 1200)
			for i, row := range rows[1:] {
				assert.Equal(t, events[total+i].GetId(), row[0])
			}
			total += len(rows) - 1
		}
		assert.Equal(t, len(events), total)
	})

	t.Run("chunks by bytes", func(t *testing.T) {
		const limit = 100_000
		task := e.task(t, exportv1.Format_FORMAT_JSONL, &exportv1.RecordsScope{Resource: "transactions", MaxBytesPerChunk: limit, GzipChunks: true})
		require.NoError(t, x.Export(t.Context(), task))
		files := e.part(t, task.GetJobId()).GetFiles()
		require.Greater(t, len(files), 5)
		total := 0
		for n, f := range files {
			assert.Equal(t, fmt.Sprintf("transactions.%d.jsonl.gz", n), f.GetName())
			zr, err := gzip.NewReader(bytes.NewReader(e.download(t, f)))
			require.NoError(t, err)
			raw, err := io.ReadAll(zr)
			require.NoError(t, err)
			assert.LessOrEqual(t, len(raw), limit+1024, "at most one row over the limit")
			if n < len(files)-1 {
				assert.GreaterOrEqual(t, len(raw), limit)
			}
			lines := strings.Count(string(raw), "\n")
			assert.EqualValues(t, lines, f.GetRecords())
			total += lines
		}
		assert.Equal(t, len(txns), total)
	})

	t.Run("over max_rows is rejected and keeps only the finished chunks", func(t *testing.T) {
		task := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "events", MaxRows: 2000, MaxRowsPerChunk: 500, GzipChunks: true})
		require.True(t, taskrun.IsRejected(x.Export(t.Context(), task)), "the task is rejected")
		var failed exportv1.ExportFailed
		require.True(t, e.event(t, bus.EventFailed, task.GetJobId(), &failed))
		assert.True(t, failed.GetRejected())
		assert.Equal(t, "Too many lines in one export", failed.GetReason())
		// The fourth chunk was full but still open when row 2001 came:
		// it is kept too.
		assert.Len(t, failed.GetPartialFiles(), 4, "every full chunk before row 2001")
		e.keptAsPartial(t, task.GetJobId(), failed.GetPartialFiles())
		assert.False(t, e.event(t, bus.EventPart, task.GetJobId(), &exportv1.PartUploaded{}))

		ok := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "events", MaxRows: uint64(len(events))})
		require.NoError(t, x.Export(t.Context(), ok), "exactly max_rows is fine")
		assert.EqualValues(t, len(events), e.part(t, ok.GetJobId()).GetFile().GetRecords())
	})

	t.Run("over max_bytes is rejected and keeps only the finished chunks", func(t *testing.T) {
		size := func(p *exportv1.PartUploaded) uint64 {
			if f := p.GetFile(); f != nil {
				return f.GetSize()
			}
			var n uint64
			for _, f := range p.GetFiles() {
				n += f.GetSize()
			}
			return n
		}
		for _, tc := range []struct {
			name   string
			format exportv1.Format
			scope  *exportv1.RecordsScope
			// exact: the cap is checked to the byte (no gzip buffering).
			exact bool
		}{
			{"csv", exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "events"}, true},
			{"sorted json", exportv1.Format_FORMAT_JSON, &exportv1.RecordsScope{Resource: "transactions", Sort: "-amount"}, true},
			{"gzip chunks", exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "events", MaxRowsPerChunk: 500, GzipChunks: true}, false},
		} {
			t.Run(tc.name, func(t *testing.T) {
				free := e.task(t, tc.format, proto.CloneOf(tc.scope))
				require.NoError(t, x.Export(t.Context(), free))
				total := size(e.part(t, free.GetJobId()))
				require.Positive(t, total)

				over := proto.CloneOf(tc.scope)
				over.MaxBytes = total - 1
				if !tc.exact {
					over.MaxBytes = total / 2
				}
				task := e.task(t, tc.format, over)
				require.True(t, taskrun.IsRejected(x.Export(t.Context(), task)), "the task is rejected")
				var failed exportv1.ExportFailed
				require.True(t, e.event(t, bus.EventFailed, task.GetJobId(), &failed))
				assert.True(t, failed.GetRejected())
				assert.Equal(t, "Too much export data", failed.GetReason())
				e.keptAsPartial(t, task.GetJobId(), failed.GetPartialFiles())
				if tc.scope.GetMaxRowsPerChunk() > 0 {
					assert.NotEmpty(t, failed.GetPartialFiles(), "chunks finished under the cap are kept")
				}
				assert.False(t, e.event(t, bus.EventPart, task.GetJobId(), &exportv1.PartUploaded{}))

				fits := proto.CloneOf(tc.scope)
				fits.MaxBytes = total
				if !tc.exact {
					fits.MaxBytes = total + 64<<10
				}
				ok := e.task(t, tc.format, fits)
				require.NoError(t, x.Export(t.Context(), ok))
				assert.Equal(t, total, size(e.part(t, ok.GetJobId())), "a cap it fits in changes nothing")
			})
		}
	})

	t.Run("other resources", func(t *testing.T) {
		tests := []struct {
			resource string
			want     int
			header   []string
		}{
			{"rooms", len(e.data.Rooms), []string{"id", "name", "type", "topic", "usernames", "createdTime"}},
			{"users", len(e.data.Users) + 1, []string{"id", "username", "name", "email", "roles", "createdTime"}},
			{"messages", func() int {
				n := 0
				for _, m := range e.data.Messages {
					n += len(m)
				}
				return n
			}(), []string{"_id", "rid", "ts", "u.username", "msg"}},
		}
		for _, tc := range tests {
			t.Run(tc.resource, func(t *testing.T) {
				task := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: tc.resource})
				require.NoError(t, x.Export(t.Context(), task))
				body := e.download(t, e.part(t, task.GetJobId()).GetFile())
				rows := readCSV(t, body)
				assert.Equal(t, tc.header, rows[0])
				assert.Len(t, rows, tc.want+1)
				assert.NotContains(t, string(body), "sha256")
			})
		}
		t.Run("messages of one room by filter and date alias", func(t *testing.T) {
			room := e.data.Messages[demo.GeneralRoomID]
			task := e.task(t, exportv1.Format_FORMAT_JSON, &exportv1.RecordsScope{Resource: "messages", Filter: "rid:" + demo.GeneralRoomID,
				Fields: []string{"_id", "createdTime"}, DateRange: &exportv1.DateRange{From: room[10].GetTs()}})
			require.NoError(t, x.Export(t.Context(), task))
			var got []map[string]any
			require.NoError(t, json.Unmarshal(e.download(t, e.part(t, task.GetJobId()).GetFile()), &got))
			require.Len(t, got, len(room)-10)
			assert.Equal(t, room[10].GetId(), got[0]["_id"])
		})
	})

	t.Run("bad tasks are rejected", func(t *testing.T) {
		for name, sc := range map[string]*exportv1.RecordsScope{
			"unknown resource": {Resource: "payments"},
			"unknown field":    {Resource: "transactions", Fields: []string{"id", "bogus"}},
			"bad filter":       {Resource: "transactions", Filter: "status"},
			"filter field":     {Resource: "transactions", Filter: "bogus:1"},
			"bad sort":         {Resource: "transactions", Sort: "a,,b"},
		} {
			t.Run(name, func(t *testing.T) {
				err := x.Export(t.Context(), e.task(t, exportv1.Format_FORMAT_CSV, sc))
				require.Error(t, err)
				assert.True(t, bus.IsPermanent(err))
			})
		}
		err := x.Export(t.Context(), e.task(t, exportv1.Format_FORMAT_HTML, &exportv1.RecordsScope{Resource: "transactions"}))
		assert.True(t, bus.IsPermanent(err))
	})
}

func TestRecordExportCancel(t *testing.T) {
	e := setup(t)
	topo := bustest.Topology()
	x := e.exporter(t, func(o *config) { o.Runner.ProgressRecords = 200; o.Runner.MaxDeliver = topo.TaskMaxDeliver })
	taskruntest.Consume(t, e.ns.JS, topo, bus.ConsumerRecordExporter, x.Runner, bus.ConsumeOptions{})

	t.Run("canceled mid-export stops and keeps only its finished chunks", func(t *testing.T) {
		// Small chunks: many objects are uploaded while the export runs.
		task := e.task(t, exportv1.Format_FORMAT_PDF, &exportv1.RecordsScope{Resource: "events", MaxRowsPerChunk: 100})
		progress, err := bus.StatusSubject(bus.EventProgress, task.GetJobId())
		require.NoError(t, err)
		sub, err := e.ns.Conn.SubscribeSync(progress)
		require.NoError(t, err)
		defer func() { _ = sub.Unsubscribe() }()
		publishTask(t, e.ns.JS, task)

		// Cancel as soon as records are flowing and chunks exist.
		require.Eventually(t, func() bool {
			msg, err := sub.NextMsg(100 * time.Millisecond)
			if err != nil {
				return false
			}
			var p exportv1.ExportProgress
			require.NoError(t, proto.Unmarshal(msg.Data, &p))
			return p.GetProgress().GetRecords() >= 400
		}, 30*time.Second, time.Millisecond)
		canceledAt := time.Now()
		e.putJob(t, &exportv1.Job{Id: task.GetJobId(), State: exportv1.JobState_JOB_STATE_CANCELED})

		var kept exportv1.PartUploaded
		require.Eventually(t, func() bool {
			info, err := e.ns.JS.Stream(t.Context(), bus.StreamExportTasks)
			require.NoError(t, err)
			return info.CachedInfo().State.Msgs == 0 && e.event(t, bus.EventPart, task.GetJobId(), &kept)
		}, 10*time.Second, 20*time.Millisecond, "task acked and partial results announced")
		assert.Less(t, time.Since(canceledAt), 5*time.Second)
		assert.True(t, kept.GetPartial(), "the only part event is the partial results, not the part")
		assert.GreaterOrEqual(t, len(kept.GetFiles()), 3, "the chunks closed within the first 400 rows at least")
		e.keptAsPartial(t, task.GetJobId(), kept.GetFiles())
	})

	t.Run("rejected through the consume loop", func(t *testing.T) {
		task := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "transactions", Fields: []string{"nope"}})
		publishTask(t, e.ns.JS, task)
		var failed exportv1.ExportFailed
		require.Eventually(t, func() bool { return e.event(t, bus.EventFailed, task.GetJobId(), &failed) }, 10*time.Second, 20*time.Millisecond)
		assert.True(t, failed.GetRejected())
		assert.Contains(t, failed.GetReason(), `"nope"`)
	})
}

func publishTask(t *testing.T, js jetstream.JetStream, task *exportv1.ExportTask) {
	t.Helper()
	subject, err := bus.TaskSubject(bus.TaskRecords)
	require.NoError(t, err)
	require.NoError(t, bus.NewPublisher(js, nil).PublishTask(t.Context(), bustest.TaskSigner(t), subject, task.GetJobId()+".task.0", task))
}
