package recordrender

import (
	"encoding/xml"
	"io"
	"strings"
	"unicode/utf8"

	"dataport.dev/shared/recordquery"
)

// xmlRenderer writes
//
//	<?xml version="1.0" encoding="UTF-8"?>
//	<records resource="transactions">
//	  <record id="txn_…"><id>txn_…</id><amount>12.5</amount>…</record>
//	</records>
//
// into a reused buffer, one write per record, escaping text and
// attributes exactly as encoding/xml's token encoder does (which this
// renderer used to go through, at about ten allocations a record; its
// output is pinned by xml_ref_test.go). Characters XML 1.0 does not allow
// (most C0 controls) are stripped first. A field whose name is not a
// valid XML name becomes <field name="…">. List values repeat an <item>
// element.
type xmlRenderer struct {
	w   io.Writer
	m   Meta
	buf []byte
	// open and close are each field's start and end tags, prebuilt.
	open, close [][]byte
}

// NewXML returns an XML renderer.
func NewXML(w io.Writer, m Meta) Renderer {
	r := &xmlRenderer{w: w, m: m, buf: make([]byte, 0, 1024)}
	for _, f := range m.Fields {
		if validXMLName(f) {
			r.open = append(r.open, []byte("<"+f+">"))
			r.close = append(r.close, []byte("</"+f+">"))
		} else {
			r.open = append(r.open, appendEscaped([]byte(`<field name="`), StripInvalidXML(f), true, '"', '>'))
			r.close = append(r.close, []byte("</field>"))
		}
	}
	return r
}

func (r *xmlRenderer) Begin() error {
	b := append(r.buf[:0], xml.Header...)
	b = append(b, `<records resource="`...)
	b = appendEscaped(b, StripInvalidXML(r.m.Resource), true, '"', '>')
	return r.flush(b)
}

func (r *xmlRenderer) Write(row Row) error {
	b := r.buf[:0]
	if row.ID != "" {
		b = append(b, `<record id="`...)
		b = appendEscaped(b, StripInvalidXML(row.ID), true, '"', '>')
	} else {
		b = append(b, "<record>"...)
	}
	for i, open := range r.open {
		var v any
		if i < len(row.Values) {
			v = row.Values[i]
		}
		b = append(b, open...)
		b = appendXMLValue(b, v)
		b = append(b, r.close[i]...)
	}
	b = append(b, "</record>"...)
	return r.flush(b)
}

func appendXMLValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return b
	case string:
		return appendEscaped(b, StripInvalidXML(x), false)
	case []string:
		for _, s := range x {
			b = append(b, "<item>"...)
			b = appendEscaped(b, StripInvalidXML(s), false)
			b = append(b, "</item>"...)
		}
		return b
	case []any:
		for _, e := range x {
			b = append(b, "<item>"...)
			b = appendEscaped(b, StripInvalidXML(recordquery.FormatValue(e)), false)
			b = append(b, "</item>"...)
		}
		return b
	}
	return appendEscaped(b, StripInvalidXML(recordquery.FormatValue(v)), false)
}

func (r *xmlRenderer) End() error {
	return r.flush(append(r.buf[:0], "</records>\n"...))
}

func (r *xmlRenderer) flush(b []byte) error {
	r.buf = b
	_, err := r.w.Write(b)
	return err
}

// appendEscaped appends s escaped as encoding/xml escapes character data
// (attr false: line feeds stay) and attribute values (attr true), then
// the bytes of tail.
func appendEscaped(b []byte, s string, attr bool, tail ...byte) []byte {
	last := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, width := utf8.DecodeRuneInString(s[i:])
			i += width
			if xmlChar(r) && !(r == utf8.RuneError && width == 1) {
				continue
			}
			b = append(b, s[last:i-width]...)
			b = append(b, "\uFFFD"...)
			last = i
			continue
		}
		var esc string
		switch c {
		case '"':
			esc = "&#34;"
		case '\'':
			esc = "&#39;"
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '\t':
			esc = "&#x9;"
		case '\n':
			if !attr {
				i++
				continue
			}
			esc = "&#xA;"
		case '\r':
			esc = "&#xD;"
		default:
			i++
			if c < 0x20 {
				b = append(b, s[last:i-1]...)
				b = append(b, "\uFFFD"...)
				last = i
			}
			continue
		}
		b = append(b, s[last:i]...)
		b = append(b, esc...)
		i++
		last = i
	}
	b = append(b, s[last:]...)
	return append(b, tail...)
}

// StripInvalidXML removes characters outside XML 1.0's Char production
// and invalid UTF-8.
func StripInvalidXML(s string) string {
	ok := true
	for _, c := range s {
		if !xmlChar(c) {
			ok = false
			break
		}
	}
	if ok && utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		c, size := utf8.DecodeRuneInString(s[i:])
		if !(c == utf8.RuneError && size == 1) && xmlChar(c) {
			b.WriteRune(c)
		}
		i += size
	}
	return b.String()
}

func xmlChar(c rune) bool {
	return c == 0x9 || c == 0xA || c == 0xD ||
		c >= 0x20 && c <= 0xD7FF && c != utf8.RuneError ||
		c >= 0xE000 && c <= 0xFFFD ||
		c >= 0x10000 && c <= 0x10FFFF
}

func validXMLName(s string) bool {
	if s == "" || strings.HasPrefix(strings.ToLower(s), "xml") {
		return false
	}
	for i, c := range s {
		letter := c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter {
			return false
		}
		if !letter && !(c >= '0' && c <= '9') && c != '-' && c != '.' {
			return false
		}
	}
	return true
}
