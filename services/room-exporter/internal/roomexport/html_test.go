package roomexport_test

import (
	"bytes"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/net/html"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
)

// renderHTML renders msgs as the HTML page of room.
func renderHTML(t testing.TB, room *sourcev1.Room, meta roomexport.Meta, msgs ...*sourcev1.ChatMessage) []byte {
	t.Helper()
	var buf bytes.Buffer
	r := roomexport.NewHTMLRenderer(&buf, meta)
	require.NoError(t, r.Begin(room))
	for _, m := range msgs {
		require.NoError(t, r.Message(m))
	}
	require.NoError(t, r.End())
	return buf.Bytes()
}

// page is a parsed export page with helpers for what a reader sees.
type page struct{ root *html.Node }

func parsePage(t testing.TB, data []byte) page {
	t.Helper()
	root, err := html.Parse(bytes.NewReader(data))
	require.NoError(t, err)
	return page{root: root}
}

func (p page) all(f func(n *html.Node) bool) []*html.Node {
	var out []*html.Node
	for n := range p.root.Descendants() {
		if n.Type == html.ElementNode && f(n) {
			out = append(out, n)
		}
	}
	return out
}

func (p page) tag(name string) []*html.Node {
	return p.all(func(n *html.Node) bool { return n.Data == name })
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func hasClass(n *html.Node, class string) bool {
	return strings.Contains(" "+attr(n, "class")+" ", " "+class+" ")
}

// byID finds the element with the id.
func (p page) byID(id string) *html.Node {
	found := p.all(func(n *html.Node) bool { return attr(n, "id") == id })
	if len(found) == 0 {
		return nil
	}
	return found[0]
}

// text is n's text content as a reader sees it.
func text(n *html.Node) string {
	var b strings.Builder
	for d := range n.Descendants() {
		if d.Type == html.TextNode {
			b.WriteString(d.Data)
		}
	}
	return b.String()
}

func within(n *html.Node, tag string) []*html.Node {
	var out []*html.Node
	for d := range n.Descendants() {
		if d.Type == html.ElementNode && d.Data == tag {
			out = append(out, d)
		}
	}
	return out
}

var htmlRoom = &sourcev1.Room{
	Id: "GENERAL", Name: "general", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL,
	Topic: "News <b>& chat</b>", CreatedAt: ts("2026-05-01T00:00:00Z"),
}

func TestHTMLRendererPage(t *testing.T) {
	alice := &sourcev1.UserRef{Id: "u1", Username: "alice", Name: "Alice Example"}
	bob := &sourcev1.UserRef{Id: "u2", Username: "bob", Name: "Bob"}
	msgs := []*sourcev1.ChatMessage{
		{Id: "m0", RoomId: "GENERAL", Ts: ts("2026-05-01T09:00:00Z"), User: alice, SystemType: "uj", Text: "alice"},
		{
			Id: "m1", RoomId: "GENERAL", Ts: ts("2026-05-01T09:30:00.123Z"), User: alice,
			Text:     "*bold* _italic_ `x < y` see https://example.com/a?b=1&c=2, snake_case_name\nsecond line",
			EditedAt: ts("2026-05-01T09:31:00Z"), EditedBy: bob,
			ThreadCount: 2, ThreadLastMessage: ts("2026-05-01T10:00:00Z"),
		},
		{Id: "m2", RoomId: "GENERAL", Ts: ts("2026-05-01T09:32:00Z"), User: bob, ThreadId: "m1", Text: "a reply"},
		{
			Id: "m3", RoomId: "GENERAL", Ts: ts("2026-05-01T09:33:00Z"), User: bob, Text: "```go\nfunc main() { a := \"<b>\" }\n```",
			Attachments: []*sourcev1.Attachment{
				{FileId: "F1", Name: "report final.pdf", ContentType: "application/pdf", Size: 1234, Description: "Q1 numbers"},
				{FileId: "F2", Name: "chart.png", ContentType: "image/png", Size: 99, Title: "The chart"},
			},
		},
		{Id: "m4", RoomId: "GENERAL", Ts: ts("2026-05-01T09:34:00Z"), User: alice, SystemType: "au", Text: "carol"},
		{Id: "m5", RoomId: "GENERAL", Ts: ts("2026-05-01T09:35:00Z"), User: alice, SystemType: "ru", Text: "carol"},
		{Id: "m6", RoomId: "GENERAL", Ts: ts("2026-05-01T09:36:00Z"), User: alice, SystemType: "room_changed_topic", Text: "New topic"},
		{Id: "m7", RoomId: "GENERAL", Ts: ts("2026-05-01T09:37:00Z"), User: bob, SystemType: "ul", Text: "bob"},
		{Id: "m8", RoomId: "GENERAL", Ts: ts("2026-05-01T11:00:00Z"), User: alice, ThreadId: "m1", Text: "a late reply"},
	}
	meta := roomexport.Meta{
		From: time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 5, 31, 23, 59, 59, 0, time.UTC),
		Generated: time.Date(2026, 6, 2, 8, 0, 0, 0, time.UTC),
	}
	data := renderHTML(t, htmlRoom, meta, msgs...)
	p := parsePage(t, data)

	t.Run("self-contained", func(t *testing.T) {
		assert.True(t, bytes.HasPrefix(data, []byte("<!DOCTYPE html>")))
		assert.Empty(t, p.tag("script"))
		assert.Empty(t, p.tag("link"), "no external stylesheet")
		assert.Len(t, p.tag("style"), 1, "inline CSS")
		for _, img := range p.tag("img") {
			assert.NotContains(t, attr(img, "src"), "//", "images come from inside the export")
		}
	})

	t.Run("header", func(t *testing.T) {
		header := p.tag("header")
		require.Len(t, header, 1)
		h := text(header[0])
		assert.Contains(t, h, "general")
		assert.Contains(t, h, "Public channel")
		assert.Contains(t, h, "Topic: News <b>& chat</b>", "the topic is text")
		assert.Contains(t, h, "Messages from 2026-05-01 00:00:00 UTC to 2026-05-31 23:59:59 UTC")
		assert.Contains(t, h, "Exported 2026-06-02 08:00:00 UTC")
		assert.Equal(t, "general — room export", text(p.tag("title")[0]))
	})

	t.Run("message", func(t *testing.T) {
		m1 := p.byID("m-m1")
		require.NotNil(t, m1)
		s := text(m1)
		assert.Contains(t, s, "Alice Example @alice 2026-05-01 09:30:00 UTC")
		assert.Contains(t, s, "(edited by @bob at 2026-05-01 09:31:00 UTC)")
		times := within(m1, "time")
		require.NotEmpty(t, times)
		assert.Equal(t, "2026-05-01T09:30:00.123Z", attr(times[0], "datetime"))

		require.Len(t, within(m1, "strong"), 1)
		assert.Equal(t, "bold", text(within(m1, "strong")[0]))
		require.Len(t, within(m1, "em"), 1, "snake_case_name is no emphasis")
		assert.Equal(t, "italic", text(within(m1, "em")[0]))
		require.Len(t, within(m1, "code"), 1)
		assert.Equal(t, "x < y", text(within(m1, "code")[0]))
		links := within(m1, "a")
		require.NotEmpty(t, links)
		assert.Equal(t, "https://example.com/a?b=1&c=2", attr(links[0], "href"), "the trailing comma is not part of the link")
		assert.Len(t, within(m1, "br"), 1, "line breaks are kept")
		assert.Contains(t, s, "snake_case_name")
		assert.Contains(t, s, "2 replies")
	})

	t.Run("threads", func(t *testing.T) {
		for _, id := range []string{"m-m2", "m-m8"} {
			reply := p.byID(id)
			require.NotNil(t, reply)
			assert.True(t, hasClass(reply, "reply"), "replies are indented as such")
			var ref *html.Node
			for _, a := range within(reply, "a") {
				if attr(a, "href") == "#m-m1" {
					ref = a
				}
			}
			require.NotNil(t, ref, "%s links to its root", id)
			// The excerpt reads as the root reads above it: formatted, not
			// its raw markdown ("*bold* _italic_"), and without a link of
			// its own, since it is one link to the root already.
			assert.True(t, strings.HasPrefix(text(ref), "bold italic x < y see https://example.com/a?b=1&c=2, snake_case_name"),
				"the link shows the root's excerpt: %q", text(ref))
			require.Len(t, within(ref, "strong"), 1)
			assert.Equal(t, "bold", text(within(ref, "strong")[0]))
			require.Len(t, within(ref, "em"), 1)
			assert.Equal(t, "italic", text(within(ref, "em")[0]))
			require.Len(t, within(ref, "code"), 1)
			assert.Equal(t, "x < y", text(within(ref, "code")[0]))
			assert.Empty(t, within(ref, "a"), "no link nested in the link to the root")
			assert.NotContains(t, text(reply), "*bold*")
		}
	})

	t.Run("system messages", func(t *testing.T) {
		want := map[string]string{
			"m-m0": "alice joined the room",
			"m-m4": "User carol added by alice",
			"m-m5": "User carol removed by alice",
			"m-m6": "Room topic changed to: New topic by alice",
			"m-m7": "bob left the room",
		}
		for id, sentence := range want {
			n := p.byID(id)
			require.NotNil(t, n, id)
			assert.True(t, hasClass(n, "sys"), "%s is styled as a system message", id)
			assert.Contains(t, text(n), sentence)
		}
	})

	t.Run("attachments and code block", func(t *testing.T) {
		m3 := p.byID("m-m3")
		require.NotNil(t, m3)
		pre := within(m3, "pre")
		require.Len(t, pre, 1)
		assert.Equal(t, `func main() { a := "<b>" }`, text(pre[0]))
		var hrefs []string
		for _, a := range within(m3, "a") {
			hrefs = append(hrefs, attr(a, "href"))
		}
		assert.Contains(t, hrefs, "assets/F1-report_final.pdf")
		assert.Contains(t, hrefs, "assets/F2-chart.png")
		imgs := within(m3, "img")
		require.Len(t, imgs, 1, "only images are shown inline")
		assert.Equal(t, "assets/F2-chart.png", attr(imgs[0], "src"))
		assert.Equal(t, "The chart", attr(imgs[0], "alt"))
		assert.Contains(t, text(m3), "report final.pdf application/pdf, 1.2 kB — Q1 numbers")
	})

	t.Run("footer counts messages", func(t *testing.T) {
		assert.Contains(t, text(p.tag("footer")[0]), "9 messages")
	})
}

