package recordrender

import (
	"bytes"
	"fmt"
	"io"
	"strconv"

	"github.com/klauspost/compress/zlib"

	"dataport.dev/shared/recordquery"
)

// The PDF report is written by a small streaming PDF 1.4 writer: one
// content stream and one page object per page, the standard Helvetica fonts
// (no embedding, WinAnsiEncoding), byte offsets tracked for the xref table
// and the page tree written last. Memory holds one page of rows and one
// offset per object, whatever the number of pages.
//
// Layout: A4 landscape; every page repeats the title, an information line
// (resource, generated time, rows), the filter lines, the column headers and
// ends with "Page n". Columns get widths by kind (text-heavy columns wider);
// when they do not fit the page at a readable minimum width they are split
// into column groups, and each page of rows is printed once per group
// ("Columns 1–8 of 13"), so nothing is dropped. Cells longer than their
// column are cut with an ellipsis; line breaks become spaces.
const (
	pageW, pageH   = 842.0, 595.0
	margin         = 36.0
	titleSize      = 14.0
	infoSize       = 8.0
	cellSize       = 7.5
	rowH           = 11.0
	minColW        = 60.0
	cellPad        = 2.5
	maxFilterLines = 3
	footerY        = 20.0
)

type pdfRenderer struct {
	w      io.Writer
	m      Meta
	off    int64
	err    error
	objs   []int64 // offset of object i+1
	pages  []int   // page object numbers
	groups [][]int // column indexes per group
	widths []float64
	rows   []Row
	perPg  int
	total  int
	buf    bytes.Buffer
	zbuf   bytes.Buffer
	zw     *zlib.Writer
	header []string
}

// Reserved object numbers.
const (
	objCatalog = 1
	objPages   = 2
	objFont    = 3
	objBold    = 4
	objFirst   = 5
)

// NewPDF returns the PDF table report renderer.
func NewPDF(w io.Writer, m Meta) Renderer {
	r := &pdfRenderer{w: w, m: m}
	r.layout()
	r.zw = zlib.NewWriter(&r.zbuf)
	return r
}

func colWeight(field string) float64 {
	switch field {
	case "description", "msg", "topic", "email", "usernames", "attachments", "name", "u.name":
		return 2
	case "id", "_id", "customerId", "deviceId", "createdTime", "updatedTime", "ts", "editedAt", "roles":
		return 1.4
	}
	return 1
}

// layout splits the columns into groups that fit the page and sizes them.
func (r *pdfRenderer) layout() {
	usable := pageW - 2*margin
	r.widths = make([]float64, len(r.m.Fields))
	var cur []int
	sum := 0.0
	flush := func() {
		if len(cur) == 0 {
			return
		}
		for _, i := range cur {
			r.widths[i] = usable * colWeight(r.m.Fields[i]) / sum
		}
		r.groups = append(r.groups, cur)
		cur, sum = nil, 0
	}
	for i, f := range r.m.Fields {
		wgt := colWeight(f)
		if len(cur) > 0 && (sum+wgt)*minColW > usable {
			flush()
		}
		cur = append(cur, i)
		sum += wgt
	}
	flush()
	if len(r.groups) == 0 {
		r.groups = [][]int{nil}
	}
	r.header = append(r.header, r.m.Filters...)
	if len(r.header) > maxFilterLines {
		more := len(r.header) - maxFilterLines + 1
		r.header = append(r.header[:maxFilterLines-1:maxFilterLines-1], fmt.Sprintf("… and %d more", more))
	}
	top := pageH - margin - titleSize - 4 - rowH*float64(1+len(r.header))
	if len(r.groups) > 1 {
		top -= rowH
	}
	top -= rowH // column headers
	r.perPg = max(int((top-footerY-rowH)/rowH), 1)
}

func (r *pdfRenderer) write(b []byte) {
	if r.err != nil {
		return
	}
	n, err := r.w.Write(b)
	r.off += int64(n)
	r.err = err
}

func (r *pdfRenderer) writeString(s string) { r.write([]byte(s)) }

// beginObj records object num's offset and writes its header.
func (r *pdfRenderer) beginObj(num int) {
	for len(r.objs) < num {
		r.objs = append(r.objs, 0)
	}
	r.objs[num-1] = r.off
	r.writeString(strconv.Itoa(num) + " 0 obj\n")
}

func (r *pdfRenderer) nextObj() int { return len(r.objs) + 1 }

