// Package rebilly serves Rebilly's data-exports collection (seed 003) over
// the job model: POST/PUT create, GET list and item, DELETE, and a
// fileDownload redirect, under /data-exports, /experimental/data-exports
// and both again below /organizations/{organizationId}, which is what the
// official JS SDK (RebillyExperimentalAPI) calls. Organizations are
// tenants (Job.organization_id) and memberships are data (bucket
// org_members): a path naming an organization the caller is not a member
// of answers 404 like an unknown one, and a path naming none means the
// caller's default organization. Inside one, a user sees their own exports
// and an administrator of that organization sees everyone's; the global
// admin role does not reach into tenants. One-off exports are record jobs submitted
// at once; recurring ones are schedules run by package schedule, and every
// run is a job of its own that the list shows too.
package rebilly

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"google.golang.org/protobuf/proto"
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
	"dataport.dev/shared/blob"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/links"
	"dataport.dev/shared/objects"
)

const dialectName = "rebilly"

// Config holds the dialect's dependencies; all but Blob, ExportBucket,
// Logger and Now are required.
type Config struct {
	// Directory answers organization membership; callers are
	// authenticated before the dialect sees them (principal.From).
	Directory *access.Directory
	Jobs      *jobstore.Store
	Schedules *schedule.Store
	Submitter *submit.Submitter
	Links     *links.Signer
	// Blob and ExportBucket delete the objects of deleted exports at once;
	// without both they are left to expiry.
	Blob         *blob.Store
	ExportBucket string
	// PublicURL is the gateway's base URL for self links.
	PublicURL string
	// Location resolves relative dates ("today", "-7 days").
	Location *time.Location
	// Limits bound each export; zero values take the defaults.
	Limits plan.Limits
	// Split plans big exports as ranges taken by several exporters; the
	// zero value never splits.
	Split plan.Split
	// Resources is the host's resource registry; nil: the built-in
	// resources only.
	Resources plan.Resources
	Logger    *slog.Logger
	Now       func() time.Time
}

// API is the Rebilly data-exports API. It implements httpapi.Dialect.
type API struct {
	dir       *access.Directory
	jobs      *jobstore.Store
	schedules *schedule.Store
	submitter *submit.Submitter
	links     *links.Signer
	blob      *blob.Store
	exports   string
	publicURL string
	loc       *time.Location
	limits    plan.Limits
	resources plan.Resources
	split     plan.Split
	log       *slog.Logger
	now       func() time.Time
}

// New returns the dialect.
func New(cfg Config) *API {
	d := &API{
		dir: cfg.Directory, jobs: cfg.Jobs, schedules: cfg.Schedules, submitter: cfg.Submitter,
		links: cfg.Links, blob: cfg.Blob, exports: cfg.ExportBucket, publicURL: strings.TrimSuffix(cfg.PublicURL, "/"),
		loc: cfg.Location, limits: cfg.Limits.WithDefaults(), resources: cfg.Resources, split: cfg.Split, log: cfg.Logger, now: cfg.Now,
	}
	if d.loc == nil {
		d.loc = time.UTC
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	if d.now == nil {
		d.now = time.Now
	}
	return d
}

// Routes implements httpapi.Dialect.
func (d *API) Routes(r chi.Router) {
	for _, prefix := range []string{"/experimental", ""} {
		for _, org := range []bool{false, true} {
			path := prefix + "/data-exports"
			if org {
				path = prefix + "/organizations/{organizationId}/data-exports"
			}
			h := func(fn func(http.ResponseWriter, *http.Request, scope)) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) { d.withScope(w, r, prefix, fn) }
			}
			r.Route(path, func(r chi.Router) {
				r.Post("/", h(d.create))
				r.Get("/", h(d.list))
				r.Get("/{id}", h(d.get))
				r.Put("/{id}", h(d.put))
				r.Delete("/{id}", h(d.remove))
				r.Get("/{id}/download", h(d.download))
			})
		}
	}
}

