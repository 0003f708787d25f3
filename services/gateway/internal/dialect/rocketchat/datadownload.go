package rocketchat

import (
	"errors"
	"net/http"
	"strings"
	"time"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/plan"
	"dataport.dev/services/gateway/internal/respond"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/objects"
	"dataport.dev/shared/pseudonym"
	"dataport.dev/shared/roomtype"
)

// dataDownloadOK is the users.requestDataDownload answer. Rocket.Chat's
// REST endpoint answers requested, exportOperation and success; its
// requestDataDownload method also answers url and
// pendingOperationsBeforeMyRequest, and so do we.
type dataDownloadOK struct {
	Requested       bool            `json:"requested"`
	ExportOperation exportOperation `json:"exportOperation"`
	// URL is the signed download link of a completed operation whose
	// files still exist, else null.
	URL                              *string `json:"url"`
	PendingOperationsBeforeMyRequest int     `json:"pendingOperationsBeforeMyRequest"`
	Success                          bool    `json:"success"`
}

// exportOperation is Rocket.Chat's IExportOperation (@rocket.chat/core-typings)
// as its REST API serializes it, rendered from a USER_DATA job. Every field
// the published type requires is present; Reason, ExpiresAt and
// FilesExpired are Dataport's additions and appear only when they say
// something.
type exportOperation struct {
	ID        string     `json:"_id"`
	CreatedAt string     `json:"createdAt"`
	UserID    string     `json:"userId"`
	RoomList  []roomData `json:"roomList"`
	Status    string     `json:"status"`
	// ExportPath and AssetsPath are object key prefixes in the exports
	// bucket: where the parts of the download, and its assets part, are
	// written.
	ExportPath string     `json:"exportPath"`
	AssetsPath string     `json:"assetsPath"`
	FileList   []fileData `json:"fileList"`
	// GeneratedFile is the object key of the zip once it exists.
	GeneratedFile string `json:"generatedFile"`
	// FileID is the zip's id in fileList once it exists, else "" (in
	// Rocket.Chat, the id of the upload holding the zip).
	FileID string `json:"fileId"`
	// UserNameTable is Rocket.Chat's hideUsers table: each username the
	// download names mapped to what its files call that person, the
	// caller's own to itself and everyone else's to their pseudonym
	// (pseudonym.Of with the operation's id, as the room exporter writes
	// them). It lists the caller, the other participants of the
	// download's direct rooms, and everyone the room files hid: each room
	// part reports whom it pseudonymised (only the exporter reads the
	// messages, so only it knows who wrote in a channel), and the job
	// collects them, at most jobstore.MaxHiddenUsernames.
	UserNameTable map[string]string `json:"userNameTable"`
	UserData      userData          `json:"userData"`
	// GeneratedUserFile is true once the profile file is written.
	GeneratedUserFile bool `json:"generatedUserFile"`
	// GeneratedAvatar is true once the profile part carried the user's
	// avatar: the avatar the host platform published (objects.AvatarKey)
	// is the profile part's second record, so a completed profile part
	// that counts more than one record holds it.
	GeneratedAvatar bool   `json:"generatedAvatar"`
	FullExport      bool   `json:"fullExport"`
	UpdatedAt       string `json:"_updatedAt"`

	// Reason says why a failed operation failed.
	Reason string `json:"reason,omitempty"`
	// ExpiresAt is when the files are deleted.
	ExpiresAt string `json:"expiresAt,omitempty"`
	// FilesExpired is true once they have been.
	FilesExpired bool `json:"filesExpired,omitempty"`
	// UserNameTableTruncated is true when the files hid more people than
	// the job keeps names of: those are missing from UserNameTable.
	UserNameTableTruncated bool `json:"userNameTableTruncated,omitempty"`
}

// userData is the exportOperation's IUser: a projection of the caller
// that carries who they are and never how they sign in. Rocket.Chat
// copies the whole user document there, services (password hashes,
// resume tokens) included; here the struct has no field a credential
// could land in, so a new field of sourcev1.User cannot leak by accident.
type userData struct {
	ID        string `json:"_id"`
	CreatedAt string `json:"createdAt"`
	// UpdatedAt is the user's createdAt: the host platform publishes no
	// modification time.
	UpdatedAt string      `json:"_updatedAt"`
	Username  string      `json:"username,omitempty"`
	Name      string      `json:"name,omitempty"`
	Emails    []userEmail `json:"emails,omitempty"`
	Roles     []string    `json:"roles"`
	// Type is "user": the host platform publishes people, not bots.
	Type string `json:"type"`
	// Active is true: a user the gateway authenticated is active.
	Active bool `json:"active"`
}

