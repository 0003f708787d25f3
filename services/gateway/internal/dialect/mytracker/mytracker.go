// Package mytracker serves myTracker's raw-data export API (seed 004) over
// the job model: create.json, get.json and cancel.json under
// /api/raw/v1/export/. Exports are numbered with a sequential idRawExport
// (a revision-checked counter in KV bus.BucketCounters, stored as
// Job.number; the job id is "raw-<number>"). Every export is the events
// record stream as CSV, split into gzip-compressed chunk files of at most
// a configured number of rows and bytes, each with its own signed link.
//
// Authentication: "Authorization: Bearer <API key>" (the user's API key)
// or "Authorization: Bearer <JWT>" as in the Rebilly dialect. myTracker's
// own request signing is not reproduced. A user sees only their own
// exports; another user's number answers 404 like a missing one.
package mytracker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/principal"
	"dataport.dev/services/gateway/internal/respond"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/access"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/links"
	"dataport.dev/shared/recordquery"
)

const (
	dialectName = "mytracker"
	counterKey  = "raw_export"
	// TooManyLines is the exporter's rejection reason for a request over
	// the row limit, shown as errorMessage.
	TooManyLines = "Too many lines in one export"
	// TooMuchData is the exporter's rejection reason for a request over
	// the byte limit, shown as errorMessage.
	TooMuchData = "Too much export data"
	// DefaultMaxFields caps selectors when Limits.MaxFields is 0.
	DefaultMaxFields = 100
)

// Limits bound raw exports. MaxRows and MaxBytes reject an export (with
// TooManyLines, TooMuchData) once it goes over; 0 means no cap.
type Limits struct {
	MaxRowsPerChunk  uint64
	MaxBytesPerChunk uint64
	MaxRows          uint64
	MaxBytes         uint64
	// MaxFields caps selectors; 0 means DefaultMaxFields.
	MaxFields int
}

// Config holds the dialect's dependencies; all but Logger and Now are
// required.
type Config struct {
	// Directory answers which organization a caller's events belong to;
	// callers are authenticated before the dialect sees them
	// (principal.From).
	Directory *access.Directory
	Jobs      *jobstore.Store
	Counters  jetstream.KeyValue
	Submitter *submit.Submitter
	Links     *links.Signer
	Limits    Limits
	// Location is the time zone of dateFrom/dateTo.
	Location *time.Location
	Logger   *slog.Logger
	Now      func() time.Time
}

// API is the myTracker raw export API. It implements httpapi.Dialect.
type API struct{ Config }

// New returns the dialect.
func New(cfg Config) *API {
	if cfg.Location == nil {
		cfg.Location = time.UTC
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Limits.MaxFields <= 0 {
		cfg.Limits.MaxFields = DefaultMaxFields
	}
	return &API{cfg}
}

// Routes implements httpapi.Dialect.
func (d *API) Routes(r chi.Router) {
	r.Post("/api/raw/v1/export/create.json", d.create)
	r.Get("/api/raw/v1/export/get.json", d.get)
	r.Get("/api/raw/v1/export/cancel.json", d.cancel)
	r.Post("/api/raw/v1/export/cancel.json", d.cancel)
}

// answer is myTracker's envelope; every answer of the dialect is written
// by write.
type answer struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data"`
}

type errorData struct {
	Error struct {
		Detail string `json:"detail"`
	} `json:"error"`
}

func write(w http.ResponseWriter, code int, message string, data any) {
	respond.JSON(w, code, answer{Code: code, Message: message, Data: data})
}

// WriteError answers code with detail as a myTracker error. The handlers
// and the gateway's middleware (dialect.WriteError: body limits,
// idempotency conflicts, quotas, unknown routes) both answer with it.
func WriteError(w http.ResponseWriter, code int, detail string) {
	var d errorData
	d.Error.Detail = detail
	write(w, code, http.StatusText(code), d)
}

func writeDenied(w http.ResponseWriter) { write(w, http.StatusForbidden, "Access denied", nil) }

func writeNotFound(w http.ResponseWriter) {
	WriteError(w, http.StatusNotFound, "Raw export request not found")
}

func (d *API) user(w http.ResponseWriter, r *http.Request) *sourcev1.User {
	// The gateway's authentication middleware read only Authorization: a
	// REB-APIKEY header is the Rebilly dialect's.
	p, err := principal.From(r.Context())
	if err != nil {
		if !errors.Is(err, principal.ErrUnauthenticated) {
			d.Logger.ErrorContext(r.Context(), "authenticate", "error", err)
			WriteError(w, http.StatusInternalServerError, "Internal error")
			return nil
		}
		writeDenied(w)
		return nil
	}
	return p.User
}

// events maps myTracker's event dictionary onto the eventType of the
// events record stream.
var events = map[string]string{
	"installs":     "install",
	"launches":     "launch",
	"payments":     "payment",
	"customEvents": "custom",
}

