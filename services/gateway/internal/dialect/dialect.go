// Package dialect tells which public API a request belongs to from its
// path, answers errors in that API's shape, and recognises the requests
// that create jobs. Cross-cutting middleware (idempotency keys, quotas)
// uses it so a Rocket.Chat client gets a Rocket.Chat error, a Rebilly SDK a
// Rebilly error and so on, without each dialect wiring the middleware.
package dialect

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Dialect is one of the public APIs the gateway serves.
type Dialect int

// Dialects.
const (
	// Native is the gateway's own API (/v1/...).
	Native Dialect = iota
	// RocketChat is /api/v1/... .
	RocketChat
	// Rebilly is /experimental/..., /data-exports... and
	// /organizations/... .
	Rebilly
	// MyTracker is /api/raw/... .
	MyTracker
)

// Of returns the dialect serving path.
func Of(path string) Dialect {
	switch {
	case strings.HasPrefix(path, "/api/v1/"):
		return RocketChat
	case strings.HasPrefix(path, "/api/raw/"):
		return MyTracker
	case strings.HasPrefix(path, "/experimental/"), strings.HasPrefix(path, "/data-exports"),
		strings.HasPrefix(path, "/organizations/"):
		return Rebilly
	}
	return Native
}

// WriteError answers status with message in the shape of the dialect that
// serves r's path, matching what each dialect's own handlers send.
func WriteError(w http.ResponseWriter, r *http.Request, status int, message string) {
	contentType := "application/json"
	var body any
	switch Of(r.URL.Path) {
	case RocketChat:
		// Meteor.Error as Rocket.Chat renders it: "reason [type]".
		typ := rcErrorType(status)
		body = struct {
			Success   bool   `json:"success"`
			Error     string `json:"error"`
			ErrorType string `json:"errorType"`
		}{false, message + " [" + typ + "]", typ}
	case Rebilly:
		// An RFC 7807 problem with Rebilly's legacy error/details pair.
		contentType = "application/problem+json"
		title := http.StatusText(status)
		body = struct {
			Status  int      `json:"status"`
			Type    string   `json:"type"`
			Title   string   `json:"title"`
			Detail  string   `json:"detail"`
			Error   string   `json:"error"`
			Details []string `json:"details"`
		}{status, rebillyProblemBase + strings.ReplaceAll(strings.ToLower(title), " ", "-"), title, message, title, []string{message}}
	case MyTracker:
		type detail struct {
			Detail string `json:"detail"`
		}
		type data struct {
			Error detail `json:"error"`
		}
		body = struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
			Data    data   `json:"data"`
		}{status, http.StatusText(status), data{detail{message}}}
	default:
		body = struct {
			Error string `json:"error"`
		}{message}
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

const rebillyProblemBase = "https://www.rebilly.com/catalog/all/section/errors/"

func rcErrorType(status int) string {
	switch status {
	case http.StatusTooManyRequests:
		return "error-too-many-requests"
	case http.StatusUnprocessableEntity:
		return "error-idempotency-key-reused"
	case http.StatusConflict:
		return "error-request-in-progress"
	case http.StatusBadRequest:
		return "error-invalid-params"
	case http.StatusRequestEntityTooLarge:
		return "error-request-too-large"
	case http.StatusRequestTimeout:
		return "error-request-timeout"
	case http.StatusNotFound:
		return "error-not-found"
	case http.StatusMethodNotAllowed:
		return "error-method-not-allowed"
	}
	return "error-unavailable"
}

// IsCreate reports whether r asks for a new export job in any dialect:
// Rocket.Chat rooms.export and users.requestDataDownload, Rebilly
// POST data-exports and PUT data-exports/{id}, myTracker create.json and a
// native POST /v1/exports. Cancels, updates of other resources and reads
// are not creates.
func IsCreate(r *http.Request) bool {
	p := strings.TrimSuffix(r.URL.Path, "/")
	switch Of(p) {
	case RocketChat:
		return (r.Method == http.MethodPost && p == "/api/v1/rooms.export") ||
			((r.Method == http.MethodGet || r.Method == http.MethodPost) && p == "/api/v1/users.requestDataDownload")
	case MyTracker:
		return (r.Method == http.MethodPost || r.Method == http.MethodGet) && strings.HasSuffix(p, "/export/create.json")
	case Rebilly:
		i := strings.LastIndex(p, "/data-exports")
		if i < 0 {
			return false
		}
		rest := p[i+len("/data-exports"):]
		switch r.Method {
		case http.MethodPost:
			return rest == ""
		case http.MethodPut:
			return strings.Count(rest, "/") == 1 && len(rest) > 1
		}
		return false
	}
	return r.Method == http.MethodPost && p == "/v1/exports"
}