// userEmail is IUserEmail without verified, which the host platform does
// not publish.
type userEmail struct {
	Address string `json:"address"`
}

// roomData is one roomList entry.
type roomData struct {
	RoomID   string `json:"roomId"`
	RoomName string `json:"roomName"`
	// UserID is the other participant of a direct room, else null (as
	// Rocket.Chat answers it; its typings say undefined).
	UserID        *string `json:"userId"`
	ExportedCount uint64  `json:"exportedCount"`
	Status        string  `json:"status"`
	TargetFile    string  `json:"targetFile"`
	Type          string  `json:"type"`
}

// fileData is one file of a completed operation: Rocket.Chat's FileProp
// plus its checksum and link.
type fileData struct {
	// ID is the object key, unique across operations.
	ID   string `json:"_id"`
	Name string `json:"name"`
	Type string `json:"type"`
	// Format is the name's extension in capitals ("ZIP"), or "unknown",
	// as Rocket.Chat's getFileExtension renders it.
	Format string `json:"format"`
	Size   uint64 `json:"size"`
	SHA256 string `json:"sha256"`
	// URL is a signed download link; absent once the files expired.
	URL string `json:"url,omitempty"`
}

// requestDataDownload implements GET /api/v1/users.requestDataDownload.
//
// Like Rocket.Chat, it looks at the caller's last operation of the same
// kind (fullExport or not): while that one runs, or for the request
// interval after it was made, it is returned with requested=false (and
// its link once completed; a failed one with its reason). Unlike
// Rocket.Chat, a canceled operation or one whose files have expired does
// not block a new request.
//
// Two requests racing each other on different replicas may both create
// an operation; that costs one export and breaks nothing.
func (d *API) requestDataDownload(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := d.user(w, r)
	if user == nil {
		return
	}
	// Rocket.Chat compares the query string with 'true'; anything else is
	// false.
	fullExport := r.URL.Query().Get("fullExport") == "true"
	now := d.cfg.Now()

	// The caller's last operation of this kind is the newest of their
	// user-data jobs with this fullExport, found by walking their index
	// newest first; the queue ahead of it is counted from the unfinished
	// user-data entries. Neither reads more jobs than the one it answers.
	last, err := d.cfg.Jobs.Latest(ctx, jobstore.Scope{Owner: user.GetId(), Kind: exportv1.JobKind_JOB_KIND_USER_DATA},
		func(j *exportv1.Job) bool { return j.GetFullExport() == fullExport })
	if err != nil {
		d.log.ErrorContext(ctx, "find last data download", "user_id", user.GetId(), "error", err)
		writeInternal(w)
		return
	}
	// The queue ahead of an operation is every user's operations still
	// running that were requested before it: before the last one when it
	// is the answer, else before now.
	blocked := last != nil && d.blocks(last, now)
	since := now
	if blocked {
		since = last.GetCreatedAt().AsTime()
	}
	ahead, err := d.cfg.Jobs.UnfinishedBefore(ctx, exportv1.JobKind_JOB_KIND_USER_DATA, since)
	if err != nil {
		d.log.ErrorContext(ctx, "count running data downloads", "error", err)
		writeInternal(w)
		return
	}
	if blocked {
		respond.JSON(w, http.StatusOK, dataDownloadOK{
			Requested:                        false,
			ExportOperation:                  d.operation(r, user, last),
			URL:                              d.downloadURL(last),
			PendingOperationsBeforeMyRequest: ahead,
			Success:                          true,
		})
		return
	}

	rooms, err := d.cfg.Auth.MemberRooms(ctx, user)
	if err != nil {
		d.log.ErrorContext(ctx, "list rooms of user", "user_id", user.GetId(), "error", err)
		writeInternal(w)
		return
	}
	format, ext := exportv1.Format_FORMAT_HTML, ".html"
	if fullExport {
		format, ext = exportv1.Format_FORMAT_JSON, ".json"
	}
	job, err := d.newJob(ctx, user, exportv1.JobKind_JOB_KIND_USER_DATA, format)
	if err != nil {
		d.log.ErrorContext(ctx, "new job", "error", err)
		writeInternal(w)
		return
	}
	job.FullExport = fullExport
	// The archiver names the zip after the user, as Rocket.Chat does.
	job.Name = user.GetName()
	if job.Name == "" {
		job.Name = user.GetUsername()
	}
	tasks := plan.DataDownload(user, rooms, fullExport, ext)
	byID := make(map[string]*sourcev1.Room, len(rooms))
	for _, room := range rooms {
		byID[room.GetId()] = room
	}
	job.Parts = plan.Parts(tasks, byID)
	if err := d.submitJob(ctx, job, bus.TaskUserData, tasks); err != nil {
		if !errors.Is(err, submit.ErrNotAdmitted) {
			d.log.ErrorContext(ctx, "submit data download", "job_id", job.GetId(), "error", err)
		}
		writeInternal(w)
		return
	}
	d.log.InfoContext(ctx, "data download requested", "job_id", job.GetId(), "user_id", user.GetId(),
		"full_export", fullExport, "rooms", len(rooms))
	// Submit has queued the tasks: the operation is "pending" in
	// Rocket.Chat's words, whether or not the projection has caught up.
	job.State = exportv1.JobState_JOB_STATE_QUEUED
	respond.JSON(w, http.StatusOK, dataDownloadOK{
		Requested:                        true,
		ExportOperation:                  d.operation(r, user, job),
		URL:                              nil,
		PendingOperationsBeforeMyRequest: ahead,
		Success:                          true,
	})
}

