package native

import (
	"net/http"

	"dataport.dev/services/gateway/internal/plan"
	"dataport.dev/services/gateway/internal/respond"
)

// ProblemType is the media type of every native error (RFC 9457).
const ProblemType = "application/problem+json"

// Problem types. A refusal that only its status explains is "about:blank",
// titled by the status (RFC 9457, section 4.2.1); a request with fields
// that cannot be accepted has a type of its own and lists them in errors.
const (
	typeBlank   = "about:blank"
	typeInvalid = "https://dataport.dev/problems/invalid-request"
)

// problem is the error body of the native API: RFC 9457 problem details,
// plus errors naming each offending field of a create request.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	// Errors lists the fields that cannot be accepted, named as the
	// request body spells them ("records.dateRange.start",
	// "notify.webhooks[0]").
	Errors []plan.Invalid `json:"errors,omitempty"`
}

// WriteError answers status with message as a problem titled by the
// status. The handlers and the gateway's middleware on native routes
// (dialect.WriteError) both answer with it.
func WriteError(w http.ResponseWriter, status int, message string) {
	respond.JSONAs(w, ProblemType, status, problem{Type: typeBlank, Title: http.StatusText(status), Status: status, Detail: message})
}

// writeInvalid answers a request whose fields cannot be accepted: 422 for
// a well-formed body asking for something invalid, 400 for one that is not
// the JSON object the API takes, and 413 for one over the size limit.
func writeInvalid(w http.ResponseWriter, status int, fields []plan.Invalid) {
	p := problem{Type: typeInvalid, Title: "Invalid request", Status: status, Errors: fields}
	if len(fields) > 0 {
		p.Detail = fields[0].Field + ": " + fields[0].Message
		if len(fields) > 1 {
			p.Detail += " (and more, see errors)"
		}
	}
	respond.JSONAs(w, ProblemType, status, p)
}

// writeNotFound answers 404 for a room or organization the request names
// that does not exist for the caller, naming the field that named it.
func writeNotFound(w http.ResponseWriter, field, message string) {
	respond.JSONAs(w, ProblemType, http.StatusNotFound, problem{
		Type: typeBlank, Title: http.StatusText(http.StatusNotFound), Status: http.StatusNotFound,
		Detail: field + ": " + message, Errors: []plan.Invalid{{Field: field, Message: message}},
	})
}