// create implements POST create.json: event (installs, launches, payments,
// customEvents), selectors (columns of the events stream), dateFrom and
// dateTo (YYYY-MM-DD, inclusive, in the configured time zone) and the
// optional filters idApp and country.
func (d *API) create(w http.ResponseWriter, r *http.Request) {
	u := d.user(w, r)
	if u == nil {
		return
	}
	if err := r.ParseForm(); err != nil {
		WriteError(w, http.StatusBadRequest, "Malformed request")
		return
	}
	p, bad := parseCreate(r.Form, d.Location, d.Limits.MaxFields)
	if bad != "" {
		WriteError(w, http.StatusBadRequest, bad)
		return
	}
	ev, selectors, from, to := p.event, p.selectors, p.from, p.to
	ctx := context.WithoutCancel(r.Context())
	// Raw events belong to the caller's (default) organization; a caller
	// who belongs to none has nothing to export.
	membership, err := d.Directory.DefaultOrganization(ctx, u.GetId())
	if err != nil {
		d.Logger.ErrorContext(ctx, "default organization", "error", err)
		WriteError(w, http.StatusInternalServerError, "Internal error")
		return
	}
	org := membership.GetOrganizationId()
	if org == "" {
		writeDenied(w)
		return
	}
	now := d.Now()
	end := to.AddDate(0, 0, 1).Add(-time.Nanosecond)
	records := &exportv1.RecordsScope{
		Resource: recordquery.ResourceEvents,
		Fields:   selectors,
		Filter:   p.filter,
		DateRange: &exportv1.DateRange{
			Start: r.Form.Get("dateFrom"), End: r.Form.Get("dateTo"), Field: "createdTime",
			From: timestamppb.New(from), To: timestamppb.New(end),
		},
		MaxRowsPerChunk:  d.Limits.MaxRowsPerChunk,
		MaxBytesPerChunk: d.Limits.MaxBytesPerChunk,
		GzipChunks:       true,
		MaxRows:          d.Limits.MaxRows,
		MaxBytes:         d.Limits.MaxBytes,
	}
	sctx, cancel := context.WithTimeout(ctx, submit.Timeout)
	defer cancel()
	// No other dialect can create a raw-N job, but a number whose id is
	// taken all the same (a job written before ids were namespaced, a
	// counter restored from an old backup) is skipped, not answered with
	// an error.
	for range maxNumberAttempts {
		num, err := d.next(sctx)
		if err != nil {
			d.Logger.ErrorContext(ctx, "raw export number", "error", err)
			WriteError(w, http.StatusInternalServerError, "Internal error")
			return
		}
		job := &exportv1.Job{
			Id:      JobID(num),
			Number:  num,
			OwnerId: u.GetId(),
			// The organization's members may export its events; exporters
			// re-check the membership.
			OrganizationId: org,
			Scope:          access.ScopeFor(u, org),
			Kind:           exportv1.JobKind_JOB_KIND_RECORDS,
			Format:         exportv1.Format_FORMAT_CSV,
			State:          exportv1.JobState_JOB_STATE_PENDING,
			Dialect:        dialectName,
			Name:           fmt.Sprintf("%d.%s", num, strings.TrimSuffix(ev, "s")),
			CreatedAt:      timestamppb.New(now),
			UpdatedAt:      timestamppb.New(now),
			Records:        records,
		}
		// Chunk files are named like myTracker's: <id>.<event>.<hash>.<n>.csv.gz,
		// the hash standing for the request's selection.
		task := &exportv1.ExportTask{
			PartKind: exportv1.PartKind_PART_KIND_RECORDS, UserId: u.GetId(), Records: records,
			TargetFile: job.GetName() + "." + selectionHash(records),
		}
		err = d.Submitter.Submit(sctx, job, bus.TaskRecords, []*exportv1.ExportTask{task})
		if errors.Is(err, jobstore.ErrExists) {
			d.Logger.WarnContext(ctx, "raw export number taken; skipping it", "job_id", job.GetId())
			continue
		}
		if err != nil {
			if !errors.Is(err, submit.ErrNotAdmitted) {
				d.Logger.ErrorContext(ctx, "submit raw export", "job_id", job.GetId(), "error", err)
			}
			WriteError(w, http.StatusInternalServerError, "Internal error")
			return
		}
		write(w, http.StatusOK, "Ok", map[string]string{"idRawExport": strconv.FormatUint(num, 10)})
		return
	}
	d.Logger.ErrorContext(ctx, "no free raw export number", "attempts", maxNumberAttempts)
	WriteError(w, http.StatusInternalServerError, "Internal error")
}

// maxNumberAttempts bounds how many taken numbers one create skips.
const maxNumberAttempts = 16

// JobID is the job id of raw export number n.
func JobID(n uint64) string { return "raw-" + strconv.FormatUint(n, 10) }

