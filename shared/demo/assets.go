package demo

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"strings"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

// generatedAsset is a file and the attachment that refers to it.
type generatedAsset struct {
	Asset
	attachment *sourcev1.Attachment
}

// assetKinds are the file types messages carry, with a few names that
// contain spaces and non-ASCII letters, as real uploads do.
var assetKinds = []struct {
	contentType string
	names       []string
	describe    []string
}{
	{"text/plain", []string{"notes.txt", "todo.txt", "meeting notes.txt", "résumé.txt"}, []string{"my notes", "", "from today's meeting"}},
	{"text/csv", []string{"export.csv", "numbers-q2.csv", "customers.csv"}, []string{"raw numbers", "", "as requested"}},
	{"text/markdown", []string{"README.md", "design.md", "postmortem.md"}, []string{"draft, comments welcome", ""}},
	{"image/png", []string{"screenshot.png", "diagram.png", "chart.png"}, []string{"see the red part", "", "new layout"}},
	{"application/pdf", []string{"report.pdf", "invoice.pdf", "Quarterly report Q2.pdf"}, []string{"final version", "", "signed copy"}},
}

// asset generates one attached file.
func (g *generator) asset() generatedAsset {
	kind := pick(g, assetKinds)
	name := pick(g, kind.names)
	fileID := g.id()
	var data []byte
	switch kind.contentType {
	case "image/png":
		data = g.pngFile()
	case "application/pdf":
		data = g.pdfFile(name)
	case "text/csv":
		data = g.csvFile()
	default:
		data = g.textFile(name)
	}
	key := "assets/" + fileID + "/" + name
	return generatedAsset{
		Asset: Asset{ObjectKey: key, ContentType: kind.contentType, Data: data},
		attachment: &sourcev1.Attachment{
			FileId:      fileID,
			Name:        name,
			ContentType: kind.contentType,
			Size:        uint64(len(data)),
			ObjectKey:   key,
			Title:       name,
			Description: pick(g, kind.describe),
		},
	}
}

// textFile is a few KB of sentences.
func (g *generator) textFile(name string) []byte {
	var b strings.Builder
	if strings.HasSuffix(name, ".md") {
		fmt.Fprintf(&b, "# %s\n\n", strings.TrimSuffix(name, ".md"))
	}
	lines := 30 + g.r.IntN(60)
	for i := range lines {
		if strings.HasSuffix(name, ".md") && i%10 == 0 {
			fmt.Fprintf(&b, "\n## Part %d\n\n", i/10+1)
		}
		b.WriteString(g.sentence())
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// csvFile is a small spreadsheet export.
func (g *generator) csvFile() []byte {
	var b strings.Builder
	b.WriteString("date,customer,amount,currency,note\n")
	rows := 40 + g.r.IntN(80)
	for i := range rows {
		fmt.Fprintf(&b, "2026-%02d-%02d,cus_%04d,%d.%02d,%s,\"%s\"\n",
			5+i%6, 1+g.r.IntN(28), g.r.IntN(10000), g.r.IntN(5000), g.r.IntN(100),
			pick(g, currencies), strings.ReplaceAll(g.sentence(), `"`, `""`))
	}
	return []byte(b.String())
}

// pngFile is a small noisy picture: noise keeps it a few KB after
// compression, like a screenshot thumbnail.
func (g *generator) pngFile() []byte {
	w, h := 32+g.r.IntN(32), 24+g.r.IntN(24)
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	base := color.NRGBA{R: uint8(g.r.IntN(256)), G: uint8(g.r.IntN(256)), B: uint8(g.r.IntN(256)), A: 255}
	for y := range h {
		for x := range w {
			c := base
			c.R += uint8(g.r.IntN(64))
			c.G += uint8(x * 4)
			c.B += uint8(y * 4)
			img.SetNRGBA(x, y, c)
		}
	}
	var buf bytes.Buffer
	// Encoding an in-memory image into a buffer cannot fail.
	_ = png.Encode(&buf, img)
	return buf.Bytes()
}

// pdfFile is a minimal but valid one-page PDF with a few lines of text.
func (g *generator) pdfFile(title string) []byte {
	var content strings.Builder
	content.WriteString("BT /F1 12 Tf 72 760 Td 16 TL\n")
	fmt.Fprintf(&content, "(%s) Tj T*\n", pdfEscape(title))
	for range 40 + g.r.IntN(60) {
		fmt.Fprintf(&content, "(%s) Tj T*\n", pdfEscape(g.sentence()))
	}
	content.WriteString("ET\n")

	objects := []string{
		"<< /Type /Catalog /Pages 2 0 R >>",
		"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
		"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
		fmt.Sprintf("<< /Length %d >>\nstream\n%sendstream", content.Len(), content.String()),
		"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
	}
	var b bytes.Buffer
	b.WriteString("%PDF-1.4\n")
	offsets := make([]int, len(objects))
	for i, o := range objects {
		offsets[i] = b.Len()
		fmt.Fprintf(&b, "%d 0 obj\n%s\nendobj\n", i+1, o)
	}
	xref := b.Len()
	fmt.Fprintf(&b, "xref\n0 %d\n0000000000 65535 f \n", len(objects)+1)
	for _, off := range offsets {
		fmt.Fprintf(&b, "%010d 00000 n \n", off)
	}
	fmt.Fprintf(&b, "trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n", len(objects)+1, xref)
	return b.Bytes()
}

// pdfEscape keeps a line printable with the standard Helvetica encoding.
func pdfEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '(' || r == ')' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r >= 0x20 && r < 0x7f:
			b.WriteRune(r)
		default:
			b.WriteByte('?')
		}
	}
	return b.String()
}
