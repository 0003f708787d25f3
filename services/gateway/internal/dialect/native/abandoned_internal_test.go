package native

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"

	"dataport.dev/shared/logtest"
)

// A request whose client went away while its job was read is not the
// service's failure: no ERROR record, no 500 for the metrics to count.
// The same failure under a live request is one.
func TestInternalErrorOfAnAbandonedRequestIsNoFailure(t *testing.T) {
	var logs logtest.Buffer
	a := &API{log: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	gone := httptest.NewRequestWithContext(ctx, http.MethodGet, "/v1/exports/abc", nil)
	w := httptest.NewRecorder()
	a.internalError(w, gone, "get job", context.Canceled, "job_id", "abc")
	assert.Equal(t, 499, w.Code)
	assert.Empty(t, w.Body.String())
	assert.Empty(t, logs.String(), "nothing at INFO or above")

	live := httptest.NewRequest(http.MethodGet, "/v1/exports/abc", nil)
	w = httptest.NewRecorder()
	a.internalError(w, live, "get job", errors.New("nats: timeout"), "job_id", "abc")
	assert.Equal(t, http.StatusInternalServerError, w.Code)
	assert.NotContains(t, w.Body.String(), "nats", "the cause stays in the log")
	assert.Len(t, logs.Records(t, "get job", ""), 1)
}
