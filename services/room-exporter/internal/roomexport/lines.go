package roomexport

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/klauspost/compress/gzip"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// jsonlRenderer writes one JSON object per message, each ended by a
// newline: the object the JSON document holds for it (appendJSONMessage),
// byte for byte, so a reader can take either format. There is no room
// header: every line is a message, and an empty room is an empty file.
type jsonlRenderer struct {
	w   io.Writer
	buf []byte
}

// NewJSONLRenderer returns the JSON lines renderer.
func NewJSONLRenderer(w io.Writer) Renderer {
	return &jsonlRenderer{w: w, buf: make([]byte, 0, 4096)}
}

func (r *jsonlRenderer) Begin(*sourcev1.Room) error { return nil }

func (r *jsonlRenderer) Message(m *sourcev1.ChatMessage) error {
	r.buf = append(appendJSONMessage(r.buf[:0], m), '\n')
	_, err := r.w.Write(r.buf)
	return err
}

func (r *jsonlRenderer) End() error { return nil }

// Lines carry no state from one to the next.
func (r *jsonlRenderer) saveState() ([]byte, error) { return []byte("{}"), nil }
func (r *jsonlRenderer) restoreState([]byte) error  { return nil }

// CSVColumns are the columns of a room's CSV export, in order. Times are
// in the JSON document's layout (UTC, milliseconds); empty cells are
// fields the message does not have.
//
//   - id, ts, user_id, username, name: the message and its sender;
//   - msg: the text (a system message's text is its subject, e.g. the
//     username that joined);
//   - type: the system message type ("uj", "ru", ...), empty for a
//     user's message;
//   - tmid, tcount, tlm: the thread root a reply belongs to, and a root's
//     reply count and last reply time;
//   - edited_at, edited_by: when the message was last edited and the
//     editor's username;
//   - attachments: the files' paths in the download
//     ("assets/<fileId>-<name>", see AssetPath), separated by spaces
//     (a path has none).
var CSVColumns = []string{"id", "ts", "user_id", "username", "name", "msg", "type",
	"tmid", "tcount", "tlm", "edited_at", "edited_by", "attachments"}

// csvGzipRenderer writes a header row and one row per message as CSV,
// gzip-compressed. Quoting is RFC 4180's, byte for byte what encoding/csv's
// Writer makes (comma, LF line ends; TestCSVRowEncoding checks it).
//
// The file is a series of gzip members, one per uploaded part: at a part
// cut the exporter ends the member (endMember), so the state between two
// parts is only how many rows were written, which a checkpoint can hold,
// and a resumed attempt writes the same bytes as a clean one. Every gzip
// reader (gunzip, Go's and Python's gzip) reads concatenated members as
// one stream.
type csvGzipRenderer struct {
	w    io.Writer
	gz   *gzip.Writer
	open bool // a member has been started and not ended
	buf  []byte
	n    int
}

// NewCSVGzipRenderer returns the gzip-compressed CSV renderer.
func NewCSVGzipRenderer(w io.Writer) Renderer {
	return &csvGzipRenderer{w: w, buf: make([]byte, 0, 4096)}
}

func (r *csvGzipRenderer) Begin(*sourcev1.Room) error {
	b := r.buf[:0]
	for i, c := range CSVColumns {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendCSVField(b, c)
	}
	r.buf = append(b, '\n')
	return r.write(r.buf)
}

func (r *csvGzipRenderer) Message(m *sourcev1.ChatMessage) error {
	r.buf = appendCSVRow(r.buf[:0], m)
	r.n++
	return r.write(r.buf)
}

func (r *csvGzipRenderer) write(p []byte) error {
	if !r.open {
		if r.gz == nil {
			var err error
			if r.gz, err = gzip.NewWriterLevel(r.w, gzip.DefaultCompression); err != nil {
				return fmt.Errorf("gzip: %w", err)
			}
		} else {
			r.gz.Reset(r.w)
		}
		r.open = true
	}
	if _, err := r.gz.Write(p); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	return nil
}

