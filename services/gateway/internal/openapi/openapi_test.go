package openapi_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/services/gateway/internal/openapi"
)

// load parses and validates the document as the gateway serves it.
func load(t *testing.T, e *gatewaytest.Env) *openapi3.T {
	t.Helper()
	r := e.Do(t, http.MethodGet, "/openapi.json", gatewaytest.Anonymous, "")
	require.Equal(t, http.StatusOK, r.Status, "%s", r.Body)
	assert.Equal(t, "application/json", r.Header.Get("Content-Type"))
	served := r.Body
	want, err := openapi.JSON()
	require.NoError(t, err)
	assert.JSONEq(t, string(want), string(served), "/openapi.json is openapi.yaml")

	doc, err := openapi3.NewLoader().LoadFromData(served)
	require.NoError(t, err)
	require.True(t, doc.IsOpenAPI31OrLater())
	require.NoError(t, doc.Validate(t.Context()))
	return doc
}

func TestDocumentIsValid(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	doc := load(t, e)
	// Every route the router serves has its path in the document.
	for _, p := range []string{
		"/v1/exports", "/v1/exports/{id}", "/v1/exports/{id}/cancel", "/v1/exports/{id}/files/{name}",
		"/v1/exports/events", "/v1/exports/{id}/events", "/openapi.json",
		"/api/v1/rooms.export", "/api/v1/users.requestDataDownload",
		"/data-exports", "/data-exports/{id}", "/data-exports/{id}/download",
		"/experimental/data-exports", "/experimental/data-exports/{id}", "/experimental/data-exports/{id}/download",
		"/organizations/{organizationId}/data-exports", "/organizations/{organizationId}/data-exports/{id}",
		"/organizations/{organizationId}/data-exports/{id}/download",
		"/experimental/organizations/{organizationId}/data-exports", "/experimental/organizations/{organizationId}/data-exports/{id}",
		"/experimental/organizations/{organizationId}/data-exports/{id}/download",
		"/api/raw/v1/export/create.json", "/api/raw/v1/export/get.json", "/api/raw/v1/export/cancel.json",
	} {
		assert.NotNil(t, doc.Paths.Value(p), p)
	}
}

// checker sends requests to the running gateway and validates each
// request and its answer against the document.
type checker struct {
	e      *gatewaytest.Env
	router routers.Router
	// seen counts answers validated per operation and status.
	seen map[string]bool
}

func newChecker(t *testing.T, e *gatewaytest.Env) *checker {
	t.Helper()
	// kin-openapi decodes no event stream by itself; its body is text,
	// checked against the document's string schema. The registry is
	// kin-openapi's, set the same way by every checker.
	openapi3filter.RegisterBodyDecoder("text/event-stream", openapi3filter.FileBodyDecoder)
	doc := load(t, e)
	// The document names no servers: match on paths alone.
	doc.Servers = openapi3.Servers{{URL: e.URL}}
	router, err := gorillamux.NewRouter(doc)
	require.NoError(t, err)
	return &checker{e: e, router: router, seen: map[string]bool{}}
}

var options = &openapi3filter.Options{
	// The gateway authenticates; the document only names the schemes.
	AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
	MultiError:         true,
}

