package roomexport_test

import (
	"encoding/json"
	"html/template"
	"io"
	"testing"
	"time"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
)

// The encoders alone, on the benchmark room's message mix, beside the
// standard library doing the same job the obvious way: encoding/json of a
// struct with Rocket.Chat's field names, html/template executing one
// message block. make bench-export-rooms runs them with -cpu 1
// (GOMAXPROCS=1): one core's throughput. Bytes per message differ a little
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
