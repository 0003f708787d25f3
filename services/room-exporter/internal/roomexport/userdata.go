package roomexport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/roomtype"
	"dataport.dev/shared/taskrun"
)

// User-data download parts other than rooms: the user's profile
// (user.html / user.json), their rooms (channels.json) and the files
// attached to their rooms' messages (assets/, by reference). See "User data download parts" in
// docs/ARCHITECTURE.md.

// userRoom is one room of the user with their membership.
type userRoom struct {
	room       *sourcev1.Room
	membership *sourcev1.Membership
	// msgs is how many messages the room's history holds (edits count
	// once per version), Rocket.Chat's room "msgs".
	msgs uint64
}

// loadUser reads the user; an unknown user rejects the task.
func (e *Exporter) loadUser(ctx context.Context, userID string) (*sourcev1.User, error) {
	entry, err := e.users.Get(ctx, userID)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, taskrun.Reject("user %s not found", userID)
	}
	if err != nil {
		return nil, fmt.Errorf("load user %s: %w", userID, err)
	}
	var u sourcev1.User
	if err := proto.Unmarshal(entry.Value(), &u); err != nil {
		return nil, bus.Permanent(fmt.Errorf("decode user %s: %w", userID, err))
	}
	if u.GetId() == "" {
		u.Id = userID
	}
	return &u, nil
}