// scope is who asks, inside which organization.
type scope struct {
	user *sourcev1.User
	// org is the organization in the path, else the caller's default one
	// (empty when the caller belongs to none).
	org string
	// orgAdmin: the caller administers org's exports.
	orgAdmin bool
	// base is the collection URL; prefix is "/experimental" or "".
	base, prefix string
}

func (s scope) admin() bool { return s.orgAdmin }

// sees reports whether a job belongs to the caller's tenant and view.
func (s scope) sees(j *exportv1.Job) bool {
	return j.GetDialect() == dialectName && j.GetOrganizationId() == s.org &&
		(j.GetOwnerId() == s.user.GetId() || s.admin())
}

func (d *API) withScope(w http.ResponseWriter, r *http.Request, prefix string, fn func(http.ResponseWriter, *http.Request, scope)) {
	p, err := principal.From(r.Context())
	switch {
	case errors.Is(err, principal.ErrUnauthenticated):
		writeUnauthorized(w)
		return
	case err != nil:
		d.log.ErrorContext(r.Context(), "authenticate", "error", err)
		writeInternal(w)
		return
	}
	u := p.User
	s := scope{user: u, prefix: prefix, base: d.publicURL + prefix + "/data-exports"}
	ctx := r.Context()
	var m *sourcev1.OrganizationMembership
	if org := chi.URLParam(r, "organizationId"); org != "" {
		if !validID(org) {
			writeNotFound(w)
			return
		}
		s.org = org
		s.base = d.publicURL + prefix + "/organizations/" + org + "/data-exports"
		member := false
		if m, member, err = d.dir.OrgMembership(ctx, u.GetId(), org); err != nil {
			d.internal(w, r, "organization membership", err)
			return
		}
		// Not a member: the organization's exports do not exist for the
		// caller, exactly as for an organization nobody has.
		if !member && !access.HasPermission(u, access.PermExportAnyOrganization) {
			writeNotFound(w)
			return
		}
	} else if m, err = d.dir.DefaultOrganization(ctx, u.GetId()); err != nil {
		d.internal(w, r, "default organization", err)
		return
	} else {
		s.org = m.GetOrganizationId()
	}
	if s.org != "" {
		s.orgAdmin = slices.Contains(m.GetRoles(), "admin") || access.HasPermission(u, access.PermExportAnyOrganization)
	}
	fn(w, r, s)
}

// create implements POST /data-exports.
func (d *API) create(w http.ResponseWriter, r *http.Request, s scope) {
	req, bad := decodeRequest(r.Body)
	if bad != nil {
		writeInvalid(w, bad)
		return
	}
	if req.ID != nil && *req.ID != "" {
		if !validID(*req.ID) {
			writeInvalid(w, []invalidField{{Field: "id", Message: "must be 1-50 characters of A-Z a-z 0-9 _ = -"}})
			return
		}
		d.store(w, r, s, req, clientKey(s, *req.ID), *req.ID)
		return
	}
	id, err := submit.NewJobID()
	if err != nil {
		writeInternal(w)
		return
	}
	d.store(w, r, s, req, id, "")
}

// put implements PUT /data-exports/{id}: create with the client's id, or
// update an export that has not started, as Rebilly documents ("a data
// export may be changed as long as it is still pending"). A recurring
// export can always be updated (its next runs use the new settings). A
// one-off export that has not started (pending or queued: no exporter has
// taken it yet) is replaced by the updated one under the same id; one
// that has started answers 409 unless the PUT repeats it. An id the caller
// cannot see is free for the caller (see resolve): the PUT creates the
// caller's own.
func (d *API) put(w http.ResponseWriter, r *http.Request, s scope) {
	id := chi.URLParam(r, "id")
	if !validID(id) {
		writeInvalid(w, []invalidField{{Field: "id", Message: "must be 1-50 characters of A-Z a-z 0-9 _ = -"}})
		return
	}
	req, bad := decodeRequest(r.Body)
	if bad != nil {
		writeInvalid(w, bad)
		return
	}
	e, found, err := d.resolve(r.Context(), s, id)
	switch {
	case err != nil:
		d.internal(w, r, "find export", err)
		return
	case !found:
		d.store(w, r, s, req, clientKey(s, id), id)
		return
	case e.schedule:
		d.updateSchedule(w, r, s, req, e.job, e.rev)
		return
	}
	existing := e.job
	job, bad, err := build(r.Context(), d.catalog(s.org), req, d.now(), d.loc, d.limits)
	if err != nil {
		d.internal(w, r, "look up the resource", err)
		return
	}
	if bad == nil && job.GetRecurrence() != nil {
		bad = []invalidField{{Field: "recurring", Message: "a one-off export stays one-off; delete it and create a recurring one"}}
	}
	if bad != nil {
		writeInvalid(w, bad)
		return
	}
	if sameRequest(job, existing) {
		d.respondItem(w, r, s, entry{job: existing}, http.StatusOK)
		return
	}
	if existing.GetParentId() != "" {
		writeConflict(w, "The data export is a run of a recurring export and cannot be changed; update the recurring export instead.")
		return
	}
	if existing.GetState() > exportv1.JobState_JOB_STATE_QUEUED {
		writeConflict(w, "The data export is already "+statusWord(existing.GetState())+" and can no longer be changed; delete it and create a new one.")
		return
	}
	d.replace(w, r, s, existing, job)
}

