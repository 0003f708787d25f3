package roomexport

import (
	"bytes"
	"strings"
)

// Markdown-ish formatting of message text, the subset Rocket.Chat users
// type most: *bold*, _italic_, ~strike~, `code`, ```code blocks```, and
// bare http(s) links. It runs on text that appendEscaped has already
// escaped, so the only markup in the result is the fixed tags added here,
// and link targets can only be http:// or https:// URLs made of escaped
// characters (no quote can close the attribute).

// maxEmphasisSpan bounds how far a marker looks for its closing twin, so
// a line full of lone asterisks costs linear time, not quadratic.
const maxEmphasisSpan = 1024

// maxEmphasisDepth bounds nesting (*bold _italic_*).
const maxEmphasisDepth = 3

// appendFormatted appends text, escaped and formatted, to b. tmp is
// scratch space, returned for reuse.
func appendFormatted(b, tmp []byte, text string) ([]byte, []byte) {
	segs := strings.Split(text, "```")
	if len(segs)%2 == 0 {
		// An unclosed fence is literal text.
		last := len(segs) - 1
		segs[last-1] = segs[last-1] + "```" + segs[last]
		segs = segs[:last]
	}
	for i, seg := range segs {
		if i%2 == 1 {
			b = append(b, "<pre><code>"...)
			b = appendEscaped(b, codeBlock(seg))
			b = append(b, "</code></pre>"...)
			continue
		}
		tmp = appendEscaped(tmp[:0], seg)
		b = appendInline(b, tmp, 0, true)
	}
	return b, tmp
}

// appendExcerptFormatted appends a thread root's excerpt formatted as the
// root itself is, within the line of a reply. That line is one link to the
// root, and links do not nest, so bare URLs stay text; a fence (the
// excerpt is one line) reads as inline code, since a block cannot sit in
// the line.
func appendExcerptFormatted(b, tmp []byte, excerpt string) ([]byte, []byte) {
	tmp = appendEscaped(tmp[:0], strings.ReplaceAll(excerpt, "```", "`"))
	return appendInline(b, tmp, 0, false), tmp
}

// codeBlock drops the fence's line breaks and a language word on the
// opening line ("```go\n…").
func codeBlock(s string) string {
	if first, rest, ok := strings.Cut(s, "\n"); ok && !strings.ContainsAny(strings.TrimSpace(first), " \t") {
		s = rest
	}
	return strings.TrimSuffix(s, "\n")
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

var emphasisTags = map[byte][2]string{
	'*': {"<strong>", "</strong>"},
	'_': {"<em>", "</em>"},
	'~': {"<del>", "</del>"},
}

// appendInline formats one escaped stretch of text outside code blocks;
// links says whether bare URLs become links.
func appendInline(b, s []byte, depth int, links bool) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		boundary := i == 0 || !isWordByte(s[i-1])
		switch {
		case c == '\n':
			b = append(b, "<br>\n"...)
			continue
		case c == '`':
			if j := closing(s, i, '`', false); j > 0 {
				b = append(b, "<code>"...)
				b = append(b, s[i+1:j]...)
				b = append(b, "</code>"...)
				i = j
				continue
			}
		case (c == '*' || c == '_' || c == '~') && boundary && depth < maxEmphasisDepth:
			if j := closing(s, i, c, true); j > 0 {
				tags := emphasisTags[c]
				b = append(b, tags[0]...)
				b = appendInline(b, s[i+1:j], depth+1, links)
				b = append(b, tags[1]...)
				i = j
				continue
			}
		case c == 'h' && boundary && links:
			if n := urlLen(s[i:]); n > 0 {
				url := s[i : i+n]
				b = append(b, `<a href="`...)
				b = append(b, url...)
				b = append(b, `" rel="noopener noreferrer">`...)
				b = append(b, url...)
				b = append(b, "</a>"...)
				i += n - 1
				continue
			}
		}
		b = append(b, c)
	}
	return b
}

// closing finds the marker closing the one at s[i] on the same line, or
// returns -1. Emphasis needs non-blank text touching both markers and no
// word character right after the closing one (snake_case stays as is).
func closing(s []byte, i int, marker byte, emphasis bool) int {
	if i+1 >= len(s) || s[i+1] == marker || (emphasis && isSpace(s[i+1])) {
		return -1
	}
	end := min(len(s), i+1+maxEmphasisSpan)
	for j := i + 1; j < end; j++ {
		switch s[j] {
		case '\n':
			return -1
		case marker:
			if !emphasis {
				return j
			}
			if !isSpace(s[j-1]) && (j+1 == len(s) || !isWordByte(s[j+1])) {
				return j
			}
		}
	}
	return -1
}

var (
	httpPrefix  = []byte("http://")
	httpsPrefix = []byte("https://")
	// Escaped characters that end a URL: <, >, " and ' (appendEscaped's
	// forms); &amp; is part of URLs.
	urlStops = [][]byte{[]byte("&lt;"), []byte("&gt;"), []byte("&#34;"), []byte("&#39;")}
)

// urlLen is the length of the http(s) URL at the start of s (escaped
// text), or 0. Trailing punctuation belongs to the sentence; ';' stays,
// since it ends the URL's own escapes (&amp;).
func urlLen(s []byte) int {
	var n int
	switch {
	case bytes.HasPrefix(s, httpsPrefix):
		n = len(httpsPrefix)
	case bytes.HasPrefix(s, httpPrefix):
		n = len(httpPrefix)
	default:
		return 0
	}
	start := n
scan:
	for n < len(s) {
		c := s[n]
		switch {
		case isSpace(c), c == '`':
			break scan
		case c == '&':
			for _, stop := range urlStops {
				if bytes.HasPrefix(s[n:], stop) {
					break scan
				}
			}
		}
		n++
	}
	for n > start && strings.IndexByte(".,:!?)*_~", s[n-1]) >= 0 {
		n--
	}
	if n == start {
		return 0
	}
	return n
}
