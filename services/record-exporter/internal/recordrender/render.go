// Package recordrender writes rows of exported records in the formats of
// record exports: CSV, JSON, JSON:API, XML, JSON Lines and a PDF table
// report. Every renderer streams: it writes each row as it gets it and
// holds at most one PDF page of rows, so an export of any size runs in flat
// memory.
//
// A renderer is used once, by one goroutine: Begin, any number of Write,
// End. Errors of the underlying writer are returned as they happen.
package recordrender

import (
	"io"
	"strings"
	"time"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
)

// Row is one record projected onto the export's columns.
type Row struct {
	// ID is the record's id (JSON:API "id").
	ID string
	// Values holds one value per column of Meta.Fields, each a string,
	// float64, bool, time.Time, []string, []any or nil.
	Values []any
}

// Meta describes the export a file belongs to.
type Meta struct {
	// Title heads the PDF report (the export's name, or the resource).
	Title string
	// Resource is the exported resource ("transactions"); it is the
	// JSON:API type and the XML root's attribute.
	Resource string
	// Fields are the columns in order.
	Fields []string
	// Filters are human-readable lines about what was selected
	// ("filter: status:approved", "createdTime from … to …").
	Filters []string
	// Generated is when the export ran.
	Generated time.Time
}

// Renderer writes one file.
type Renderer interface {
	Begin() error
	Write(Row) error
	End() error
}

// Continuer is implemented by renderers whose rows depend on whether rows
// came before them in the file (JSON's separating commas). Continue,
// called before the first Write, makes the renderer write rows as rows
// after others; it returns how many bytes the first row then starts with
// that a file's first row would not (what joining pieces of a file leaves
// out when no earlier piece held a row). Renderers without it write the
// same rows wherever they stand (CSV, XML, JSON Lines).
type Continuer interface {
	Continue() int
}

// Flusher is implemented by renderers that buffer rows themselves (CSV):
// Flush writes them out without closing the file, for a piece that ends
// before the file does.
type Flusher interface {
	Flush() error
}

// Format is one output format.
type Format struct {
	// Name is the format's word ("csv", "json-api").
	Name        string
	Ext         string
	ContentType string
	New         func(w io.Writer, m Meta) Renderer
	// KeepsRows is set for renderers that hold rows after Write returns
	// (PDF, a page at a time). The others are done with a Row, and may be
	// given the same Values slice refilled for every row.
	KeepsRows bool
	// Splittable is set for formats whose file is the header, the rows
	// and the closing bytes, each row rendered alone (with Continuer for
	// what a row depends on): pieces of ranges of rows rendered apart
	// join into the file one renderer writes. A PDF lays out pages.
	Splittable bool
}

var formats = map[exportv1.Format]Format{
	exportv1.Format_FORMAT_CSV:      {Name: "csv", Splittable: true, Ext: "csv", ContentType: "text/csv; charset=utf-8", New: NewCSV},
	exportv1.Format_FORMAT_JSON:     {Name: "json", Splittable: true, Ext: "json", ContentType: "application/json", New: NewJSON},
	exportv1.Format_FORMAT_JSON_API: {Name: "json-api", Splittable: true, Ext: "json", ContentType: "application/vnd.api+json", New: NewJSONAPI},
	exportv1.Format_FORMAT_XML:      {Name: "xml", Splittable: true, Ext: "xml", ContentType: "application/xml", New: NewXML},
	exportv1.Format_FORMAT_JSONL:    {Name: "jsonl", Splittable: true, Ext: "jsonl", ContentType: "application/x-ndjson", New: NewJSONL},
	exportv1.Format_FORMAT_PDF:      {Name: "pdf", Ext: "pdf", ContentType: "application/pdf", New: NewPDF, KeepsRows: true},
}

// Lookup returns the format for a job's format; ok is false for formats
// record exports do not produce (HTML).
func Lookup(f exportv1.Format) (Format, bool) {
	ft, ok := formats[f]
	return ft, ok
}

// oneLine folds line breaks and tabs into spaces, for formats whose cells
// are single lines (PDF).
func oneLine(s string) string {
	if !strings.ContainsAny(s, "\r\n\t") {
		return s
	}
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == '\r' || r == '\n' || r == '\t' }), " ")
}
