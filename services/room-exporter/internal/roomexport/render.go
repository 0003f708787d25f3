package roomexport

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"time"

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

type jsonUser struct {
	ID       string `json:"_id"`
	Username string `json:"username"`
	Name     string `json:"name,omitempty"`
}

type jsonEditor struct {
	ID       string `json:"_id"`
	Username string `json:"username"`
}

type jsonFile struct {
	ID   string `json:"_id"`
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
}

type jsonAttachment struct {
	Type        string `json:"type"`
	Title       string `json:"title"`
	TitleLink   string `json:"title_link"`
	Description string `json:"description,omitempty"`
}

type jsonMessage struct {
	ID          string           `json:"_id"`
	RoomID      string           `json:"rid"`
	Msg         string           `json:"msg"`
	TS          string           `json:"ts"`
	User        jsonUser         `json:"u"`
	EditedAt    string           `json:"editedAt,omitempty"`
	EditedBy    *jsonEditor      `json:"editedBy,omitempty"`
	ThreadID    string           `json:"tmid,omitempty"`
	ThreadCount uint32           `json:"tcount,omitempty"`
	ThreadLast  string           `json:"tlm,omitempty"`
	Type        string           `json:"t,omitempty"`
	File        *jsonFile        `json:"file,omitempty"`
	Attachments []jsonAttachment `json:"attachments,omitempty"`
}

// AssetPath is where an attachment's bytes sit inside a downloaded export,
// relative to the document: "assets/<fileId>-<name>", with the name cleaned
// like every file name so that no link can leave the archive.
func AssetPath(fileID, name string) string {
	return "assets/" + objects.CleanFileName(fileID+"-"+name, "file")
}

// jsonRenderer writes {"room": {...}, "messages": [...]} with one message
// per line. Every message is encoded on its own, so memory does not depend
// on how many there are.
type jsonRenderer struct {
	w   io.Writer
	buf bytes.Buffer
	enc *json.Encoder
	n   int
	// msg and its parts are reused for every message to keep allocations
	// down to the strings encoding/json itself needs.
	msg    jsonMessage
	editor jsonEditor
	file   jsonFile
	atts   []jsonAttachment
}

// NewJSONRenderer returns the Rocket.Chat-compatible JSON renderer.
func NewJSONRenderer(w io.Writer) Renderer {
	r := &jsonRenderer{w: w}
	r.enc = json.NewEncoder(&r.buf)
	// Messages are data, not HTML: keep <, > and & readable.
	r.enc.SetEscapeHTML(false)
	return r
}

// encode writes v without the newline json.Encoder appends.
func (r *jsonRenderer) encode(prefix string, v any) error {
	r.buf.Reset()
	r.buf.WriteString(prefix)
	if err := r.enc.Encode(v); err != nil {
		return fmt.Errorf("encode json: %w", err)
	}
	_, err := r.w.Write(bytes.TrimSuffix(r.buf.Bytes(), []byte("\n")))
	return err
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
	if err := r.encode(`{"room":`, jr); err != nil {
		return err
	}
	_, err := io.WriteString(r.w, ",\n\"messages\":[")
	return err
}

func (r *jsonRenderer) Message(m *sourcev1.ChatMessage) error {
	jm := &r.msg
	r.atts = r.atts[:0]
	*jm = jsonMessage{
		ID:          m.GetId(),
		RoomID:      m.GetRoomId(),
		Msg:         m.GetText(),
		TS:          formatTime(m.GetTs()),
		User:        jsonUser{ID: m.GetUser().GetId(), Username: m.GetUser().GetUsername(), Name: m.GetUser().GetName()},
		EditedAt:    formatTime(m.GetEditedAt()),
		ThreadID:    m.GetThreadId(),
		ThreadCount: m.GetThreadCount(),
		ThreadLast:  formatTime(m.GetThreadLastMessage()),
		Type:        m.GetSystemType(),
	}
	if jm.TS == "" {
		// ts is not optional in Rocket.Chat; an unset one reads as the epoch.
		jm.TS = formatTime(&timestamppb.Timestamp{})
	}
	if e := m.GetEditedBy(); e != nil {
		r.editor = jsonEditor{ID: e.GetId(), Username: e.GetUsername()}
		jm.EditedBy = &r.editor
	}
	for i, a := range m.GetAttachments() {
		if i == 0 {
			r.file = jsonFile{ID: a.GetFileId(), Name: a.GetName(), Type: a.GetContentType()}
			jm.File = &r.file
		}
		title := a.GetTitle()
		if title == "" {
			title = a.GetName()
		}
		r.atts = append(r.atts, jsonAttachment{
			Type:        "file",
			Title:       title,
			TitleLink:   AssetPath(a.GetFileId(), a.GetName()),
			Description: a.GetDescription(),
		})
	}
	if len(r.atts) > 0 {
		jm.Attachments = r.atts
	}
	prefix := "\n"
	if r.n > 0 {
		prefix = ",\n"
	}
	r.n++
	return r.encode(prefix, jm)
}

func (r *jsonRenderer) End() error {
	end := "]}\n"
	if r.n > 0 {
		end = "\n]}\n"
	}
	_, err := io.WriteString(r.w, end)
	return err
}