// replace stands job, the update of the not-yet-started one-off export
// old, in its place: the new job is submitted under replacementKey(old)
// with old's shown id, then old is canceled (its task, if an exporter
// takes it now, finds it canceled) and hidden, and resolve follows old to
// the new job. Submitting first means a refused submit (a quota) leaves
// old as it was, and the export is never missing; a crash before the hide
// leaves old listed beside its replacement.
func (d *API) replace(w http.ResponseWriter, r *http.Request, s scope, old, job *exportv1.Job) {
	ctx := context.WithoutCancel(r.Context())
	shown := old.GetClientId()
	if shown == "" {
		shown = old.GetId()
	}
	job.Id, job.OwnerId, job.OrganizationId, job.ClientId = replacementKey(old), old.GetOwnerId(), old.GetOrganizationId(), shown
	if d.replacements(ctx, old) >= maxReplacements {
		writeConflict(w, "The data export was updated too often; delete it and create a new one.")
		return
	}
	// As for a schedule: the owner's scope, renewed only when the owner
	// updates it.
	job.Scope = old.GetScope()
	if old.GetOwnerId() == s.user.GetId() {
		job.Scope = access.ScopeFor(s.user, old.GetOrganizationId())
	}
	if bad := checkTenant(job); bad != nil {
		writeInvalid(w, bad)
		return
	}
	job.CreatedAt, job.UpdatedAt = old.GetCreatedAt(), timestamppb.New(d.now())
	sctx, cancel := context.WithTimeout(ctx, submit.Timeout)
	defer cancel()
	err := d.submitter.Submit(sctx, job, bus.TaskRecords, d.recordsTasks(sctx, job))
	if err != nil && !errors.Is(err, jobstore.ErrExists) {
		d.internal(w, r, "submit the updated export", err)
		return
	}
	// Should old have started or ended meanwhile, the update still
	// stands: the caller asked for the new settings and gets them. When
	// the replacement existed already (a concurrent update, or one cut
	// off before this step), old is retired all the same, so the next
	// PUT updates the replacement.
	if _, cerr := d.submitter.Cancel(ctx, old.GetId(), "replaced by an update"); cerr != nil {
		d.internal(w, r, "cancel the updated export", cerr)
		return
	}
	if herr := d.schedules.Hide(ctx, old.GetId()); herr != nil {
		d.internal(w, r, "hide the updated export", herr)
		return
	}
	if err != nil {
		writeConflict(w, "The data export changed meanwhile; read it again and retry.")
		return
	}
	d.log.InfoContext(ctx, "data export updated", "job_id", job.GetId(), "replaces", old.GetId(), "user_id", s.user.GetId())
	d.respondItem(w, r, s, entry{job: job}, http.StatusOK)
}

