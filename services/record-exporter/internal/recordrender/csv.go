package recordrender

import (
	"encoding/csv"
	"io"

	"dataport.dev/shared/recordquery"
)

// csvRenderer writes RFC 4180 CSV (CRLF line ends, quotes where needed)
// with a header row of the field names.
type csvRenderer struct {
	w      *csv.Writer
	fields []string
	cells  []string
}

// NewCSV returns a CSV renderer. Text cells that a spreadsheet would run
// as a formula (starting with = + - @ TAB or CR) are prefixed with a single
// quote (OWASP "CSV injection"); numbers are written as they are, so a
// negative amount stays a number.
func NewCSV(w io.Writer, m Meta) Renderer {
	cw := csv.NewWriter(w)
	cw.UseCRLF = true
	return &csvRenderer{w: cw, fields: m.Fields, cells: make([]string, len(m.Fields))}
}

func (r *csvRenderer) Begin() error {
	for i, f := range r.fields {
		r.cells[i] = SafeCell(f)
	}
	return r.w.Write(r.cells)
}

func (r *csvRenderer) Write(row Row) error {
	for i := range r.cells {
		var v any
		if i < len(row.Values) {
			v = row.Values[i]
		}
		s := recordquery.FormatValue(v)
		switch v.(type) {
		case float64, float32, int, int64, int32, uint64, uint32, bool:
		default:
			s = SafeCell(s)
		}
		r.cells[i] = s
	}
	// encoding/csv buffers; its errors surface on Flush or the next Write.
	return r.w.Write(r.cells)
}

func (r *csvRenderer) End() error { return r.Flush() }

// Flush writes the buffered rows; CSV has no closing bytes.
func (r *csvRenderer) Flush() error {
	r.w.Flush()
	return r.w.Error()
}

// SafeCell neutralises a text cell that spreadsheets would evaluate.
func SafeCell(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}
