package httpapi

import (
	"encoding/json"
	"net/http"
)

// nativeError is the error body of the native API.
type nativeError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
