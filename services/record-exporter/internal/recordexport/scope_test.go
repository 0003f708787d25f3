package recordexport_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/bustest"
	"dataport.dev/shared/demo"
	"dataport.dev/shared/taskrun/taskruntest"
)

// TestScopeBoundsWhatIsRead runs record exports as carol, a plain user of
// the demo data set: member of the public channels and of her direct room
// with admin, not of the private dev-team group nor of alice and bob's
// direct room, and a member of the globex organization only.
func TestScopeBoundsWhatIsRead(t *testing.T) {
	e := setup(t)
	x := e.exporter(t, nil)
	full := demo.Generate() // e.data keeps acme's records only
	carol, ok := full.User("carol")
	require.True(t, ok)
	alice, ok := full.User("alice")
	require.True(t, ok)

	readable := map[string]bool{}
	for _, r := range full.Rooms {
		if r.GetType() == sourcev1.RoomType_ROOM_TYPE_CHANNEL {
			readable[r.GetId()] = true
		}
	}
	for _, m := range full.Memberships {
		if m.GetUserId() == carol.User.GetId() {
			readable[m.GetRoomId()] = true
		}
	}
	devTeam, ok := full.RoomByName("dev-team")
	require.True(t, ok)
	require.False(t, readable[devTeam.GetId()], "the fixture: carol is not in dev-team")

	as := func(u *sourcev1.User, org string, sc *exportv1.RecordsScope) *exportv1.ExportTask {
		task := e.task(t, exportv1.Format_FORMAT_CSV, sc)
		task.OwnerId, task.Scope = u.GetId(), access.ScopeFor(u, org)
		return task
	}
	column := func(t *testing.T, task *exportv1.ExportTask) []string {
		t.Helper()
		require.NoError(t, x.Export(t.Context(), task))
		rows := readCSV(t, e.download(t, e.part(t, task.GetJobId()).GetFile()))
		var out []string
		for _, r := range rows[1:] {
			out = append(out, r[0])
		}
		return out
	}
	messagesOf := func(rooms map[string]bool) int {
		n := 0
		for id, msgs := range full.Messages {
			if rooms[id] {
				n += len(msgs)
			}
		}
		return n
	}

	t.Run("messages of the rooms she may read, no others", func(t *testing.T) {
		rids := column(t, as(carol.User, "", &exportv1.RecordsScope{Resource: "messages", Fields: []string{"rid"}}))
		assert.Len(t, rids, messagesOf(readable))
		for _, rid := range rids {
			if !readable[rid] {
				t.Fatalf("carol's export holds a message of room %s", rid)
			}
		}
	})

	t.Run("permissions her roles do not grant are ignored", func(t *testing.T) {
		task := as(carol.User, "", &exportv1.RecordsScope{Resource: "messages", Fields: []string{"rid"}})
		task.Scope.Permissions = append(task.Scope.Permissions, string(access.PermExportAnyRoom), string(access.PermViewFullOtherUserInfo))
		rids := column(t, task)
		assert.Len(t, rids, messagesOf(readable))
		assert.NotContains(t, rids, devTeam.GetId())

		users := as(carol.User, "", &exportv1.RecordsScope{Resource: "users", Fields: []string{"id", "email"}})
		users.Scope.Permissions = task.Scope.Permissions
		assert.Equal(t, []string{carol.User.GetId()}, column(t, users))
	})

	t.Run("users: her own profile only", func(t *testing.T) {
		assert.Equal(t, []string{carol.User.GetId()}, column(t, as(carol.User, "", &exportv1.RecordsScope{Resource: "users", Fields: []string{"id", "email"}})))
	})

	t.Run("rooms: the ones she may read", func(t *testing.T) {
		ids := column(t, as(carol.User, "", &exportv1.RecordsScope{Resource: "rooms", Fields: []string{"id"}}))
		var want []string
		for id := range readable {
			want = append(want, id)
		}
		assert.ElementsMatch(t, want, ids)
	})

	t.Run("records of her organization only", func(t *testing.T) {
		e.putKV(t, bus.BucketOrgMembers, carol.User.GetId()+".globex", &sourcev1.OrganizationMembership{UserId: carol.User.GetId(), OrganizationId: "globex"})
		ids := column(t, as(carol.User, "globex", &exportv1.RecordsScope{Resource: "transactions", Fields: []string{"id"}}))
		var want []string
		for _, r := range full.Records[demo.ResourceTransactions] {
			if r.GetOrganizationId() == "globex" {
				want = append(want, r.GetId())
			}
		}
		require.NotEmpty(t, want)
		assert.Equal(t, want, ids)
	})

	refused := []struct {
		name string
		task func() *exportv1.ExportTask
	}{
		{"an organization she is not a member of", func() *exportv1.ExportTask {
			return as(carol.User, "acme", &exportv1.RecordsScope{Resource: "transactions"})
		}},
		{"organization records outside any organization", func() *exportv1.ExportTask {
			return as(carol.User, "", &exportv1.RecordsScope{Resource: "transactions"})
		}},
		{"a scope that is not the job owner's", func() *exportv1.ExportTask {
			task := as(carol.User, "", &exportv1.RecordsScope{Resource: "messages"})
			task.OwnerId = alice.User.GetId()
			return task
		}},
		{"no scope at all", func() *exportv1.ExportTask {
			task := as(carol.User, "", &exportv1.RecordsScope{Resource: "messages"})
			task.Scope = nil
			return task
		}},
		{"a user who does not exist", func() *exportv1.ExportTask {
			return as(&sourcev1.User{Id: "ghost", Roles: []string{"admin", "compliance-officer"}}, "", &exportv1.RecordsScope{Resource: "messages"})
		}},
	}
	for _, tc := range refused {
		t.Run("refused: "+tc.name, func(t *testing.T) {
			task := tc.task()
			err := x.Export(t.Context(), task)
			require.Error(t, err)
			assert.True(t, bus.IsPermanent(err), "no retry can widen a scope")
			assert.False(t, e.event(t, bus.EventPart, task.GetJobId(), &exportv1.PartUploaded{}), "nothing was exported")
		})
	}
}