func (r *pdfRenderer) Begin() error {
	// The binary comment line tells transfer tools the file is binary.
	r.writeString("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
	r.beginObj(objCatalog)
	r.writeString("<< /Type /Catalog /Pages 2 0 R >>\nendobj\n")
	// Object 2 (the page tree) is written by End, once the pages are known;
	// its offset slot stays reserved.
	r.objs = append(r.objs, 0)
	r.beginObj(objFont)
	r.writeString("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>\nendobj\n")
	r.beginObj(objBold)
	r.writeString("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>\nendobj\n")
	return r.err
}

func (r *pdfRenderer) Write(row Row) error {
	r.rows = append(r.rows, row)
	r.total++
	if len(r.rows) >= r.perPg {
		r.flushPage()
	}
	return r.err
}

func (r *pdfRenderer) End() error {
	if len(r.rows) > 0 || len(r.pages) == 0 {
		r.flushPage()
	}
	infoObj := r.nextObj()
	r.beginObj(infoObj)
	r.writeString("<< /Title ")
	r.write(pdfString(nil, string(winAnsi(r.m.Title))))
	r.writeString(" /Producer (Dataport) /CreationDate ")
	r.write(pdfString(nil, "D:"+r.m.Generated.UTC().Format("20060102150405")+"Z"))
	r.writeString(" >>\nendobj\n")

	r.objs[objPages-1] = r.off
	r.writeString("2 0 obj\n<< /Type /Pages /Count " + strconv.Itoa(len(r.pages)) + " /Kids [")
	for i, p := range r.pages {
		if i > 0 {
			r.writeString(" ")
		}
		r.writeString(strconv.Itoa(p) + " 0 R")
	}
	r.writeString("] >>\nendobj\n")

	xref := r.off
	var b []byte
	b = append(b, "xref\n0 "...)
	b = strconv.AppendInt(b, int64(len(r.objs)+1), 10)
	b = append(b, "\n0000000000 65535 f \n"...)
	r.write(b)
	for _, o := range r.objs {
		r.writeString(fmt.Sprintf("%010d 00000 n \n", o))
	}
	r.writeString(fmt.Sprintf("trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(r.objs)+1, infoObj, xref))
	return r.err
}

// flushPage prints the buffered rows once per column group.
func (r *pdfRenderer) flushPage() {
	for g := range r.groups {
		r.page(g)
	}
	r.rows = r.rows[:0]
}

func (r *pdfRenderer) page(group int) {
	c := &r.buf
	c.Reset()
	num := len(r.pages) + 1
	y := pageH - margin - titleSize
	text(c, "F2", titleSize, margin, y, fit(r.m.Title, pageW-2*margin, titleSize, true))
	y -= 4 + rowH
	info := "Resource: " + r.m.Resource + "    Generated: " + r.m.Generated.UTC().Format("2006-01-02 15:04:05") + " UTC"
	text(c, "F1", infoSize, margin, y, fit(info, pageW-2*margin, infoSize, false))
	for _, line := range r.header {
		y -= rowH
		text(c, "F1", infoSize, margin, y, fit(line, pageW-2*margin, infoSize, false))
	}
	cols := r.groups[group]
	if len(r.groups) > 1 && len(cols) > 0 {
		y -= rowH
		text(c, "F1", infoSize, margin, y, winAnsi(fmt.Sprintf("Columns %d–%d of %d (group %d of %d)",
			cols[0]+1, cols[len(cols)-1]+1, len(r.m.Fields), group+1, len(r.groups))))
	}
	// Column headers on a grey band.
	y -= rowH + 2
	fmt.Fprintf(c, "0.85 g %.2f %.2f %.2f %.2f re f 0 g\n", margin, y-3, pageW-2*margin, rowH)
	x := margin
	for _, i := range cols {
		text(c, "F2", cellSize, x+cellPad, y, fit(r.m.Fields[i], r.widths[i]-2*cellPad, cellSize, true))
		x += r.widths[i]
	}
	if len(r.rows) == 0 {
		y -= rowH
		text(c, "F1", cellSize, margin+cellPad, y, winAnsi("No records match."))
	}
	for n, row := range r.rows {
		y -= rowH
		if n%2 == 1 {
			fmt.Fprintf(c, "0.95 g %.2f %.2f %.2f %.2f re f 0 g\n", margin, y-3, pageW-2*margin, rowH)
		}
		x := margin
		for _, i := range cols {
			var v any
			if i < len(row.Values) {
				v = row.Values[i]
			}
			s := oneLine(recordquery.FormatValue(v))
			if s != "" {
				text(c, "F1", cellSize, x+cellPad, y, fit(s, r.widths[i]-2*cellPad, cellSize, false))
			}
			x += r.widths[i]
		}
	}
	footer := winAnsi("Page " + strconv.Itoa(num))
	text(c, "F1", infoSize, (pageW-textWidth(footer, infoSize, false))/2, footerY, footer)

	r.zbuf.Reset()
	r.zw.Reset(&r.zbuf)
	_, _ = r.zw.Write(c.Bytes())
	_ = r.zw.Close()

	content := r.nextObj()
	r.beginObj(content)
	r.writeString("<< /Length " + strconv.Itoa(r.zbuf.Len()) + " /Filter /FlateDecode >>\nstream\n")
	r.write(r.zbuf.Bytes())
	r.writeString("\nendstream\nendobj\n")
	pg := r.nextObj()
	r.beginObj(pg)
	r.writeString(fmt.Sprintf("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %g %g] /Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> /Contents %d 0 R >>\nendobj\n",
		pageW, pageH, content))
	r.pages = append(r.pages, pg)
}

func text(c *bytes.Buffer, font string, size, x, y float64, s []byte) {
	fmt.Fprintf(c, "BT /%s %g Tf %.2f %.2f Td ", font, size, x, y)
	c.Write(pdfString(nil, string(s)))
	c.WriteString(" Tj ET\n")
}

// pdfString writes s (already WinAnsi bytes, or ASCII) as a PDF literal
// string, escaping \ ( ) and control bytes.
func pdfString(b []byte, s string) []byte {
	b = append(b, '(')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' || c == '(' || c == ')':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, ' ')
		default:
			b = append(b, c)
		}
	}
	return append(b, ')')
}

// winAnsiExtra maps the non-Latin-1 characters of WinAnsiEncoding.
var winAnsiExtra = map[rune]byte{
	'€': 0x80, '‚': 0x82, 'ƒ': 0x83, '„': 0x84, '…': 0x85, '†': 0x86, '‡': 0x87, 'ˆ': 0x88, '‰': 0x89,
	'Š': 0x8A, '‹': 0x8B, 'Œ': 0x8C, 'Ž': 0x8E, '‘': 0x91, '’': 0x92, '“': 0x93, '”': 0x94, '•': 0x95,
	'–': 0x96, '—': 0x97, '˜': 0x98, '™': 0x99, 'š': 0x9A, '›': 0x9B, 'œ': 0x9C, 'ž': 0x9E, 'Ÿ': 0x9F,
}

// winAnsi converts UTF-8 text to the fonts' encoding; characters the
// standard fonts cannot show become '?'.
func winAnsi(s string) []byte {
	b := make([]byte, 0, len(s))
	for _, c := range s {
		switch {
		case c < 0x80 && c >= 0x20:
			b = append(b, byte(c))
		case c < 0x20 || c == 0x7f:
			b = append(b, ' ')
		case c >= 0xA0 && c <= 0xFF:
			b = append(b, byte(c))
		default:
			if x, ok := winAnsiExtra[c]; ok {
				b = append(b, x)
			} else {
				b = append(b, '?')
			}
		}
	}
	return b
}

// helvetica holds Helvetica's advance widths (1/1000 em) for 0x20..0x7E,
// from the font's standard metrics; other bytes use 556.
var helvetica = [95]int{
	278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278,
	556, 556, 556, 556, 556, 556, 556, 556, 556, 556, 278, 278, 584, 584, 584, 556,
	1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, 722, 778,
	667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556,
	333, 556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556,
	556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334, 260, 334, 584,
}

func glyphWidth(c byte) int {
	if c >= 0x20 && c <= 0x7E {
		return helvetica[c-0x20]
	}
	if c == 0x85 {
		return 1000
	}
	return 556
}

// textWidth is the width in points; bold is approximated as 8% wider.
func textWidth(s []byte, size float64, bold bool) float64 {
	w := 0
	for _, c := range s {
		w += glyphWidth(c)
	}
	f := float64(w) * size / 1000
	if bold {
		f *= 1.08
	}
	return f
}

// fit converts s and cuts it to maxW points, ending with an ellipsis when
// cut.
func fit(s string, maxW, size float64, bold bool) []byte {
	b := winAnsi(s)
	if textWidth(b, size, bold) <= maxW {
		return b
	}
	limit := maxW - textWidth([]byte{0x85}, size, bold)
	w := 0.0
	scale := size / 1000
	if bold {
		scale *= 1.08
	}
	n := 0
	for n < len(b) {
		gw := float64(glyphWidth(b[n])) * scale
		if w+gw > limit {
			break
		}
		w += gw
		n++
	}
	out := append(b[:n:n], 0x85)
	return out
}
