package roomexport

import (
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// The HTML export is one self-contained page: inline CSS, no scripts, no
// external resources, attachments linked relative to the page
// ("assets/<fileId>-<name>", the layout of the downloaded archive). See the
// "HTML export" section of docs/ARCHITECTURE.md.
//
// It is written message by message with a hand-written escaper:
// html/template per message is the slowest stage of an HTML export (see
// DESIGN.md), and the page never exists in memory as a whole. Every piece
// of message content goes through appendEscaped before any markup is
// added, and the markup added afterwards is fixed strings plus http(s)
// links taken from already-escaped text, so nothing a sender writes can
// become an element, an attribute or a script.
//
// Times are shown in UTC with the zone named ("2026-05-01 09:30:00 UTC"):
// an export is read offline, often by someone in another zone than the
// sender's, and the page runs no script that could localise them; the
// machine-readable time is in each <time datetime>.

// htmlTimeLayout is how times read on the page.
const htmlTimeLayout = "2006-01-02 15:04:05 UTC"

// maxThreadRoots bounds the thread roots whose excerpt the renderer keeps
// for replies that arrive later; see htmlRenderer.roots.
const maxThreadRoots = 4096

// excerptRunes is the length of a thread root's excerpt in a reply.
const excerptRunes = 80

// unkeptRootWords name a reply's thread root whose excerpt is not kept.
const unkeptRootWords = "the thread's first message"

const htmlStyle = `body{font:15px/1.45 -apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1f2329;background:#fff;margin:0 auto;max-width:52rem;padding:1rem 1.25rem}
header{border-bottom:2px solid #e4e7ea;margin-bottom:1rem;padding-bottom:.5rem}
h1{font-size:1.5rem;margin:.2rem 0}
.info{color:#6c727a;font-size:.85rem;margin:.15rem 0}
.msg{padding:.35rem .5rem;border-radius:4px;margin:.15rem 0}
.msg:target{background:#fff6d6}
.meta{font-size:.85rem;color:#6c727a}
.name{font-weight:600;color:#1f2329}
.edited{font-style:italic}
.text{white-space:normal;overflow-wrap:anywhere}
.reply{margin-left:2rem;border-left:3px solid #d0d6dc;padding-left:.75rem}
.thread-ref,.thread{font-size:.8rem;color:#6c727a}
.thread-ref a,.thread a{color:#1d74f5}
.sys{color:#6c727a;font-style:italic;font-size:.9rem}
pre{background:#f4f5f6;border:1px solid #e4e7ea;border-radius:4px;padding:.5rem;overflow-x:auto;white-space:pre-wrap}
code{background:#f4f5f6;border-radius:3px;padding:0 .2rem;font-family:Menlo,Consolas,monospace;font-size:.9em}
pre code{background:none;padding:0}
.files{list-style:none;margin:.25rem 0;padding:0}
.files img{display:block;max-width:24rem;max-height:16rem;border:1px solid #e4e7ea;border-radius:4px;margin:.2rem 0}
.fmeta{color:#6c727a;font-size:.8rem}
footer{border-top:1px solid #e4e7ea;margin-top:1rem;padding-top:.5rem;color:#6c727a;font-size:.8rem}
`

// htmlRenderer writes the page. buf is reused for every message, so memory
// stays flat whatever the room's size; roots is bounded by maxThreadRoots.
type htmlRenderer struct {
	w        io.Writer
	meta     Meta
	fragment bool
	buf      []byte
	tmp      []byte
	n        int
	written  uint64 // bytes flushed to w

	// roots remembers the excerpt of recent thread roots so a reply can
	// name the message it answers. A reply can come long after its root;
	// keeping every root would make memory grow with the room, so the
	// oldest roots are forgotten (ring order) and their replies then only
	// link to the root's anchor.
	roots    map[string]string
	rootRing []string
	rootNext int

	// rec, when not nil, records the thread roots and the replies whose
	// root is not kept, for a split export's other ranges (splithtml.go).
	rec *rootRecorder
}

// NewHTMLRenderer returns the renderer of the HTML page of a room export.
func NewHTMLRenderer(w io.Writer, meta Meta) Renderer {
	return &htmlRenderer{w: w, meta: meta, roots: make(map[string]string), buf: make([]byte, 0, 4096)}
}

// newHTMLFragment renders messages as a mail body fragment: the same
// markup without the page around it, styled by a scoped <style> block.
func newHTMLFragment(w io.Writer) *htmlRenderer {
	return &htmlRenderer{w: w, fragment: true, roots: make(map[string]string), buf: make([]byte, 0, 4096)}
}

// RoomTitle is how a room is named to people: its name, or for a direct
// room without one the people in it.
func RoomTitle(room *sourcev1.Room) string {
	switch {
	case room.GetName() != "":
		return room.GetName()
	case len(room.GetUsernames()) > 0:
		return "Direct messages: " + strings.Join(room.GetUsernames(), ", ")
	}
	return room.GetId()
}

func roomTypeWords(t sourcev1.RoomType) string {
	switch t {
	case sourcev1.RoomType_ROOM_TYPE_CHANNEL:
		return "Public channel"
	case sourcev1.RoomType_ROOM_TYPE_PRIVATE:
		return "Private group"
	case sourcev1.RoomType_ROOM_TYPE_DIRECT:
		return "Direct messages"
	}
	return "Room"
}

func (r *htmlRenderer) flush() error {
	n, err := r.w.Write(r.buf)
	r.written += uint64(n)
	r.buf = r.buf[:0]
	return err
}

func (r *htmlRenderer) Begin(room *sourcev1.Room) error {
	b := r.buf[:0]
	if r.fragment {
		b = append(b, `<div class="dataport-mail"><style>`...)
		b = append(b, scopeStyle(htmlStyle, ".dataport-mail ")...)
		b = append(b, "</style>\n"...)
		r.buf = b
		return r.flush()
	}
	title := RoomTitle(room)
	b = append(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"...)
	b = append(b, `<meta name="viewport" content="width=device-width, initial-scale=1">`+"\n"...)
	// No scripts, no remote loads, even if a future bug let markup through.
	b = append(b, `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'">`+"\n"...)
	b = append(b, "<title>"...)
	b = appendEscaped(b, title)
	b = append(b, " — room export</title>\n<style>\n"...)
	b = append(b, htmlStyle...)
	b = append(b, "</style>\n</head>\n<body>\n<header>\n<h1>"...)
	b = appendEscaped(b, title)
	b = append(b, "</h1>\n<p class=\"info\">"...)
	b = append(b, roomTypeWords(room.GetType())...)
	if room.GetType() == sourcev1.RoomType_ROOM_TYPE_DIRECT && len(room.GetUsernames()) > 0 && room.GetName() != "" {
		b = append(b, " · "...)
		b = appendEscaped(b, strings.Join(room.GetUsernames(), ", "))
	}
	b = append(b, " · id "...)
	b = appendEscaped(b, room.GetId())
	b = append(b, "</p>\n"...)
	if room.GetTopic() != "" {
		b = append(b, "<p class=\"info topic\">Topic: "...)
		b = appendEscaped(b, room.GetTopic())
		b = append(b, "</p>\n"...)
	}
	b = append(b, "<p class=\"info range\">"...)
	switch from, to := r.meta.From, r.meta.To; {
	case from.IsZero() && to.IsZero():
		b = append(b, "All messages"...)
	case to.IsZero():
		b = append(b, "Messages from "...)
		b = appendTime(b, from)
	case from.IsZero():
		b = append(b, "Messages until "...)
		b = appendTime(b, to)
	default:
		b = append(b, "Messages from "...)
		b = appendTime(b, from)
		b = append(b, " to "...)
		b = appendTime(b, to)
	}
	b = append(b, "</p>\n"...)
	if !r.meta.Generated.IsZero() {
		b = append(b, "<p class=\"info generated\">Exported "...)
		b = appendTime(b, r.meta.Generated)
		b = append(b, ". All times are UTC.</p>\n"...)
	}
	b = append(b, "</header>\n<main>\n"...)
	r.buf = b
	return r.flush()
}

// scopeStyle prefixes every rule of css with scope, so a mail fragment's
// style does not restyle the rest of the mail client's page.
func scopeStyle(css, scope string) string {
	var sb strings.Builder
	for line := range strings.SplitSeq(strings.TrimSpace(css), "\n") {
		sel, rest, ok := strings.Cut(line, "{")
		if !ok {
			continue
		}
		if sel == "body" {
			sel = ""
		}
		parts := strings.Split(sel, ",")
		for i, p := range parts {
			parts[i] = strings.TrimSpace(scope + p)
		}
		sb.WriteString(strings.Join(parts, ","))
		sb.WriteByte('{')
		sb.WriteString(rest)
	}
	return sb.String()
}

func appendTime(b []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(b, htmlTimeLayout)
}

func appendTimeElem(b []byte, t time.Time) []byte {
	b = append(b, `<time datetime="`...)
	b = t.UTC().AppendFormat(b, timeLayout)
	b = append(b, `">`...)
	b = appendTime(b, t)
	return append(b, "</time>"...)
}

func (r *htmlRenderer) Message(m *sourcev1.ChatMessage) error {
	b := r.buf[:0]
	class := "msg"
	switch {
	case m.GetSystemType() != "":
		class = "msg sys"
	case m.GetThreadId() != "":
		class = "msg reply"
	}
	b = append(b, `<div class="`...)
	b = append(b, class...)
	b = append(b, `" id="m-`...)
	b = appendEscaped(b, m.GetId())
	b = append(b, "\">\n"...)

	if m.GetSystemType() != "" {
		b = append(b, `<div class="text">`...)
		b = appendSystemSentence(b, m)
		b = append(b, ` <span class="meta">`...)
		b = appendTimeElem(b, m.GetTs().AsTime())
		b = append(b, "</span></div>\n</div>\n"...)
		r.buf = b
		r.n++
		return r.flush()
	}

	u := m.GetUser()
	b = append(b, `<div class="meta"><span class="name">`...)
	if u.GetName() != "" {
		b = appendEscaped(b, u.GetName())
	} else {
		b = appendEscaped(b, u.GetUsername())
	}
	b = append(b, `</span> <span class="user">@`...)
	b = appendEscaped(b, u.GetUsername())
	b = append(b, "</span> "...)
	b = appendTimeElem(b, m.GetTs().AsTime())
	if m.GetEditedAt() != nil || m.GetEditedBy() != nil {
		b = append(b, ` <span class="edited">(edited`...)
		if e := m.GetEditedBy(); e.GetUsername() != "" {
			b = append(b, " by @"...)
			b = appendEscaped(b, e.GetUsername())
		}
		if m.GetEditedAt() != nil {
			b = append(b, " at "...)
			b = appendTimeElem(b, m.GetEditedAt().AsTime())
		}
		b = append(b, ")</span>"...)
	}
	b = append(b, "</div>\n"...)

	if root := m.GetThreadId(); root != "" {
		b = append(b, `<div class="thread-ref">↳ in thread of <a href="#m-`...)
		b = appendEscaped(b, root)
		b = append(b, `">`...)
		if ex, ok := r.roots[root]; ok {
			// Formatted as the root shows it above, not its raw markdown.
			b, r.tmp = appendExcerptFormatted(b, r.tmp, ex)
		} else {
			if r.rec != nil {
				r.rec.miss(root, r.written+uint64(len(b)))
			}
			b = append(b, unkeptRootWords...)
		}
		b = append(b, "</a></div>\n"...)
	}

	if m.GetText() != "" {
		b = append(b, `<div class="text">`...)
		b, r.tmp = appendFormatted(b, r.tmp, m.GetText())
		b = append(b, "</div>\n"...)
	}
	if atts := m.GetAttachments(); len(atts) > 0 {
		b = append(b, "<ul class=\"files\">\n"...)
		for _, a := range atts {
			b = appendAttachment(b, a, !r.fragment)
		}
		b = append(b, "</ul>\n"...)
	}
	if n := m.GetThreadCount(); n > 0 {
		if id, ex, ok := r.rememberRoot(m); ok && r.rec != nil {
			r.rec.root(id, ex)
		}
		b = append(b, `<div class="thread">💬 `...)
		b = strconv.AppendUint(b, uint64(n), 10)
		if n == 1 {
			b = append(b, " reply"...)
		} else {
			b = append(b, " replies"...)
		}
		if t := m.GetThreadLastMessage(); t != nil {
			b = append(b, ", last "...)
			b = appendTimeElem(b, t.AsTime())
		}
		b = append(b, ` · replies follow below, marked “in thread of”</div>`+"\n"...)
	}
	b = append(b, "</div>\n"...)
	r.buf = b
	r.n++
	return r.flush()
}

// rememberRoot keeps m's excerpt for its later replies, forgetting the
// oldest root once maxThreadRoots are kept, and returns what it kept.
func (r *htmlRenderer) rememberRoot(m *sourcev1.ChatMessage) (id, ex string, kept bool) {
	id = m.GetId()
	if _, ok := r.roots[id]; ok {
		return "", "", false
	}
	ex = rootExcerpt(m)
	r.keepRoot(id, ex)
	return id, ex, true
}

// rootExcerpt is how a reply names its thread root m.
func rootExcerpt(m *sourcev1.ChatMessage) string {
	if ex := excerpt(m.GetText()); ex != "" {
		return ex
	}
	return "message by @" + m.GetUser().GetUsername()
}

// keepRoot adds a root's excerpt to the ring, forgetting the oldest one
// when full.
func (r *htmlRenderer) keepRoot(id, ex string) {
	if len(r.rootRing) < maxThreadRoots {
		r.rootRing = append(r.rootRing, id)
	} else {
		delete(r.roots, r.rootRing[r.rootNext])
		r.rootRing[r.rootNext] = id
		r.rootNext = (r.rootNext + 1) % maxThreadRoots
	}
	r.roots[id] = ex
}

// excerpt is the first line of s, cut to excerptRunes runes. Strings are
// copied so the excerpt does not pin the (reused) message's text.
func excerpt(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if utf8.RuneCountInString(s) <= excerptRunes {
		return strings.Clone(s)
	}
	n := 0
	for i := range s {
		if n == excerptRunes {
			return strings.Clone(s[:i]) + "…"
		}
		n++
	}
	return strings.Clone(s)
}

// appendAttachment lists one attachment. With link, it points to the
// file inside the export (and shows images); a mail has no files next to
// it, so there it is only named.
func appendAttachment(b []byte, a *sourcev1.Attachment, link bool) []byte {
	path := AssetPath(a.GetFileId(), a.GetName())
	title := a.GetTitle()
	if title == "" {
		title = a.GetName()
	}
	b = append(b, "<li>"...)
	if !link {
		b = append(b, "📎 "...)
		b = appendEscaped(b, title)
		b = append(b, ` <span class="fmeta">`...)
		b = appendSize(b, a.GetSize())
		return append(b, "</span></li>\n"...)
	}
	if strings.HasPrefix(a.GetContentType(), "image/") {
		b = append(b, `<a href="`...)
		b = appendEscaped(b, path)
		b = append(b, `"><img src="`...)
		b = appendEscaped(b, path)
		b = append(b, `" alt="`...)
		b = appendEscaped(b, title)
		b = append(b, `" loading="lazy"></a>`...)
	}
	b = append(b, `<a href="`...)
	b = appendEscaped(b, path)
	b = append(b, `">`...)
	b = appendEscaped(b, title)
	b = append(b, `</a> <span class="fmeta">`...)
	if a.GetContentType() != "" {
		b = appendEscaped(b, a.GetContentType())
		b = append(b, ", "...)
	}
	b = appendSize(b, a.GetSize())
	b = append(b, "</span>"...)
	if a.GetDescription() != "" {
		b = append(b, " — "...)
		b = appendEscaped(b, a.GetDescription())
	}
	return append(b, "</li>\n"...)
}

// appendSize writes n bytes as people read it (1.2 MB).
func appendSize(b []byte, n uint64) []byte {
	const unit = 1000
	if n < unit {
		b = strconv.AppendUint(b, n, 10)
		return append(b, " B"...)
	}
	div, exp := uint64(unit), 0
	for v := n / unit; v >= unit; v /= unit {
		div *= unit
		exp++
	}
	b = strconv.AppendFloat(b, float64(n)/float64(div), 'f', 1, 64)
	b = append(b, ' ')
	b = append(b, "kMGTPE"[exp])
	return append(b, 'B')
}

// systemSentence is the readable form of a system message, as Rocket.Chat
// words them. subject is the username the event is about (Rocket.Chat
// stores it as the message text), actor who caused it.
func systemSentence(m *sourcev1.ChatMessage) (before, subject, after string) {
	actor := m.GetUser().GetUsername()
	text := m.GetText()
	switch m.GetSystemType() {
	case "uj":
		return "", firstNonEmpty(text, actor), " joined the room"
	case "ul":
		return "", firstNonEmpty(text, actor), " left the room"
	case "au":
		return "User ", text, " added by " + actor
	case "ru":
		return "User ", text, " removed by " + actor
	case "room_changed_topic":
		return "Room topic changed to: ", text, " by " + actor
	case "room_changed_announcement":
		return "Room announcement changed to: ", text, " by " + actor
	case "room_changed_description":
		return "Room description changed to: ", text, " by " + actor
	case "r":
		return "Room name changed to: ", text, " by " + actor
	case "user-muted":
		return "User ", text, " muted by " + actor
	case "user-unmuted":
		return "User ", text, " unmuted by " + actor
	}
	return "System message (" + m.GetSystemType() + ") by " + actor + ": ", text, ""
}

func appendSystemSentence(b []byte, m *sourcev1.ChatMessage) []byte {
	before, subject, after := systemSentence(m)
	b = appendEscaped(b, before)
	b = append(b, "<strong>"...)
	b = appendEscaped(b, subject)
	b = append(b, "</strong>"...)
	return appendEscaped(b, after)
}

// plainSystemSentence is systemSentence as one line of text.
func plainSystemSentence(m *sourcev1.ChatMessage) string {
	before, subject, after := systemSentence(m)
	return before + subject + after
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func (r *htmlRenderer) End() error {
	b := r.buf[:0]
	if r.fragment {
		b = append(b, "</div>\n"...)
	} else {
		b = appendHTMLClosing(b, uint64(r.n))
	}
	r.buf = b
	return r.flush()
}

// appendHTMLClosing appends the page's closing bytes after n messages.
func appendHTMLClosing(b []byte, n uint64) []byte {
	b = append(b, "</main>\n<footer>"...)
	b = strconv.AppendUint(b, n, 10)
	if n == 1 {
		b = append(b, " message"...)
	} else {
		b = append(b, " messages"...)
	}
	return append(b, ". Exported by Dataport. Attachments are in the assets folder next to this page.</footer>\n</body>\n</html>\n"...)
}

// appendEscaped appends s with &, <, >, " and ' escaped, the same set as
// html.EscapeString, without allocating.
func appendEscaped(b []byte, s string) []byte {
	last := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '"':
			esc = "&#34;"
		case '\'':
			esc = "&#39;"
		default:
			continue
		}
		b = append(b, s[last:i]...)
		b = append(b, esc...)
		last = i + 1
	}
	return append(b, s[last:]...)
}
