// Package native is the gateway's own API over the job model: creating
// room, user-data and record exports (POST /v1/exports, planned by package
// plan exactly as the other dialects plan theirs), the caller's jobs (GET
// /v1/exports, GET /v1/exports/{id}), cancelling one (POST
// /v1/exports/{id}/cancel), their changes as server-sent events (GET
// /v1/exports/events, GET /v1/exports/{id}/events, pushed from a watch of
// the projection; events.go) and downloads through signed links (GET
// /v1/exports/{id}/files/{name}). Callers authenticate with X-User-Id and
// X-Auth-Token, which the gateway's authentication middleware checks
// before the handlers run (principal.From); a download's signed link is
// its only credential.
//
// Errors are RFC 9457 problem details (application/problem+json: type,
// title, status, detail, and errors naming the offending fields of a
// create), written only in errors.go.
package native

import (
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/principal"
	"dataport.dev/services/gateway/internal/respond"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/blob"
	"dataport.dev/shared/infra"
	"dataport.dev/shared/links"
)

// Config holds the API's dependencies. Jobs, Submitter, Blob,
// ExportBucket and Links are required.
type Config struct {
	Jobs *jobstore.Store
	// Submitter cancels jobs.
	Submitter *submit.Submitter
	// Blob and ExportBucket are where downloads are read from.
	Blob         *blob.Store
	ExportBucket string
	// Links mints and verifies download links.
	Links *links.Signer
	// WriteTimeout is the server's write timeout, which a download renews
	// before every write so a large file can stream for as long as the
	// client keeps reading. Zero means infra.DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Create configures POST /v1/exports, served when its Rooms and
	// Directory are set.
	Create Create
	// Heartbeat is how often an idle event stream sends a comment; zero
	// means DefaultHeartbeat.
	Heartbeat time.Duration
	Logger    *slog.Logger
}

// API serves the native routes. It implements httpapi.Dialect.
type API struct {
	Config
	log *slog.Logger
}

// New returns the API.
func New(cfg Config) *API {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = infra.DefaultWriteTimeout
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.Create.Now == nil {
		cfg.Create.Now = time.Now
	}
	if cfg.Create.Location == nil {
		cfg.Create.Location = time.UTC
	}
	cfg.Create.Limits = cfg.Create.Limits.WithDefaults()
	return &API{Config: cfg, log: cfg.Logger}
}

// Routes registers the API's handlers.
func (a *API) Routes(r chi.Router) {
	r.Get("/v1/exports", a.listExports)
	if a.Create.Rooms != nil && a.Create.Directory != nil {
		r.Post("/v1/exports", a.createExport)
	}
	a.eventRoutes(r)
	r.Get("/v1/exports/{id}", a.getExport)
	r.Post("/v1/exports/{id}/cancel", a.cancelExport)
	r.Get("/v1/exports/{id}/files/{name}", a.download)
	// Download managers ask for the size and ETag before they fetch ranges.
	r.Head("/v1/exports/{id}/files/{name}", a.download)
}

// user returns the caller, which the gateway's authentication middleware
// resolved, answering 401 or 500 itself when it returns nil.
func (a *API) user(w http.ResponseWriter, r *http.Request) *sourcev1.User {
	p, err := principal.From(r.Context())
	switch {
	case errors.Is(err, principal.ErrUnauthenticated):
		WriteError(w, http.StatusUnauthorized, "missing or invalid credentials: send X-User-Id and X-Auth-Token")
		return nil
	case err != nil:
		a.internalError(w, r, "authenticate", err)
		return nil
	}
	return p.User
}

// ownJob returns the caller's job named in the path, answering itself when
// it returns nil. Another user's job answers exactly like a missing one,
// so ids cannot be probed.
func (a *API) ownJob(w http.ResponseWriter, r *http.Request) *exportv1.Job {
	u := a.user(w, r)
	if u == nil {
		return nil
	}
	job, err := a.Jobs.Get(r.Context(), chi.URLParam(r, "id"))
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		WriteError(w, http.StatusNotFound, msgNotFound)
		return nil
	case err != nil:
		a.internalError(w, r, "get job", err, "job_id", chi.URLParam(r, "id"))
		return nil
	}
	if job.GetOwnerId() != u.GetId() {
		WriteError(w, http.StatusNotFound, msgNotFound)
		return nil
	}
	return job
}

// internalError logs what failed, where it is handled, and answers 500
// without the cause: NATS or MinIO failed, not the request.
func (a *API) internalError(w http.ResponseWriter, r *http.Request, what string, err error, attrs ...any) {
	if respond.Abandoned(r) {
		a.log.DebugContext(r.Context(), what+": the client went away", append(attrs, "error", err)...)
		w.WriteHeader(respond.StatusClientClosedRequest)
		return
	}
	a.log.ErrorContext(r.Context(), what, append(attrs, "error", err)...)
	WriteError(w, http.StatusInternalServerError, "internal error")
}