// replacements counts how often the export that old stands for was
// replaced, walking the chain from its first job to old. The first job
// is stored under the shown id (a server id) or its client key.
func (d *API) replacements(ctx context.Context, old *exportv1.Job) int {
	shown := old.GetClientId()
	if shown == "" {
		return 0
	}
	for _, root := range []string{clientKeyOf(old.GetOrganizationId(), old.GetOwnerId(), shown), shown} {
		cur := root
		for n := 0; n <= maxReplacements; n++ {
			if cur == old.GetId() {
				return n
			}
			j, err := d.jobs.Get(ctx, cur)
			if err != nil {
				break
			}
			cur = replacementKey(j)
		}
	}
	return maxReplacements
}

func (d *API) updateSchedule(w http.ResponseWriter, r *http.Request, s scope, req *request, old *exportv1.Job, rev uint64) {
	job, bad, err := build(r.Context(), d.catalog(old.GetOrganizationId()), req, d.now(), d.loc, d.limits)
	if err != nil {
		d.internal(w, r, "look up the resource", err)
		return
	}
	if bad == nil && job.GetRecurrence() == nil {
		bad = []invalidField{{Field: "recurring", Message: "a recurring export stays recurring; delete it to stop it"}}
	}
	if bad != nil {
		writeInvalid(w, bad)
		return
	}
	job.Id, job.OwnerId, job.OrganizationId, job.CreatedAt = old.GetId(), old.GetOwnerId(), old.GetOrganizationId(), old.GetCreatedAt()
	job.ClientId = old.GetClientId()
	// The schedule keeps its owner's scope, renewed by whoever updates it
	// only when that is the owner; exporters re-check it at every run.
	job.Scope = old.GetScope()
	if old.GetOwnerId() == s.user.GetId() {
		job.Scope = access.ScopeFor(s.user, old.GetOrganizationId())
	}
	if bad := checkTenant(job); bad != nil {
		writeInvalid(w, bad)
		return
	}
	job.UpdatedAt = timestamppb.New(d.now())
	job.Recurrence.Runs = old.GetRecurrence().GetRuns()
	// Occurrences already fired are not fired again.
	if n := old.GetRecurrence().GetNext(); n != nil && job.GetRecurrence().GetNext() != nil && job.Recurrence.Next.AsTime().Before(n.AsTime()) {
		next, _ := schedule.Next(job.Recurrence, n.AsTime(), true)
		job.Recurrence.Next = next
	}
	switch _, err := d.schedules.Update(r.Context(), job, rev); {
	case errors.Is(err, schedule.ErrTooMany):
		writeInvalid(w, []invalidField{tooManySchedules})
		return
	case err != nil:
		writeConflict(w, "The data export changed meanwhile; read it again and retry.")
		return
	}
	d.respondItem(w, r, s, entry{job: job, schedule: true}, http.StatusOK)
}

// store validates and creates a new export stored under id; clientID is
// the id the client chose (id is then clientKey of it), or empty.
func (d *API) store(w http.ResponseWriter, r *http.Request, s scope, req *request, id, clientID string) {
	now := d.now()
	job, bad, err := build(r.Context(), d.catalog(s.org), req, now, d.loc, d.limits)
	if err != nil {
		d.internal(w, r, "look up the resource", err)
		return
	}
	if bad != nil {
		writeInvalid(w, bad)
		return
	}
	if clientID != "" {
		switch reserved, err := d.reservedForRun(r.Context(), s, clientID); {
		case err != nil:
			d.internal(w, r, "find schedule", err)
			return
		case reserved:
			writeConflict(w, "The id names a run of one of your recurring exports.")
			return
		}
	}
	job.Id, job.OwnerId, job.OrganizationId, job.ClientId = id, s.user.GetId(), s.org, clientID
	job.Scope = access.ScopeFor(s.user, s.org)
	job.CreatedAt, job.UpdatedAt = timestamppb.New(now), timestamppb.New(now)
	if bad := checkTenant(job); bad != nil {
		writeInvalid(w, bad)
		return
	}
	ctx := context.WithoutCancel(r.Context())
	if job.GetRecurrence() != nil {
		if _, err := d.jobs.Get(ctx, id); err == nil {
			writeConflict(w, "The id is already in use.")
			return
		}
		switch err := d.schedules.Create(ctx, job); {
		case errors.Is(err, schedule.ErrExists):
			writeConflict(w, "The id is already in use.")
			return
		case errors.Is(err, schedule.ErrTooMany):
			writeInvalid(w, []invalidField{tooManySchedules})
			return
		case err != nil:
			d.internal(w, r, "create schedule", err)
			return
		}
		w.Header().Set("Location", s.base+"/"+s.shownID(job))
		d.respondItem(w, r, s, entry{job: job, schedule: true}, http.StatusCreated)
		return
	}
	if _, _, err := d.schedules.Get(ctx, id); err == nil {
		writeConflict(w, "The id is already in use.")
		return
	}
	sctx, cancel := context.WithTimeout(ctx, submit.Timeout)
	defer cancel()
	switch err := d.submitter.Submit(sctx, job, bus.TaskRecords, d.recordsTasks(sctx, job)); {
	case errors.Is(err, jobstore.ErrExists):
		writeConflict(w, "The id is already in use.")
		return
	case err != nil:
		d.internal(w, r, "submit", err)
		return
	}
	d.log.InfoContext(ctx, "data export queued", "job_id", id, "user_id", job.GetOwnerId(), "organization_id", s.org)
	w.Header().Set("Location", s.base+"/"+s.shownID(job))
	d.respondItem(w, r, s, entry{job: job}, http.StatusCreated)
}

