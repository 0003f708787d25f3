// Package respond writes the gateway's JSON answers, so that every
// dialect's bodies are encoded the same way: one JSON value and a newline,
// after the status line.
package respond

import (
	"encoding/json"
	"net/http"
)

// JSON answers status with v as application/json.
func JSON(w http.ResponseWriter, status int, v any) {
	JSONAs(w, "application/json", status, v)
}

// JSONAs answers status with v encoded as JSON under contentType, such as
// application/problem+json.
func JSONAs(w http.ResponseWriter, contentType string, status int, v any) {
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	// The status is sent; a failed write means the client went away.
	_ = json.NewEncoder(w).Encode(v)
}
