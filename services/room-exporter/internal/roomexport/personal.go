package roomexport

import (
	"encoding/json"
	"errors"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/pseudonym"
)

// A room file of a personal data download is written as Rocket.Chat's
// user data download writes it (exportRoomMessagesToFile with hideUsers):
// in JSON mode one JSON object per line, {msg, username, ts, attachments,
// type}, and in both modes everyone but the user whose data it is
// pseudonymised. A room export (rooms.export) keeps every name and the
// full message documents. See "User data download parts" in
// docs/ARCHITECTURE.md.

// pseudonyms replaces other people's usernames in a personal download
// with pseudonym.Of: the gateway lists the same pseudonyms in the
// operation's userNameTable, from the names the room part reports as
// hidden (hidden).
type pseudonyms struct {
	salt string
	self string
	// memo keeps what was derived; a room has few distinct senders. Its
	// keys are the names the file hides.
	memo map[string]string
	// restored are names hidden before the checkpoint this attempt
	// resumed from, and restoredTruncated whether there were more.
	restored          []string
	restoredTruncated bool
}

func newPseudonyms(jobID, self string) *pseudonyms {
	return &pseudonyms{salt: jobID, self: self, memo: map[string]string{}}
}

// MaxHiddenNames bounds the usernames a room part reports as hidden
// (PartUploaded.hidden_usernames): the announcement and the job record
// stay small however many people wrote in a room. Past it the part
// reports the first names in sort order and says it left some out; the
// gateway's userNameTable then lacks the others.
const MaxHiddenNames = 1000

// hidden is the usernames pseudonymised so far, in this attempt and the
// ones it resumed, sorted, at most MaxHiddenNames of them, and whether
// there were more.
func (p *pseudonyms) hidden() (names []string, truncated bool) {
	names = append(slices.Collect(maps.Keys(p.memo)), p.restored...)
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) > MaxHiddenNames {
		names, truncated = names[:MaxHiddenNames], true
	}
	return names, truncated || p.restoredTruncated
}

// name is username's pseudonym; the user's own name and "" stay as they
// are.
func (p *pseudonyms) name(username string) string {
	if username == "" || username == p.self {
		return username
	}
	if v, ok := p.memo[username]; ok {
		return v
	}
	v := pseudonym.Of(p.salt, username)
	p.memo[username] = v
	return v
}

// ref is u with its username pseudonymised and the name and id dropped
// (either would tell who it is); the user's own ref is kept.
func (p *pseudonyms) ref(u *sourcev1.UserRef) *sourcev1.UserRef {
	if u == nil || u.GetUsername() == p.self {
		return u
	}
	return &sourcev1.UserRef{Username: p.name(u.GetUsername())}
}

// subjectIsUsername lists the system messages whose text is the username
// the event is about (see systemSentence).
var subjectIsUsername = map[string]bool{
	"uj": true, "ul": true, "au": true, "ru": true, "user-muted": true, "user-unmuted": true,
}

// errNotResumable is what a wrapper of a renderer that cannot resume says.
var errNotResumable = errors.New("renderer cannot resume")

// hidingRenderer pseudonymises other people before its inner renderer
// sees a message or the room.
type hidingRenderer struct {
	inner Renderer
	names *pseudonyms
	// m is the rewritten copy: the caller's message is reused and must
	// not change under it.
	m sourcev1.ChatMessage
}

func (r *hidingRenderer) Begin(room *sourcev1.Room) error {
	if len(room.GetUsernames()) == 0 {
		return r.inner.Begin(room)
	}
	c := proto.CloneOf(room)
	for i, u := range c.Usernames {
		c.Usernames[i] = r.names.name(u)
	}
	return r.inner.Begin(c)
}

func (r *hidingRenderer) Message(m *sourcev1.ChatMessage) error {
	// A shallow copy: only the fields replaced below differ, the rest are
	// shared with m and not written to.
	r.m = sourcev1.ChatMessage{
		Id: m.GetId(), RoomId: m.GetRoomId(), Text: m.GetText(), Ts: m.GetTs(),
		User: r.names.ref(m.GetUser()), EditedAt: m.GetEditedAt(), EditedBy: r.names.ref(m.GetEditedBy()),
		ThreadId: m.GetThreadId(), ThreadCount: m.GetThreadCount(), ThreadLastMessage: m.GetThreadLastMessage(),
		SystemType: m.GetSystemType(), Attachments: m.GetAttachments(),
	}
	if subjectIsUsername[m.GetSystemType()] {
		r.m.Text = r.names.name(m.GetText())
	}
	return r.inner.Message(&r.m)
}

func (r *hidingRenderer) End() error { return r.inner.End() }

// hidingState is a hidingRenderer's checkpoint: the pseudonyms derive
// from the job, but which names the part hid before the checkpoint is
// known only from the messages it will not read again.
type hidingState struct {
	Hidden    []string `json:"hidden,omitempty"`
	Truncated bool     `json:"hidden_truncated,omitempty"`
	// Renderer is the inner renderer's state. A checkpoint written
	// before names were kept is that state alone, without this field.
	Renderer json.RawMessage `json:"renderer"`
}

