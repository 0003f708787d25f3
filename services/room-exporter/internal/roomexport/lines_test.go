package roomexport_test

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/csv"
	"encoding/json"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
	"dataport.dev/shared/bus"
)

// hostileStrings are texts every encoder treats specially somewhere:
// JSON escapes, CSV quoting (commas, quotes, line ends, a leading space,
// PostgreSQL's \. marker), unicode and invalid UTF-8.
var hostileStrings = []string{
	"", "plain", `quote " backslash \ slash /`, `"starts and ends with quotes"`, "comma, separated, values",
	"line\nbreak", "crlf\r\nline", "lone\rcr", " leading space", "\tleading tab", `\.`, "trailing space ",
	"<b>&amp;</b>", "\x00\x01\x1f\x7f", "line\u2028sep\u2029par", "emoji 😀 ünïcødé, «quoted»", "\u00a0nbsp first",
	`a,"b",c` + "\n" + `d,"e"`, strings.Repeat("long, ", 300),
}

// hostileMessages are messages whose every text field is one of
// hostileStrings, with the optional fields of the formats set in turn.
func hostileMessages(roomID string) []*sourcev1.ChatMessage {
	var msgs []*sourcev1.ChatMessage
	for i, s := range hostileStrings {
		m := &sourcev1.ChatMessage{
			Id: roomID + "-h" + strconv.Itoa(i), RoomId: roomID, Text: s,
			Ts:   timestamppb.New(time.Date(2026, 5, 1, 9, 30, i, 123456789, time.UTC)),
			User: &sourcev1.UserRef{Id: "u" + s, Username: s, Name: s},
		}
		switch i % 4 {
		case 0:
			m.EditedAt = timestamppb.New(time.Date(2026, 5, 1, 9, 31, 0, 0, time.FixedZone("x", 3600)))
			m.EditedBy = &sourcev1.UserRef{Id: "e", Username: s}
		case 1:
			m.ThreadId, m.SystemType = roomID+"-h0", s
		case 2:
			m.ThreadCount, m.ThreadLastMessage = 7, timestamppb.New(time.Unix(-5, 0))
			m.Attachments = []*sourcev1.Attachment{
				{FileId: "f" + strconv.Itoa(i), Name: s, ContentType: "text/plain", Title: s, Description: s},
				{FileId: "f2", Name: "../x,y.png"},
			}
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// wantCSVRow is the row a user expects for m under roomexport.CSVColumns,
// written out field by field from the message.
func wantCSVRow(m *sourcev1.ChatMessage) []string {
	tm := func(ts *timestamppb.Timestamp) string {
		if ts == nil {
			return ""
		}
		return ts.AsTime().UTC().Format("2006-01-02T15:04:05.000Z")
	}
	var files []string
	for _, a := range m.GetAttachments() {
		files = append(files, roomexport.AssetPath(a.GetFileId(), a.GetName()))
	}
	tcount := ""
	if m.GetThreadCount() != 0 {
		tcount = strconv.Itoa(int(m.GetThreadCount()))
	}
	return []string{
		m.GetId(), tm(m.GetTs()), m.GetUser().GetId(), m.GetUser().GetUsername(), m.GetUser().GetName(),
		m.GetText(), m.GetSystemType(), m.GetThreadId(), tcount, tm(m.GetThreadLastMessage()),
		tm(m.GetEditedAt()), m.GetEditedBy().GetUsername(), strings.Join(files, " "),
	}
}

// readCSVGzip gunzips data (every member) and parses it with encoding/csv.
func readCSVGzip(t testing.TB, data []byte) [][]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	require.NoError(t, err)
	raw, err := io.ReadAll(zr)
	require.NoError(t, err)
	r := csv.NewReader(bytes.NewReader(raw))
	r.FieldsPerRecord = len(roomexport.CSVColumns)
	rows, err := r.ReadAll()
	require.NoError(t, err)
	return rows
}

// readLines decodes a JSON lines file, line by line.
func readLines(t testing.TB, data []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "line %d: %q", len(out)+1, sc.Text())
		out = append(out, m)
	}
	require.NoError(t, sc.Err())
	if len(data) > 0 {
		require.Equal(t, byte('\n'), data[len(data)-1], "every line ends with a newline")
	}
	return out
}

func renderAll(t testing.TB, r roomexport.Renderer, msgs []*sourcev1.ChatMessage) {
	t.Helper()
	require.NoError(t, r.Begin(&sourcev1.Room{Id: "HOSTILE"}))
	for _, m := range msgs {
		require.NoError(t, r.Message(m))
	}
	require.NoError(t, r.End())
}

// TestJSONLRendererIsTheJSONDocumentsMessages checks that every line is
// byte for byte the JSON document's object of the same message, and
// decodes to the same value.
func TestJSONLRendererIsTheJSONDocumentsMessages(t *testing.T) {
	msgs := hostileMessages("HOSTILE")
	g := newMessageGen("GEN")
	for i := range 500 {
		msgs = append(msgs, g.edit(g.message(i)))
	}
	var doc, lines bytes.Buffer
	renderAll(t, roomexport.NewJSONRenderer(&doc), msgs)
	renderAll(t, roomexport.NewJSONLRenderer(&lines), msgs)

	docLines := strings.Split(doc.String(), "\n")
	got := strings.Split(strings.TrimSuffix(lines.String(), "\n"), "\n")
	require.Len(t, got, len(msgs))
	for i := range msgs {
		assert.Equal(t, strings.TrimSuffix(docLines[i+2], ","), got[i], "message %d", i)
	}
	want := decodeDocument(t, doc.Bytes()).Messages
	assert.Equal(t, want, readLines(t, lines.Bytes()))

	var empty bytes.Buffer
	renderAll(t, roomexport.NewJSONLRenderer(&empty), nil)
	assert.Empty(t, empty.Bytes(), "an empty room is an empty file")
}

