package plan

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/shared/access"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/roomtype"
)

// Why Room refuses a room export.
var (
	// ErrNotPermitted: the caller lacks the permission to export rooms
	// (access.PermMailMessages, Rocket.Chat's "mail-messages").
	ErrNotPermitted = errors.New("plan: not permitted to export rooms")
	// ErrRoomNotFound: no such room.
	ErrRoomNotFound = errors.New("plan: room not found")
	// ErrRoomForbidden: the room exists but the caller may not read it.
	ErrRoomForbidden = errors.New("plan: room not readable by the caller")
)

// Rooms answers what room exports need to know about rooms; it is
// auth.Service. It must be safe for concurrent use.
type Rooms interface {
	// Room returns the room, or an error wrapping auth.ErrRoomNotFound.
	Room(ctx context.Context, roomID string) (*sourcev1.Room, error)
	CanAccessRoom(ctx context.Context, u *sourcev1.User, room *sourcev1.Room) (bool, error)
	// MemberRooms lists the rooms u is a member of.
	MemberRooms(ctx context.Context, u *sourcev1.User) ([]*sourcev1.Room, error)
}

// Room returns the room user asks to export, in Rocket.Chat's order of
// checks: the permission first (so a caller without it learns nothing
// about which rooms exist), then the room, then the caller's access to it.
// Refusals wrap ErrNotPermitted, ErrRoomNotFound or ErrRoomForbidden; any
// other error is an outage.
func Room(ctx context.Context, rooms Rooms, user *sourcev1.User, roomID string) (*sourcev1.Room, error) {
	if !access.HasPermission(user, access.PermMailMessages) {
		return nil, ErrNotPermitted
	}
	room, err := rooms.Room(ctx, roomID)
	switch {
	case errors.Is(err, auth.ErrRoomNotFound):
		return nil, ErrRoomNotFound
	case err != nil:
		return nil, fmt.Errorf("look up room %s: %w", roomID, err)
	}
	ok, err := rooms.CanAccessRoom(ctx, user, room)
	switch {
	case err != nil:
		return nil, fmt.Errorf("check access to room %s: %w", roomID, err)
	case !ok:
		return nil, ErrRoomForbidden
	}
	return room, nil
}

// roomFileExts are the formats of a room's document and their file
// extensions; the room exporter writes the same. A room's CSV is always
// gzip-compressed (.csv.gz).
var roomFileExts = map[exportv1.Format]string{
	exportv1.Format_FORMAT_JSON:  ".json",
	exportv1.Format_FORMAT_HTML:  ".html",
	exportv1.Format_FORMAT_JSONL: ".jsonl",
	exportv1.Format_FORMAT_CSV:   ".csv.gz",
}

// RoomFileExt is the file extension of a room document in format f, and
// false when rooms are not exported in f. A dialect may offer fewer
// (Rocket.Chat's rooms.export takes only its own html and json).
func RoomFileExt(f exportv1.Format) (string, bool) {
	ext, ok := roomFileExts[f]
	return ext, ok
}

// RoomExport fills job (a JOB_KIND_ROOM job) with the room and range to
// export and its parts, and returns its one task: the room's messages
// from from to to (nil: open) as one file named after the room with ext
// (RoomFileExt).
func RoomExport(job *exportv1.Job, room *sourcev1.Room, from, to *timestamppb.Timestamp, ext string) []*exportv1.ExportTask {
	job.Room = &exportv1.RoomScope{RoomId: room.GetId(), From: from, To: to}
	tasks := []*exportv1.ExportTask{{
		PartKind:   exportv1.PartKind_PART_KIND_ROOM,
		Room:       job.GetRoom(),
		TargetFile: RoomFileName(room) + ext,
	}}
	job.Parts = Parts(tasks, map[string]*sourcev1.Room{room.GetId(): room})
	return tasks
}