// endMember ends the open gzip member, writing what deflate holds back
// and the member's trailer; the next row starts a new member.
func (r *csvGzipRenderer) endMember() error {
	if !r.open {
		return nil
	}
	r.open = false
	if err := r.gz.Close(); err != nil {
		return fmt.Errorf("gzip: %w", err)
	}
	return nil
}

func (r *csvGzipRenderer) End() error { return r.endMember() }

// csvState is the CSV renderer's state between parts: the member is
// always ended there (see endMember).
type csvState struct {
	N int `json:"n"`
}

func (r *csvGzipRenderer) saveState() ([]byte, error) {
	if r.open {
		return nil, fmt.Errorf("gzip member open at a part cut")
	}
	return json.Marshal(csvState{N: r.n})
}

func (r *csvGzipRenderer) restoreState(data []byte) error {
	var s csvState
	if err := json.Unmarshal(data, &s); err != nil {
		return err
	}
	r.n, r.open = s.N, false
	return nil
}

// memberEnder is a Renderer whose output must be closed off at a part
// cut for its state there to be resumable (a compressed stream).
type memberEnder interface{ endMember() error }

// appendCSVRow appends m's row (CSVColumns) and its line end.
func appendCSVRow(b []byte, m *sourcev1.ChatMessage) []byte {
	u := m.GetUser()
	b = appendCSVField(b, m.GetId())
	b = append(b, ',')
	b = appendCSVTime(b, m.GetTs().AsTime())
	b = append(b, ',')
	b = appendCSVField(b, u.GetId())
	b = append(b, ',')
	b = appendCSVField(b, u.GetUsername())
	b = append(b, ',')
	b = appendCSVField(b, u.GetName())
	b = append(b, ',')
	b = appendCSVField(b, m.GetText())
	b = append(b, ',')
	b = appendCSVField(b, m.GetSystemType())
	b = append(b, ',')
	b = appendCSVField(b, m.GetThreadId())
	b = append(b, ',')
	if n := m.GetThreadCount(); n != 0 {
		b = strconv.AppendUint(b, uint64(n), 10)
	}
	b = append(b, ',')
	if t := m.GetThreadLastMessage(); t != nil {
		b = appendCSVTime(b, t.AsTime())
	}
	b = append(b, ',')
	if t := m.GetEditedAt(); t != nil {
		b = appendCSVTime(b, t.AsTime())
	}
	b = append(b, ',')
	b = appendCSVField(b, m.GetEditedBy().GetUsername())
	b = append(b, ',')
	if atts := m.GetAttachments(); len(atts) > 0 {
		var paths strings.Builder
		for i, a := range atts {
			if i > 0 {
				paths.WriteByte(' ')
			}
			paths.WriteString(AssetPath(a.GetFileId(), a.GetName()))
		}
		b = appendCSVField(b, paths.String())
	}
	return append(b, '\n')
}

// appendCSVTime appends t in timeLayout, which never needs quotes.
func appendCSVTime(b []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(b, timeLayout)
}

// appendCSVField appends s as encoding/csv's Writer does with a comma:
// quoted when it holds a comma, a quote, CR or LF, starts with a space
// (unicode.IsSpace), or is exactly \. (a PostgreSQL end-of-data marker);
// quotes are doubled inside, everything else is kept as is.
func appendCSVField(b []byte, s string) []byte {
	if !csvNeedsQuotes(s) {
		return append(b, s...)
	}
	b = append(b, '"')
	for {
		i := strings.IndexByte(s, '"')
		if i < 0 {
			break
		}
		b = append(b, s[:i+1]...)
		b = append(b, '"')
		s = s[i+1:]
	}
	b = append(b, s...)
	return append(b, '"')
}

func csvNeedsQuotes(s string) bool {
	if s == "" {
		return false
	}
	if s == `\.` {
		return true
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',', '"', '\r', '\n':
			return true
		}
	}
	r, _ := utf8.DecodeRuneInString(s)
	return unicode.IsSpace(r)
}
