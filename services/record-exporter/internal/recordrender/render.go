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
}

var formats = map[exportv1.Format]Format{
	exportv1.Format_FORMAT_CSV:      {Name: "csv", Ext: "csv", ContentType: "text/csv; charset=utf-8", New: NewCSV},
	exportv1.Format_FORMAT_JSON:     {Name: "json", Ext: "json", ContentType: "application/json", New: NewJSON},
	exportv1.Format_FORMAT_JSON_API: {Name: "json-api", Ext: "json", ContentType: "application/vnd.api+json", New: NewJSONAPI},
	exportv1.Format_FORMAT_XML:      {Name: "xml", Ext: "xml", ContentType: "application/xml", New: NewXML},
	exportv1.Format_FORMAT_JSONL:    {Name: "jsonl", Ext: "jsonl", ContentType: "application/x-ndjson", New: NewJSONL},
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
