package httpapi_test

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/services/gateway/internal/quota"
)

// TestCreateAuthenticatesOnce sends a create of every dialect with an
// Idempotency-Key through the whole router (authentication, idempotency,
// quotas, the handler) and counts the credential checks: one per request,
// and none for the replay's handler, which never runs.
func TestCreateAuthenticatesOnce(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{Limits: &quota.Options{MaxConcurrent: 100, RatePerMinute: 100}})
	tokens, keys := e.TokenChecks, e.KeyChecks

	cases := []struct {
		name, path, contentType, body string
		creds                         gatewaytest.Creds
		status                        int
		checks                        func() int
	}{
		{"rocket.chat rooms.export", "/api/v1/rooms.export", "application/json",
			`{"rid": "iu7jtPAhvEeAS5tNq", "type": "file", "dateFrom": "2020-01-01", "dateTo": "2020-01-31", "format": "json"}`,
			gatewaytest.AsAdmin, http.StatusOK, tokens},
		{"rebilly data-exports", "/data-exports", "application/json", `{"name":"n","resource":"events","format":"csv"}`,
			gatewaytest.APIKey(gatewaytest.UserAPIKey), http.StatusCreated, keys},
		{"mytracker create.json", "/api/raw/v1/export/create.json", "application/x-www-form-urlencoded",
			"event=payments&selectors=id,revenue&dateFrom=2020-01-01&dateTo=2020-01-31",
			gatewaytest.Bearer(gatewaytest.UserAPIKey), http.StatusOK, keys},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			send := func() gatewaytest.Response {
				h := http.Header{}
				h.Set("Content-Type", c.contentType)
				h.Set("Idempotency-Key", "once-"+c.name)
				return e.Send(t, http.MethodPost, e.URL+c.path, c.creds, h, c.body)
			}
			before := c.checks()
			first := send()
			require.Equal(t, c.status, first.Status, "%s", first.Body)
			assert.EqualValues(t, 1, c.checks()-before, "one credential check for idempotency, quota and handler")

			replay := send()
			assert.Equal(t, c.status, replay.Status)
			assert.Equal(t, first.Body, replay.Body, "the replay is the stored answer")
			assert.EqualValues(t, 2, c.checks()-before, "a replay is authenticated once too")
		})
	}
}