// blocks reports whether last keeps the caller from requesting anew:
// while it runs, and for the request interval after it was requested,
// whatever its outcome (so a failure shows its reason rather than being
// replaced at once). Two outcomes free the caller early: the caller
// canceled it, or its files have already been deleted.
func (d *API) blocks(last *exportv1.Job, now time.Time) bool {
	switch {
	case !jobstore.Terminal(last.GetState()):
		return true
	case last.GetState() == exportv1.JobState_JOB_STATE_CANCELED, last.GetFilesExpired():
		return false
	}
	return now.Sub(last.GetCreatedAt().AsTime()) < d.cfg.DataDownloadInterval
}

// operation renders job as Rocket.Chat's exportOperation.
func (d *API) operation(r *http.Request, user *sourcev1.User, job *exportv1.Job) exportOperation {
	id := job.GetId()
	// Rocket.Chat's paths are directories without a trailing slash.
	partsPath := strings.TrimSuffix(objects.PartsPrefix(id), "/")
	created := isoTime(job.GetCreatedAt().AsTime())
	op := exportOperation{
		ID:            id,
		CreatedAt:     created,
		UserID:        job.GetOwnerId(),
		RoomList:      []roomData{},
		Status:        operationStatus(job.GetState()),
		ExportPath:    partsPath,
		AssetsPath:    partsPath,
		FileList:      []fileData{},
		GeneratedFile: "",
		UserNameTable: pseudonym.Table(id, user.GetUsername()),
		UserData:      projectUser(user, created),
		FullExport:    job.GetFullExport(),
		UpdatedAt:     isoTime(job.GetUpdatedAt().AsTime()),
		FilesExpired:  job.GetFilesExpired(),

		UserNameTableTruncated: job.GetHiddenUsernamesTruncated(),
	}
	for _, name := range job.GetHiddenUsernames() {
		if name != user.GetUsername() {
			op.UserNameTable[name] = pseudonym.Of(id, name)
		}
	}
	if op.Status == statusFailed {
		op.Reason = job.GetError()
		if op.Reason == "" {
			op.Reason = "the export did not finish; request it again"
		}
	}
	if t := job.GetExpiresAt(); t != nil {
		op.ExpiresAt = isoTime(t.AsTime())
	}
	for _, p := range job.GetParts() {
		switch p.GetKind() {
		case exportv1.PartKind_PART_KIND_ROOM:
			other := d.otherParticipant(r, user, p)
			if name := other.GetUsername(); name != "" && name != user.GetUsername() {
				op.UserNameTable[name] = pseudonym.Of(id, name)
			}
			rd := roomData{
				RoomID:        p.GetRoomId(),
				RoomName:      p.GetRoomName(),
				ExportedCount: p.GetExported(),
				Status:        partStatusWord(p.GetState()),
				TargetFile:    p.GetTargetFile(),
				Type:          p.GetRoomType(),
			}
			if other != nil {
				otherID := other.GetId()
				rd.UserID = &otherID
			}
			op.RoomList = append(op.RoomList, rd)
		case exportv1.PartKind_PART_KIND_USER_PROFILE:
			op.GeneratedUserFile = p.GetState() == exportv1.PartState_PART_STATE_COMPLETED
			op.GeneratedAvatar = op.GeneratedUserFile && p.GetExported() > 1
		case exportv1.PartKind_PART_KIND_ASSETS:
			op.AssetsPath = strings.TrimSuffix(objects.PartPrefix(id, p.GetPart()), "/")
		}
	}
	if job.GetState() == exportv1.JobState_JOB_STATE_COMPLETED {
		for i, f := range job.GetFiles() {
			fd := fileData{
				ID:     f.GetObjectKey(),
				Name:   f.GetName(),
				Type:   f.GetContentType(),
				Format: fileFormat(f.GetName()),
				Size:   f.GetSize(),
				SHA256: f.GetSha256(),
			}
			if i == 0 {
				op.GeneratedFile = f.GetObjectKey()
				op.FileID = fd.ID
			}
			if !job.GetFilesExpired() {
				fd.URL, _ = d.cfg.Links.URL(id, f.GetName())
			}
			op.FileList = append(op.FileList, fd)
		}
	}
	return op
}

