package native

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/plan"
	"dataport.dev/services/gateway/internal/principal"
	"dataport.dev/services/gateway/internal/respond"
	"dataport.dev/services/gateway/internal/schedule"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/egress"
	"dataport.dev/shared/recordquery"
)

// dialectName is stored in Job.dialect of the jobs the native API creates.
const dialectName = "native"

// maxCreateBody bounds a create body: a few hundred bytes in practice, a
// few KiB with every option and list at its limit.
const maxCreateBody = 64 << 10

// Smallest chunks a record export may ask for: below these an export of a
// large resource would become a storm of tiny files.
const (
	MinRowsPerChunk  = 100
	MinBytesPerChunk = 64 << 10
)

// Create holds what POST /v1/exports needs besides Config's jobs and
// submitter. Without Rooms and Directory the route is not served.
type Create struct {
	// Rooms answers room lookups and access (auth.Service).
	Rooms plan.Rooms
	// Directory answers organization membership for record exports.
	Directory *access.Directory
	// Schedules stores recurring record exports, which the gateway's
	// scheduler runs.
	Schedules *schedule.Store
	// Webhooks is the SSRF guard webhook URLs must pass; nil allows only
	// public addresses.
	Webhooks *egress.Guard
	// Resources is the host's resource registry (shared/resources): a
	// record export may name any resource registered for every
	// organization or for the export's own, as in the Rebilly dialect.
	// Nil: the built-in resources only.
	Resources plan.Resources
	// Location resolves relative dates of record exports ("today").
	Location *time.Location
	Limits   plan.Limits
	// Split plans big record exports as ranges taken by several
	// exporters; the zero value never splits.
	Split plan.Split
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// createRequest is the body of POST /v1/exports (docs/ARCHITECTURE.md,
// "Native API"; the OpenAPI document's CreateExport). Absent fields are
// nil, so "not sent" and "sent empty" can be told apart.
type createRequest struct {
	Kind   *string `json:"kind"`
	Format *string `json:"format"`
	Name   *string `json:"name"`
	Room   *struct {
		ID   *string `json:"id"`
		From string  `json:"from"`
		To   string  `json:"to"`
	} `json:"room"`
	UserData *struct {
		FullExport bool `json:"fullExport"`
	} `json:"userData"`
	Records *struct {
		OrganizationID string   `json:"organizationId"`
		Resource       *string  `json:"resource"`
		Fields         []string `json:"fields"`
		Filter         string   `json:"filter"`
		Sort           string   `json:"sort"`
		Q              string   `json:"q"`
		DateRange      *struct {
			Start *string `json:"start"`
			End   *string `json:"end"`
			Field *string `json:"field"`
		} `json:"dateRange"`
		Chunking *struct {
			MaxRows  uint64 `json:"maxRows"`
			MaxBytes uint64 `json:"maxBytes"`
			Gzip     bool   `json:"gzip"`
		} `json:"chunking"`
	} `json:"records"`
	Recurring *struct {
		Instruction *string `json:"instruction"`
		Start       *string `json:"start"`
	} `json:"recurring"`
	Notify *struct {
		Emails   []string `json:"emails"`
		Webhooks []string `json:"webhooks"`
	} `json:"notify"`
}

// Kinds and the formats each takes; the first is the default.
var kindFormats = map[string][]exportv1.Format{
	"room": {exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_HTML, exportv1.Format_FORMAT_JSONL,
		exportv1.Format_FORMAT_CSV},
	"user-data": {exportv1.Format_FORMAT_HTML, exportv1.Format_FORMAT_JSON},
	"records": {exportv1.Format_FORMAT_CSV, exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_JSON_API,
		exportv1.Format_FORMAT_XML, exportv1.Format_FORMAT_PDF, exportv1.Format_FORMAT_JSONL},
}

// recordsFields name a record export's fields in the native body.
var recordsFields = plan.RecordsFields{
	Resource: "records.resource", Fields: "records.fields", Filter: "records.filter",
	Sort: "records.sort", DateRange: "records.dateRange",
}

// decodeCreate reads one JSON object of the create body. Unknown fields
// are refused, so a misspelt option is an error rather than silently
// ignored. The status is 400 for a body that is not such an object.
func decodeCreate(data []byte) (*createRequest, []plan.Invalid) {
	if len(data) > maxCreateBody {
		return nil, []plan.Invalid{{Field: "body", Message: fmt.Sprintf("the body must be a JSON object of at most %d KiB", maxCreateBody>>10)}}
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, []plan.Invalid{{Field: "body", Message: "the body must be a JSON object"}}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var req createRequest
	if err := dec.Decode(&req); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, []plan.Invalid{{Field: te.Field, Message: "must be " + jsonType(te.Type.String())}}
		}
		if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
			if name = strings.TrimSuffix(strings.TrimPrefix(name, `"`), `"`); name != "" {
				return nil, []plan.Invalid{{Field: name, Message: "is not a field of this request"}}
			}
			return nil, []plan.Invalid{{Field: "body", Message: "has a field with an empty name, which is not a field of this request"}}
		}
		return nil, []plan.Invalid{{Field: "body", Message: "malformed JSON"}}
	}
	if dec.More() {
		return nil, []plan.Invalid{{Field: "body", Message: "trailing data after the JSON object"}}
	}
	return &req, nil
}