func TestHTMLRendererKeepsContentInert(t *testing.T) {
	attacks := []string{
		`<script>alert(1)</script>`,
		`<img src=x onerror="alert(1)">`,
		`<a href="javascript:alert(1)">click</a>`,
		`javascript:alert(1)`,
		`[x](javascript:alert(1))`,
		`*<script>alert(1)</script>*`,
		"```</code></pre><script>alert(1)</script>```",
		"`<img src=x onerror=alert(1)>`",
		`https://example.com/"onmouseover="alert(1)`,
		`https://example.com/'><script>alert(1)</script>`,
		`_<svg onload=alert(1)>_`,
		`</div></main><iframe src="https://evil.example"></iframe>`,
		`<style>body{display:none}</style>`,
		"&lt;script&gt; already escaped",
	}
	var msgs []*sourcev1.ChatMessage
	for i, a := range attacks {
		msgs = append(msgs, &sourcev1.ChatMessage{
			Id: "x" + string(rune('a'+i)) + `"><script>`, RoomId: "R", Ts: ts("2026-05-01T09:00:00Z"),
			User: &sourcev1.UserRef{Id: "u", Username: `<script>u</script>`, Name: `<img src=x onerror=alert(2)>`},
			Text: a, EditedBy: &sourcev1.UserRef{Username: `"><script>`}, EditedAt: ts("2026-05-01T09:01:00Z"),
			ThreadId: `"><img src=x onerror=alert(3)>`,
			Attachments: []*sourcev1.Attachment{{
				FileId: `"><script>`, Name: `x" onerror="alert(4).png`, ContentType: "image/png", Title: `<script>t</script>`,
				Description: `<img src=x onerror=alert(5)>`,
			}},
		})
	}
	msgs = append(msgs, &sourcev1.ChatMessage{
		Id: "sys", RoomId: "R", Ts: ts("2026-05-01T09:00:00Z"), SystemType: "room_changed_topic",
		User: &sourcev1.UserRef{Username: "<script>"}, Text: `<img src=x onerror=alert(6)>`,
	})
	room := &sourcev1.Room{Id: "R", Name: `<script>alert("room")</script>`, Topic: `<img src=x onerror=alert(7)>`}
	data := renderHTML(t, room, roomexport.Meta{}, msgs...)
	p := parsePage(t, data)

	assert.Empty(t, p.tag("script"), "no script element")
	assert.Empty(t, p.tag("iframe"))
	assert.Empty(t, p.tag("svg"))
	assert.Len(t, p.tag("style"), 1, "only the page's own style")
	imgs := p.tag("img")
	assert.Len(t, imgs, len(attacks), "only the attachments' images")
	for n := range p.root.Descendants() {
		if n.Type != html.ElementNode {
			continue
		}
		for _, a := range n.Attr {
			assert.False(t, strings.HasPrefix(strings.ToLower(a.Key), "on"), "event handler attribute %s on <%s>", a.Key, n.Data)
			if a.Key == "href" || a.Key == "src" {
				v := strings.ToLower(strings.TrimSpace(a.Val))
				assert.False(t, strings.HasPrefix(v, "javascript:"), "%s=%q on <%s>", a.Key, a.Val, n.Data)
				ok := strings.HasPrefix(v, "http://") || strings.HasPrefix(v, "https://") ||
					strings.HasPrefix(v, "#m-") || strings.HasPrefix(v, "assets/")
				assert.True(t, ok, "unexpected link %s=%q", a.Key, a.Val)
			}
		}
	}
	// The attacks are still there to read, as text.
	body := text(p.tag("main")[0])
	for _, a := range []string{`<script>alert(1)</script>`, `<img src=x onerror="alert(1)">`, "&lt;script&gt; already escaped"} {
		assert.Contains(t, body, a)
	}
}