func (r *hidingRenderer) saveState() ([]byte, error) {
	s, ok := r.inner.(resumable)
	if !ok {
		return nil, errNotResumable
	}
	inner, err := s.saveState()
	if err != nil {
		return nil, err
	}
	st := hidingState{Renderer: inner}
	st.Hidden, st.Truncated = r.names.hidden()
	return json.Marshal(st)
}

func (r *hidingRenderer) restoreState(data []byte) error {
	s, ok := r.inner.(resumable)
	if !ok {
		return errNotResumable
	}
	var st hidingState
	if json.Unmarshal(data, &st) != nil || st.Renderer == nil {
		return s.restoreState(data)
	}
	r.names.restored, r.names.restoredTruncated = st.Hidden, st.Truncated
	return s.restoreState(st.Renderer)
}

// personalFormat is format as a personal download's room file: JSON lines
// in JSON mode, and other people pseudonymised. names is what every
// renderer of the format hides people with: once the file is written, it
// knows whom the file hid.
func personalFormat(format Format, json bool, jobID, self string) (_ Format, names *pseudonyms) {
	inner := format.New
	if json {
		format.ContentType = "application/x-ndjson"
		inner = func(w io.Writer, _ Meta) Renderer { return &lineRenderer{w: w, buf: make([]byte, 0, 4096)} }
	}
	names = newPseudonyms(jobID, self)
	format.New = func(w io.Writer, meta Meta) Renderer {
		return &hidingRenderer{inner: inner(w, meta), names: names}
	}
	return format, names
}

// lineRenderer writes one JSON object per message and line, Rocket.Chat's
// getMessageData: {"msg","username","ts"} then "attachments" and "type"
// when the message has them. A system message's msg is its sentence, as
// Rocket.Chat puts its translated sentence there. Nothing precedes or
// follows the messages: the file is JSON lines, not one JSON document.
type lineRenderer struct {
	w   io.Writer
	buf []byte
}

func (r *lineRenderer) Begin(*sourcev1.Room) error { return nil }

func (r *lineRenderer) Message(m *sourcev1.ChatMessage) error {
	r.buf = appendLineMessage(r.buf[:0], m)
	_, err := r.w.Write(r.buf)
	return err
}

func (r *lineRenderer) End() error { return nil }

// A line does not depend on the lines before it.
func (r *lineRenderer) saveState() ([]byte, error) { return []byte("{}"), nil }
func (r *lineRenderer) restoreState([]byte) error  { return nil }

func appendLineMessage(b []byte, m *sourcev1.ChatMessage) []byte {
	text := m.GetText()
	if m.GetSystemType() != "" {
		text = plainSystemSentence(m)
	}
	b = append(b, `{"msg":`...)
	b = appendJSONString(b, text)
	b = append(b, `,"username":`...)
	b = appendJSONString(b, firstNonEmpty(m.GetUser().GetUsername(), m.GetUser().GetName()))
	b = append(b, `,"ts":`...)
	b = appendJSONTime(b, m.GetTs().AsTime())
	if atts := m.GetAttachments(); len(atts) > 0 {
		b = append(b, `,"attachments":[`...)
		for i, a := range atts {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendLineAttachment(b, a)
		}
		b = append(b, ']')
	}
	if t := m.GetSystemType(); t != "" {
		b = append(b, `,"type":`...)
		b = appendJSONString(b, t)
	}
	return append(b, "}\n"...)
}

// appendLineAttachment is Rocket.Chat's getAttachmentData for an uploaded
// file: the links point to the file's place in the download (assets/…)
// rather than to the server, and the fields Rocket.Chat leaves undefined
// (so JSON.stringify drops them) are left out.
func appendLineAttachment(b []byte, a *sourcev1.Attachment) []byte {
	path := AssetPath(a.GetFileId(), a.GetName())
	b = append(b, `{"type":"file","title":`...)
	b = appendJSONString(b, firstNonEmpty(a.GetTitle(), a.GetName()))
	b = append(b, `,"title_link":`...)
	b = appendJSONString(b, path)
	if ct := a.GetContentType(); strings.HasPrefix(ct, "image/") {
		b = append(b, `,"image_url":`...)
		b = appendJSONString(b, path)
		b = append(b, `,"image_type":`...)
		b = appendJSONString(b, ct)
		b = append(b, `,"image_size":`...)
		b = strconv.AppendUint(b, a.GetSize(), 10)
	}
	b = append(b, `,"url":`...)
	b = appendJSONString(b, path)
	b = append(b, `,"remote":false,"fileId":`...)
	b = appendJSONString(b, a.GetFileId())
	b = append(b, `,"fileName":`...)
	b = appendJSONString(b, a.GetName())
	return append(b, '}')
}
