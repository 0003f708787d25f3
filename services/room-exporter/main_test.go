package main

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/infra/infratest"
)

func TestRunRejectsBadConfig(t *testing.T) {
	infratest.RejectsExporterConfig(t, run)
}

// TestRunExportsAndShutsDown starts the binary's run against real NATS and
// MinIO, checks its probes, has it export a room, then stops it.
func TestRunExportsAndShutsDown(t *testing.T) {
	st := infratest.StartStack(t)
	ns := st.NATS
	e := st.StartExporter(t, run)

	// One export through the running service.
	st.Put(t, bus.BucketRooms, "MAIN", &sourcev1.Room{Id: "MAIN", Name: "main", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	for i := range 3 {
		data, err := proto.Marshal(&sourcev1.ChatMessage{Id: "m" + strconv.Itoa(i), RoomId: "MAIN", Text: "hi", Ts: timestamppb.Now()})
		require.NoError(t, err)
		_, err = ns.JS.Publish(t.Context(), "chat.messages.MAIN", data)
		require.NoError(t, err)
	}
	owner := &sourcev1.User{Id: "owner", Roles: []string{"admin"}}
	st.Put(t, bus.BucketUsers, "owner", owner)
	task := &exportv1.ExportTask{
		JobId: "job-main", Kind: exportv1.JobKind_JOB_KIND_ROOM, Format: exportv1.Format_FORMAT_JSON,
		PartsTotal: 1, Room: &exportv1.RoomScope{RoomId: "MAIN"}, OwnerId: "owner", Scope: access.ScopeFor(owner, ""),
	}
	e.Submit(t, "exports.tasks.room", task)

	part := e.WaitPart(t, "job-main")
	assert.Equal(t, uint64(3), part.GetFile().GetRecords())

	e.Stop(t)
}