func TestHTMLRendererThreadRootsAreBounded(t *testing.T) {
	// 10,000 roots, then a reply to the first and one to the last: the
	// renderer forgot the oldest root's excerpt but still links to it.
	var buf bytes.Buffer
	r := roomexport.NewHTMLRenderer(&buf, roomexport.Meta{})
	require.NoError(t, r.Begin(htmlRoom))
	u := &sourcev1.UserRef{Id: "u", Username: "u"}
	for i := range 10_000 {
		require.NoError(t, r.Message(&sourcev1.ChatMessage{
			Id: "root" + strconv.Itoa(i), Ts: ts("2026-05-01T09:00:00Z"), User: u, Text: "root number " + strconv.Itoa(i), ThreadCount: 1,
		}))
	}
	buf.Reset()
	require.NoError(t, r.Message(&sourcev1.ChatMessage{Id: "r1", Ts: ts("2026-05-01T09:00:00Z"), User: u, ThreadId: "root0", Text: "late"}))
	require.NoError(t, r.Message(&sourcev1.ChatMessage{Id: "r2", Ts: ts("2026-05-01T09:00:00Z"), User: u, ThreadId: "root9999", Text: "late"}))
	out := buf.String()
	assert.Contains(t, out, `<a href="#m-root0">the thread's first message</a>`)
	assert.Contains(t, out, `<a href="#m-root9999">root number 9999</a>`)
}

