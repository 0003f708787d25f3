// Package respond writes the gateway's JSON answers, so that every
// dialect's bodies are encoded the same way: one JSON value and a newline,
// after the status line.
package respond

import (
	"encoding/json"
	"io"
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

// Array writes items as one JSON array to w, each element encoded as it
// is written (with each(item) as its value), so that a page of a hundred
// jobs is never one buffer of a hundred jobs' JSON: the encoder builds a
// whole value in memory before it writes, and a burst of lists held a
// body each. The bytes are those json.Marshal gives the array of each's
// values. A failed write means the client went away; Array stops then.
func Array[T any](w io.Writer, items []T, each func(T) any) error {
	if _, err := io.WriteString(w, "["); err != nil {
		return err
	}
	for i, it := range items {
		b, err := json.Marshal(each(it))
		if err != nil {
			return err
		}
		if i > 0 {
			b = append([]byte{','}, b...)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "]")
	return err
}

// StatusClientClosedRequest is the status an answer to a request whose
// client went away gets (nginx's 499): nobody reads it, and it is not a
// failure of the service, so metrics and logs must not count it as a 500.
const StatusClientClosedRequest = 499

// Abandoned reports whether r's client went away (or its deadline
// passed) before the answer: the error then says only that.
func Abandoned(r *http.Request) bool { return r.Context().Err() != nil }
