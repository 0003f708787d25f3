package recordrender

import (
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"time"

	"dataport.dev/shared/recordquery"
)

// tokenXMLRenderer writes
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
type tokenXMLRenderer struct {
	w     io.Writer
	enc   *xml.Encoder
	m     Meta
	names []xml.Name
	attrs [][]xml.Attr
}

// newTokenXML is the XML renderer as it was, through encoding/xml's
// token encoder: the reference the hand-written one must match byte for
// byte.
func newTokenXML(w io.Writer, m Meta) Renderer {
	r := &tokenXMLRenderer{w: w, enc: xml.NewEncoder(w), m: m}
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

func (r *tokenXMLRenderer) Begin() error {
	if _, err := io.WriteString(r.w, xml.Header); err != nil {
		return err
	}
	return r.enc.EncodeToken(xml.StartElement{Name: xml.Name{Local: "records"},
		Attr: []xml.Attr{{Name: xml.Name{Local: "resource"}, Value: StripInvalidXML(r.m.Resource)}}})
}

func (r *tokenXMLRenderer) Write(row Row) error {
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

func (r *tokenXMLRenderer) value(v any) error {
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

func (r *tokenXMLRenderer) End() error {
	if err := r.enc.EncodeToken(xml.EndElement{Name: xml.Name{Local: "records"}}); err != nil {
		return err
	}
	if err := r.enc.Flush(); err != nil {
		return err
	}
	_, err := io.WriteString(r.w, "\n")
	return err
}

func TestXMLMatchesTokenEncoder(t *testing.T) {
	texts := []string{"", "plain", `<b>"q" & 'a'</b>`, "line\nfeed\r\ttab", "ctl\x00\x01\x1f\x7f", "bad\xff\xfeutf8", "\uFFFD ok",
		"東京 — ünïcödé 😀", "]]>", "\u2028\u2029", "\ufffe\uffff"}
	fields := []string{"id", "u.username", "9bad name", "xmlish", "a<b", "amount", "tags", "mixed", "none"}
	m := Meta{Resource: `trans"actions<&>`, Fields: fields}
	var rows []Row
	for i, s := range texts {
		rows = append(rows, Row{ID: s, Values: []any{s, s, s, s, s, float64(i) + 0.25, []string{s, "x"}, []any{s, 1.5, true, nil}, nil}})
	}
	rows = append(rows, Row{Values: []any{"short"}}, Row{ID: "t", Values: []any{time.Date(2025, 1, 2, 3, 4, 5, 6e6, time.UTC), true, int64(-3)}})
	render := func(newR func(io.Writer, Meta) Renderer) string {
		var b strings.Builder
		r := newR(&b, m)
		if err := r.Begin(); err != nil {
			t.Fatal(err)
		}
		for _, row := range rows {
			if err := r.Write(row); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.End(); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
	want, got := render(newTokenXML), render(NewXML)
	if want != got {
		t.Errorf("hand-written XML differs from encoding/xml's:\nwant %q\ngot  %q", want, got)
	}
}
