package roomexport_test

import (
	"testing"

	"github.com/stretchr/testify/assert"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/room-exporter/internal/roomexport"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
)

// TestRoomTasksAreBoundedByScope checks the exporter's own authorization
// of room parts, whatever the gateway decided: rooms.export needs
// mail-messages and a room the user may read; a user-data download reads
// only its own user's rooms.
func TestRoomTasksAreBoundedByScope(t *testing.T) {
	h := start(t, nil)
	h.putRoom(t, &sourcev1.Room{Id: "PUB", Name: "public", Type: sourcev1.RoomType_ROOM_TYPE_CHANNEL})
	h.putRoom(t, &sourcev1.Room{Id: "PRIV", Name: "private", Type: sourcev1.RoomType_ROOM_TYPE_PRIVATE})
	h.putRoom(t, &sourcev1.Room{Id: "DM", Type: sourcev1.RoomType_ROOM_TYPE_DIRECT, Usernames: []string{"alice", "bob"}})
	h.publishMessages(t, append(roomMessages("PRIV", 3), roomMessages("PUB", 3)...)...)
	// An admin who is a member of nothing, and a plain user in PRIV.
	admin := &sourcev1.User{Id: "uadmin", Username: "admin", Roles: []string{"admin", "user"}}
	carol := &sourcev1.User{Id: "ucarol", Username: "carol", Roles: []string{"user"}}
	h.putKV(t, bus.BucketUsers, admin.GetId(), admin)
	h.putKV(t, bus.BucketUsers, carol.GetId(), carol)
	h.putKV(t, bus.BucketMemberships, "ucarol.PRIV", &sourcev1.Membership{UserId: "ucarol", RoomId: "PRIV"})

	as := func(u *sourcev1.User, jobID, room string) *exportv1.ExportTask {
		task := roomTask(jobID, room, nil, nil)
		task.OwnerId, task.Scope = u.GetId(), access.ScopeFor(u, "")
		return task
	}
	tests := []struct {
		name    string
		task    *exportv1.ExportTask
		allowed bool
	}{
		{"admin exports a public channel", as(admin, "job-admin-pub", "PUB"), true},
		{"admin exports a private group they are not in", as(admin, "job-admin-priv", "PRIV"), false},
		{"admin exports a direct room they are not in", as(admin, "job-admin-dm", "DM"), false},
		{"a member without mail-messages exports their group", as(carol, "job-carol-priv", "PRIV"), false},
		{"a scope claiming mail-messages the roles do not grant", func() *exportv1.ExportTask {
			task := as(carol, "job-carol-claim", "PRIV")
			task.Scope.Permissions = append(task.Scope.Permissions, string(access.PermMailMessages))
			return task
		}(), false},
		{"a user-data room part of a member", func() *exportv1.ExportTask {
			task := as(carol, "job-carol-data", "PRIV")
			task.Kind, task.PartKind, task.UserId = exportv1.JobKind_JOB_KIND_USER_DATA, exportv1.PartKind_PART_KIND_ROOM, carol.GetId()
			return task
		}(), true},
		{"a user-data room part of a room the user is not in", func() *exportv1.ExportTask {
			task := as(carol, "job-carol-dm", "DM")
			task.Kind, task.PartKind, task.UserId = exportv1.JobKind_JOB_KIND_USER_DATA, exportv1.PartKind_PART_KIND_ROOM, carol.GetId()
			return task
		}(), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			jobID := tc.task.GetJobId()
			h.publishTask(t, jobID+".task.0", tc.task)
			if tc.allowed {
				var part exportv1.PartUploaded
				h.event(t, bus.EventPart, jobID, &part)
				assert.Equal(t, uint64(3), part.GetFile().GetRecords())
				return
			}
			var failed exportv1.ExportFailed
			h.event(t, bus.EventFailed, jobID, &failed)
			assert.Equal(t, roomexport.ReasonNotAllowed, failed.GetReason())
			assert.True(t, failed.GetRejected())
			assert.Zero(t, h.eventCount(t, bus.EventPart, jobID))
			assert.Empty(t, h.objects(t, jobID))
		})
	}
}