// BenchmarkHTMLRenderer measures the renderer alone, per message.
func BenchmarkHTMLRenderer(b *testing.B) {
	m := &sourcev1.ChatMessage{
		Id: "GENERAL-m000042", RoomId: "GENERAL", Text: "the *quick* brown fox jumps over the `lazy` dog https://example.com/x",
		Ts: ts("2026-05-01T09:30:00.123Z"), User: &sourcev1.UserRef{Id: "u1", Username: "alice", Name: "Alice Example"},
		EditedAt: ts("2026-05-01T09:31:00Z"), EditedBy: &sourcev1.UserRef{Id: "u1", Username: "alice"},
	}
	r := roomexport.NewHTMLRenderer(io.Discard, roomexport.Meta{})
	if err := r.Begin(htmlRoom); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Message(m); err != nil {
			b.Fatal(err)
		}
	}
}

func TestHTMLRendererFormatsThreadExcerpt(t *testing.T) {
	// The line of the issue: a root whose text is markdown, and its reply.
	u := &sourcev1.UserRef{Id: "u", Username: "alice"}
	data := renderHTML(t, htmlRoom, roomexport.Meta{},
		&sourcev1.ChatMessage{Id: "root", Ts: ts("2026-05-01T09:00:00Z"), User: u, Text: "*is waiting for feedback* again", ThreadCount: 1},
		&sourcev1.ChatMessage{Id: "reply", Ts: ts("2026-05-01T09:01:00Z"), User: u, ThreadId: "root", Text: "ok"},
		&sourcev1.ChatMessage{Id: "root2", Ts: ts("2026-05-01T09:02:00Z"), User: u, Text: "```go x := 1``` _and_ <b>", ThreadCount: 1},
		&sourcev1.ChatMessage{Id: "reply2", Ts: ts("2026-05-01T09:03:00Z"), User: u, ThreadId: "root2", Text: "ok"},
	)
	assert.Contains(t, string(data), `<a href="#m-root"><strong>is waiting for feedback</strong> again</a>`)
	p := parsePage(t, data)
	ref := within(p.byID("m-reply2"), "a")
	require.Len(t, ref, 1)
	assert.Empty(t, within(ref[0], "pre"), "a fence in an excerpt reads inline")
	require.Len(t, within(ref[0], "code"), 1)
	assert.Equal(t, "go x := 1", text(within(ref[0], "code")[0]))
	assert.Equal(t, "and", text(within(ref[0], "em")[0]))
	assert.Contains(t, text(ref[0]), "<b>", "markup in the root stays text")
}
