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

func TestRunRejectsBadConfig(t *testing.T) {
	infratest.RejectsExporterConfig(t, run)
}

// TestRunExportsAndShutsDown starts the binary's run against real NATS and
// MinIO, checks its probes, has it export records, then stops it.
func TestRunExportsAndShutsDown(t *testing.T) {
	st := infratest.StartStack(t)
	ns := st.NATS
	e := st.StartExporter(t, run)

	// One export through the running service: three transactions of acme,
	// exported by a member of acme.
	owner := &sourcev1.User{Id: "owner", Roles: []string{"admin"}}
	st.Put(t, bus.BucketUsers, "owner", owner)
	st.Put(t, bus.BucketOrgMembers, "owner.acme", &sourcev1.OrganizationMembership{UserId: "owner", OrganizationId: "acme"})
	st.Put(t, bus.BucketJobs, "job-main", &exportv1.Job{Id: "job-main", State: exportv1.JobState_JOB_STATE_PROCESSING, Kind: exportv1.JobKind_JOB_KIND_RECORDS})
	subject, err := bus.RecordSubject("transactions", "acme")
	require.NoError(t, err)
	for i := range 3 {
		data, err := proto.Marshal(&sourcev1.Record{Id: "t" + strconv.Itoa(i), Resource: "transactions", OrganizationId: "acme", CreatedTime: timestamppb.Now()})
		require.NoError(t, err)
		_, err = ns.JS.Publish(t.Context(), subject, data)
		require.NoError(t, err)
	}
	task := &exportv1.ExportTask{
		JobId: "job-main", Kind: exportv1.JobKind_JOB_KIND_RECORDS, PartKind: exportv1.PartKind_PART_KIND_RECORDS,
		Format: exportv1.Format_FORMAT_CSV, PartsTotal: 1, Records: &exportv1.RecordsScope{Resource: "transactions"},
		OwnerId: "owner", Scope: access.ScopeFor(owner, "acme"),
	}
	e.Submit(t, "exports.tasks.records", task)
	// A room task is not this service's: it stays in the work queue for
	// the room-exporter.
	roomTask := &exportv1.ExportTask{JobId: "job-room", Kind: exportv1.JobKind_JOB_KIND_ROOM, Format: exportv1.Format_FORMAT_JSON,
		PartsTotal: 1, Room: &exportv1.RoomScope{RoomId: "MAIN"}, OwnerId: "owner", Scope: access.ScopeFor(owner, "")}
	e.Submit(t, "exports.tasks.room", roomTask)

	part := e.WaitPart(t, "job-main")
	assert.Equal(t, uint64(3), part.GetFile().GetRecords())

	// The part is announced before its task is acknowledged, so the work
	// queue drops the record task a moment after the announcement.
	tasks, err := ns.JS.Stream(t.Context(), bus.StreamExportTasks)
	require.NoError(t, err)
	var subjects map[string]uint64
	assert.Eventually(t, func() bool {
		info, err := tasks.Info(t.Context(), jetstream.WithSubjectFilter("exports.tasks.>"))
		if err != nil {
			return false
		}
		subjects = info.State.Subjects
		return subjects["exports.tasks.records"] == 0
	}, 10*time.Second, 20*time.Millisecond, "the record task is acknowledged")
	assert.Equal(t, map[string]uint64{"exports.tasks.room": 1}, subjects, "the record task is done, the room task untouched")
	events, err := ns.JS.Stream(t.Context(), bus.StreamExportEvents)
	require.NoError(t, err)
	_, err = events.GetLastMsgForSubject(t.Context(), "exports.status.part.job-room")
	assert.ErrorIs(t, err, jetstream.ErrMsgNotFound, "the room task was not exported here")

	e.Stop(t)
}
