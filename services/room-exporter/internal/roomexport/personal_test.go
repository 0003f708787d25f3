package roomexport_test

import (
	"bytes"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
	"dataport.dev/shared/pseudonym"
)

func TestPersonalRendererHidesOthersInSystemMessages(t *testing.T) {
	alice := &sourcev1.UserRef{Id: "ualice", Username: "alice", Name: "Alice Example"}
	carol := &sourcev1.UserRef{Id: "ucarol", Username: "carol", Name: "Carol"}
	msgs := []*sourcev1.ChatMessage{
		{Id: "s1", Ts: ts("2026-05-01T09:00:00Z"), User: alice, SystemType: "au", Text: "carol"},
		{Id: "s2", Ts: ts("2026-05-01T09:01:00Z"), User: carol, SystemType: "uj", Text: "carol"},
		{Id: "m1", Ts: ts("2026-05-01T09:02:00Z"), User: carol, Text: "hi", EditedBy: carol, EditedAt: ts("2026-05-01T09:03:00Z")},
		{Id: "s3", Ts: ts("2026-05-01T09:04:00Z"), User: carol, SystemType: "ru", Text: "alice"},
	}
	carolAs := roomexport.Pseudonym("job-1", "carol")
	assert.Equal(t, carolAs, roomexport.Pseudonym("job-1", "carol"), "the same person reads the same in every room file")
	assert.NotEqual(t, carolAs, roomexport.Pseudonym("job-2", "carol"), "and differently in another download")
	assert.Equal(t, pseudonym.Of("job-1", "carol"), carolAs, "the gateway's userNameTable names carol so")

	var buf bytes.Buffer
	r := roomexport.NewPersonalRenderer(&buf, "job-1", "alice", true)
	require.NoError(t, r.Begin(htmlRoom))
	for _, m := range msgs {
		require.NoError(t, r.Message(m))
	}
	require.NoError(t, r.End())
	assert.Equal(t,
		`{"msg":"User `+carolAs+` added by alice","username":"alice","ts":"2026-05-01T09:00:00.000Z","type":"au"}`+"\n"+
			`{"msg":"`+carolAs+` joined the room","username":"`+carolAs+`","ts":"2026-05-01T09:01:00.000Z","type":"uj"}`+"\n"+
			`{"msg":"hi","username":"`+carolAs+`","ts":"2026-05-01T09:02:00.000Z"}`+"\n"+
			`{"msg":"User alice removed by `+carolAs+`","username":"`+carolAs+`","ts":"2026-05-01T09:04:00.000Z","type":"ru"}`+"\n",
		buf.String())
	assert.Equal(t, "carol", msgs[1].GetText(), "the caller's message is left as it was")
	assert.Equal(t, "carol", msgs[2].GetUser().GetUsername())

	buf.Reset()
	r = roomexport.NewPersonalRenderer(&buf, "job-1", "alice", false)
	require.NoError(t, r.Begin(htmlRoom))
	for _, m := range msgs {
		require.NoError(t, r.Message(m))
	}
	require.NoError(t, r.End())
	assert.NotContains(t, buf.String(), "carol")
	assert.NotContains(t, buf.String(), "Carol")
	assert.Contains(t, buf.String(), "(edited by @"+carolAs)
}

func TestPersonalRendererKnowsEveryMessageField(t *testing.T) {
	// hidingRenderer copies a message field by field (a struct copy would
	// copy the message's internal lock); a field added to ChatMessage must
	// be added to that copy too, or personal downloads would drop it.
	fields := (&sourcev1.ChatMessage{}).ProtoReflect().Descriptor().Fields()
	assert.Equal(t, 12, fields.Len(), "update hidingRenderer.Message for the new ChatMessage field")
}