// jsonType says a Go type in JSON's words.
func jsonType(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case goType == "string", goType == "*string":
		return "a string"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "uint"), strings.HasPrefix(goType, "int"):
		return "a non-negative integer"
	}
	return "an object"
}

// checked is a create request that passed every check needing no lookup.
type checked struct {
	kind       exportv1.JobKind
	format     exportv1.Format
	name       string
	roomID     string
	from, to   *timestamppb.Timestamp
	fullExport bool
	org        string
	records    *exportv1.RecordsScope
	// recordsReq is a record export of a resource that is not built in:
	// whether the caller's organization may name it, and which fields it
	// has, is the registry's to say once the organization is known
	// (planRecords) against the request's clock and limits. records is
	// nil until then.
	recordsReq *plan.RecordsRequest
	now        time.Time
	loc        *time.Location
	limits     plan.RecordsLimits
	recurrence *exportv1.Recurrence
	emails     []string
	webhooks   []string
}

// ext is the file extension of a room or user-data export.
func (c *checked) ext() string {
	if ext, ok := plan.RoomFileExt(c.format); ok {
		return ext
	}
	return ".json"
}

// formatWord is format's word in the native API for an export of kind: a
// room's CSV is gzip-compressed, and says so ("csv.gz").
func formatWord(kind exportv1.JobKind, format exportv1.Format) string {
	if format == exportv1.Format_FORMAT_CSV && kind == exportv1.JobKind_JOB_KIND_ROOM {
		return "csv.gz"
	}
	return word(format)
}

// kindOf is the job kind of a kind word of the create request.
var kindOf = map[string]exportv1.JobKind{
	"room":      exportv1.JobKind_JOB_KIND_ROOM,
	"user-data": exportv1.JobKind_JOB_KIND_USER_DATA,
	"records":   exportv1.JobKind_JOB_KIND_RECORDS,
}