// catalog is what an export of org may name: the resources registered
// for every organization or for org, so another organization's resource
// answers as unknown, as if it did not exist.
func (d *API) catalog(org string) plan.Catalog {
	if d.resources == nil {
		return plan.Catalog{}
	}
	return plan.Catalog{Registry: d.resources, Organization: org}
}

// checkTenant refuses an export of organization records (transactions,
// events) outside any organization.
func checkTenant(job *exportv1.Job) []invalidField {
	return plan.Tenant(job.GetRecords(), job.GetOrganizationId(), "resource")
}

// tooManySchedules answers a create (or revival) beyond the per-owner cap
// of active recurring exports.
var tooManySchedules = invalidField{Field: "recurring",
	Message: "you have the most active recurring exports allowed; delete one before creating another"}

// recordsTasks plans the export's tasks: one, or ranges of a big stream
// (plan.Split). A failed look-up of the stream exports unsplit, which
// gives the same file.
func (d *API) recordsTasks(ctx context.Context, job *exportv1.Job) []*exportv1.ExportTask {
	tasks, err := d.split.RecordsTasks(ctx, job)
	if err != nil {
		d.log.WarnContext(ctx, "export not split: its stream could not be read", "job_id", job.GetId(), "error", err)
	}
	return tasks
}

// RunSchedule is the schedule.RunFunc of recurring data exports: the run
// is a copy of the template whose relative dates are resolved at the
// occurrence. It is idempotent: an existing run is left alone.
func (d *API) RunSchedule(ctx context.Context, sched *exportv1.Job, occurrence time.Time, runID string) error {
	if _, err := d.jobs.Get(ctx, runID); err == nil {
		return nil
	} else if !errors.Is(err, jobstore.ErrNotFound) {
		return err
	}
	run := proto.Clone(sched).(*exportv1.Job)
	// A run has the server's run id, shown to the owner as named after the
	// schedule's client id (runShownID), and holds no quota slot: nobody
	// asked for it just now.
	run.Id, run.ParentId, run.Recurrence = runID, sched.GetId(), nil
	run.ClientId, run.QuotaPrincipal = "", ""
	if shown := runShownID(sched, runID); shown != "" {
		taken, err := d.clientIDTaken(ctx, sched.GetOrganizationId(), sched.GetOwnerId(), shown)
		if err != nil {
			return err
		}
		// An export the owner created under that id before the schedule
		// had it keeps it; the run is then shown by its stored id.
		if !taken {
			run.ClientId = shown
		}
	}
	run.State = exportv1.JobState_JOB_STATE_PENDING
	now := d.now()
	run.CreatedAt, run.UpdatedAt = timestamppb.New(now), timestamppb.New(now)
	// Today's caps, not those of the day the schedule was made.
	if sc := run.GetRecords(); sc != nil {
		sc.MaxRows, sc.MaxBytes = d.limits.MaxRows, d.limits.MaxBytes
	}
	// Today's permissions too: the owner's roles as they stand now (the
	// exporter checks again). An owner who is gone has no more runs.
	owner, found, err := d.dir.User(ctx, run.GetOwnerId())
	if err != nil {
		return err
	}
	if !found {
		d.log.WarnContext(ctx, "recurring export skipped: its owner no longer exists", "job_id", sched.GetId(), "user_id", run.GetOwnerId())
		return nil
	}
	run.Scope = access.ScopeFor(owner, run.GetOrganizationId())
	if dr := run.GetRecords().GetDateRange(); dr != nil {
		if bad := plan.ResolveRange(dr, "dateRange", occurrence, d.loc); bad != nil {
			// The expressions were valid at creation; an end before the
			// start at this occurrence means an empty run, not a failure.
			dr.From, dr.To = timestamppb.New(occurrence), timestamppb.New(occurrence)
		}
	}
	err = d.submitter.Submit(ctx, run, bus.TaskRecords, d.recordsTasks(ctx, run))
	if errors.Is(err, jobstore.ErrExists) {
		return nil
	}
	return err
}

