package main

import (
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

// TestRunRejectsBadConfig: run goes through the exporters' validated
// configuration (its cases are in shared/infra's RunExporter tests).
func TestRunRejectsBadConfig(t *testing.T) {
	infratest.RejectsConfig(t, run, map[string]string{"DATAPORT_EXPORTER_CONCURRENCY": "0"}, "DATAPORT_EXPORTER_CONCURRENCY")
}

// TestRunExportsAndShutsDown starts the binary's run against real NATS and
// MinIO, checks its probes, has it export a room, then stops it.
func TestRunExportsAndShutsDown(t *testing.T) {
	st := infratest.StartStack(t)
	ns, ms := st.NATS, st.MinIO
	addr := infratest.FreeAddr(t)
	env := st.Env(map[string]string{
		"DATAPORT_HEALTH_ADDR": addr,
		"DATAPORT_TASK_SECRET": "main-test-task-key-0123456789abcdef",
	})
	p := infratest.Start(t, run, env)
	p.WaitReady(t, addr)
	assert.Contains(t, p.Output(t), "DATAPORT_EXPORTER_CONCURRENCY=4\n")
	infratest.AssertMasked(t, p.Output(t), map[string]string{
		"DATAPORT_S3_SECRET_KEY": ms.Config.SecretKey,
		"DATAPORT_TASK_SECRET":   env["DATAPORT_TASK_SECRET"],
	})

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
	pub := bus.NewPublisher(ns.JS, nil)
	signer, err := bus.NewTaskSigner([]byte(env["DATAPORT_TASK_SECRET"]))
	require.NoError(t, err)
	task := &exportv1.ExportTask{
		JobId: "job-main", Kind: exportv1.JobKind_JOB_KIND_ROOM, Format: exportv1.Format_FORMAT_JSON,
		PartsTotal: 1, Room: &exportv1.RoomScope{RoomId: "MAIN"}, OwnerId: "owner", Scope: access.ScopeFor(owner, ""),
	}
	require.NoError(t, pub.PublishTask(t.Context(), signer, "exports.tasks.room", "job-main.task.0", task))

	events, err := ns.JS.Stream(t.Context(), bus.StreamExportEvents)
	require.NoError(t, err)
	var raw *jetstream.RawStreamMsg
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		raw, err = events.GetLastMsgForSubject(t.Context(), "exports.status.part.job-main")
		assert.NoError(c, err)
	}, 30*time.Second, 20*time.Millisecond)
	var part exportv1.PartUploaded
	require.NoError(t, proto.Unmarshal(raw.Data, &part))
	assert.Equal(t, uint64(3), part.GetFile().GetRecords())
	_, err = ms.Store.Stat(t.Context(), "dataport-exports", part.GetFile().GetObjectKey())
	assert.NoError(t, err, "the part is in the default exports bucket")

	p.Stop(t)
}
