package native

import (
	"context"
	"net/http"

	"github.com/go-chi/chi/v5"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/respond"
)

// cancelExport implements POST /v1/exports/{id}/cancel: the job ends as
// canceled and its exporter stops and deletes partial objects. A job that
// has ended or is finalizing (its files are being checked and published)
// answers 409 naming its state.
func (a *API) cancelExport(w http.ResponseWriter, r *http.Request) {
	job := a.ownJob(w, r)
	if job == nil {
		return
	}
	if tooLate(job.GetState()) {
		tooLateToCancel(w, job)
		return
	}
	job, err := a.Submitter.Cancel(context.WithoutCancel(r.Context()), job.GetId(), "canceled by the user")
	if err != nil {
		a.internalError(w, r, "cancel job", err, "job_id", chi.URLParam(r, "id"))
		return
	}
	// The job may have ended between the read and the cancel; then the
	// cancel changed nothing.
	if job.GetState() != exportv1.JobState_JOB_STATE_CANCELED {
		tooLateToCancel(w, job)
		return
	}
	respond.JSON(w, http.StatusOK, a.view(job))
}

func tooLate(s exportv1.JobState) bool {
	return jobstore.Terminal(s) || s == exportv1.JobState_JOB_STATE_FINALIZING
}

func tooLateToCancel(w http.ResponseWriter, job *exportv1.Job) {
	WriteError(w, http.StatusConflict, "export is "+word(job.GetState())+" and can no longer be canceled")
}