// do sends the request, requires the status and returns the body, after
// validating the answer and the request. A request the document refuses
// must be refused by the gateway too (a 4xx); one the gateway accepts must
// be one the document accepts.
func (c *checker) do(t *testing.T, method, path string, creds gatewaytest.Creds, contentType, body string, status int) []byte {
	t.Helper()
	ctx := context.Background()
	req, err := http.NewRequestWithContext(ctx, method, c.e.URL+path, strings.NewReader(body))
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", contentType)
	}
	route, params, err := c.router.FindRoute(req)
	require.NoError(t, err, "%s %s is in the document", method, path)
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: options}
	reqErr := openapi3filter.ValidateRequest(ctx, in)
	if status < 400 || status >= 500 {
		require.NoError(t, reqErr, "%s %s: request", method, path)
	}

	h := http.Header{}
	if body != "" {
		h.Set("Content-Type", contentType)
	}
	r := c.e.Send(t, method, c.e.URL+path, creds, h, body)
	require.Equal(t, status, r.Status, "%s %s: %s", method, path, r.Body)
	if reqErr != nil {
		t.Logf("%s %s: the document refuses the request too: %v", method, path, reqErr)
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: r.Status, Header: r.Header,
		Body: io.NopCloser(bytes.NewReader(r.Body)), Options: options,
	}
	assert.NoError(t, openapi3filter.ValidateResponse(ctx, out), "%s %s: answer %d %s", method, path, r.Status, r.Body)
	c.seen[method+" "+route.Path+" "+http.StatusText(status)] = true
	return r.Body
}

func (c *checker) json(t *testing.T, method, path string, creds gatewaytest.Creds, body string, status int) []byte {
	t.Helper()
	return c.do(t, method, path, creds, "application/json", body, status)
}

func field(t *testing.T, body []byte, name string) string {
	t.Helper()
	r := gatewaytest.Response{Body: body}
	v, _ := r.JSON(t)[name].(string)
	return v
}

func TestNativeAnswersMatchTheDocument(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	c := newChecker(t, e)
	c.json(t, http.MethodGet, "/openapi.json", gatewaytest.Anonymous, "", http.StatusOK)

	room := c.json(t, http.MethodPost, "/v1/exports", gatewaytest.AsAdmin,
		`{"kind": "room", "format": "html", "room": {"id": "GENERAL", "from": "2024-01-01"}, "notify": {"emails": ["ops@example.com"], "webhooks": ["https://hooks.example.com/x"]}}`,
		http.StatusCreated)
	c.json(t, http.MethodPost, "/v1/exports", gatewaytest.AsUser, `{"kind": "user-data", "userData": {"fullExport": true}}`, http.StatusCreated)
	c.json(t, http.MethodPost, "/v1/exports", gatewaytest.AsUser,
		`{"kind": "records", "format": "jsonl", "records": {"resource": "events", "fields": ["id"], "dateRange": {"start": "-7 days", "end": "now"}, "chunking": {"maxRows": 1000, "gzip": true}}}`,
		http.StatusCreated)
	sched := c.json(t, http.MethodPost, "/v1/exports", gatewaytest.AsUser,
		`{"kind": "records", "records": {"resource": "events"}, "recurring": {"instruction": "FREQ=DAILY;BYHOUR=6"}}`, http.StatusCreated)
	c.json(t, http.MethodGet, "/v1/exports/"+field(t, sched, "id"), gatewaytest.AsUser, "", http.StatusOK)
	c.json(t, http.MethodPost, "/v1/exports", gatewaytest.AsAdmin, `{"kind": "room", "room": {"id": "GENERAL", "to": "x"}, "notify": {"webhooks": ["http://127.0.0.1/"]}}`,
		http.StatusUnprocessableEntity)
	c.json(t, http.MethodPost, "/v1/exports", gatewaytest.AsAdmin2, `{"kind": "room", "room": {"id": "`+gatewaytest.RoomPrivate+`"}}`, http.StatusNotFound)
	c.json(t, http.MethodPost, "/v1/exports", gatewaytest.AsUser, `{"kind": "room", "room": {"id": "GENERAL"}}`, http.StatusForbidden)
	c.json(t, http.MethodPost, "/v1/exports", gatewaytest.Anonymous, `{"kind": "user-data"}`, http.StatusUnauthorized)

	c.json(t, http.MethodGet, "/v1/exports", gatewaytest.AsAdmin, "", http.StatusOK)
	page := c.json(t, http.MethodGet, "/v1/exports?limit=1", gatewaytest.AsAdmin, "", http.StatusOK)
	c.json(t, http.MethodGet, "/v1/exports?limit=1&after="+url.QueryEscape(field(t, page, "next")), gatewaytest.AsAdmin, "", http.StatusOK)
	c.json(t, http.MethodGet, "/v1/exports?limit=0", gatewaytest.AsAdmin, "", http.StatusBadRequest)
	c.json(t, http.MethodGet, "/v1/exports", gatewaytest.Anonymous, "", http.StatusUnauthorized)
	id := field(t, room, "id")
	c.json(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsAdmin, "", http.StatusOK)
	c.json(t, http.MethodGet, "/v1/exports/"+id, gatewaytest.AsUser, "", http.StatusNotFound)
	c.json(t, http.MethodPost, "/v1/exports/"+id+"/cancel", gatewaytest.AsAdmin, "", http.StatusOK)
	c.json(t, http.MethodPost, "/v1/exports/"+id+"/cancel", gatewaytest.AsAdmin, "", http.StatusConflict)
	// The canceled export's stream sends its last state and ends.
	events := string(c.do(t, http.MethodGet, "/v1/exports/"+id+"/events", gatewaytest.AsAdmin, "", "", http.StatusOK))
	assert.Contains(t, events, "event: job\ndata: {")
	c.json(t, http.MethodGet, "/v1/exports/"+id+"/events?lastEventId=999999999", gatewaytest.AsAdmin, "", http.StatusNoContent)
	c.json(t, http.MethodGet, "/v1/exports/"+id+"/events?lastEventId=x", gatewaytest.AsAdmin, "", http.StatusBadRequest)
	c.json(t, http.MethodGet, "/v1/exports/"+id+"/events", gatewaytest.AsUser, "", http.StatusNotFound)
	c.json(t, http.MethodGet, "/v1/exports/events", gatewaytest.Anonymous, "", http.StatusUnauthorized)
	c.json(t, http.MethodGet, "/v1/exports/"+id+"/files/general.html?exp=1&sig=x", gatewaytest.Anonymous, "", http.StatusForbidden)
	c.json(t, http.MethodGet, gatewaytest.SignedLink("", id, "general.html"), gatewaytest.Anonymous, "", http.StatusNotFound)
}

