package native

import (
	"net/http"

	"dataport.dev/services/gateway/internal/respond"
)

// nativeError is the error body of the native API.
type nativeError struct {
	Error string `json:"error"`
}

// WriteError answers status with the native error body. The handlers and
// the gateway's middleware on native routes (dialect.WriteError) both
// answer with it.
func WriteError(w http.ResponseWriter, status int, message string) {
	respond.JSON(w, status, nativeError{Error: message})
}
