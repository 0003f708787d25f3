package gatewaytest

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"dataport.dev/shared/links"
)

// Response is an answer as the client received it.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// JSON decodes the body as a JSON object.
func (r Response) JSON(tb testing.TB) map[string]any {
	tb.Helper()
	var m map[string]any
	require.NoError(tb, json.Unmarshal(r.Body, &m), "body %q", r.Body)
	return m
}

// List decodes the body as a JSON array of objects.
func (r Response) List(tb testing.TB) []map[string]any {
	tb.Helper()
	var m []map[string]any
	require.NoError(tb, json.Unmarshal(r.Body, &m), "body %q", r.Body)
	return m
}

// Do sends a request to path through the real HTTP server as c. A
// non-empty body is sent as JSON.
func (e *Env) Do(tb testing.TB, method, path string, c Creds, body string) Response {
	tb.Helper()
	return e.DoURL(tb, method, e.URL+path, c, body)
}

// DoURL is Do with a whole URL, such as a signed link from a job's view.
func (e *Env) DoURL(tb testing.TB, method, url string, c Creds, body string) Response {
	tb.Helper()
	h := http.Header{}
	if body != "" {
		h.Set("Content-Type", "application/json")
	}
	return e.Send(tb, method, url, c, h, body)
}

// Send is DoURL with the request's other headers (Content-Type among
// them) given. Redirects are not followed: the answer is what the gateway
// sent.
func (e *Env) Send(tb testing.TB, method, url string, c Creds, header http.Header, body string) Response {
	tb.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(tb.Context(), method, url, rd)
	require.NoError(tb, err)
	for k, vs := range header {
		req.Header[k] = vs
	}
	set := func(name, v string) {
		if v != "" {
			req.Header.Set(name, v)
		}
	}
	set("X-User-Id", c.User)
	set("X-Auth-Token", c.Token)
	set("REB-APIKEY", c.APIKey)
	if c.Bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.Bearer)
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	require.NoError(tb, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(tb, err)
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// SignedLink is a valid download link to a job's file below base,
// expiring in an hour, whether or not the job or file exists.
func SignedLink(base, id, name string) string {
	exp := time.Now().Add(time.Hour).Unix()
	return base + links.Path(id, name) + "?exp=" + strconv.FormatInt(exp, 10) + "&sig=" + links.Signature(LinkSecret(), id, name, exp)
}
