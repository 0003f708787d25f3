package rebilly

import (
	"encoding/json"
	"net/http"
)

// problem is Rebilly's error body: an RFC 7807 problem with the legacy
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

type invalidField struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

const problemBase = "https://www.rebilly.com/catalog/all/section/errors/"

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeProblem(w http.ResponseWriter, status int, slug, title, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(problem{
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
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(http.StatusUnprocessableEntity)
	_ = json.NewEncoder(w).Encode(p)
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
