package rocketchat

import (
	"net/http"

	"dataport.dev/services/gateway/internal/respond"
)

// Rocket.Chat error types.
const (
	errInvalidParams    = "error-invalid-params"
	errInvalidRoom      = "error-invalid-room"
	errInvalidFormat    = "error-invalid-format"
	errInvalidDates     = "error-invalid-dates"
	errNotAllowed       = "error-not-allowed"
	errInvalidRecipient = "error-invalid-recipient"
	errInvalidEmail     = "error-invalid-email"
)

// apiError is Rocket.Chat's REST error body: error is "[type]", or
// "reason [type]" when there is a reason, as Meteor.Error renders it.
// Every error answer of the dialect is written in this file.
type apiError struct {
	Success   bool   `json:"success"`
	Error     string `json:"error"`
	ErrorType string `json:"errorType,omitempty"`
}

// authError is the body Rocket.Chat answers 401 with, plus success, which
// its published UnauthorizedErrorResponse (@rocket.chat/rest-typings)
// requires.
type authError struct {
	Success bool   `json:"success"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

// WriteError answers status with message as a Meteor.Error typed by the
// status ("message [error-too-many-requests]"). It is the dialect's answer
// to what the gateway's middleware refuses (dialect.WriteError): body
// limits, idempotency conflicts, quotas, unknown routes.
func WriteError(w http.ResponseWriter, status int, message string) {
	writeMeteorError(w, status, errorTypeOf(status), message)
}

// writeError answers 400 with a Rocket.Chat API error, which is what
// Rocket.Chat uses for every validation and permission failure.
func writeError(w http.ResponseWriter, errorType, reason string) {
	writeMeteorError(w, http.StatusBadRequest, errorType, reason)
}

// writeMeteorError renders a Meteor.Error as Rocket.Chat does: "[type]",
// or "reason [type]" when there is a reason.
func writeMeteorError(w http.ResponseWriter, status int, errorType, reason string) {
	msg := "[" + errorType + "]"
	if reason != "" {
		msg = reason + " " + msg
	}
	respond.JSON(w, status, apiError{Success: false, Error: msg, ErrorType: errorType})
}

func writeUnauthorized(w http.ResponseWriter) {
	respond.JSON(w, http.StatusUnauthorized, authError{Success: false, Status: "error", Message: "You must be logged in to do this."})
}

func writeInternal(w http.ResponseWriter) {
	respond.JSON(w, http.StatusInternalServerError, apiError{Success: false, Error: "Internal error occurred"})
}

// errorTypeOf is the Meteor.Error type of a status the middleware answers.
func errorTypeOf(status int) string {
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