// next increments the raw export counter with a revision check, so
// concurrent creates on any replica get distinct numbers.
func (d *API) next(ctx context.Context) (uint64, error) {
	for range 64 {
		e, err := d.Counters.Get(ctx, counterKey)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if _, err := d.Counters.Create(ctx, counterKey, []byte("1")); err == nil {
				return 1, nil
			} else if !errors.Is(err, jetstream.ErrKeyExists) {
				return 0, err
			}
			continue
		case err != nil:
			return 0, err
		}
		n, err := strconv.ParseUint(string(e.Value()), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("counter %s holds %q", counterKey, e.Value())
		}
		if _, err := d.Counters.Update(ctx, counterKey, []byte(strconv.FormatUint(n+1, 10)), e.Revision()); err == nil {
			return n + 1, nil
		} else if !errors.Is(err, jetstream.ErrKeyExists) {
			return 0, err
		}
	}
	return 0, errors.New("counter: too much contention")
}

// load resolves idRawExport to the caller's job, answering itself when it
// returns nil.
func (d *API) load(w http.ResponseWriter, r *http.Request) *exportv1.Job {
	u := d.user(w, r)
	if u == nil {
		return nil
	}
	n, err := strconv.ParseUint(r.URL.Query().Get("idRawExport"), 10, 64)
	if err != nil || n == 0 {
		if r.URL.Query().Get("idRawExport") == "" {
			WriteError(w, http.StatusBadRequest, "idRawExport: required")
			return nil
		}
		writeNotFound(w)
		return nil
	}
	job, err := d.Jobs.Get(r.Context(), JobID(n))
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		writeNotFound(w)
		return nil
	case err != nil:
		d.Logger.ErrorContext(r.Context(), "get raw export", "error", err)
		WriteError(w, http.StatusInternalServerError, "Internal error")
		return nil
	}
	if job.GetOwnerId() != u.GetId() || job.GetDialect() != dialectName {
		writeNotFound(w)
		return nil
	}
	return job
}

type fileView struct {
	Link             string `json:"link"`
	TimestampExpires string `json:"timestampExpires"`
}

// View renders a job as get.json's data.
func (d *API) View(job *exportv1.Job) map[string]any {
	out := map[string]any{"idRawExport": strconv.FormatUint(job.GetNumber(), 10)}
	switch job.GetState() {
	case exportv1.JobState_JOB_STATE_COMPLETED:
		out["status"] = "Success!"
		files := []fileView{}
		for _, f := range job.GetFiles() {
			href, exp := d.Links.URL(job.GetId(), f.GetName())
			files = append(files, fileView{Link: href, TimestampExpires: strconv.FormatInt(exp.Unix(), 10)})
		}
		out["files"] = files
	case exportv1.JobState_JOB_STATE_FAILED:
		out["status"] = "Error occurred"
	case exportv1.JobState_JOB_STATE_REJECTED:
		out["status"] = "User error occurred"
		out["errorMessage"] = job.GetError()
	case exportv1.JobState_JOB_STATE_CANCELED:
		out["status"] = "Canceled by user"
	default:
		out["status"] = "In progress"
		out["progress"] = strconv.FormatUint(uint64(job.GetProgress().GetPercent()), 10) + "%"
		out["isCancellable"] = job.GetState() != exportv1.JobState_JOB_STATE_FINALIZING
	}
	return out
}

// get implements GET get.json.
func (d *API) get(w http.ResponseWriter, r *http.Request) {
	if job := d.load(w, r); job != nil {
		write(w, http.StatusOK, "Ok", d.View(job))
	}
}

// cancel implements cancel.json.
func (d *API) cancel(w http.ResponseWriter, r *http.Request) {
	job := d.load(w, r)
	if job == nil {
		return
	}
	switch job.GetState() {
	case exportv1.JobState_JOB_STATE_COMPLETED:
		WriteError(w, http.StatusBadRequest, "This RawExport can not be cancel (it's completed)")
		return
	case exportv1.JobState_JOB_STATE_FINALIZING, exportv1.JobState_JOB_STATE_FAILED,
		exportv1.JobState_JOB_STATE_REJECTED, exportv1.JobState_JOB_STATE_CANCELED:
		WriteError(w, http.StatusBadRequest, "This RawExport can not be cancel")
		return
	}
	got, err := d.Submitter.Cancel(context.WithoutCancel(r.Context()), job.GetId(), "Canceled by user")
	if err != nil {
		d.Logger.ErrorContext(r.Context(), "cancel raw export", "job_id", job.GetId(), "error", err)
		WriteError(w, http.StatusInternalServerError, "Internal error")
		return
	}
	if got.GetState() != exportv1.JobState_JOB_STATE_CANCELED {
		// It finished between the read and the cancel.
		WriteError(w, http.StatusBadRequest, "This RawExport can not be cancel")
		return
	}
	write(w, http.StatusOK, "Ok", map[string]string{"idRawExport": strconv.FormatUint(job.GetNumber(), 10), "info": "Canceled"})
}

// selectionHash is 32 hex digits identifying what a raw export selects.
func selectionHash(r *exportv1.RecordsScope) string {
	sum := sha256.Sum256([]byte(strings.Join([]string{
		r.GetResource(), strings.Join(r.GetFields(), ","), r.GetFilter(),
		r.GetDateRange().GetFrom().AsTime().Format(time.RFC3339Nano), r.GetDateRange().GetTo().AsTime().Format(time.RFC3339Nano),
	}, "\x00")))
	return hex.EncodeToString(sum[:16])
}