// DataDownload lists the parts of a user's data download: one per room the
// user is a member of, the profile, the channel list (full export only,
// as in Rocket.Chat) and the files attached to the messages of those
// rooms. Room files are named after the room; a name two rooms share
// falls back to the room id.
func DataDownload(user *sourcev1.User, rooms []*sourcev1.Room, fullExport bool, ext string) []*exportv1.ExportTask {
	task := func(kind exportv1.PartKind, target string) *exportv1.ExportTask {
		return &exportv1.ExportTask{PartKind: kind, UserId: user.GetId(), FullExport: fullExport, TargetFile: target}
	}
	taken := map[string]bool{"user" + ext: true, "channels.json": true, "assets": true, "manifest.json": true}
	tasks := make([]*exportv1.ExportTask, 0, len(rooms)+3)
	for _, room := range rooms {
		name := RoomFileName(room) + ext
		if taken[name] {
			name = objects.CleanFileName(room.GetId(), "") + ext
		}
		taken[name] = true
		t := task(exportv1.PartKind_PART_KIND_ROOM, name)
		t.Room = &exportv1.RoomScope{RoomId: room.GetId()}
		tasks = append(tasks, t)
	}
	tasks = append(tasks, task(exportv1.PartKind_PART_KIND_USER_PROFILE, "user"+ext))
	if fullExport {
		tasks = append(tasks, task(exportv1.PartKind_PART_KIND_CHANNELS, "channels.json"))
	}
	return append(tasks, task(exportv1.PartKind_PART_KIND_ASSETS, "assets"))
}

// Parts is jobstore.PlanParts plus what is known about the rooms: their
// names and type letters, which Rocket.Chat's roomList shows.
func Parts(tasks []*exportv1.ExportTask, rooms map[string]*sourcev1.Room) []*exportv1.PartStatus {
	parts := jobstore.PlanParts(tasks)
	for _, p := range parts {
		if room, ok := rooms[p.GetRoomId()]; ok {
			p.RoomName = RoomName(room)
			p.RoomType = roomtype.Letter(room.GetType())
		}
	}
	return parts
}

// RoomName is Rocket.Chat's roomName of an export: the room's name, or
// its id for direct rooms (which have no name of their own).
func RoomName(room *sourcev1.Room) string {
	if room.GetName() == "" || room.GetType() == sourcev1.RoomType_ROOM_TYPE_DIRECT {
		return room.GetId()
	}
	return room.GetName()
}

// RoomFileName is the base name of a room's file in an export: its name
// cleaned by objects.CleanFileName, which the room-exporter also applies to
// the target file, or its id.
func RoomFileName(room *sourcev1.Room) string {
	if base := objects.CleanFileName(RoomName(room), ""); base != "" {
		return base
	}
	return objects.CleanFileName(room.GetId(), "room")
}

// DateRange reads a room export's bounds. A plain date (YYYY-MM-DD) is a
// whole UTC day, both ends included: from starts at 00:00:00.000 and to
// ends at 23:59:59.999. A full RFC 3339 time is taken as it is. An empty
// value leaves that end open.
func DateRange(fromS, toS string) (from, to *timestamppb.Timestamp, err error) {
	if from, err = parseBound(fromS, false); err != nil {
		return nil, nil, err
	}
	if to, err = parseBound(toS, true); err != nil {
		return nil, nil, err
	}
	if from != nil && to != nil && from.AsTime().After(to.AsTime()) {
		return nil, nil, errors.New("dateFrom is after dateTo")
	}
	return from, to, nil
}

func parseBound(s string, end bool) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	t, err := time.Parse(time.DateOnly, s)
	if err == nil {
		if end {
			t = t.Add(24*time.Hour - time.Millisecond)
		}
	} else if t, err = time.Parse(time.RFC3339Nano, s); err != nil {
		return nil, fmt.Errorf("date %q: want YYYY-MM-DD or RFC 3339", s)
	}
	ts := timestamppb.New(t.UTC())
	if err := ts.CheckValid(); err != nil {
		return nil, fmt.Errorf("date %q: %w", s, err)
	}
	return ts, nil
}
