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
// through encoding/xml's token encoder, which escapes text and attributes.
// Characters XML 1.0 does not allow (most C0 controls) are stripped first.
// A field whose name is not a valid XML name becomes <field name="…">.
// List values repeat an <item> element.
type xmlRenderer struct {
	w     io.Writer
	enc   *xml.Encoder
	m     Meta
	names []xml.Name
	attrs [][]xml.Attr
}

// NewXML returns an XML renderer.
func NewXML(w io.Writer, m Meta) Renderer {
	r := &xmlRenderer{w: w, enc: xml.NewEncoder(w), m: m}
	for _, f := range m.Fields {
		if validXMLName(f) {
			r.names = append(r.names, xml.Name{Local: f})
			r.attrs = append(r.attrs, nil)
		} else {
			r.names = append(r.names, xml.Name{Local: "field"})
			r.attrs = append(r.attrs, []xml.Attr{{Name: xml.Name{Local: "name"}, Value: StripInvalidXML(f)}})
		}
	}
	return r
}

func (r *xmlRenderer) Begin() error {
	if _, err := io.WriteString(r.w, xml.Header); err != nil {
		return err
	}
	return r.enc.EncodeToken(xml.StartElement{Name: xml.Name{Local: "records"},
		Attr: []xml.Attr{{Name: xml.Name{Local: "resource"}, Value: StripInvalidXML(r.m.Resource)}}})
}

func (r *xmlRenderer) Write(row Row) error {
	rec := xml.StartElement{Name: xml.Name{Local: "record"}}
	if row.ID != "" {
		rec.Attr = []xml.Attr{{Name: xml.Name{Local: "id"}, Value: StripInvalidXML(row.ID)}}
	}
	if err := r.enc.EncodeToken(rec); err != nil {
		return err
	}
	for i, name := range r.names {
		var v any
		if i < len(row.Values) {
			v = row.Values[i]
		}
		start := xml.StartElement{Name: name, Attr: r.attrs[i]}
		if err := r.enc.EncodeToken(start); err != nil {
			return err
		}
		if err := r.value(v); err != nil {
			return err
		}
		if err := r.enc.EncodeToken(start.End()); err != nil {
			return err
		}
	}
	if err := r.enc.EncodeToken(rec.End()); err != nil {
		return err
	}
	// Flush per record keeps the encoder's buffer small; the caller's
	// bufio batches the writes.
	return r.enc.Flush()
}

func (r *xmlRenderer) value(v any) error {
	var items []string
	switch x := v.(type) {
	case nil:
		return nil
	case []string:
		items = x
	case []any:
		for _, e := range x {
			items = append(items, recordquery.FormatValue(e))
		}
	default:
		return r.enc.EncodeToken(xml.CharData(StripInvalidXML(recordquery.FormatValue(v))))
	}
	item := xml.StartElement{Name: xml.Name{Local: "item"}}
	for _, s := range items {
		if err := r.enc.EncodeToken(item); err != nil {
			return err
		}
		if err := r.enc.EncodeToken(xml.CharData(StripInvalidXML(s))); err != nil {
			return err
		}
		if err := r.enc.EncodeToken(item.End()); err != nil {
			return err
		}
	}
	return nil
}

func (r *xmlRenderer) End() error {
	if err := r.enc.EncodeToken(xml.EndElement{Name: xml.Name{Local: "records"}}); err != nil {
		return err
	}
	if err := r.enc.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(r.w, "\n")
	return err
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
