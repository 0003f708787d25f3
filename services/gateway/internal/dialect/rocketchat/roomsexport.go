package rocketchat

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"regexp"
	"slices"
	"strings"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/plan"
	"dataport.dev/services/gateway/internal/respond"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/bus"
)

// Request bounds. A rooms.export body is a few dozen bytes, or a list of
// message ids and addresses for the email variant.
const (
	maxBodyBytes = 256 << 10
	// maxMailMessages bounds the messages one mail carries; a selection
	// in Rocket.Chat's UI is a screenful or two.
	maxMailMessages = 1000
	// maxRecipients bounds the addresses one mail goes to.
	maxRecipients = 100
	// maxSubjectBytes is the longest line RFC 5322 allows.
	maxSubjectBytes = 998
)

// messageIDPattern is what a message id may look like: a KV key and
// subject token, like every id on the bus.
var messageIDPattern = regexp.MustCompile(`^[A-Za-z0-9_=-]{1,128}$`)

// roomsExportBody is the rooms.export payload: the file variant's fields
// and the email variant's.
type roomsExportBody struct {
	RID      string `json:"rid"`
	Type     string `json:"type"`
	DateFrom string `json:"dateFrom"`
	DateTo   string `json:"dateTo"`
	Format   string `json:"format"`

	ToUsers  []string `json:"toUsers"`
	ToEmails []string `json:"toEmails"`
	// Subject is required for email; a pointer tells absent from empty.
	Subject  *string  `json:"subject"`
	Messages []string `json:"messages"`
}

// roomsExportOK is the file variant's answer: Rocket.Chat's
// {"success": true} plus the id of the job, so the caller can poll the
// native API.
type roomsExportOK struct {
	Success  bool   `json:"success"`
	ExportID string `json:"exportId"`
}

// roomsMailOK is the email variant's answer: Rocket.Chat's
// {"missing": [...], "success": true} plus the job id.
type roomsMailOK struct {
	Missing []string `json:"missing"`
	Success bool     `json:"success"`
	// ExportID is empty when nobody could be mailed.
	ExportID string `json:"exportId,omitempty"`
}

// roomsExport implements POST /api/v1/rooms.export. The checks run in
// Rocket.Chat's order: parameters, permission, room, room access, then
// what to export. Checking the permission before looking the room up means
// a caller without it learns nothing about which rooms exist. Nothing is
// written before every check has passed.
func (d *API) roomsExport(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := d.user(w, r)
	if user == nil {
		return
	}

	var body roomsExportBody
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil || json.Unmarshal(raw, &body) != nil {
		writeError(w, errInvalidParams, "")
		return
	}
	if body.RID == "" || (body.Type != "file" && body.Type != "email") {
		writeError(w, errInvalidParams, "")
		return
	}
	if body.Type == "email" {
		if reason := checkMailParams(&body); reason != "" {
			writeError(w, errInvalidParams, reason)
			return
		}
	}
	room, err := plan.Room(ctx, d.cfg.Auth, user, body.RID)
	switch {
	case errors.Is(err, plan.ErrRoomNotFound):
		writeError(w, errInvalidRoom, "")
		return
	case errors.Is(err, plan.ErrNotPermitted), errors.Is(err, plan.ErrRoomForbidden):
		writeError(w, errNotAllowed, "")
		return
	case err != nil:
		d.log.ErrorContext(ctx, "check room", "room_id", body.RID, "user_id", user.GetId(), "error", err)
		writeInternal(w)
		return
	}
	if body.Type == "email" {
		d.roomsMail(w, r, user, room, &body)
		return
	}

	var format exportv1.Format
	var ext string
	switch body.Format {
	case "json":
		format, ext = exportv1.Format_FORMAT_JSON, ".json"
	case "html":
		format, ext = exportv1.Format_FORMAT_HTML, ".html"
	default:
		writeError(w, errInvalidFormat, "")
		return
	}
	from, to, err := plan.DateRange(body.DateFrom, body.DateTo)
	if err != nil {
		writeError(w, errInvalidDates, "")
		return
	}

	job, err := d.newJob(ctx, user, exportv1.JobKind_JOB_KIND_ROOM, format)
	if err != nil {
		d.log.ErrorContext(ctx, "new job", "error", err)
		writeInternal(w)
		return
	}
	tasks := plan.RoomExport(job, room, from, to, ext)
	// A failed look-up of the room's stream exports unsplit: the same
	// document.
	if tasks, err = d.cfg.Split.RoomTasks(ctx, job, room, tasks[0]); err != nil {
		d.log.WarnContext(ctx, "room export not split: its stream could not be read", "job_id", job.GetId(), "error", err)
	}
	if err := d.submitJob(ctx, job, bus.TaskRoom, tasks); err != nil {
		if !errors.Is(err, submit.ErrNotAdmitted) {
			d.log.ErrorContext(ctx, "submit export", "job_id", job.GetId(), "error", err)
		}
		writeInternal(w)
		return
	}
	d.log.InfoContext(ctx, "room export requested", "job_id", job.GetId(), "room_id", room.GetId(), "user_id", user.GetId(), "format", body.Format)
	respond.JSON(w, http.StatusOK, roomsExportOK{Success: true, ExportID: job.GetId()})
}