// TestForgedTasksAreNotRun publishes tasks with a wrong signature, without
// one, and with a valid signature over other bytes: the exporter drops
// them without exporting or failing the job they name.
func TestForgedTasksAreNotRun(t *testing.T) {
	e := setup(t)
	topo := bustest.Topology()
	x := e.exporter(t, func(o *config) { o.Runner.MaxDeliver = topo.TaskMaxDeliver })
	taskruntest.Consume(t, e.ns.JS, topo, bus.ConsumerRecordExporter, x.Runner, bus.ConsumeOptions{})

	subject, err := bus.TaskSubject(bus.TaskRecords)
	require.NoError(t, err)
	pub := bus.NewPublisher(e.ns.JS, nil)
	other, err := bus.NewTaskSigner([]byte("not-the-gateway-key-0123456789abcdef"))
	require.NoError(t, err)

	wrongKey := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "users"})
	require.NoError(t, pub.PublishTask(t.Context(), other, subject, wrongKey.GetJobId()+".task.0", wrongKey))
	unsigned := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "users"})
	require.NoError(t, pub.Publish(t.Context(), subject, unsigned.GetJobId()+".task.0", unsigned))

	// A valid task, then the same signature on a widened copy.
	genuine := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "users"})
	data, err := proto.Marshal(genuine)
	require.NoError(t, err)
	sig := bustest.TaskSigner(t).Sign(data)
	widened := proto.Clone(genuine).(*exportv1.ExportTask)
	widened.JobId = "widened"
	widened.Scope.Permissions = append(widened.Scope.Permissions, string(access.PermExportAnyOrganization))
	wdata, err := proto.Marshal(widened)
	require.NoError(t, err)
	assert.False(t, bustest.TaskSigner(t).Verify(wdata, sig), "a signature covers the task's bytes")
	require.NoError(t, pub.PublishTask(t.Context(), bustest.TaskSigner(t), subject, genuine.GetJobId()+".task.0", genuine))

	// The genuine task completes; the forged ones are gone from the work
	// queue without a trace on their jobs.
	require.Eventually(t, func() bool { return e.event(t, bus.EventPart, genuine.GetJobId(), &exportv1.PartUploaded{}) },
		30*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		info, err := e.ns.JS.Stream(t.Context(), bus.StreamExportTasks)
		require.NoError(t, err)
		return info.CachedInfo().State.Msgs == 0
	}, 30*time.Second, 20*time.Millisecond)
	for _, id := range []string{wrongKey.GetJobId(), unsigned.GetJobId()} {
		assert.False(t, e.event(t, bus.EventPart, id, &exportv1.PartUploaded{}), "%s exported nothing", id)
		assert.False(t, e.event(t, bus.EventFailed, id, &exportv1.ExportFailed{}), "%s was not failed by a forger", id)
	}
}
