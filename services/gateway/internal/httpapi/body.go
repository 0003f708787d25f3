package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"dataport.dev/services/gateway/internal/dialect"
)

// Defaults of Config.MaxBodyBytes and Config.BodyReadTimeout. The largest
// body a dialect accepts is a Rebilly data-export of at most 1 MiB.
const (
	DefaultMaxBodyBytes    = 1 << 20
	DefaultBodyReadTimeout = 10 * time.Second
)

// readBodies reads every request body whole, at most max bytes within
// timeout, before any middleware or handler does work for the request
// (authentication lookups, idempotency claims, quota counting, job
// creation). A client that trickles its body then ties up one goroutine
// for at most timeout and never a KV claim or a quota slot, and no handler
// has to guard its own reads. Handlers and later middleware read the
// buffered copy. The answers are in the shape of the route's dialect: 413
// for a body over max, 408 for one that did not arrive in time.
func readBodies(max int64, timeout time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Body == nil || r.Body == http.NoBody {
				next.ServeHTTP(w, r)
				return
			}
			tooLarge := fmt.Sprintf("the request body must be at most %d bytes", max)
			if r.ContentLength > max {
				refuse(w, r, http.StatusRequestEntityTooLarge, tooLarge)
				return
			}
			rc := http.NewResponseController(w)
			// Not every ResponseWriter supports deadlines (a test
			// recorder does not); the server's ReadTimeout still bounds
			// the read then.
			if err := rc.SetReadDeadline(time.Now().Add(timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
				refuse(w, r, http.StatusBadRequest, "the request body could not be read")
				return
			}
			data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				refuse(w, r, http.StatusRequestEntityTooLarge, tooLarge)
				return
			case errors.Is(err, os.ErrDeadlineExceeded):
				refuse(w, r, http.StatusRequestTimeout, fmt.Sprintf("the request body did not arrive within %s", timeout))
				return
			case err != nil:
				refuse(w, r, http.StatusBadRequest, "the request body could not be read")
				return
			}
			// Once the body is read to its end the server clears the read
			// deadline itself (to watch for the client going away), so a
			// long handler is not cut short by it.
			r.Body = io.NopCloser(bytes.NewReader(data))
			r.ContentLength = int64(len(data))
			next.ServeHTTP(w, r)
		})
	}
}

// refuse answers a request whose body was not read whole. The connection
// cannot carry another request, since the rest of the body is still on it.
func refuse(w http.ResponseWriter, r *http.Request, status int, message string) {
	w.Header().Set("Connection", "close")
	dialect.WriteError(w, r, status, message)
}