// clientIDTaken reports whether the owner has an export, one-off or
// recurring, under the client id.
func (d *API) clientIDTaken(ctx context.Context, org, owner, clientID string) (bool, error) {
	key := clientKeyOf(org, owner, clientID)
	if _, _, err := d.schedules.Get(ctx, key); err == nil {
		return true, nil
	} else if !errors.Is(err, schedule.ErrNotFound) {
		return false, err
	}
	_, err := d.jobs.Get(ctx, key)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jobstore.ErrNotFound):
		return false, nil
	}
	return false, err
}

// get implements GET /data-exports/{id}.
func (d *API) get(w http.ResponseWriter, r *http.Request, s scope) {
	e, ok := d.find(w, r, s, chi.URLParam(r, "id"))
	if !ok {
		return
	}
	bad := d.checkExpand(r)
	if bad != nil {
		writeInvalid(w, bad)
		return
	}
	d.respondItem(w, r, s, e, http.StatusOK)
}

// find loads an export the caller may see, answering 404 itself.
func (d *API) find(w http.ResponseWriter, r *http.Request, s scope, id string) (entry, bool) {
	if !validID(id) {
		writeNotFound(w)
		return entry{}, false
	}
	e, found, err := d.resolve(r.Context(), s, id)
	switch {
	case err != nil:
		d.internal(w, r, "find export", err)
		return entry{}, false
	case !found:
		writeNotFound(w)
		return entry{}, false
	}
	return e, true
}

func (d *API) hidden(ctx context.Context, id string) bool {
	h, err := d.schedules.IsHidden(ctx, id)
	return err == nil && h
}

// scopedSchedules reads the schedules s may see from the schedules'
// indexes: the caller's own, or the organization's for an administrator.
func (d *API) scopedSchedules(ctx context.Context, s scope) ([]*exportv1.Job, error) {
	if s.admin() && s.org != "" {
		return d.schedules.ListOrganization(ctx, s.org)
	}
	return d.schedules.ListOwner(ctx, s.user.GetId())
}