// TestCSVGzipRenderer checks what a user reads back from a room's csv.gz:
// gunzip, then encoding/csv, gives the header and one row per message
// with every field as sent; and the uncompressed bytes are what
// encoding/csv's Writer makes of those rows.
func TestCSVGzipRenderer(t *testing.T) {
	msgs := hostileMessages("HOSTILE")
	var out bytes.Buffer
	renderAll(t, roomexport.NewCSVGzipRenderer(&out), msgs)

	want := [][]string{roomexport.CSVColumns}
	for _, m := range msgs {
		want = append(want, wantCSVRow(m))
	}
	var ref bytes.Buffer
	w := csv.NewWriter(&ref)
	require.NoError(t, w.WriteAll(want))
	zr, err := gzip.NewReader(bytes.NewReader(out.Bytes()))
	require.NoError(t, err)
	raw, err := io.ReadAll(zr)
	require.NoError(t, err)
	assert.Equal(t, ref.String(), string(raw), "encoding/csv's quoting, byte for byte")

	rows := readCSVGzip(t, out.Bytes())
	require.Len(t, rows, len(want))
	for i := range want {
		exp := make([]string, len(want[i]))
		for j, f := range want[i] {
			// encoding/csv's Reader reads a quoted CRLF as LF.
			exp[j] = strings.ReplaceAll(f, "\r\n", "\n")
		}
		assert.Equal(t, exp, rows[i], "row %d", i)
	}

	var empty bytes.Buffer
	renderAll(t, roomexport.NewCSVGzipRenderer(&empty), nil)
	assert.Equal(t, [][]string{roomexport.CSVColumns}, readCSVGzip(t, empty.Bytes()), "an empty room is the header")
}

// TestExportRoomLineFormats exports one room, with hostile texts and a
// republished message, as json, jsonl and csv.gz through the exporter and
// checks the files as downloaded: name, content type, and contents that
// agree with the JSON document.
func TestExportRoomLineFormats(t *testing.T) {
	h := start(t, nil)
	h.putRoom(t, &sourcev1.Room{Id: "LINES", Name: "lines & co", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	msgs := append(roomMessages("LINES", 8), hostileMessages("LINES")...)
	edit := fixtureMessage("LINES", 0)
	edit.Text, edit.EditedAt = "first, \"corrected\"\nagain", timestamppb.New(msgTime(0).Add(time.Minute))
	h.publishMessages(t, append(msgs, edit)...)
	last := append([]*sourcev1.ChatMessage{edit}, msgs[1:]...) // what the export shows, in order

	export := func(jobID string, format exportv1.Format) (*exportv1.File, []byte) {
		task := roomTask(jobID, "LINES", nil, nil)
		task.Format = format
		require.NoError(t, h.exp.Export(t.Context(), task))
		var part exportv1.PartUploaded
		h.event(t, bus.EventPart, jobID, &part)
		return part.GetFile(), h.download(t, part.GetFile().GetObjectKey())
	}
	jf, jdata := export("lines-json", exportv1.Format_FORMAT_JSON)
	doc := decodeDocument(t, jdata)
	require.Len(t, doc.Messages, len(last))
	assert.Equal(t, "lines___co.json", jf.GetName())

	t.Run("jsonl", func(t *testing.T) {
		f, data := export("lines-jsonl", exportv1.Format_FORMAT_JSONL)
		assert.Equal(t, "lines___co.jsonl", f.GetName())
		assert.True(t, strings.HasSuffix(f.GetObjectKey(), "/lines___co.jsonl"))
		assert.Equal(t, "application/x-ndjson", f.GetContentType())
		assert.Equal(t, uint64(len(last)), f.GetRecords())
		assert.Equal(t, doc.Messages, readLines(t, data), "each line is the JSON document's message")
		assert.Equal(t, "first, \"corrected\"\nagain", readLines(t, data)[0]["msg"], "the last version, at its first position")
	})
	t.Run("csv.gz", func(t *testing.T) {
		f, data := export("lines-csv", exportv1.Format_FORMAT_CSV)
		assert.Equal(t, "lines___co.csv.gz", f.GetName())
		assert.Equal(t, "application/gzip", f.GetContentType())
		assert.Equal(t, uint64(len(last)), f.GetRecords())
		info, err := h.store.Stat(t.Context(), bucket, f.GetObjectKey())
		require.NoError(t, err)
		assert.Equal(t, "application/gzip", info.ContentType, "the stored object's type, which a download serves")
		rows := readCSVGzip(t, data)
		require.Len(t, rows, len(last)+1)
		assert.Equal(t, roomexport.CSVColumns, rows[0])
		for i, m := range last {
			want := wantCSVRow(m)
			for j := range want {
				want[j] = strings.ReplaceAll(want[j], "\r\n", "\n")
			}
			assert.Equal(t, want, rows[i+1], "row %d", i+1)
			assert.Equal(t, doc.Messages[i]["_id"], rows[i+1][0])
			assert.Equal(t, doc.Messages[i]["ts"], rows[i+1][1])
		}
	})
}
