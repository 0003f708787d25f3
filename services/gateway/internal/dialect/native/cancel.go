package native

import (
	"context"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/respond"
)

// cancelExport implements POST /v1/exports/{id}/cancel: the job ends as
// canceled and its exporter stops and deletes partial objects. A job that
// has ended or is finalizing (its files are being checked and published)
// answers 409 with its current view.
func (a *API) cancelExport(w http.ResponseWriter, r *http.Request) {
	u := a.user(w, r)
	if u == nil {
		return
	}
	ctx := r.Context()
	job, err := a.Jobs.Get(ctx, chi.URLParam(r, "id"))
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		WriteError(w, http.StatusNotFound, msgNotFound)
		return
	case err != nil:
		a.log.ErrorContext(ctx, "get job", "error", err)
		WriteError(w, http.StatusInternalServerError, "internal error")
		return
	}
	if job.GetOwnerId() != u.GetId() {
		WriteError(w, http.StatusNotFound, msgNotFound)
		return
	}
	if jobstore.Terminal(job.GetState()) || job.GetState() == exportv1.JobState_JOB_STATE_FINALIZING {
		WriteError(w, http.StatusConflict, "export is "+stateWord(job.GetState())+" and can no longer be canceled")
		return
	}
	job, err = a.Submitter.Cancel(context.WithoutCancel(ctx), job.GetId(), "canceled by the user")
	if err != nil {
		a.log.ErrorContext(ctx, "cancel job", "job_id", chi.URLParam(r, "id"), "error", err)
		WriteError(w, http.StatusInternalServerError, "internal error")
		return
	}
	if job.GetState() != exportv1.JobState_JOB_STATE_CANCELED {
		WriteError(w, http.StatusConflict, "export is "+stateWord(job.GetState())+" and can no longer be canceled")
		return
	}
	respond.JSON(w, http.StatusOK, a.view(job))
}
