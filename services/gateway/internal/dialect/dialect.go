// Package dialect is the parent of the public APIs the gateway serves over
// one job model (the subpackages native, rocketchat, rebilly and
// mytracker) and what they share: it tells which API a request belongs to
// from its path, authenticates the request once by that API's credential
// (Authenticate), answers errors in that API's shape (through the API's
// own envelope) and recognises the requests that create jobs.
// Cross-cutting middleware (idempotency keys, quotas) uses it so a
// Rocket.Chat client gets a Rocket.Chat error, a Rebilly SDK a Rebilly
// error and so on, without each dialect wiring the middleware.
package dialect

import (
	"net/http"
	"strings"

	"dataport.dev/services/gateway/internal/dialect/mytracker"
	"dataport.dev/services/gateway/internal/dialect/native"
	"dataport.dev/services/gateway/internal/dialect/rebilly"
	"dataport.dev/services/gateway/internal/dialect/rocketchat"
)

// Kind names one of the public APIs the gateway serves.
type Kind int

// Kinds.
const (
	// Native is the gateway's own API (/v1/...).
	Native Kind = iota
	// RocketChat is /api/v1/... .
	RocketChat
	// Rebilly is /experimental/..., /data-exports... and
	// /organizations/... .
	Rebilly
	// MyTracker is /api/raw/... .
	MyTracker
)

// Of returns the dialect serving path.
func Of(path string) Kind {
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
// serves r's path, written by that dialect's own envelope so middleware
// (idempotency, quotas, body limits) and unknown routes answer exactly as
// the dialect's handlers do.
func WriteError(w http.ResponseWriter, r *http.Request, status int, message string) {
	switch Of(r.URL.Path) {
	case RocketChat:
		rocketchat.WriteError(w, status, message)
	case Rebilly:
		rebilly.WriteError(w, status, message)
	case MyTracker:
		mytracker.WriteError(w, status, message)
	default:
		native.WriteError(w, status, message)
	}
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
