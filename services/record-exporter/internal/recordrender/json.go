package recordrender

import (
	"io"
	"math"
	"strconv"
	"time"
	"unicode/utf8"

	"dataport.dev/shared/recordquery"
)

// jsonRenderer writes rows as JSON objects: an array of objects (json),
// {"data":[{"type","id","attributes"}]} (json-api), or one object per line
// (jsonl). Objects are built into a reused buffer, one write per row.
type jsonRenderer struct {
	w        io.Writer
	m        Meta
	mode     int
	n        int
	buf      []byte
	keys     [][]byte
	typeAttr []byte
}

const (
	modeArray = iota
	modeAPI
	modeLines
)

// NewJSON returns a renderer of a JSON array of objects keyed by field.
func NewJSON(w io.Writer, m Meta) Renderer { return newJSON(w, m, modeArray) }

// NewJSONAPI returns a JSON:API document renderer: {"data":[{"type":
// resource, "id": record id, "attributes": {...}}]}.
func NewJSONAPI(w io.Writer, m Meta) Renderer { return newJSON(w, m, modeAPI) }

// NewJSONL returns a JSON Lines renderer: one object per line, no
// enclosing array, so a consumer can stream it line by line.
func NewJSONL(w io.Writer, m Meta) Renderer { return newJSON(w, m, modeLines) }

func newJSON(w io.Writer, m Meta, mode int) *jsonRenderer {
	r := &jsonRenderer{w: w, m: m, mode: mode, buf: make([]byte, 0, 1024)}
	for _, f := range m.Fields {
		r.keys = append(r.keys, append(appendJSONString(nil, f), ':'))
	}
	r.typeAttr = appendJSONString(nil, m.Resource)
	return r
}

func (r *jsonRenderer) Begin() error {
	begin, _ := r.frame()
	return r.writeFrame(begin)
}

func (r *jsonRenderer) Write(row Row) error {
	b := r.buf[:0]
	if r.mode != modeLines && r.n > 0 {
		b = append(b, ',')
	}
	if r.mode != modeLines {
		b = append(b, '\n')
	}
	if r.mode == modeAPI {
		b = append(b, `{"type":`...)
		b = append(b, r.typeAttr...)
		b = append(b, `,"id":`...)
		b = appendJSONString(b, row.ID)
		b = append(b, `,"attributes":`...)
	}
	b = append(b, '{')
	for i, k := range r.keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, k...)
		var v any
		if i < len(row.Values) {
			v = row.Values[i]
		}
		b = appendJSONValue(b, v)
	}
	b = append(b, '}')
	if r.mode == modeAPI {
		b = append(b, '}')
	}
	if r.mode == modeLines {
		b = append(b, '\n')
	}
	r.buf = b
	r.n++
	_, err := r.w.Write(b)
	return err
}

// Continue makes the rows of a piece after others start with their comma.
func (r *jsonRenderer) Continue() int {
	if r.mode == modeLines {
		return 0
	}
	r.n = 1
	return 1
}

func (r *jsonRenderer) End() error {
	_, end := r.frame()
	return r.writeFrame(end)
}

// frame is what the mode writes before the first row and after the last.
func (r *jsonRenderer) frame() (begin, end string) {
	switch r.mode {
	case modeArray:
		return "[", "\n]\n"
	case modeAPI:
		return `{"data":[`, "\n]}\n"
	}
	return "", "" // JSON Lines: one object a line, nothing around them
}

func (r *jsonRenderer) writeFrame(s string) error {
	if s == "" {
		return nil
	}
	_, err := io.WriteString(r.w, s)
	return err
}

func appendJSONValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...)
	case string:
		return appendJSONString(b, x)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return append(b, "null"...)
		}
		return strconv.AppendFloat(b, x, 'f', -1, 64)
	case bool:
		return strconv.AppendBool(b, x)
	case time.Time:
		return appendJSONString(b, recordquery.FormatTime(x))
	case []string:
		b = append(b, '[')
		for i, s := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, s)
		}
		return append(b, ']')
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONValue(b, e)
		}
		return append(b, ']')
	}
	if _, ok := v.(float32); ok {
		return append(b, recordquery.FormatValue(v)...)
	}
	switch v.(type) {
	case int, int64, int32, uint64, uint32:
		return append(b, recordquery.FormatValue(v)...)
	}
	return appendJSONString(b, recordquery.FormatValue(v))
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s as a JSON string: ", \ and control characters
// escaped, U+2028/U+2029 escaped for JavaScript consumers, invalid UTF-8
// replaced by U+FFFD.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
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
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
