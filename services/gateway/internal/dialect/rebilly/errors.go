package rebilly

import (
	"net/http"
	"strings"

	"dataport.dev/services/gateway/internal/plan"
	"dataport.dev/services/gateway/internal/respond"
)

// problem is Rebilly's error body, written only in this file: an RFC 7807 problem with the legacy
// "error"/"details" pair and, for validation errors, invalidFields naming
// each offending parameter or body field.
type problem struct {
	Status        int            `json:"status"`
	Type          string         `json:"type"`
	Title         string         `json:"title"`
	Detail        string         `json:"detail"`
	Error         string         `json:"error"`
	Details       []string       `json:"details"`
	InvalidFields []invalidField `json:"invalidFields,omitempty"`
}

// invalidField is one entry of invalidFields; the validation shared with
// the other dialects (package plan) reports them.
type invalidField = plan.Invalid

const problemBase = "https://www.rebilly.com/catalog/all/section/errors/"

const problemType = "application/problem+json"

// WriteError answers status with message as a problem titled by the
// status. It is the dialect's answer to what the gateway's middleware
// refuses (dialect.WriteError): body limits, idempotency conflicts,
// quotas, unknown routes.
func WriteError(w http.ResponseWriter, status int, message string) {
	title := http.StatusText(status)
	writeProblem(w, status, strings.ReplaceAll(strings.ToLower(title), " ", "-"), title, message)
}

func writeProblem(w http.ResponseWriter, status int, slug, title, detail string) {
	respond.JSONAs(w, problemType, status, problem{
		Status: status, Type: problemBase + slug, Title: title, Detail: detail,
		Error: title, Details: []string{detail},
	})
}

func writeInvalid(w http.ResponseWriter, fields []invalidField) {
	p := problem{
		Status: http.StatusUnprocessableEntity, Type: problemBase + "validation-error", Title: "Invalid data",
		Error: "Invalid data", InvalidFields: fields,
	}
	for _, f := range fields {
		p.Details = append(p.Details, f.Field+": "+f.Message)
	}
	if len(p.Details) > 0 {
		p.Detail = p.Details[0]
	}
	respond.JSONAs(w, problemType, http.StatusUnprocessableEntity, p)
}

func writeUnauthorized(w http.ResponseWriter) {
	writeProblem(w, http.StatusUnauthorized, "unauthorized", "Unauthorized",
		"Missing or invalid credentials: send REB-APIKEY or Authorization: Bearer <JWT>.")
}

func writeNotFound(w http.ResponseWriter) {
	writeProblem(w, http.StatusNotFound, "not-found", "Not Found", "Data export not found.")
}

func writeConflict(w http.ResponseWriter, detail string) {
	writeProblem(w, http.StatusConflict, "conflict", "Conflict", detail)
}

func writeInternal(w http.ResponseWriter) {
	writeProblem(w, http.StatusInternalServerError, "internal-server-error", "Internal Server Error",
		"The export service could not complete the request; try again.")
}
