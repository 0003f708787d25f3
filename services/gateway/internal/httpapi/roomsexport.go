package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/bus"
)

// maxBodyBytes bounds request bodies; a rooms.export body is a few dozen
// bytes.
const maxBodyBytes = 64 << 10

// roomsExportBody is the rooms.export payload.
type roomsExportBody struct {
	RID      string `json:"rid"`
	Type     string `json:"type"`
	DateFrom string `json:"dateFrom"`
	DateTo   string `json:"dateTo"`
	Format   string `json:"format"`
}

// roomsExportOK is the success answer: Rocket.Chat's {"success": true}
// plus the id of the job, so the caller can poll the native API.
type roomsExportOK struct {
	Success  bool   `json:"success"`
	ExportID string `json:"exportId"`
}

// roomsExport implements POST /api/v1/rooms.export. The checks run in
// Rocket.Chat's order: parameters, permission, room, room access, then
// what to export. Checking the permission before looking the room up means
// a caller without it learns nothing about which rooms exist.
func (a *api) roomsExport(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user, err := a.Auth.Authenticate(ctx, r.Header.Get("X-User-Id"), r.Header.Get("X-Auth-Token"))
	if errors.Is(err, auth.ErrUnauthenticated) {
		writeRCUnauthorized(w)
		return
	}
	if err != nil {
		a.log.ErrorContext(ctx, "authenticate", "error", err)
		writeRCInternal(w)
		return
	}

	var body roomsExportBody
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil || json.Unmarshal(raw, &body) != nil {
		writeRCError(w, errInvalidParams, "")
		return
	}
	if body.RID == "" || (body.Type != "file" && body.Type != "email") {
		writeRCError(w, errInvalidParams, "")
		return
	}
	if !auth.HasPermission(user, auth.PermMailMessages) {
		writeRCError(w, errNotAllowed, "")
		return
	}
	room, err := a.Auth.Room(ctx, body.RID)
	if errors.Is(err, auth.ErrRoomNotFound) {
		writeRCError(w, errInvalidRoom, "")
		return
	}
	if err != nil {
		a.log.ErrorContext(ctx, "look up room", "room_id", body.RID, "error", err)
		writeRCInternal(w)
		return
	}
	ok, err := a.Auth.CanAccessRoom(ctx, user, room)
	if err != nil {
		a.log.ErrorContext(ctx, "check room access", "room_id", body.RID, "user_id", user.GetId(), "error", err)
		writeRCInternal(w)
		return
	}
	if !ok {
		writeRCError(w, errNotAllowed, "")
		return
	}
	if body.Type == "email" {
		writeRCError(w, errInvalidParams, "type email is not supported yet")
		return
	}
	var format exportv1.Format
	switch body.Format {
	case "json":
		format = exportv1.Format_FORMAT_JSON
	case "html":
		format = exportv1.Format_FORMAT_HTML
	default:
		writeRCError(w, errInvalidFormat, "")
		return
	}
	from, to, err := parseDateRange(body.DateFrom, body.DateTo)
	if err != nil {
		writeRCError(w, errInvalidDates, "")
		return
	}

	id, err := submit.NewJobID()
	if err != nil {
		a.log.ErrorContext(ctx, "new job id", "error", err)
		writeRCInternal(w)
		return
	}
	now := timestamppb.New(a.Now())
	job := &exportv1.Job{
		Id:        id,
		OwnerId:   user.GetId(),
		Kind:      exportv1.JobKind_JOB_KIND_ROOM,
		Format:    format,
		State:     exportv1.JobState_JOB_STATE_PENDING,
		Progress:  &exportv1.Progress{},
		CreatedAt: now,
		UpdatedAt: now,
		Room:      &exportv1.RoomScope{RoomId: room.GetId(), From: from, To: to},
		Dialect:   "rocketchat",
	}
	span := trace.SpanFromContext(ctx)
	if sc := span.SpanContext(); sc.HasTraceID() {
		job.TraceId = sc.TraceID().String()
	}
	span.SetAttributes(attribute.String("dataport.job_id", id))

	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), submit.Timeout)
	defer cancel()
	task := &exportv1.ExportTask{PartKind: exportv1.PartKind_PART_KIND_ROOM, Room: job.GetRoom()}
	if err := a.Submitter.Submit(sctx, job, bus.TaskRoom, []*exportv1.ExportTask{task}); err != nil {
		a.log.ErrorContext(ctx, "submit export", "job_id", id, "error", err)
		writeRCInternal(w)
		return
	}
	a.log.InfoContext(ctx, "room export requested", "job_id", id, "room_id", room.GetId(), "user_id", user.GetId(), "format", body.Format)
	writeJSON(w, http.StatusOK, roomsExportOK{Success: true, ExportID: id})
}

// parseDateRange reads dateFrom and dateTo. A plain date (YYYY-MM-DD) is a
// whole UTC day, both ends included: dateFrom starts at 00:00:00.000 and
// dateTo ends at 23:59:59.999. A full RFC 3339 time is taken as it is. An
// empty value leaves that end open.
func parseDateRange(fromS, toS string) (from, to *timestamppb.Timestamp, err error) {
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
