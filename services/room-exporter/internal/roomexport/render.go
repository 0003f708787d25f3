package roomexport

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/roomtype"
)

// Renderer writes one room's export document in one format. The exporter
// calls Begin once, Message once per exported message in sending order, then
// End. A Renderer must not keep messages after Message returns (the exporter
// reuses them, and memory has to stay flat whatever the room's size); it is
// used by one goroutine.
type Renderer interface {
	Begin(room *sourcev1.Room) error
	Message(m *sourcev1.ChatMessage) error
	End() error
}

// Format is a document encoding the exporter can produce.
type Format struct {
	// ContentType is stored with the object and reported in PartUploaded.
	ContentType string
	// Ext is the file name extension, with the dot.
	Ext string
	// New returns a Renderer writing to w.
	New func(w io.Writer, meta Meta) Renderer
}

// Meta is what a document says about its export besides the room: the
// requested range (zero for an open end) and when it was generated.
type Meta struct {
	From, To  time.Time
	Generated time.Time
}

// formats lists the encodings room exports support; other formats are
// rejected.
func formats() map[exportv1.Format]Format {
	return map[exportv1.Format]Format{
		exportv1.Format_FORMAT_JSON: {ContentType: "application/json", Ext: ".json",
			New: func(w io.Writer, _ Meta) Renderer { return NewJSONRenderer(w) }},
		exportv1.Format_FORMAT_HTML: {ContentType: "text/html; charset=utf-8", Ext: ".html", New: NewHTMLRenderer},
		exportv1.Format_FORMAT_JSONL: {ContentType: "application/x-ndjson", Ext: ".jsonl",
			New: func(w io.Writer, _ Meta) Renderer { return NewJSONLRenderer(w) }},
		// A room's CSV is always gzip-compressed: the object is the
		// compressed file (application/gzip, no Content-Encoding), so a
		// download saves it as .csv.gz rather than a client inflating it.
		exportv1.Format_FORMAT_CSV: {ContentType: "application/gzip", Ext: ".csv.gz",
			New: func(w io.Writer, _ Meta) Renderer { return NewCSVGzipRenderer(w) }},
	}
}

// timeLayout is Rocket.Chat's: UTC, millisecond precision, literal Z.
const timeLayout = "2006-01-02T15:04:05.000Z"

func formatTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format(timeLayout)
}

// The json* types carry Rocket.Chat's field names; see the "Room export
// JSON document" section of docs/ARCHITECTURE.md.
type jsonRoom struct {
	ID        string   `json:"_id"`
	Name      string   `json:"name,omitempty"`
	Type      string   `json:"t,omitempty"`
	Topic     string   `json:"topic,omitempty"`
	TS        string   `json:"ts,omitempty"`
	Usernames []string `json:"usernames,omitempty"`
}

// AssetPath is where an attachment's bytes sit inside a downloaded export,
// relative to the document: "assets/<fileId>-<name>", with the name cleaned
// like every file name so that no link can leave the archive.
func AssetPath(fileID, name string) string {
	return "assets/" + objects.CleanFileName(fileID+"-"+name, "file")
}

// jsonRenderer writes {"room": {...}, "messages": [...]} with one message
// per line. Every message is encoded on its own into a reused buffer, so
// memory does not depend on how many there are.
//
// Messages are appended by hand (appendJSONMessage) rather than through
// encoding/json, which spent most of an export's encoder time on
// reflection and a string per timestamp; the bytes are encoding/json's
// with SetEscapeHTML(false), field for field (TestJSONMessageEncoding
// checks them against it).
type jsonRenderer struct {
	w   io.Writer
	buf []byte
	n   int
}

// NewJSONRenderer returns the Rocket.Chat-compatible JSON renderer.
func NewJSONRenderer(w io.Writer) Renderer {
	return &jsonRenderer{w: w, buf: make([]byte, 0, 4096)}
}