// userRooms lists the rooms the user is a member of (KV memberships under
// <userId>.<roomId>), by name. A membership whose room is gone is skipped.
func (e *Exporter) userRooms(ctx context.Context, log *slog.Logger, userID string) ([]userRoom, error) {
	w, err := e.members.WatchFiltered(ctx, []string{userID + ".*"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("list memberships of %s: %w", userID, err)
	}
	defer func() { _ = w.Stop() }()
	byRoom := map[string]*sourcev1.Membership{}
	for {
		var entry jetstream.KeyValueEntry
		select {
		case entry = <-w.Updates():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if entry == nil {
			break // the initial values are all in
		}
		var m sourcev1.Membership
		if err := proto.Unmarshal(entry.Value(), &m); err != nil {
			log.WarnContext(ctx, "undecodable membership", "key", entry.Key(), "error", err)
			continue
		}
		if m.GetRoomId() == "" {
			m.RoomId = strings.TrimPrefix(entry.Key(), userID+".")
		}
		byRoom[m.GetRoomId()] = &m
	}
	out := make([]userRoom, 0, len(byRoom))
	for roomID, m := range byRoom {
		room, err := e.loadRoom(ctx, roomID)
		if taskrun.IsRejected(err) {
			log.WarnContext(ctx, "membership of a missing room", "room_id", roomID)
			continue
		}
		if err != nil {
			return nil, err
		}
		ur := userRoom{room: room, membership: m}
		if subject, err := bus.ChatSubject(roomID); err == nil {
			info, err := e.chat.Info(ctx, jetstream.WithSubjectFilter(subject))
			if err != nil {
				return nil, fmt.Errorf("stream info %s: %w", subject, err)
			}
			ur.msgs = info.State.Subjects[subject]
		}
		out = append(out, ur)
	}
	slices.SortFunc(out, func(a, b userRoom) int {
		return strings.Compare(RoomTitle(a.room)+"\x00"+a.room.GetId(), RoomTitle(b.room)+"\x00"+b.room.GetId())
	})
	return out, nil
}

// jsonProfile is user.json. Credentials (token and API key hashes) are
// never part of it.
type jsonProfile struct {
	ID        string         `json:"_id"`
	Username  string         `json:"username"`
	Name      string         `json:"name,omitempty"`
	Emails    []jsonEmail    `json:"emails,omitempty"`
	Roles     []string       `json:"roles,omitempty"`
	CreatedAt string         `json:"createdAt,omitempty"`
	Rooms     []jsonUserRoom `json:"rooms"`
	Counts    jsonCounts     `json:"counts"`
}

type jsonEmail struct {
	Address string `json:"address"`
}

type jsonCounts struct {
	Rooms    int    `json:"rooms"`
	Messages uint64 `json:"messages"`
}

// jsonUserRoom is a room of the user, in user.json and channels.json.
type jsonUserRoom struct {
	ID        string   `json:"_id"`
	Name      string   `json:"name,omitempty"`
	Type      string   `json:"t,omitempty"`
	Topic     string   `json:"topic,omitempty"`
	Usernames []string `json:"usernames,omitempty"`
	Msgs      uint64   `json:"msgs"`
	JoinedAt  string   `json:"joinedAt,omitempty"`
	Roles     []string `json:"roles,omitempty"`
}

func toJSONUserRoom(ur userRoom) jsonUserRoom {
	return jsonUserRoom{
		ID:        ur.room.GetId(),
		Name:      ur.room.GetName(),
		Type:      roomtype.Letter(ur.room.GetType()),
		Topic:     ur.room.GetTopic(),
		Usernames: ur.room.GetUsernames(),
		Msgs:      ur.msgs,
		JoinedAt:  formatTime(ur.membership.GetJoinedAt()),
		Roles:     ur.membership.GetRoles(),
	}
}

// targetName is the task's target file, or def.
func targetName(task *exportv1.ExportTask, def string) string {
	if task.GetTargetFile() == "" {
		return def
	}
	return objects.CleanFileName(task.GetTargetFile(), def)
}

// exportProfile writes user.json or user.html and adds the user's avatar
// when the host platform published one (describeAvatar).
// The format was validated (validateTask).
func (e *Exporter) exportProfile(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
	task := t.Task
	spec := objectSpec{name: targetName(task, "user.json"), contentType: "application/json"}
	if task.GetFormat() == exportv1.Format_FORMAT_HTML {
		spec = objectSpec{name: targetName(task, "user.html"), contentType: "text/html; charset=utf-8"}
	}
	user, err := e.loadUser(ctx, task.GetUserId())
	if err != nil {
		return nil, err
	}
	rooms, err := e.userRooms(ctx, t.Log, task.GetUserId())
	if err != nil {
		return nil, err
	}
	p := jsonProfile{
		ID: user.GetId(), Username: user.GetUsername(), Name: user.GetName(), Roles: user.GetRoles(),
		CreatedAt: formatTime(user.GetCreatedAt()), Rooms: make([]jsonUserRoom, 0, len(rooms)),
		Counts: jsonCounts{Rooms: len(rooms)},
	}
	if user.GetEmail() != "" {
		p.Emails = []jsonEmail{{Address: user.GetEmail()}}
	}
	for _, ur := range rooms {
		p.Rooms = append(p.Rooms, toJSONUserRoom(ur))
		p.Counts.Messages += ur.msgs
	}
	generated := e.now()
	files, err := e.uploadObjects(ctx, task, []objectSpec{spec}, func(_ context.Context, ws []io.Writer) error {
		if task.GetFormat() == exportv1.Format_FORMAT_HTML {
			return writeProfileHTML(ws[0], &p, generated)
		}
		enc := json.NewEncoder(ws[0])
		enc.SetEscapeHTML(false)
		enc.SetIndent("", "  ")
		return enc.Encode(&p)
	})
	if err != nil {
		return nil, err
	}
	files[0].Records = 1
	// The avatar is read after the profile is stored, so a redelivered
	// task sees the avatar as it is then. Its record makes the part's
	// count 2, which is how the gateway knows to answer generatedAvatar
	// (the projection keeps a part's count, not its files).
	avatar, err := e.describeAvatar(ctx, user.GetUsername())
	if err != nil {
		return nil, err
	}
	if avatar != nil {
		files = append(files, avatar)
	}
	var records, size uint64
	for _, f := range files {
		records += f.GetRecords()
		size += f.GetSize()
	}
	return &taskrun.Result{Files: files, Records: records, Bytes: size,
		Log: []any{"object_key", files[0].GetObjectKey(), "rooms", len(rooms), "avatar", avatar != nil}}, nil
}

// writeProfileHTML writes user.html: the profile and the user's rooms.
func writeProfileHTML(w io.Writer, p *jsonProfile, generated time.Time) error {
	title := firstNonEmpty(p.Name, p.Username)
	b := make([]byte, 0, 4096)
	b = append(b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"...)
	b = append(b, `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'">`+"\n<title>"...)
	b = appendEscaped(b, title)
	b = append(b, " — your data</title>\n<style>\n"...)
	b = append(b, htmlStyle...)
	b = append(b, "table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #e4e7ea;padding:.3rem .5rem;text-align:left}\n</style>\n</head>\n<body>\n<header>\n<h1>"...)
	b = appendEscaped(b, title)
	b = append(b, "</h1>\n<p class=\"info\">Exported "...)
	b = appendTime(b, generated)
	b = append(b, ". All times are UTC.</p>\n</header>\n<main>\n<h2>Profile</h2>\n<table class=\"profile\">\n"...)
	row := func(k, v string) {
		b = append(b, "<tr><th>"...)
		b = appendEscaped(b, k)
		b = append(b, "</th><td>"...)
		b = appendEscaped(b, v)
		b = append(b, "</td></tr>\n"...)
	}
	row("User id", p.ID)
	row("Username", "@"+p.Username)
	row("Name", p.Name)
	for _, e := range p.Emails {
		row("Email", e.Address)
	}
	row("Roles", strings.Join(p.Roles, ", "))
	if p.CreatedAt != "" {
		row("Member since", p.CreatedAt)
	}
	row("Rooms", strconv.Itoa(p.Counts.Rooms))
	row("Messages in these rooms", strconv.FormatUint(p.Counts.Messages, 10))
	b = append(b, "</table>\n<h2>Rooms</h2>\n<table class=\"rooms\">\n<tr><th>Room</th><th>Type</th><th>Joined</th><th>Your roles</th><th>Messages</th></tr>\n"...)
	for _, r := range p.Rooms {
		name := r.Name
		if name == "" {
			name = "Direct messages: " + strings.Join(r.Usernames, ", ")
		}
		b = append(b, "<tr><td>"...)
		b = appendEscaped(b, name)
		b = append(b, "</td><td>"...)
		b = appendEscaped(b, r.Type)
		b = append(b, "</td><td>"...)
		b = appendEscaped(b, r.JoinedAt)
		b = append(b, "</td><td>"...)
		b = appendEscaped(b, strings.Join(r.Roles, ", "))
		b = append(b, "</td><td>"...)
		b = strconv.AppendUint(b, r.Msgs, 10)
		b = append(b, "</td></tr>\n"...)
	}
	b = append(b, "</table>\n</main>\n<footer>Exported by Dataport. Each room's messages are in their own file next to this page; the files attached to them are in the assets folder.</footer>\n</body>\n</html>\n"...)
	_, err := w.Write(b)
	return err
}

// exportChannels writes channels.json: one object per room of the user,
// with the membership (joinedAt, roles), one per line. Rocket.Chat's
// download writes channels.json as JSON lines, not as one array, and the
// tools that read its downloads read it line by line.
func (e *Exporter) exportChannels(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
	task := t.Task
	if _, err := e.loadUser(ctx, task.GetUserId()); err != nil {
		return nil, err
	}
	rooms, err := e.userRooms(ctx, t.Log, task.GetUserId())
	if err != nil {
		return nil, err
	}
	spec := objectSpec{name: targetName(task, "channels.json"), contentType: "application/x-ndjson"}
	files, err := e.uploadObjects(ctx, task, []objectSpec{spec}, func(_ context.Context, ws []io.Writer) error {
		enc := json.NewEncoder(ws[0])
		enc.SetEscapeHTML(false)
		for _, ur := range rooms {
			// Encode ends each object with the line's newline.
			if err := enc.Encode(toJSONUserRoom(ur)); err != nil {
				return fmt.Errorf("encode json: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	files[0].Records = uint64(len(rooms))
	return &taskrun.Result{Files: files, Records: uint64(len(rooms)), Bytes: files[0].GetSize(),
		Log: []any{"object_key", files[0].GetObjectKey(), "rooms", len(rooms)}}, nil
}

// exportAssets finds the files attached to the messages of the user's
// rooms (anyone's: the download holds those messages, the user may read
// them, and their links point into assets/, as in Rocket.Chat's download,
// which copies every message's file), and reports them by reference:
// one PartUploaded whose files point into the assets bucket
// (bucket, object_key) under the name "assets/<fileId>-<name>" the room
// documents link to. Nothing is copied; the SHA-256 is computed by
// streaming each object once. Memory grows with the number of the rooms'
// files (one File each), not with the rooms' sizes. A file whose object
// is missing is listed as missing (missingAsset), for the archive's
// manifest to say so.
func (e *Exporter) exportAssets(ctx context.Context, t *taskrun.Task) (*taskrun.Result, error) {
	task, log := t.Task, t.Log
	userID := task.GetUserId()
	if _, err := e.loadUser(ctx, userID); err != nil {
		return nil, err
	}
	rooms, err := e.userRooms(ctx, log, userID)
	if err != nil {
		return nil, err
	}
	var (
		files   []*exportv1.File
		seen    = map[string]bool{}
		size    uint64
		missing int
		m       sourcev1.ChatMessage
	)
	for i, ur := range rooms {
		subject, err := bus.ChatSubject(ur.room.GetId())
		if err != nil {
			continue
		}
		h, err := e.lookupHistory(ctx, subject)
		if err != nil {
			return nil, err
		}
		// Every version of a message is looked at (no index pass): an
		// edit keeps its attachments, and seen drops the repeats.
		err = e.replay(ctx, h, func(_ uint64, data []byte) (bool, error) {
			if ctx.Err() != nil {
				return false, context.Cause(ctx)
			}
			if err := proto.Unmarshal(data, &m); err != nil {
				return true, nil
			}
			for _, a := range m.GetAttachments() {
				if a.GetFileId() == "" || seen[a.GetFileId()] {
					continue
				}
				seen[a.GetFileId()] = true
				f, err := e.describeAsset(ctx, a)
				if errors.Is(err, blob.ErrNotFound) {
					missing++
					log.WarnContext(ctx, "asset object missing; listed as missing", "file_id", a.GetFileId(), "object_key", a.GetObjectKey())
					files = append(files, e.missingAsset(a))
					continue
				}
				if err != nil {
					return false, err
				}
				files = append(files, f)
				size += f.GetSize()
			}
			return true, nil
		})
		if err != nil {
			return nil, err
		}
		t.ProgressStep(ctx, uint32(min((i+1)*100/len(rooms), 99)), uint64(len(files)-missing), size, "r"+strconv.Itoa(i))
	}
	// A list even of one file: the assets part is always a file list.
	return &taskrun.Result{Files: files, Records: uint64(len(files) - missing), Bytes: size, FileList: true,
		Log: []any{"missing", missing, "rooms", len(rooms)}}, nil
}