// projectUser is userData for user. A user without a creation time (the
// host platform did not publish one) shows the operation's, fallback,
// since IUser requires one.
func projectUser(user *sourcev1.User, fallback string) userData {
	created := fallback
	if t := user.GetCreatedAt(); t != nil {
		created = isoTime(t.AsTime())
	}
	u := userData{
		ID:        user.GetId(),
		CreatedAt: created,
		UpdatedAt: created,
		Username:  user.GetUsername(),
		Name:      user.GetName(),
		Roles:     append([]string{}, user.GetRoles()...),
		Type:      "user",
		Active:    true,
	}
	if addr, err := parseAddress(user.GetEmail()); err == nil {
		u.Emails = []userEmail{{Address: addr}}
	}
	return u
}

// fileFormat is Rocket.Chat's getFileExtension: the last extension in
// capitals, or "unknown" for a name without one (".profile" included).
func fileFormat(name string) string {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || i == len(name)-1 {
		return "unknown"
	}
	return strings.ToUpper(name[i+1:])
}

// otherParticipant is the user behind roomList's userId: for a direct
// room, the participant who is not the caller; nil for every other room,
// and when the other participant cannot be found.
func (d *API) otherParticipant(r *http.Request, user *sourcev1.User, p *exportv1.PartStatus) *sourcev1.User {
	if p.GetRoomType() != roomtype.Letter(sourcev1.RoomType_ROOM_TYPE_DIRECT) {
		return nil
	}
	room, err := d.cfg.Auth.Room(r.Context(), p.GetRoomId())
	if err != nil {
		return nil
	}
	for _, name := range room.GetUsernames() {
		if name == user.GetUsername() {
			continue
		}
		users, err := d.cfg.Auth.UsersByUsername(r.Context(), []string{name})
		if err != nil || users[name] == nil {
			return nil
		}
		return users[name]
	}
	return nil
}

// downloadURL is the signed link of a completed operation's archive while
// it exists.
func (d *API) downloadURL(job *exportv1.Job) *string {
	if job.GetState() != exportv1.JobState_JOB_STATE_COMPLETED || job.GetFilesExpired() || len(job.GetFiles()) == 0 {
		return nil
	}
	link, _ := d.cfg.Links.URL(job.GetId(), job.GetFiles()[0].GetName())
	return &link
}

const statusFailed = "failed"

// operationStatus maps job states onto Rocket.Chat's operation status
// words. Rocket.Chat has no failed state (a broken operation stays where
// it broke and is skipped a day later); Dataport says "failed" and why.
func operationStatus(s exportv1.JobState) string {
	switch s {
	case exportv1.JobState_JOB_STATE_PENDING:
		return "preparing"
	case exportv1.JobState_JOB_STATE_QUEUED:
		return "pending"
	case exportv1.JobState_JOB_STATE_PROCESSING:
		return "exporting"
	case exportv1.JobState_JOB_STATE_FINALIZING:
		return "compressing"
	case exportv1.JobState_JOB_STATE_COMPLETED:
		return "completed"
	}
	return statusFailed
}

// partStatusWord is a roomList entry's status.
func partStatusWord(s exportv1.PartState) string {
	switch s {
	case exportv1.PartState_PART_STATE_EXPORTING:
		return "exporting"
	case exportv1.PartState_PART_STATE_COMPLETED:
		return "completed"
	}
	return "pending"
}

// isoTime is JavaScript's Date.toISOString: UTC with milliseconds.
func isoTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
