package httpapi

import (
	"encoding/json"
	"net/http"
)

// nativeError is the error body of the native API.
type nativeError struct {
	Error string `json:"error"`
}

// rcError is Rocket.Chat's REST error body: error is "[type]", or
// "reason [type]" when there is a reason, as Meteor.Error renders it.
type rcError struct {
	Success   bool   `json:"success"`
	Error     string `json:"error"`
	ErrorType string `json:"errorType,omitempty"`
}

// rcAuthError is the body Rocket.Chat answers 401 with.
type rcAuthError struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

// Rocket.Chat error types.
const (
	errInvalidParams = "error-invalid-params"
	errInvalidRoom   = "error-invalid-room"
	errInvalidFormat = "error-invalid-format"
	errInvalidDates  = "error-invalid-dates"
	errNotAllowed    = "error-not-allowed"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeRCError answers 400 with a Rocket.Chat API error, which is what
// Rocket.Chat uses for every validation and permission failure.
func writeRCError(w http.ResponseWriter, errorType, reason string) {
	msg := "[" + errorType + "]"
	if reason != "" {
		msg = reason + " " + msg
	}
	writeJSON(w, http.StatusBadRequest, rcError{Success: false, Error: msg, ErrorType: errorType})
}

func writeRCUnauthorized(w http.ResponseWriter) {
	writeJSON(w, http.StatusUnauthorized, rcAuthError{Status: "error", Message: "You must be logged in to do this."})
}

func writeRCInternal(w http.ResponseWriter) {
	writeJSON(w, http.StatusInternalServerError, rcError{Success: false, Error: "Internal error occurred"})
}