func (r *jsonRenderer) Begin(room *sourcev1.Room) error {
	jr := jsonRoom{
		ID:        room.GetId(),
		Name:      room.GetName(),
		Type:      roomtype.Letter(room.GetType()),
		Topic:     room.GetTopic(),
		TS:        formatTime(room.GetCreatedAt()),
		Usernames: room.GetUsernames(),
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	// Rooms are data, not HTML: keep <, > and & readable.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(jr); err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	r.buf = append(append(r.buf[:0], `{"room":`...), bytes.TrimSuffix(b.Bytes(), []byte("\n"))...)
	r.buf = append(r.buf, ",\n\"messages\":["...)
	_, err := r.w.Write(r.buf)
	return err
}

func (r *jsonRenderer) Message(m *sourcev1.ChatMessage) error {
	b := r.buf[:0]
	if r.n > 0 {
		b = append(b, ',')
	}
	b = append(b, '\n')
	b = appendJSONMessage(b, m)
	r.buf = b
	r.n++
	_, err := r.w.Write(b)
	return err
}

// appendJSONMessage appends m as the JSON object Rocket.Chat exports
// (docs/ARCHITECTURE.md, "Room export JSON document"): fields in this
// order, the optional ones only when set.
func appendJSONMessage(b []byte, m *sourcev1.ChatMessage) []byte {
	b = append(b, `{"_id":`...)
	b = appendJSONString(b, m.GetId())
	b = append(b, `,"rid":`...)
	b = appendJSONString(b, m.GetRoomId())
	b = append(b, `,"msg":`...)
	b = appendJSONString(b, m.GetText())
	b = append(b, `,"ts":`...)
	// ts is not optional in Rocket.Chat; an unset one reads as the epoch.
	b = appendJSONTime(b, m.GetTs().AsTime())
	u := m.GetUser()
	b = append(b, `,"u":{"_id":`...)
	b = appendJSONString(b, u.GetId())
	b = append(b, `,"username":`...)
	b = appendJSONString(b, u.GetUsername())
	if u.GetName() != "" {
		b = append(b, `,"name":`...)
		b = appendJSONString(b, u.GetName())
	}
	b = append(b, '}')
	if t := m.GetEditedAt(); t != nil {
		b = append(b, `,"editedAt":`...)
		b = appendJSONTime(b, t.AsTime())
	}
	if e := m.GetEditedBy(); e != nil {
		b = append(b, `,"editedBy":{"_id":`...)
		b = appendJSONString(b, e.GetId())
		b = append(b, `,"username":`...)
		b = appendJSONString(b, e.GetUsername())
		b = append(b, '}')
	}
	if v := m.GetThreadId(); v != "" {
		b = append(b, `,"tmid":`...)
		b = appendJSONString(b, v)
	}
	if n := m.GetThreadCount(); n != 0 {
		b = append(b, `,"tcount":`...)
		b = strconv.AppendUint(b, uint64(n), 10)
	}
	if t := m.GetThreadLastMessage(); t != nil {
		b = append(b, `,"tlm":`...)
		b = appendJSONTime(b, t.AsTime())
	}
	if v := m.GetSystemType(); v != "" {
		b = append(b, `,"t":`...)
		b = appendJSONString(b, v)
	}
	atts := m.GetAttachments()
	if len(atts) > 0 {
		a := atts[0]
		b = append(b, `,"file":{"_id":`...)
		b = appendJSONString(b, a.GetFileId())
		b = append(b, `,"name":`...)
		b = appendJSONString(b, a.GetName())
		if a.GetContentType() != "" {
			b = append(b, `,"type":`...)
			b = appendJSONString(b, a.GetContentType())
		}
		b = append(b, `},"attachments":[`...)
		for i, a := range atts {
			if i > 0 {
				b = append(b, ',')
			}
			title := a.GetTitle()
			if title == "" {
				title = a.GetName()
			}
			b = append(b, `{"type":"file","title":`...)
			b = appendJSONString(b, title)
			b = append(b, `,"title_link":`...)
			b = appendJSONString(b, AssetPath(a.GetFileId(), a.GetName()))
			if a.GetDescription() != "" {
				b = append(b, `,"description":`...)
				b = appendJSONString(b, a.GetDescription())
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// appendJSONTime appends t as a JSON string in timeLayout.
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.UTC().AppendFormat(b, timeLayout)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string the way encoding/json does
// with SetEscapeHTML(false): quote, backslash and control characters
// escaped (\b \f \n \r \t by name), invalid UTF-8 as \ufffd, U+2028 and
// U+2029 escaped, everything else as is.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		c, size := utf8.DecodeRuneInString(s[i:])
		if c == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if c == '\u2028' || c == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[c&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func (r *jsonRenderer) End() error {
	end := "]}\n"
	if r.n > 0 {
		end = "\n]}\n"
	}
	_, err := io.WriteString(r.w, end)
	return err
}
