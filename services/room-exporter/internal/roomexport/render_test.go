package roomexport_test

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/types/known/timestamppb"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
)

func ts(s string) *timestamppb.Timestamp {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return timestamppb.New(t)
}

func TestJSONRendererDocument(t *testing.T) {
	room := &sourcev1.Room{
		Id: "GENERAL", Name: "general", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL,
		Topic: "Company <news> & chat", CreatedAt: ts("2026-05-01T00:00:00Z"),
	}
	msgs := []*sourcev1.ChatMessage{
		{
			Id: "m1", RoomId: "GENERAL", Text: "hello <b>", Ts: ts("2026-05-01T09:30:00.123456Z"),
			User:     &sourcev1.UserRef{Id: "u1", Username: "alice", Name: "Alice Example"},
			EditedAt: ts("2026-05-01T09:31:00+02:00"), EditedBy: &sourcev1.UserRef{Id: "u1", Username: "alice", Name: "ignored"},
			ThreadCount: 3, ThreadLastMessage: ts("2026-05-01T10:00:00Z"),
		},
		{
			Id: "m2", RoomId: "GENERAL", Text: "", Ts: ts("2026-05-01T09:32:00Z"),
			User: &sourcev1.UserRef{Id: "u2", Username: "bob"}, ThreadId: "m1",
			Attachments: []*sourcev1.Attachment{
				{FileId: "f1", Name: "report final.pdf", ContentType: "application/pdf", Size: 10, Description: "Q1"},
				{FileId: "f2", Name: "../x.png", Title: "Chart"},
			},
		},
		{Id: "m3", RoomId: "GENERAL", Ts: ts("2026-05-01T09:33:00Z"), User: &sourcev1.UserRef{Id: "u3", Username: "carol"}, SystemType: "uj"},
	}
	var buf bytes.Buffer
	r := roomexport.NewJSONRenderer(&buf)
	require.NoError(t, r.Begin(room))
	for _, m := range msgs {
		require.NoError(t, r.Message(m))
	}
	require.NoError(t, r.End())

	want := `{"room":{"_id":"GENERAL","name":"general","t":"c","topic":"Company <news> & chat","ts":"2026-05-01T00:00:00.000Z"},
"messages":[
{"_id":"m1","rid":"GENERAL","msg":"hello <b>","ts":"2026-05-01T09:30:00.123Z","u":{"_id":"u1","username":"alice","name":"Alice Example"},"editedAt":"2026-05-01T07:31:00.000Z","editedBy":{"_id":"u1","username":"alice"},"tcount":3,"tlm":"2026-05-01T10:00:00.000Z"},
{"_id":"m2","rid":"GENERAL","msg":"","ts":"2026-05-01T09:32:00.000Z","u":{"_id":"u2","username":"bob"},"tmid":"m1","file":{"_id":"f1","name":"report final.pdf","type":"application/pdf"},"attachments":[{"type":"file","title":"report final.pdf","title_link":"assets/f1-report_final.pdf","description":"Q1"},{"type":"file","title":"Chart","title_link":"assets/f2-.._x.png"}]},
{"_id":"m3","rid":"GENERAL","msg":"","ts":"2026-05-01T09:33:00.000Z","u":{"_id":"u3","username":"carol"},"t":"uj"}
]}
`
	assert.Equal(t, want, buf.String())
	assert.True(t, json.Valid(buf.Bytes()))
}

// BenchmarkJSONRenderer measures the renderer alone, per message: the
// allocations here are what the exporter itself adds on top of NATS and
// minio-go.
func BenchmarkJSONRenderer(b *testing.B) {
	m := &sourcev1.ChatMessage{
		Id: "GENERAL-m000042", RoomId: "GENERAL", Text: "the quick brown fox jumps over the lazy dog",
		Ts: ts("2026-05-01T09:30:00.123Z"), User: &sourcev1.UserRef{Id: "u1", Username: "alice", Name: "Alice Example"},
		EditedAt: ts("2026-05-01T09:31:00Z"), EditedBy: &sourcev1.UserRef{Id: "u1", Username: "alice"},
	}
	r := roomexport.NewJSONRenderer(io.Discard)
	if err := r.Begin(&sourcev1.Room{Id: "GENERAL"}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := r.Message(m); err != nil {
			b.Fatal(err)
		}
	}
}

func TestJSONRendererEmptyRoom(t *testing.T) {
	tests := []struct {
		name string
		room *sourcev1.Room
		want string
	}{
		{
			name: "direct room without name",
			room: &sourcev1.Room{Id: "u1u2", Type: sourcev1.RoomType_ROOM_TYPE_DIRECT, Usernames: []string{"alice", "bob"}},
			want: `{"room":{"_id":"u1u2","t":"d","usernames":["alice","bob"]},` + "\n" + `"messages":[]}` + "\n",
		},
		{
			name: "private group",
			room: &sourcev1.Room{Id: "P1", Name: "staff", Type: sourcev1.RoomType_ROOM_TYPE_PRIVATE},
			want: `{"room":{"_id":"P1","name":"staff","t":"p"},` + "\n" + `"messages":[]}` + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			r := roomexport.NewJSONRenderer(&buf)
			require.NoError(t, r.Begin(tt.room))
			require.NoError(t, r.End())
			assert.Equal(t, tt.want, buf.String())
			var doc struct {
				Messages []json.RawMessage `json:"messages"`
			}
			require.NoError(t, json.Unmarshal(buf.Bytes(), &doc))
			assert.NotNil(t, doc.Messages, "messages is an empty array, not null")
		})
	}
}
