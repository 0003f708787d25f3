package roomexport_test

import (
	"compress/gzip"
	"encoding/csv"
	"encoding/json"
	"html/template"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
)

// The encoders alone, on the benchmark room's message mix, beside the
// standard library doing the same job the obvious way: encoding/json of a
// struct with Rocket.Chat's field names, html/template executing one
// message block, encoding/json's Encoder for a line per message, and
// encoding/csv's Writer behind compress/gzip for the CSV. make
// bench-export-rooms runs them with -cpu 1 (GOMAXPROCS=1): one core's
// throughput. Bytes per message differ a little
// (html/template escapes more, the stdlib JSON has no markup pass), so
// compare MB/s as well as ns/op.

const encodeBenchMessages = 4096

func encodeBenchRoom() []*sourcev1.ChatMessage {
	g := newMessageGen("ENC")
	msgs := make([]*sourcev1.ChatMessage, encodeBenchMessages)
	for i := range msgs {
		msgs[i] = g.message(i)
		if i%20 == 0 {
			msgs[i] = g.edit(msgs[i])
		}
	}
	return msgs
}

// countWriter counts what an encoder writes, for b.SetBytes.
type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func benchRenderer(b *testing.B, newRenderer func(io.Writer) roomexport.Renderer) {
	msgs := encodeBenchRoom()
	var c countWriter
	r := newRenderer(&c)
	if err := r.Begin(&sourcev1.Room{Id: "ENC", Name: "enc"}); err != nil {
		b.Fatal(err)
	}
	for _, m := range msgs {
		if err := r.Message(m); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(c.n / encodeBenchMessages)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := r.Message(msgs[i%encodeBenchMessages]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func BenchmarkEncodeJSON(b *testing.B) {
	benchRenderer(b, func(w io.Writer) roomexport.Renderer { return roomexport.NewJSONRenderer(w) })
}

func BenchmarkEncodeJSONL(b *testing.B) {
	benchRenderer(b, roomexport.NewJSONLRenderer)
}

// BenchmarkEncodeCSVGzip counts the uncompressed CSV bytes (SetBytes), as
// its stdlib twin does: MB/s is CSV made and compressed per second.
func BenchmarkEncodeCSVGzip(b *testing.B) {
	msgs := encodeBenchRoom()
	var c countWriter
	r := roomexport.NewCSVGzipRenderer(io.Discard)
	if err := r.Begin(&sourcev1.Room{Id: "ENC", Name: "enc"}); err != nil {
		b.Fatal(err)
	}
	csvBytes(b, msgs, &c)
	b.SetBytes(c.n / encodeBenchMessages)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := r.Message(msgs[i%encodeBenchMessages]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// csvBytes writes msgs as uncompressed CSV rows into c through the stdlib
// encoder, to size the benchmark's bytes per message.
func csvBytes(b *testing.B, msgs []*sourcev1.ChatMessage, c *countWriter) {
	w := csv.NewWriter(c)
	for _, m := range msgs {
		if err := w.Write(stdCSVRow(m, nil)); err != nil {
			b.Fatal(err)
		}
	}
	w.Flush()
}

func stdTime(t interface{ AsTime() time.Time }) string {
	return t.AsTime().UTC().Format(stdTimeLayout)
}

// stdCSVRow is the row of roomexport.CSVColumns the obvious way, into
// row's storage.
func stdCSVRow(m *sourcev1.ChatMessage, row []string) []string {
	row = append(row[:0], m.GetId(), stdTime(m.GetTs()), m.GetUser().GetId(), m.GetUser().GetUsername(), m.GetUser().GetName(),
		m.GetText(), m.GetSystemType(), m.GetThreadId())
	tcount, tlm, edited := "", "", ""
	if m.GetThreadCount() != 0 {
		tcount = strconv.Itoa(int(m.GetThreadCount()))
	}
	if m.GetThreadLastMessage() != nil {
		tlm = stdTime(m.GetThreadLastMessage())
	}
	if m.GetEditedAt() != nil {
		edited = stdTime(m.GetEditedAt())
	}
	var files []string
	for _, a := range m.GetAttachments() {
		files = append(files, roomexport.AssetPath(a.GetFileId(), a.GetName()))
	}
	return append(row, tcount, tlm, edited, m.GetEditedBy().GetUsername(), strings.Join(files, " "))
}

func BenchmarkEncodeCSVGzipStdlib(b *testing.B) {
	msgs := encodeBenchRoom()
	var c countWriter
	csvBytes(b, msgs, &c)
	zw := gzip.NewWriter(io.Discard)
	w := csv.NewWriter(zw)
	var row []string
	b.SetBytes(c.n / encodeBenchMessages)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		row = stdCSVRow(msgs[i%encodeBenchMessages], row)
		if err := w.Write(row); err != nil {
			b.Fatal(err)
		}
		i++
	}
	w.Flush()
	if err := zw.Close(); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkEncodeHTML(b *testing.B) {
	benchRenderer(b, func(w io.Writer) roomexport.Renderer {
		return roomexport.NewHTMLRenderer(w, roomexport.Meta{Generated: time.Now()})
	})
}

type stdUser struct {
	ID       string `json:"_id"`
	Username string `json:"username"`
	Name     string `json:"name,omitempty"`
}

type stdMessage struct {
	ID          string   `json:"_id"`
	RoomID      string   `json:"rid"`
	Msg         string   `json:"msg"`
	TS          string   `json:"ts"`
	User        stdUser  `json:"u"`
	EditedAt    string   `json:"editedAt,omitempty"`
	EditedBy    *stdUser `json:"editedBy,omitempty"`
	ThreadID    string   `json:"tmid,omitempty"`
	ThreadCount uint32   `json:"tcount,omitempty"`
	Type        string   `json:"t,omitempty"`
}

const stdTimeLayout = "2006-01-02T15:04:05.000Z"

func BenchmarkEncodeJSONStdlib(b *testing.B) {
	msgs := encodeBenchRoom()
	var c countWriter
	enc := json.NewEncoder(&c)
	enc.SetEscapeHTML(false)
	encode := func(m *sourcev1.ChatMessage) error {
		v := stdMessage{
			ID: m.GetId(), RoomID: m.GetRoomId(), Msg: m.GetText(),
			TS:       m.GetTs().AsTime().UTC().Format(stdTimeLayout),
			User:     stdUser{ID: m.GetUser().GetId(), Username: m.GetUser().GetUsername(), Name: m.GetUser().GetName()},
			ThreadID: m.GetThreadId(), ThreadCount: m.GetThreadCount(), Type: m.GetSystemType(),
		}
		if m.GetEditedAt() != nil {
			v.EditedAt = m.GetEditedAt().AsTime().UTC().Format(stdTimeLayout)
			v.EditedBy = &stdUser{ID: m.GetEditedBy().GetId(), Username: m.GetEditedBy().GetUsername()}
		}
		return enc.Encode(&v)
	}
	for _, m := range msgs {
		if err := encode(m); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(c.n / encodeBenchMessages)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := encode(msgs[i%encodeBenchMessages]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkEncodeJSONLStdlib is BenchmarkEncodeJSONStdlib's encoder: a
// line per message is what json.Encoder writes anyway.
func BenchmarkEncodeJSONLStdlib(b *testing.B) { BenchmarkEncodeJSONStdlib(b) }

var stdMessageTemplate = template.Must(template.New("msg").Parse(`<div class="msg{{if .SystemType}} sys{{else if .ThreadId}} reply{{end}}" id="m-{{.Id}}">
<div class="meta"><span class="name">{{.User.Name}}</span> <span class="user">@{{.User.Username}}</span> <time datetime="{{.TS}}">{{.Shown}}</time>{{if .Edited}} <span class="edited">(edited by @{{.EditedBy}})</span>{{end}}</div>
{{if .ThreadId}}<div class="thread-ref">↳ in thread of <a href="#m-{{.ThreadId}}">the thread's first message</a></div>
{{end}}<div class="text">{{.Text}}</div>
{{range .Attachments}}<ul class="files"><li><a href="assets/{{.FileId}}-{{.Name}}">{{.Title}}</a> <span class="fmeta">{{.ContentType}}</span></li></ul>
{{end}}</div>
`))

type stdHTMLMessage struct {
	*sourcev1.ChatMessage
	TS, Shown, EditedBy string
	Edited              bool
}

func BenchmarkEncodeHTMLStdlib(b *testing.B) {
	msgs := encodeBenchRoom()
	var c countWriter
	encode := func(m *sourcev1.ChatMessage) error {
		ts := m.GetTs().AsTime().UTC()
		v := stdHTMLMessage{ChatMessage: m, TS: ts.Format(stdTimeLayout), Shown: ts.Format("2006-01-02 15:04:05 UTC"),
			Edited: m.GetEditedAt() != nil, EditedBy: m.GetEditedBy().GetUsername()}
		return stdMessageTemplate.Execute(&c, v)
	}
	for _, m := range msgs {
		if err := encode(m); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(c.n / encodeBenchMessages)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := encode(msgs[i%encodeBenchMessages]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