// checkMailParams checks what Rocket.Chat's schema requires of the email
// variant (a subject and a list of message ids) plus what keeps a mail
// sane: a one-line subject (it becomes a header) and bounded lists. It
// returns why the body is invalid, or "".
func checkMailParams(b *roomsExportBody) string {
	switch {
	case b.Subject == nil:
		return "subject is required"
	case len(*b.Subject) > maxSubjectBytes:
		return fmt.Sprintf("subject is longer than %d bytes", maxSubjectBytes)
	case strings.ContainsAny(*b.Subject, "\r\n"):
		return "subject must be a single line"
	case len(b.Messages) == 0:
		return "messages must list at least one message id"
	case len(b.Messages) > maxMailMessages:
		return fmt.Sprintf("at most %d messages can be mailed at once", maxMailMessages)
	case len(b.ToUsers)+len(b.ToEmails) > maxRecipients:
		return fmt.Sprintf("at most %d recipients can be mailed at once", maxRecipients)
	}
	for _, id := range b.Messages {
		if !messageIDPattern.MatchString(id) {
			return fmt.Sprintf("%q is not a message id", id)
		}
	}
	return ""
}

// roomsMail is the email variant: Rocket.Chat resolves toUsers to their
// first email address (usernames it cannot resolve are answered back in
// missing), adds toEmails, and mails the selected messages. Here the mail
// is a JOB_KIND_ROOM_MAIL job: the room-exporter renders the body and the
// notifier sends it, so the answer comes at once.
func (d *API) roomsMail(w http.ResponseWriter, r *http.Request, user *sourcev1.User, room *sourcev1.Room, b *roomsExportBody) {
	ctx := r.Context()
	var emails []string
	for _, raw := range b.ToEmails {
		addr := strings.TrimSpace(raw)
		if addr == "" {
			continue // Rocket.Chat drops empty entries too
		}
		parsed, err := parseAddress(addr)
		if err != nil {
			writeError(w, errInvalidEmail, fmt.Sprintf("Invalid email %q", raw))
			return
		}
		emails = append(emails, parsed)
	}
	var names []string
	for _, n := range b.ToUsers {
		if n != "" {
			names = append(names, n)
		}
	}
	if len(names) == 0 && len(emails) == 0 {
		writeError(w, errInvalidRecipient, "")
		return
	}
	users, err := d.cfg.Auth.UsersByUsername(ctx, names)
	if err != nil {
		d.log.ErrorContext(ctx, "resolve recipients", "error", err)
		writeInternal(w)
		return
	}
	missing := []string{}
	for _, n := range names {
		u := users[n]
		addr, err := parseAddress(u.GetEmail())
		if u == nil || err != nil {
			// A user without a usable address cannot be mailed; the
			// caller learns so through missing, as in Rocket.Chat.
			missing = append(missing, n)
			continue
		}
		emails = append(emails, addr)
	}
	slices.Sort(emails)
	emails = slices.Compact(emails)
	if len(emails) == 0 {
		// Every recipient was a username without an address: nothing to
		// send, which Rocket.Chat answers with success and the missing
		// names.
		respond.JSON(w, http.StatusOK, roomsMailOK{Missing: missing, Success: true})
		return
	}

	job, err := d.newJob(ctx, user, exportv1.JobKind_JOB_KIND_ROOM_MAIL, exportv1.Format_FORMAT_HTML)
	if err != nil {
		d.log.ErrorContext(ctx, "new job", "error", err)
		writeInternal(w)
		return
	}
	job.Room = &exportv1.RoomScope{RoomId: room.GetId()}
	job.Mail = &exportv1.MailScope{ToEmails: emails, Subject: *b.Subject, MessageIds: slices.Clone(b.Messages)}
	// The room-exporter takes every task kind from one consumer and
	// dispatches on part_kind, so the mail body goes out as a room task.
	tasks := []*exportv1.ExportTask{{
		PartKind:   exportv1.PartKind_PART_KIND_ROOM_MAIL,
		Room:       job.GetRoom(),
		Mail:       job.GetMail(),
		TargetFile: "mail.html",
	}}
	job.Parts = plan.Parts(tasks, map[string]*sourcev1.Room{room.GetId(): room})
	if err := d.submitJob(ctx, job, bus.TaskRoom, tasks); err != nil {
		if !errors.Is(err, submit.ErrNotAdmitted) {
			d.log.ErrorContext(ctx, "submit mail", "job_id", job.GetId(), "error", err)
		}
		writeInternal(w)
		return
	}
	d.log.InfoContext(ctx, "room mail requested", "job_id", job.GetId(), "room_id", room.GetId(), "user_id", user.GetId(),
		"recipients", len(emails), "messages", len(b.Messages), "missing", len(missing))
	respond.JSON(w, http.StatusOK, roomsMailOK{Missing: missing, Success: true, ExportID: job.GetId()})
}

// parseAddress returns the bare address of s ("Name <a@b>" or "a@b").
// CR and LF are refused outright: net/smtp would pass them into the
// envelope (golang/go#21159).
func parseAddress(s string) (string, error) {
	if s == "" || strings.ContainsAny(s, "\r\n") {
		return "", errors.New("invalid address")
	}
	a, err := mail.ParseAddress(s)
	if err != nil {
		return "", err
	}
	return a.Address, nil
}
