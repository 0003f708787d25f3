// Package plan turns what a caller asked for into the job and the tasks to
// submit (package submit). Every dialect that creates jobs plans them here,
// so a room export asked for through Rocket.Chat's rooms.export and one
// asked for through the native POST /v1/exports are the same job with the
// same tasks, checked by the same rules; only the words of the request and
// of the answer are the dialect's.
//
// What can be wrong with a request comes back as []Invalid, one entry per
// offending field, named as the caller chose (each function takes the
// field names of its dialect's body), for the dialect to answer in its own
// error shape.
package plan

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/services/gateway/internal/submit"
	"dataport.dev/shared/access"
)

// Invalid is one field of a request that cannot be accepted as sent.
type Invalid struct {
	// Field names the field as the dialect's body spells it
	// ("dateRange.start", "emailNotification[2]").
	Field string `json:"field"`
	// Message says what is wrong, in words a person can act on.
	Message string `json:"message"`
}

// NewJob returns a pending job of owner's with a fresh id, created at now
// by dialect, carrying the request's trace (and tagging the request's span
// with the job id). Its scope is the owner's outside any organization;
// record exports set the organization's.
func NewJob(ctx context.Context, owner *sourcev1.User, kind exportv1.JobKind, format exportv1.Format, dialect string, now time.Time) (*exportv1.Job, error) {
	id, err := submit.NewJobID()
	if err != nil {
		return nil, err
	}
	ts := timestamppb.New(now)
	job := &exportv1.Job{
		Id:        id,
		OwnerId:   owner.GetId(),
		Kind:      kind,
		Format:    format,
		State:     exportv1.JobState_JOB_STATE_PENDING,
		Progress:  &exportv1.Progress{},
		CreatedAt: ts,
		UpdatedAt: ts,
		Dialect:   dialect,
		Scope:     access.ScopeFor(owner, ""),
	}
	// The trace id is stamped where every job is created
	// (jobstore.Store.Create), not here for some dialects only.
	trace.SpanFromContext(ctx).SetAttributes(attribute.String("dataport.job_id", id))
	return job, nil
}
