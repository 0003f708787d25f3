package roomexport_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
)

// The JSON renderer appends messages by hand; these types and refMessage
// are how it encoded them with encoding/json before, kept as the reference
// the bytes must equal.
type refUser struct {
	ID       string `json:"_id"`
	Username string `json:"username"`
	Name     string `json:"name,omitempty"`
}

type refEditor struct {
	ID       string `json:"_id"`
	Username string `json:"username"`
}

type refFile struct {
	ID   string `json:"_id"`
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
}

type refAttachment struct {
	Type        string `json:"type"`
	Title       string `json:"title"`
	TitleLink   string `json:"title_link"`
	Description string `json:"description,omitempty"`
}

type refJSONMessage struct {
	ID          string          `json:"_id"`
	RoomID      string          `json:"rid"`
	Msg         string          `json:"msg"`
	TS          string          `json:"ts"`
	User        refUser         `json:"u"`
	EditedAt    string          `json:"editedAt,omitempty"`
	EditedBy    *refEditor      `json:"editedBy,omitempty"`
	ThreadID    string          `json:"tmid,omitempty"`
	ThreadCount uint32          `json:"tcount,omitempty"`
	ThreadLast  string          `json:"tlm,omitempty"`
	Type        string          `json:"t,omitempty"`
	File        *refFile        `json:"file,omitempty"`
	Attachments []refAttachment `json:"attachments,omitempty"`
}

func refTime(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return ""
	}
	return ts.AsTime().UTC().Format("2006-01-02T15:04:05.000Z")
}

func refMessage(t *testing.T, m *sourcev1.ChatMessage) []byte {
	t.Helper()
	jm := refJSONMessage{
		ID: m.GetId(), RoomID: m.GetRoomId(), Msg: m.GetText(), TS: refTime(m.GetTs()),
		User:     refUser{ID: m.GetUser().GetId(), Username: m.GetUser().GetUsername(), Name: m.GetUser().GetName()},
		EditedAt: refTime(m.GetEditedAt()), ThreadID: m.GetThreadId(), ThreadCount: m.GetThreadCount(),
		ThreadLast: refTime(m.GetThreadLastMessage()), Type: m.GetSystemType(),
	}
	if jm.TS == "" {
		jm.TS = refTime(&timestamppb.Timestamp{})
	}
	if e := m.GetEditedBy(); e != nil {
		jm.EditedBy = &refEditor{ID: e.GetId(), Username: e.GetUsername()}
	}
	for i, a := range m.GetAttachments() {
		if i == 0 {
			jm.File = &refFile{ID: a.GetFileId(), Name: a.GetName(), Type: a.GetContentType()}
		}
		title := a.GetTitle()
		if title == "" {
			title = a.GetName()
		}
		jm.Attachments = append(jm.Attachments, refAttachment{Type: "file", Title: title,
			TitleLink: roomexport.AssetPath(a.GetFileId(), a.GetName()), Description: a.GetDescription()})
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	require.NoError(t, enc.Encode(jm))
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// TestJSONMessageEncoding renders messages with every optional field and
// every kind of character encoding/json treats specially, and checks each
// line against encoding/json's bytes.
func TestJSONMessageEncoding(t *testing.T) {
	nasty := []string{
		"", "plain", `quote " backslash \ slash /`, "<b>&amp;</b>", "tab\there\nline\rcr\bbs\ffeed",
		"\x00\x01\x1f\x7f", "line\u2028sep\u2029par", "emoji 😀 ünïcødé", "bad \xff\xfe utf8 \xe2\x82",
		strings.Repeat("long ", 300),
	}
	var msgs []*sourcev1.ChatMessage
	for i, s := range nasty {
		m := &sourcev1.ChatMessage{Id: "m" + s, RoomId: s, Text: s, User: &sourcev1.UserRef{Id: s, Username: s, Name: s}}
		switch i % 4 {
		case 0:
			m.Ts = timestamppb.New(time.Date(2026, 5, 1, 9, 30, 0, 123456789, time.UTC))
			m.EditedAt = timestamppb.New(time.Date(2026, 5, 1, 9, 31, 0, 0, time.FixedZone("x", 3600)))
			m.EditedBy = &sourcev1.UserRef{Id: s, Username: s}
		case 1:
			m.ThreadId, m.SystemType = s, s
			m.EditedBy = &sourcev1.UserRef{} // set but empty
		case 2:
			m.ThreadCount, m.ThreadLastMessage = 7, timestamppb.New(time.Unix(-5, 0))
			m.Attachments = []*sourcev1.Attachment{
				{FileId: s, Name: s, ContentType: s, Title: s, Description: s},
				{FileId: "f2", Name: "../x.png"},
			}
		case 3:
			m.Ts = timestamppb.New(time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC))
			m.Attachments = []*sourcev1.Attachment{{Name: s}}
		}
		msgs = append(msgs, m)
	}
	g := newMessageGen("REF")
	for i := range 2000 {
		m := g.message(i)
		if i%3 == 0 {
			m = g.edit(m)
		}
		msgs = append(msgs, m)
	}

	var out bytes.Buffer
	r := roomexport.NewJSONRenderer(&out)
	require.NoError(t, r.Begin(&sourcev1.Room{Id: "REF"}))
	for _, m := range msgs {
		require.NoError(t, r.Message(m))
	}
	require.NoError(t, r.End())

	lines := strings.Split(out.String(), "\n")
	require.Len(t, lines, len(msgs)+4, "room and messages lines, one line per message, closing line, final newline")
	for i, m := range msgs {
		want := string(refMessage(t, m))
		got := strings.TrimSuffix(lines[i+2], ",")
		assert.Equal(t, want, got, "message %d", i)
	}
	var doc struct {
		Messages []map[string]any `json:"messages"`
	}
	require.NoError(t, json.Unmarshal(out.Bytes(), &doc), "the document is valid JSON")
	assert.Len(t, doc.Messages, len(msgs))
}