// check validates what can be told from the body alone; relative dates
// are resolved against now in loc.
func (req *createRequest) check(now time.Time, loc *time.Location, lim plan.Limits, guard *egress.Guard) (*checked, []plan.Invalid) {
	var bad []plan.Invalid
	add := func(field, format string, args ...any) {
		bad = append(bad, plan.Invalid{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	c := &checked{}
	kind := ""
	switch {
	case req.Kind == nil || *req.Kind == "":
		add("kind", "is required (room, user-data or records)")
	case kindFormats[*req.Kind] == nil:
		add("kind", "%q is not one of room, user-data, records", *req.Kind)
	default:
		kind = *req.Kind
	}
	if req.Name != nil {
		if utf8.RuneCountInString(*req.Name) > 255 || !utf8.ValidString(*req.Name) || strings.ContainsAny(*req.Name, "\r\n") {
			add("name", "must be one line of valid text of at most 255 characters")
		} else {
			c.name = *req.Name
		}
	}
	// Options of another kind are refused, not ignored: a room export
	// sent with records options is a mistake the caller should hear of.
	for _, other := range []struct {
		field, kind string
		set         bool
	}{{"room", "room", req.Room != nil}, {"userData", "user-data", req.UserData != nil}, {"records", "records", req.Records != nil}} {
		if kind != "" && other.set && other.kind != kind {
			add(other.field, "applies to %s exports only", other.kind)
		}
	}
	if kind != "" {
		formats := kindFormats[kind]
		c.format = formats[0]
		if req.Format != nil {
			c.format = exportv1.Format_FORMAT_UNSPECIFIED
			var words []string
			for _, f := range formats {
				w := formatWord(kindOf[kind], f)
				words = append(words, w)
				if w == *req.Format {
					c.format = f
				}
			}
			if c.format == exportv1.Format_FORMAT_UNSPECIFIED {
				add("format", "%q is not a format of %s exports (%s)", *req.Format, kind, strings.Join(words, ", "))
			}
		}
	}
	switch kind {
	case "room":
		c.kind = exportv1.JobKind_JOB_KIND_ROOM
		bad = append(bad, req.checkRoom(c)...)
	case "user-data":
		c.kind = exportv1.JobKind_JOB_KIND_USER_DATA
		c.fullExport = req.UserData != nil && req.UserData.FullExport
		// As in Rocket.Chat: a full export is JSON with the channel
		// list, the other one HTML.
		want := exportv1.Format_FORMAT_HTML
		if c.fullExport {
			want = exportv1.Format_FORMAT_JSON
		}
		if req.Format != nil && c.format != exportv1.Format_FORMAT_UNSPECIFIED && c.format != want {
			add("format", "a user-data export with fullExport %t is %s", c.fullExport, word(want))
		}
		c.format = want
	case "records":
		c.kind = exportv1.JobKind_JOB_KIND_RECORDS
		bad = append(bad, req.checkRecords(c, now, loc, lim)...)
	}
	if rc := req.Recurring; rc != nil {
		if kind != "" && kind != "records" {
			add("recurring", "only record exports can recur")
		} else if kind != "" {
			rec, invalid := plan.Recurrence(rc.Instruction, rc.Start, "recurring", now, lim.MinInterval)
			bad = append(bad, invalid...)
			c.recurrence = rec
		}
	}
	if n := req.Notify; n != nil {
		emails, invalid := plan.Emails(n.Emails, "notify.emails", lim.MaxEmailRecipients)
		bad = append(bad, invalid...)
		c.emails = emails
		bad = append(bad, checkWebhooks(c, n.Webhooks, lim.MaxWebhooks, guard)...)
	}
	if len(bad) > 0 {
		return nil, bad
	}
	return c, nil
}

func (req *createRequest) checkRoom(c *checked) []plan.Invalid {
	rm := req.Room
	if rm == nil || rm.ID == nil || *rm.ID == "" {
		return []plan.Invalid{{Field: "room.id", Message: "is required"}}
	}
	var bad []plan.Invalid
	if !access.ValidID(*rm.ID) {
		bad = append(bad, plan.Invalid{Field: "room.id", Message: fmt.Sprintf("%q is not a room id", *rm.ID)})
	}
	c.roomID = *rm.ID
	// The bounds are read one at a time so the error names the one that
	// is wrong.
	if _, _, err := plan.DateRange(rm.From, ""); err != nil {
		bad = append(bad, plan.Invalid{Field: "room.from", Message: err.Error()})
	} else if _, _, err := plan.DateRange("", rm.To); err != nil {
		bad = append(bad, plan.Invalid{Field: "room.to", Message: err.Error()})
	} else if from, to, err := plan.DateRange(rm.From, rm.To); err != nil {
		bad = append(bad, plan.Invalid{Field: "room.to", Message: "is before room.from"})
	} else {
		c.from, c.to = from, to
	}
	return bad
}

func (req *createRequest) checkRecords(c *checked, now time.Time, loc *time.Location, lim plan.Limits) []plan.Invalid {
	rs := req.Records
	if rs == nil {
		return []plan.Invalid{{Field: "records.resource", Message: "is required: a record export names its resource in records"}}
	}
	var bad []plan.Invalid
	if rs.OrganizationID != "" && !access.ValidID(rs.OrganizationID) {
		bad = append(bad, plan.Invalid{Field: "records.organizationId", Message: fmt.Sprintf("%q is not an organization id", rs.OrganizationID)})
	}
	c.org = rs.OrganizationID
	rr := plan.RecordsRequest{Resource: rs.Resource, Fields: rs.Fields, Filter: rs.Filter, Sort: rs.Sort, Q: rs.Q}
	if dr := rs.DateRange; dr != nil {
		rr.DateRange = &plan.DateRangeRequest{Start: dr.Start, End: dr.End, Field: dr.Field}
	}
	if ch := rs.Chunking; ch != nil {
		if ch.MaxRows != 0 && ch.MaxRows < MinRowsPerChunk {
			bad = append(bad, plan.Invalid{Field: "records.chunking.maxRows", Message: fmt.Sprintf("must be 0 (no limit) or at least %d", MinRowsPerChunk)})
		}
		if ch.MaxBytes != 0 && ch.MaxBytes < MinBytesPerChunk {
			bad = append(bad, plan.Invalid{Field: "records.chunking.maxBytes", Message: fmt.Sprintf("must be 0 (no limit) or at least %d", MinBytesPerChunk)})
		}
		rr.MaxRowsPerChunk, rr.MaxBytesPerChunk, rr.GzipChunks = ch.MaxRows, ch.MaxBytes, ch.Gzip
	}
	if rr.Resource != nil && *rr.Resource != "" {
		if _, builtin := recordquery.Builtin(*rr.Resource); !builtin {
			// The registry's lookup is by organization, which is resolved
			// only in planRecords; the resource is checked there.
			c.recordsReq = &rr
			c.now, c.loc, c.limits = now, loc, lim.Records()
			return bad
		}
	}
	// A built-in resource is checked here, with every other field at
	// once; a built-in catalog never fails.
	sc, invalid, _ := plan.Records(context.Background(), plan.Catalog{}, rr, recordsFields, now, loc, lim.Records())
	c.records = sc
	return append(bad, invalid...)
}

// registeredRecords checks a record export of a resource that is not
// built in against what org's exports may name in the registry: another
// organization's resource answers as unknown, as if it did not exist.
func (a *API) registeredRecords(ctx context.Context, c *checked, org string) ([]plan.Invalid, error) {
	cat := plan.Catalog{}
	if a.Create.Resources != nil {
		cat = plan.Catalog{Registry: a.Create.Resources, Organization: org}
	}
	sc, bad, err := plan.Records(ctx, cat, *c.recordsReq, recordsFields, c.now, c.loc, c.limits)
	if err != nil || len(bad) > 0 {
		return bad, err
	}
	c.records = sc
	return nil, nil
}

// checkWebhooks takes at most max distinct URLs that pass the guard.
func checkWebhooks(c *checked, urls []string, max int, guard *egress.Guard) []plan.Invalid {
	if len(urls) > max {
		return []plan.Invalid{{Field: "notify.webhooks", Message: fmt.Sprintf("lists %d URLs; at most %d are allowed", len(urls), max)}}
	}
	if guard == nil {
		guard = egress.NewGuard(nil)
	}
	var bad []plan.Invalid
	seen := map[string]bool{}
	for i, u := range urls {
		field := fmt.Sprintf("notify.webhooks[%d]", i)
		if len(u) > 2048 {
			bad = append(bad, plan.Invalid{Field: field, Message: "is longer than 2048 bytes"})
			continue
		}
		if _, err := guard.Check(u); err != nil {
			bad = append(bad, plan.Invalid{Field: field, Message: strings.TrimPrefix(err.Error(), egress.ErrRefused.Error()+": ")})
			continue
		}
		if !seen[u] {
			seen[u] = true
			c.webhooks = append(c.webhooks, u)
		}
	}
	return bad
}

// createExport implements POST /v1/exports: a room, user-data or record
// export of the caller's, with the options of every dialect. Checks that
// need no lookup run first and report every bad field at once (422, or
// 400 for a body that is not a JSON object); then the room or
// organization is looked up: one the caller cannot see answers 404 like a
// missing one, and a caller without the permission to export rooms gets
// 403. Nothing is written before every check has passed. The answer is
// 201 with the export's view and its Location; a recurring record export
// is a schedule whose runs are exports of their own.
func (a *API) createExport(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	user := a.user(w, r)
	if user == nil {
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxCreateBody+1))
	if err != nil {
		writeInvalid(w, http.StatusBadRequest, []plan.Invalid{{Field: "body", Message: "the body could not be read"}})
		return
	}
	req, bad := decodeCreate(data)
	if bad != nil {
		status := http.StatusBadRequest
		if len(data) > maxCreateBody {
			status = http.StatusRequestEntityTooLarge
		}
		writeInvalid(w, status, bad)
		return
	}
	cr := a.Create
	now := cr.Now()
	c, bad := req.check(now, cr.Location, cr.Limits, cr.Webhooks)
	if bad != nil {
		writeInvalid(w, http.StatusUnprocessableEntity, bad)
		return
	}
	job, err := plan.NewJob(ctx, user, c.kind, c.format, dialectName, now)
	if err != nil {
		a.internalError(w, r, "new job", err)
		return
	}
	job.Name, job.NotifyEmails, job.WebhookUrls = c.name, c.emails, c.webhooks
	var (
		taskKind bus.TaskKind
		tasks    []*exportv1.ExportTask
		ok       bool
	)
	switch c.kind {
	case exportv1.JobKind_JOB_KIND_ROOM:
		taskKind = bus.TaskRoom
		tasks, ok = a.planRoom(w, r, user, job, c)
	case exportv1.JobKind_JOB_KIND_USER_DATA:
		taskKind = bus.TaskUserData
		tasks, ok = a.planUserData(w, r, user, job, c)
	default:
		taskKind = bus.TaskRecords
		tasks, ok = a.planRecords(w, r, user, job, c)
	}
	if !ok {
		return
	}
	// Detached from the request, so a client hanging up halfway leaves no
	// half-queued job.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), submit.Timeout)
	defer cancel()
	if job.GetRecurrence() != nil {
		if cr.Schedules == nil {
			writeInvalid(w, http.StatusUnprocessableEntity, []plan.Invalid{{Field: "recurring", Message: "recurring exports are not available on this gateway"}})
			return
		}
		switch err := cr.Schedules.Create(sctx, job); {
		case errors.Is(err, schedule.ErrTooMany):
			writeInvalid(w, http.StatusUnprocessableEntity, []plan.Invalid{{Field: "recurring",
				Message: "you have the most active recurring exports allowed; delete one before creating another"}})
			return
		case err != nil:
			a.internalError(w, r, "create schedule", err, "job_id", job.GetId())
			return
		}
		a.log.InfoContext(ctx, "recurring export created", "job_id", job.GetId(), "user_id", user.GetId())
		a.created(w, job)
		return
	}
	if err := a.Submitter.Submit(sctx, job, taskKind, tasks); err != nil {
		// A refused admission is the quota middleware's to answer; it
		// replaces whatever this writes.
		if errors.Is(err, submit.ErrNotAdmitted) {
			WriteError(w, http.StatusTooManyRequests, "over quota")
			return
		}
		a.internalError(w, r, "submit export", err, "job_id", job.GetId())
		return
	}
	a.log.InfoContext(ctx, "export requested", "job_id", job.GetId(), "user_id", user.GetId(), "kind", word(job.GetKind()))
	// Submit has queued the tasks, whether or not the projection has
	// caught up.
	job.State = exportv1.JobState_JOB_STATE_QUEUED
	a.created(w, job)
}

func (a *API) created(w http.ResponseWriter, job *exportv1.Job) {
	w.Header().Set("Location", "/v1/exports/"+job.GetId())
	respond.JSON(w, http.StatusCreated, a.view(job))
}

func (a *API) planRoom(w http.ResponseWriter, r *http.Request, user *sourcev1.User, job *exportv1.Job, c *checked) ([]*exportv1.ExportTask, bool) {
	room, err := plan.Room(r.Context(), a.Create.Rooms, user, c.roomID)
	switch {
	case errors.Is(err, plan.ErrNotPermitted):
		WriteError(w, http.StatusForbidden, "you lack the permission to export rooms ("+string(access.PermMailMessages)+")")
		return nil, false
	case errors.Is(err, plan.ErrRoomNotFound), errors.Is(err, plan.ErrRoomForbidden):
		// A room the caller cannot read answers like a missing one, so
		// room ids cannot be probed.
		writeNotFound(w, "room.id", "room not found")
		return nil, false
	case err != nil:
		a.internalError(w, r, "check room", err, "room_id", c.roomID)
		return nil, false
	}
	tasks := plan.RoomExport(job, room, c.from, c.to, c.ext())
	// A failed look-up of the room's stream exports unsplit: the same
	// document.
	if tasks, err = a.Create.Split.RoomTasks(r.Context(), job, room, tasks[0]); err != nil {
		a.log.WarnContext(r.Context(), "room export not split: its stream could not be read", "job_id", job.GetId(), "error", err)
	}
	return tasks, true
}

func (a *API) planUserData(w http.ResponseWriter, r *http.Request, user *sourcev1.User, job *exportv1.Job, c *checked) ([]*exportv1.ExportTask, bool) {
	rooms, err := a.Create.Rooms.MemberRooms(r.Context(), user)
	if err != nil {
		a.internalError(w, r, "list rooms of user", err, "user_id", user.GetId())
		return nil, false
	}
	job.FullExport = c.fullExport
	tasks := plan.DataDownload(user, rooms, c.fullExport, c.ext())
	byID := make(map[string]*sourcev1.Room, len(rooms))
	for _, room := range rooms {
		byID[room.GetId()] = room
	}
	job.Parts = plan.Parts(tasks, byID)
	return tasks, true
}

func (a *API) planRecords(w http.ResponseWriter, r *http.Request, user *sourcev1.User, job *exportv1.Job, c *checked) ([]*exportv1.ExportTask, bool) {
	ctx := r.Context()
	dir := a.Create.Directory
	org := c.org
	if org != "" {
		_, member, err := dir.OrgMembership(ctx, user.GetId(), org)
		switch {
		case err != nil:
			a.internalError(w, r, "organization membership", err, "organization_id", org)
			return nil, false
		case !member && !access.HasPermission(user, access.PermExportAnyOrganization):
			// Not a member: the organization does not exist for the
			// caller, exactly as for one nobody has.
			writeNotFound(w, "records.organizationId", "organization not found")
			return nil, false
		}
	} else {
		m, err := dir.DefaultOrganization(ctx, user.GetId())
		if err != nil {
			a.internalError(w, r, "default organization", err, "user_id", user.GetId())
			return nil, false
		}
		org = m.GetOrganizationId()
	}
	if c.recordsReq != nil {
		bad, err := a.registeredRecords(ctx, c, org)
		if err != nil {
			a.internalError(w, r, "resource registry", err, "organization_id", org)
			return nil, false
		}
		if bad != nil {
			writeInvalid(w, http.StatusUnprocessableEntity, bad)
			return nil, false
		}
	}
	if bad := plan.Tenant(c.records, org, "records.resource"); bad != nil {
		writeInvalid(w, http.StatusUnprocessableEntity, bad)
		return nil, false
	}
	job.OrganizationId = org
	job.Scope = access.ScopeFor(user, org)
	job.Records = c.records
	job.Recurrence = c.recurrence
	// A failed look-up of the stream exports unsplit: the same file.
	tasks, err := a.Create.Split.RecordsTasks(r.Context(), job)
	if err != nil {
		a.log.WarnContext(r.Context(), "export not split: its stream could not be read", "job_id", job.GetId(), "error", err)
	}
	return tasks, true
}

// ownSchedule returns the caller's recurring export id names, or nil when
// there is none (the id is then looked up as a job).
func (a *API) ownSchedule(r *http.Request, id string) *exportv1.Job {
	if a.Create.Schedules == nil || !jobstore.ValidID(id) {
		return nil
	}
	p, err := principal.From(r.Context())
	if err != nil {
		return nil
	}
	sched, _, err := a.Create.Schedules.Get(r.Context(), id)
	if err != nil || sched.GetOwnerId() != p.User.GetId() || sched.GetDialect() != dialectName {
		return nil
	}
	return sched
}
