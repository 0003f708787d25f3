// Package rocketchat is the gateway's Rocket.Chat dialect: the two export
// endpoints of Rocket.Chat's REST API, served over Dataport's job model so
// that Rocket.Chat clients, scripts and integrations work unchanged.
//
//   - POST /api/v1/rooms.export: type "file" exports one room's history
//     (a JOB_KIND_ROOM job), type "email" mails selected messages (a
//     JOB_KIND_ROOM_MAIL job).
//   - GET /api/v1/users.requestDataDownload: the caller's personal data
//     download (a JOB_KIND_USER_DATA job), answered as Rocket.Chat's
//     exportOperation.
//
// Answers, error bodies and status words are Rocket.Chat's; where
// Rocket.Chat says nothing useful (why an export failed, the id to poll)
// the dialect adds fields, never changes existing ones. The dialect keeps
// no state of its own: every answer is rendered from the job projection.
package rocketchat

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/auth"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/plan"
	"dataport.dev/services/gateway/internal/principal"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/links"
)

// DefaultDataDownloadInterval is how long after a data download request a
// new one returns the previous operation instead: Rocket.Chat's fixed one
// day.
const DefaultDataDownloadInterval = 24 * time.Hour

// Config holds the dialect's dependencies. Jobs, Auth, Submitter and Links
// are required.
type Config struct {
	Jobs *jobstore.Store
	// Auth answers room access; callers are authenticated before the
	// dialect sees them (principal.From).
	Auth      *auth.Service
	Submitter *submit.Submitter
	// Links signs the download link of a completed data download.
	Links *links.Signer
	// DataDownloadInterval is how long a user waits between two data
	// downloads of the same kind; 0 means DefaultDataDownloadInterval.
	DataDownloadInterval time.Duration
	// Split plans a big room's export as ranges (plan.Split.RoomTasks);
	// the zero value never splits.
	Split  plan.Split
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// API serves the Rocket.Chat routes. It implements httpapi.Dialect.
type API struct {
	cfg Config
	log *slog.Logger
}

// New returns the dialect.
func New(cfg Config) *API {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DataDownloadInterval <= 0 {
		cfg.DataDownloadInterval = DefaultDataDownloadInterval
	}
	return &API{cfg: cfg, log: cfg.Logger}
}

// Routes registers the dialect's handlers.
func (d *API) Routes(r chi.Router) {
	r.Post("/api/v1/rooms.export", d.roomsExport)
	r.Get("/api/v1/users.requestDataDownload", d.requestDataDownload)
}

// dialectName is stored in Job.dialect.
const dialectName = "rocketchat"

// user returns the caller, which the gateway's authentication middleware
// resolved, answering 401 or 500 itself when it returns nil.
func (d *API) user(w http.ResponseWriter, r *http.Request) *sourcev1.User {
	p, err := principal.From(r.Context())
	if errors.Is(err, principal.ErrUnauthenticated) {
		writeUnauthorized(w)
		return nil
	}
	if err != nil {
		d.log.ErrorContext(r.Context(), "authenticate", "error", err)
		writeInternal(w)
		return nil
	}
	return p.User
}

// newJob returns a pending job of the caller's, carrying the request's
// trace. Chat data has no organization; rooms are bounded by membership.
func (d *API) newJob(ctx context.Context, owner *sourcev1.User, kind exportv1.JobKind, format exportv1.Format) (*exportv1.Job, error) {
	return plan.NewJob(ctx, owner, kind, format, dialectName, d.cfg.Now())
}

// submitJob creates the job and queues its tasks, detached from the
// request so a client hanging up halfway leaves no half-queued job.
func (d *API) submitJob(ctx context.Context, job *exportv1.Job, kind bus.TaskKind, tasks []*exportv1.ExportTask) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), submit.Timeout)
	defer cancel()
	return d.cfg.Submitter.Submit(sctx, job, kind, tasks)
}
