package recordrender_test

import (
	"encoding/csv"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"syscall"
	"testing"
	"time"

	"dataport.dev/services/record-exporter/internal/recordrender"
)

// The encoder micro-benchmarks render transactions with the default
// columns, each beside the standard library's encoder of the same rows
// (a struct through encoding/json and encoding/xml, strings through
// encoding/csv). make bench-export-records runs them with -cpu 1: an
// export renders on one goroutine.

var benchFields = []string{"id", "customerId", "amount", "currency", "status", "type", "gateway", "description", "createdTime"}

type benchTxn struct {
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

func benchRows(n int) ([]recordrender.Row, []benchTxn) {
	rows := make([]recordrender.Row, n)
	txns := make([]benchTxn, n)
	for i := range n {
		t := benchTxn{
			ID: fmt.Sprintf("txn_%017d", i), CustomerID: fmt.Sprintf("cus_%012d", i%300), Amount: float64(100+i%99900) / 100,
			Currency: "EUR", Status: "approved", Type: "sale", Gateway: "stripe",
			Description: fmt.Sprintf("Order #%d — Mug \"Classic\"", 10000+i), CreatedTime: "2025-01-01T00:00:07Z",
		}
		txns[i] = t
		rows[i] = recordrender.Row{ID: t.ID, Values: []any{t.ID, t.CustomerID, t.Amount, t.Currency, t.Status, t.Type, t.Gateway, t.Description, t.CreatedTime}}
	}
	return rows, txns
}

// cpuPerOp reports the process's CPU time per operation since start, as
// "cpu-ns/op": on a shared machine it is steadier than ns/op, which
// counts the time other processes held the core.
func cpuPerOp(b *testing.B, start time.Duration) {
	if b.N > 0 {
		b.ReportMetric(float64(processCPU()-start)/float64(b.N), "cpu-ns/op")
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countingDiscard counts what it drops, for MB/s.
type countingDiscard struct{ n int64 }

func (c *countingDiscard) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func BenchmarkEncode(b *testing.B) {
	rows, txns := benchRows(1024)
	meta := recordrender.Meta{Resource: "transactions", Fields: benchFields}
	dataport := func(newR func(io.Writer, recordrender.Meta) recordrender.Renderer) func(b *testing.B) {
		return func(b *testing.B) {
			w := &countingDiscard{}
			r := newR(w, meta)
			if err := r.Begin(); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			defer cpuPerOp(b, processCPU())
			i := 0
			for b.Loop() {
				if err := r.Write(rows[i%len(rows)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
			if err := r.End(); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(w.n / int64(max(i, 1)))
		}
	}
	b.Run("csv/dataport", dataport(recordrender.NewCSV))
	b.Run("csv/stdlib", func(b *testing.B) {
		w := &countingDiscard{}
		cw := csv.NewWriter(w)
		cw.UseCRLF = true
		cells := make([]string, len(benchFields))
		b.ReportAllocs()
		defer cpuPerOp(b, processCPU())
		i := 0
		for b.Loop() {
			t := txns[i%len(txns)]
			cells[0], cells[1], cells[2], cells[3], cells[4] = t.ID, t.CustomerID, strconv.FormatFloat(t.Amount, 'f', -1, 64), t.Currency, t.Status
			cells[5], cells[6], cells[7], cells[8] = t.Type, t.Gateway, t.Description, t.CreatedTime
			if err := cw.Write(cells); err != nil {
				b.Fatal(err)
			}
			i++
		}
		cw.Flush()
		b.SetBytes(w.n / int64(max(i, 1)))
	})
	b.Run("json/dataport", dataport(recordrender.NewJSON))
	b.Run("json/stdlib", func(b *testing.B) {
		w := &countingDiscard{}
		enc := json.NewEncoder(w)
		b.ReportAllocs()
		defer cpuPerOp(b, processCPU())
		i := 0
		for b.Loop() {
			if err := enc.Encode(&txns[i%len(txns)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.SetBytes(w.n / int64(max(i, 1)))
	})
	b.Run("xml/dataport", dataport(recordrender.NewXML))
	b.Run("xml/stdlib", func(b *testing.B) {
		w := &countingDiscard{}
		enc := xml.NewEncoder(w)
		b.ReportAllocs()
		defer cpuPerOp(b, processCPU())
		i := 0
		for b.Loop() {
			if err := enc.Encode(&txns[i%len(txns)]); err != nil {
				b.Fatal(err)
			}
			i++
		}
		if err := enc.Flush(); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(w.n / int64(max(i, 1)))
	})
}