func TestRocketChatAnswersMatchTheDocument(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	c := newChecker(t, e)
	c.json(t, http.MethodPost, "/api/v1/rooms.export", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "2024-01-01"}`, http.StatusOK)
	c.json(t, http.MethodPost, "/api/v1/rooms.export", gatewaytest.AsAdmin,
		`{"rid": "GENERAL", "type": "email", "toUsers": ["root", "nobody"], "subject": "s", "messages": ["m1"]}`, http.StatusOK)
	c.json(t, http.MethodPost, "/api/v1/rooms.export", gatewaytest.AsAdmin, `{"rid": "GENERAL", "type": "file", "format": "pdf"}`, http.StatusBadRequest)
	c.json(t, http.MethodPost, "/api/v1/rooms.export", gatewaytest.Anonymous, `{"rid": "GENERAL", "type": "file"}`, http.StatusUnauthorized)
	c.json(t, http.MethodGet, "/api/v1/users.requestDataDownload?fullExport=true", gatewaytest.AsUser, "", http.StatusOK)
	c.json(t, http.MethodGet, "/api/v1/users.requestDataDownload?fullExport=true", gatewaytest.AsUser, "", http.StatusOK)
	c.json(t, http.MethodGet, "/api/v1/users.requestDataDownload", gatewaytest.Anonymous, "", http.StatusUnauthorized)
}

func TestRebillyAnswersMatchTheDocument(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	c := newChecker(t, e)
	key := gatewaytest.APIKey(gatewaytest.UserAPIKey)
	created := c.json(t, http.MethodPost, "/data-exports", key,
		`{"name": "n", "resource": "transactions", "format": "csv", "fields": ["id", "amount"], "arguments": {"filter": "currency:USD"},
		  "dateRange": {"start": "-7 days", "end": "now"}, "emailNotification": ["a@example.com"]}`, http.StatusCreated)
	id := field(t, created, "id")
	c.json(t, http.MethodPut, "/data-exports/"+id, key, `{"name": "n2", "resource": "transactions", "format": "json"}`, http.StatusOK)
	c.json(t, http.MethodGet, "/data-exports", key, "", http.StatusOK)
	c.json(t, http.MethodGet, "/experimental/data-exports/"+id, key, "", http.StatusOK)
	c.json(t, http.MethodGet, "/organizations/"+gatewaytest.Org+"/data-exports/"+id+"?expand=user", key, "", http.StatusOK)
	c.json(t, http.MethodGet, "/data-exports/"+id+"/download", key, "", http.StatusNotFound)
	c.json(t, http.MethodPut, "/experimental/organizations/"+gatewaytest.Org+"/data-exports/my-export", key,
		`{"name": "daily", "resource": "events", "format": "json", "recurring": {"instruction": "FREQ=DAILY"}}`, http.StatusCreated)
	c.json(t, http.MethodPost, "/data-exports", key, `{"name": "", "resource": "nope", "format": "doc"}`, http.StatusUnprocessableEntity)
	c.json(t, http.MethodGet, "/organizations/globex/data-exports", key, "", http.StatusNotFound)
	c.json(t, http.MethodGet, "/data-exports", gatewaytest.Anonymous, "", http.StatusUnauthorized)
	c.json(t, http.MethodDelete, "/data-exports/"+id, key, "", http.StatusNoContent)
}

func TestMyTrackerAnswersMatchTheDocument(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	c := newChecker(t, e)
	key := gatewaytest.Bearer(gatewaytest.UserAPIKey)
	form := url.Values{"event": {"payments"}, "selectors": {"id,appId,revenue,createdTime"}, "dateFrom": {"2026-05-01"}, "dateTo": {"2026-05-31"}}
	body := c.do(t, http.MethodPost, "/api/raw/v1/export/create.json", key, "application/x-www-form-urlencoded", form.Encode(), http.StatusOK)
	var n string
	{
		r := gatewaytest.Response{Body: body}
		n = r.JSON(t)["data"].(map[string]any)["idRawExport"].(string)
	}
	filtered := url.Values{"event": {"customEvents"}, "selectors": {"id,eventName"}, "dateFrom": {"2026-05-01"}, "dateTo": {"2026-05-31"},
		"idApp": {"1,454"}, "SDKKey[]": {"00004399666566289449"}, "idAccount": {"3"}, "idAd": {"87877"}, "idCampaign": {"66"},
		"idCountry": {"188"}, "idProject": {"234"}, "eventName[]": {"level_up", "tutorial"}, "eventNameInvert": {"1"}}
	c.do(t, http.MethodPost, "/api/raw/v1/export/create.json", key, "application/x-www-form-urlencoded", filtered.Encode(), http.StatusOK)
	c.do(t, http.MethodPost, "/api/raw/v1/export/create.json", key, "application/x-www-form-urlencoded", filtered.Encode()+"&isVerified=1", http.StatusBadRequest)
	c.json(t, http.MethodGet, "/api/raw/v1/export/get.json?idRawExport="+n, key, "", http.StatusOK)
	c.json(t, http.MethodGet, "/api/raw/v1/export/cancel.json?idRawExport="+n, key, "", http.StatusOK)
	c.json(t, http.MethodGet, "/api/raw/v1/export/get.json?idRawExport="+n, key, "", http.StatusOK)
	c.json(t, http.MethodPost, "/api/raw/v1/export/cancel.json?idRawExport="+n, key, "", http.StatusBadRequest)
	c.do(t, http.MethodPost, "/api/raw/v1/export/create.json", key, "application/x-www-form-urlencoded", "event=nope", http.StatusBadRequest)
	c.json(t, http.MethodGet, "/api/raw/v1/export/get.json?idRawExport=999", key, "", http.StatusNotFound)
	c.json(t, http.MethodGet, "/api/raw/v1/export/get.json?idRawExport=1", gatewaytest.Anonymous, "", http.StatusForbidden)
}