// remove implements DELETE /data-exports/{id}: a running export is
// canceled (the exporter stops and deletes partial objects), a schedule
// stops firing, and the export leaves every listing. The objects of a
// completed export are deleted at once when the gateway has the object
// store; when it has not, or deleting fails, the retention sweeper
// deletes them when they expire.
func (d *API) remove(w http.ResponseWriter, r *http.Request, s scope) {
	e, ok := d.find(w, r, s, chi.URLParam(r, "id"))
	if !ok {
		return
	}
	ctx := context.WithoutCancel(r.Context())
	id := e.job.GetId()
	if e.schedule {
		if err := d.schedules.Delete(ctx, id); err != nil {
			d.internal(w, r, "delete schedule", err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if !terminal(e.job) {
		if _, err := d.submitter.Cancel(ctx, id, "deleted by the user"); err != nil {
			d.internal(w, r, "cancel", err)
			return
		}
	}
	if err := d.schedules.Hide(ctx, id); err != nil {
		d.internal(w, r, "hide", err)
		return
	}
	if e.job.GetState() == exportv1.JobState_JOB_STATE_COMPLETED {
		if err := d.deleteObjects(ctx, id); err != nil {
			d.log.WarnContext(ctx, "delete objects of a deleted export; left to expiry", "job_id", id, "error", err)
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// deleteObjects deletes every object the job stored: its parts and files,
// all under its prefix in the exports bucket. It deliberately does not
// follow the job's File records: a file may point into another bucket
// (an asset's source file in the assets bucket), which the export only
// read and does not own.
func (d *API) deleteObjects(ctx context.Context, id string) error {
	if d.blob == nil || d.exports == "" {
		return nil
	}
	objs, err := d.blob.List(ctx, d.exports, objects.JobPrefix(id))
	if err != nil {
		return fmt.Errorf("list objects: %w", err)
	}
	for _, o := range objs {
		if err := d.blob.Delete(ctx, d.exports, o.Key); err != nil && !errors.Is(err, blob.ErrNotFound) {
			return fmt.Errorf("delete %s: %w", o.Key, err)
		}
	}
	return nil
}

// download implements the fileDownload link: it redirects to a freshly
// signed link of the export's file.
func (d *API) download(w http.ResponseWriter, r *http.Request, s scope) {
	e, ok := d.find(w, r, s, chi.URLParam(r, "id"))
	if !ok {
		return
	}
	res := e.job
	if e.schedule {
		res = e.run
	}
	if res == nil || res.GetState() != exportv1.JobState_JOB_STATE_COMPLETED || len(res.GetFiles()) == 0 {
		writeProblem(w, http.StatusNotFound, "not-found", "Not Found", "The data export has no file yet.")
		return
	}
	href, _ := d.links.URL(res.GetId(), res.GetFiles()[0].GetName())
	http.Redirect(w, r, href, http.StatusFound)
}

func (d *API) checkExpand(r *http.Request) []invalidField {
	for _, v := range strings.Split(query(r).Get("expand"), ",") {
		if v = strings.TrimSpace(v); v != "" && v != "user" {
			return []invalidField{{Field: "expand", Message: fmt.Sprintf("%q cannot be expanded; the only expandable object is user", v)}}
		}
	}
	return nil
}

func (d *API) respondItem(w http.ResponseWriter, r *http.Request, s scope, e entry, status int) {
	var u *sourcev1.User
	if strings.Contains(query(r).Get("expand"), "user") {
		u = d.owner(r.Context(), s, e.job.GetOwnerId())
	}
	respond.JSON(w, status, d.render(e, s, u))
}

// owner returns the export's user for expand=user.
func (d *API) owner(ctx context.Context, s scope, id string) *sourcev1.User {
	if id == s.user.GetId() {
		return s.user
	}
	u, found, err := d.dir.User(ctx, id)
	if err != nil || !found {
		return &sourcev1.User{Id: id}
	}
	return u
}

func (d *API) internal(w http.ResponseWriter, r *http.Request, what string, err error) {
	if !errors.Is(err, submit.ErrNotAdmitted) {
		d.log.ErrorContext(r.Context(), what, "error", err)
	}
	writeInternal(w)
}

// latestRun is the newest run of the schedule id, or nil.
func (d *API) latestRun(ctx context.Context, id string) (*exportv1.Job, error) {
	page, err := d.jobs.Find(ctx, jobstore.Query{Scope: jobstore.Scope{Parent: id}, Limit: 1})
	if err != nil || len(page.Jobs) == 0 {
		return nil, err
	}
	return page.Jobs[0], nil
}

// query parses the query string splitting on "&" only: Rebilly filters
// join fields with ";", which net/url would treat as a bad separator and
// drop the whole parameter.
func query(r *http.Request) url.Values {
	out := url.Values{}
	for _, part := range strings.Split(r.URL.RawQuery, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		k, err1 := url.QueryUnescape(k)
		v, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			continue
		}
		out[k] = append(out[k], v)
	}
	return out
}
