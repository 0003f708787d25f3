package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// hostileRequest is one request sent exactly as written: target is the
// request-target (path and query) put on the request line verbatim, so
// "..", "%2e%2e", "%00" and "//" reach the gateway as a client wrote them.
type hostileRequest struct {
	name   string
	method string
	target string
	header http.Header
	body   []byte
	// mayPass marks requests whose hostile part the endpoint is right to
	// ignore (an unknown query parameter, a body on a GET): they may
	// answer 2xx, but never 5xx.
	mayPass bool
	// transport marks requests net/http itself refuses before routing
	// (an invalid escape in the path): a 400 in plain text, since no
	// dialect has been chosen yet.
	transport bool
}

// endpoint is one route of one dialect, with a legitimate request for it.
type endpoint struct {
	name string
	// method and path (with {id} where the route takes one) of the route.
	method, path string
	// query is a legitimate query string ("" for none).
	query string
	// header carries the caller's credentials in the dialect's way.
	header http.Header
	// body is a legitimate body; json says whether the route reads JSON,
	// form whether it reads a form.
	body       string
	json, form bool
	// id is a legitimate value for {id}.
	id string
}

const (
	maxInt64   = "9223372036854775807"
	overInt64  = "9223372036854775808"
	overUint64 = "18446744073709551616"
)

// TestHostileRequests sends every endpoint of every dialect a table of
// hostile requests (malformed and wrongly typed JSON, huge and
// overflowing numbers, NUL and CR/LF in ids, query values and headers,
// path tricks, very long ids, oversized bodies, wrong content types) and
// checks that each is answered with a 4xx in that dialect's error shape,
// never a 5xx, and that the stack still serves legitimate requests
// afterwards.
func TestHostileRequests(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	admin := s.user(t, "admin")

	// A completed export, for its id and its signed file link.
	jobID := createRoomExport(t, s, admin, "GENERAL", "")
	job := waitAllCompleted(t, s, admin, []string{jobID}, 2*time.Minute)[jobID]
	require.NotEmpty(t, job.Files, "the room export has a file")
	link, err := url.Parse(job.Files[0].URL)
	require.NoError(t, err)
	fileName := job.Files[0].Name

	rcHdr := http.Header{"X-User-Id": {admin.UserID}, "X-Auth-Token": {admin.AuthToken}}
	rebHdr := http.Header{"Reb-Apikey": {admin.APIKey}}
	mtHdr := http.Header{"Authorization": {"Bearer " + admin.APIKey}}

	var rebCreated map[string]any
	require.Equal(t, http.StatusCreated, send(t, s, hostileRequest{method: http.MethodPost, target: "/experimental/data-exports",
		header: withJSON(rebHdr), body: []byte(`{"name":"hostile","resource":"transactions","format":"csv"}`)}, &rebCreated).status)
	rebID, _ := rebCreated["id"].(string)
	require.NotEmpty(t, rebID)
	var mtCreated rawAnswer
	require.Equal(t, http.StatusOK, send(t, s, hostileRequest{method: http.MethodPost,
		target: "/api/raw/v1/export/create.json?event=installs&selectors=id&dateFrom=2026-01-01&dateTo=2026-01-31", header: mtHdr}, &mtCreated).status)
	require.NotEmpty(t, mtCreated.Data.IDRawExport)

	rebBody := `{"name":"n","resource":"transactions","format":"csv"}`
	endpoints := []endpoint{
		{name: "native list", method: http.MethodGet, path: "/v1/exports", header: rcHdr},
		{name: "native get", method: http.MethodGet, path: "/v1/exports/{id}", header: rcHdr, id: jobID},
		{name: "native cancel", method: http.MethodPost, path: "/v1/exports/{id}/cancel", header: rcHdr, id: jobID},
		{name: "native file", method: http.MethodGet, path: "/v1/exports/{id}/files/" + url.PathEscape(fileName), query: link.RawQuery, id: jobID},
		{name: "rooms.export", method: http.MethodPost, path: "/api/v1/rooms.export", header: rcHdr, json: true,
			body: `{"rid":"GENERAL","type":"file","format":"json"}`},
		{name: "users.requestDataDownload", method: http.MethodGet, path: "/api/v1/users.requestDataDownload", query: "fullExport=false", header: rcHdr},
		{name: "myTracker create", method: http.MethodPost, path: "/api/raw/v1/export/create.json", header: mtHdr, form: true,
			body: "event=installs&selectors=id&dateFrom=2026-01-01&dateTo=2026-01-31"},
		{name: "myTracker get", method: http.MethodGet, path: "/api/raw/v1/export/get.json", query: "idRawExport=" + mtCreated.Data.IDRawExport, header: mtHdr},
		{name: "myTracker cancel GET", method: http.MethodGet, path: "/api/raw/v1/export/cancel.json", query: "idRawExport=999999", header: mtHdr},
		{name: "myTracker cancel POST", method: http.MethodPost, path: "/api/raw/v1/export/cancel.json", query: "idRawExport=999999", header: mtHdr},
	}
	for _, prefix := range []string{"/experimental", "", "/experimental/organizations/org-1", "/organizations/org-1"} {
		col := prefix + "/data-exports"
		endpoints = append(endpoints,
			endpoint{name: "Rebilly create " + col, method: http.MethodPost, path: col, header: rebHdr, json: true, body: rebBody},
			endpoint{name: "Rebilly list " + col, method: http.MethodGet, path: col, query: "limit=5&sort=-createdTime", header: rebHdr},
			endpoint{name: "Rebilly get " + col, method: http.MethodGet, path: col + "/{id}", header: rebHdr, id: rebID},
			endpoint{name: "Rebilly update " + col, method: http.MethodPut, path: col + "/{id}", header: rebHdr, json: true, body: rebBody, id: rebID},
			endpoint{name: "Rebilly delete " + col, method: http.MethodDelete, path: col + "/{id}", header: rebHdr, id: "hostile-missing"},
			endpoint{name: "Rebilly download " + col, method: http.MethodGet, path: col + "/{id}/download", header: rebHdr, id: rebID},
		)
	}

	for _, ep := range endpoints {
		t.Run(ep.name, func(t *testing.T) {
			for _, hr := range hostileTable(ep) {
				t.Run(hr.name, func(t *testing.T) {
					r := send(t, s, hr, nil)
					require.Less(t, r.status, 500, "%s %.200s: %.300s", hr.method, hr.target, r.body)
					if r.status < 400 {
						assert.True(t, hr.mayPass, "%s %.200s answered %d: %.300s", hr.method, hr.target, r.status, r.body)
						return
					}
					if hr.transport {
						assert.Equal(t, http.StatusBadRequest, r.status)
						return
					}
					checkShape(t, hr.target, r)
				})
			}
		})
	}

	t.Run("signed file link tampering", func(t *testing.T) {
		q := link.Query()
		exp, sig := q.Get("exp"), q.Get("sig")
		file := "/v1/exports/" + jobID + "/files/" + url.PathEscape(fileName)
		for name, target := range map[string]string{
			"no signature":          file + "?exp=" + exp,
			"no expiry":             file + "?sig=" + sig,
			"expiry max int64":      file + "?exp=" + maxInt64 + "&sig=" + sig,
			"expiry overflow":       file + "?exp=" + overInt64 + "&sig=" + sig,
			"expiry float":          file + "?exp=1e400&sig=" + sig,
			"expiry negative":       file + "?exp=-1&sig=" + sig,
			"signature NUL":         file + "?exp=" + exp + "&sig=" + sig + "%00",
			"signature CR/LF":       file + "?exp=" + exp + "&sig=%0D%0A" + sig,
			"signature truncated":   file + "?exp=" + exp + "&sig=" + sig[:len(sig)-2],
			"signature upper-case":  file + "?exp=" + exp + "&sig=" + strings.ToUpper(sig[:10]) + "zz",
			"other name":            "/v1/exports/" + jobID + "/files/manifest.json?" + link.RawQuery,
			"traversal in name":     "/v1/exports/" + jobID + "/files/..%2F..%2F" + url.PathEscape(fileName) + "?" + link.RawQuery,
			"dot-dot name":          "/v1/exports/" + jobID + "/files/..?" + link.RawQuery,
			"NUL in name":           file + "%00?" + link.RawQuery,
			"bad escape in name":    "/v1/exports/" + jobID + "/files/%zz?" + link.RawQuery,
			"other job":             "/v1/exports/" + jobID + "x/files/" + url.PathEscape(fileName) + "?" + link.RawQuery,
			"extra segment":         file + "/x?" + link.RawQuery,
			"double slash":          "/v1/exports/" + jobID + "//files/" + url.PathEscape(fileName) + "?" + link.RawQuery,
			"repeated parameters":   file + "?exp=1&sig=00&" + link.RawQuery,
			"signature of 10k hex":  file + "?exp=" + exp + "&sig=" + strings.Repeat("ab", 5000),
			"expiry with plus sign": file + "?exp=%2B" + exp + "&sig=00",
		} {
			t.Run(name, func(t *testing.T) {
				r := send(t, s, hostileRequest{method: http.MethodGet, target: target}, nil)
				require.GreaterOrEqual(t, r.status, 400, "%s: %.300s", target, r.body)
				require.Less(t, r.status, 500, "%s: %.300s", target, r.body)
				if path, _, _ := strings.Cut(target, "?"); !validEscapes(path) {
					return // refused by net/http, see hostileRequest.transport
				}
				checkShape(t, target, r)
			})
		}
		// The link itself still works.
		r := send(t, s, hostileRequest{method: http.MethodGet, target: link.RequestURI()}, nil)
		require.Equal(t, http.StatusOK, r.status)
		assert.EqualValues(t, job.Files[0].Size, len(r.body))
	})

	t.Run("bytes net/http refuses before any handler", func(t *testing.T) {
		// Raw NUL, CR and LF cannot be in a request line or header value;
		// the HTTP server answers 400 itself (in plain text, since no
		// route has been chosen yet). What matters is that it is a 4xx
		// and that nothing behind it breaks.
		addr := strings.TrimPrefix(s.gatewayURL, "http://")
		for name, head := range map[string]string{
			"NUL in path":                "GET /v1/exports/a\x00b HTTP/1.1\r\n",
			"space in path":              "GET /v1/exports/a b HTTP/1.1\r\n",
			"NUL in user id":             "GET /v1/exports HTTP/1.1\r\nX-User-Id: a\x00b\r\nX-Auth-Token: x\r\n",
			"bare CR in API key":         "GET /experimental/data-exports HTTP/1.1\r\nREB-APIKEY: a\rb\r\n",
			"header injection by LF":     "GET /api/raw/v1/export/get.json?idRawExport=1 HTTP/1.1\r\nAuthorization: Bearer x\nX-Injected: 1\r\n",
			"obsolete line folding":      "GET /api/v1/users.requestDataDownload HTTP/1.1\r\nX-User-Id: a\r\n b\r\n",
			"NUL in header name":         "GET /v1/exports HTTP/1.1\r\nX-\x00: 1\r\n",
			"Content-Length overflowing": "POST /api/v1/rooms.export HTTP/1.1\r\nContent-Length: " + overUint64 + "\r\n",
			"two Content-Lengths":        "POST /experimental/data-exports HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n",
			"negative Content-Length":    "POST /experimental/data-exports HTTP/1.1\r\nContent-Length: -1\r\n",
		} {
			t.Run(name, func(t *testing.T) {
				status := rawStatus(t, addr, head+"Host: "+addr+"\r\nConnection: close\r\n\r\n")
				assert.GreaterOrEqual(t, status, 400, "%q", head)
				assert.Less(t, status, 500, "%q", head)
			})
		}
	})

	t.Run("the stack still serves legitimate requests", func(t *testing.T) {
		id := createRoomExport(t, s, admin, "GENERAL", "")
		waitAllCompleted(t, s, admin, []string{id}, 2*time.Minute)
		var list []map[string]any
		r := send(t, s, hostileRequest{method: http.MethodGet, target: "/experimental/data-exports?limit=100", header: rebHdr}, &list)
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		assert.NotEmpty(t, list)
		var got rawAnswer
		r = send(t, s, hostileRequest{method: http.MethodGet, target: "/api/raw/v1/export/get.json?idRawExport=" + mtCreated.Data.IDRawExport, header: mtHdr}, &got)
		require.Equal(t, http.StatusOK, r.status, "%s", r.body)
		assert.Equal(t, mtCreated.Data.IDRawExport, got.Data.IDRawExport)
	})
}

// hostileTable derives the hostile variants of an endpoint's legitimate
// request.
func hostileTable(ep endpoint) []hostileRequest {
	var out []hostileRequest
	target := func(id, query string) string {
		p := strings.ReplaceAll(ep.path, "{id}", id)
		if query != "" {
			p += "?" + query
		}
		return p
	}
	legit := target(ep.id, ep.query)
	add := func(name, method, tgt string, h http.Header, body []byte, mayPass bool) {
		if h == nil {
			h = ep.header
		}
		path, _, _ := strings.Cut(tgt, "?")
		out = append(out, hostileRequest{name: name, method: method, target: tgt, header: h, body: body, mayPass: mayPass, transport: !validEscapes(path)})
	}
	withQuery := func(extra string) string {
		if ep.query == "" {
			return target(ep.id, extra)
		}
		return target(ep.id, ep.query+"&"+extra)
	}
	reads := func(param string) bool { return strings.Contains(ep.query, param+"=") }

	// Bodies.
	big := bytes.Repeat([]byte("x"), 10<<20)
	bodies := []struct {
		name string
		body []byte
	}{
		{"malformed JSON", []byte(`{"rid":`)},
		{"JSON array", []byte(`[1,2,3]`)},
		{"JSON string", []byte(`"just a string"`)},
		{"JSON null", []byte(`null`)},
		{"wrong JSON types", []byte(`{"rid":1,"type":["file"],"format":{},"name":1e400,"resource":true,"fields":"id","arguments":[],"dateRange":"today","recurring":1}`)},
		{"huge numbers", []byte(`{"rid":"GENERAL","type":"file","format":"json","dateFrom":1e400,"dateTo":` + maxInt64 + `,"name":` + overUint64 + `}`)},
		{"dates beyond year 9999", []byte(`{"name":"n","resource":"transactions","format":"csv","dateRange":{"start":"@-999999999999","end":"@999999999999"},"rid":"GENERAL","type":"file","dateTo":"9999-12-31T23:59:59-23:59"}`)},
		{"deeply nested JSON", []byte(`{"name":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`)},
		{"NUL and CR/LF in strings", []byte(`{"rid":"GENERAL\u0000","type":"file\r\n","format":"json","name":"a\u0000b","resource":"transactions\r\n","format":"csv"}`)},
		{"raw NUL bytes", []byte("{\"rid\":\"GEN\x00ERAL\",\x00}")},
		{"invalid UTF-8", []byte("{\"rid\":\"\xff\xfe\",\"name\":\"\xc3\"}")},
		{"trailing garbage", []byte(`{"rid":"GENERAL","type":"file","format":"json"} {"x":1}`)},
		{"10 MiB JSON string", append(append([]byte(`{"rid":"`), big...), []byte(`"}`)...)},
		{"10 MiB of garbage", big},
	}
	switch {
	case ep.json:
		for _, b := range bodies {
			add(b.name, ep.method, legit, withJSON(ep.header), b.body, false)
		}
		add("wrong content type (text/plain)", ep.method, legit, withType(ep.header, "text/plain"), []byte("hello"), false)
		add("wrong content type (form)", ep.method, legit, withType(ep.header, "application/x-www-form-urlencoded"), []byte("rid=GENERAL&type=file"), false)
		add("multipart with a broken boundary", ep.method, legit, withType(ep.header, "multipart/form-data; boundary="), []byte("--\r\n"), false)
		add("no body", ep.method, legit, withJSON(ep.header), nil, false)
	case ep.form:
		add("JSON instead of a form", ep.method, legit, withJSON(ep.header), []byte(`{"event":"installs"}`), false)
		add("10 MiB form", ep.method, legit, withType(ep.header, "application/x-www-form-urlencoded"), append([]byte("event="), big...), false)
		add("form with a bad escape", ep.method, legit, withType(ep.header, "application/x-www-form-urlencoded"), []byte("event=%zz"), false)
		add("form with NUL and CR/LF", ep.method, legit, withType(ep.header, "application/x-www-form-urlencoded"),
			[]byte("event=installs%00&selectors=id%0D%0A&dateFrom=2026-01-01%00&dateTo=2026-01-31"), false)
		add("form with injected filter", ep.method, legit, withType(ep.header, "application/x-www-form-urlencoded"),
			[]byte("event=installs&selectors=id&dateFrom=2026-01-01&dateTo=2026-01-31&country=!U&idApp=1;eventType:x"), false)
		add("form with overflowing numbers", ep.method, legit, withType(ep.header, "application/x-www-form-urlencoded"),
			[]byte("event=installs&selectors=id&dateFrom=2026-01-01&dateTo=2026-01-31&idApp="+overUint64), false)
		add("multipart with a broken boundary", ep.method, legit, withType(ep.header, "multipart/form-data; boundary="), []byte("--\r\n"), false)
	default:
		add("10 MiB body on a "+ep.method, ep.method, legit, withJSON(ep.header), big, true)
		add("malformed JSON body on a "+ep.method, ep.method, legit, withJSON(ep.header), []byte(`{"`), true)
	}

	// Numbers and values in the query.
	for _, q := range []struct{ name, query string }{
		{"limit and offset max int64", "limit=" + maxInt64 + "&offset=" + maxInt64},
		{"offset max int64", "offset=" + maxInt64},
		{"limit overflowing int64", "limit=" + overInt64},
		{"limit 1e400", "limit=1e400&offset=1e400"},
		{"limit and offset -1", "limit=-1&offset=-1"},
		{"NUL in filter and sort", "filter=name:a%00&sort=%00"},
		{"CR/LF in filter and q", "filter=name:%22a%0D%0Ab%22&q=%0D%0ASet-Cookie:%20x"},
		{"bad escape", "filter=%zz&q=%"},
		{"unknown expand", "expand=user,%00"},
	} {
		// Most routes ignore parameters they do not read, and Rebilly's
		// list may read some of these as a valid (if empty) page.
		add(q.name, ep.method, withQuery(q.query), nil, legitBody(ep), true)
	}
	if reads("idRawExport") {
		for _, v := range []string{maxInt64, overUint64, "-1", "0", "1e400", "%00", "1%0D%0A", "%zz", "../1", strings.Repeat("9", 10000)} {
			add("idRawExport="+trunc(v), ep.method, target(ep.id, "idRawExport="+v), nil, legitBody(ep), false)
		}
	}
	if reads("fullExport") {
		for _, v := range []string{"%00", "true%0D%0A", "%zz", maxInt64} {
			add("fullExport="+v, ep.method, target(ep.id, "fullExport="+v), nil, nil, true)
		}
	}

	// Ids and path tricks.
	if strings.Contains(ep.path, "{id}") {
		for _, id := range []string{"..", "%2e%2e", "%2E%2E%2F%2E%2E", "a%00b", "%00", "a%0D%0Ab", "a%2Fb", "%zz", "a.b.%3E", "*",
			"%C3%BC", "%FF%FE", "..%2F..%2Fetc%2Fpasswd", strings.Repeat("x", 10000), maxInt64} {
			// A PUT of a new, valid id creates an export, which a DELETE
			// then deletes.
			valid := id == maxInt64 && (ep.method == http.MethodPut || ep.method == http.MethodDelete)
			add("id "+trunc(id), ep.method, target(id, ep.query), nil, legitBody(ep), valid)
		}
		// ".../data-exports/" is the collection itself.
		add("empty id segment", ep.method, target("", ep.query), nil, legitBody(ep), ep.method == http.MethodGet)
	}
	add("double slash", ep.method, "/"+legit, nil, legitBody(ep), false)
	add("dot-dot segment", ep.method, strings.Replace(legit, "/", "/x/../", 1), nil, legitBody(ep), false)
	add("encoded dot-dot segment", ep.method, strings.Replace(legit, "/", "/x/%2e%2e/", 1), nil, legitBody(ep), false)
	add("trailing NUL", ep.method, strings.Replace(legit, "?", "%00?", 1)+suffixIfNoQuery(legit, "%00"), nil, legitBody(ep), false)
	add("unknown method", "PATCH", legit, nil, legitBody(ep), false)

	// Credentials.
	if ep.header != nil {
		for name, h := range map[string]http.Header{
			"no credentials":       {},
			"unicode credentials":  {"X-User-Id": {"ü"}, "X-Auth-Token": {"ü"}, "Reb-Apikey": {"ключ"}, "Authorization": {"Bearer ключ"}},
			"path in user id":      {"X-User-Id": {"../" + "admin"}, "X-Auth-Token": {"x"}, "Reb-Apikey": {"../x"}, "Authorization": {"Bearer ../x"}},
			"64 KiB credentials":   {"X-User-Id": {strings.Repeat("a", 64<<10)}, "X-Auth-Token": {"x"}, "Reb-Apikey": {strings.Repeat("a", 64<<10)}, "Authorization": {"Bearer " + strings.Repeat("a", 64<<10)}},
			"JWT-looking garbage":  {"Authorization": {"Bearer a.b.c"}, "X-User-Id": {"a.b.c"}, "X-Auth-Token": {"a.b.c"}},
			"alg none JWT":         {"Authorization": {"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiIsImV4cCI6OTk5OTk5OTk5OX0."}},
			"tab-padded API key":   {"Reb-Apikey": {"\t"}, "Authorization": {"Bearer \t"}, "X-User-Id": {"\t"}, "X-Auth-Token": {"\t"}},
			"basic auth":           {"Authorization": {"Basic YWRtaW46YWRtaW4="}},
			"wildcard subject ids": {"X-User-Id": {">"}, "X-Auth-Token": {"*"}, "Reb-Apikey": {"*"}, "Authorization": {"Bearer *"}},
		} {
			add(name, ep.method, legit, withTypeOf(h, ep), legitBody(ep), false)
		}
	}
	return out
}

// validEscapes reports whether every % in path starts a valid escape.
func validEscapes(path string) bool {
	_, err := url.PathUnescape(path)
	return err == nil
}

func legitBody(ep endpoint) []byte {
	if ep.body == "" {
		return nil
	}
	return []byte(ep.body)
}

// withTypeOf sets the content type the endpoint's legitimate body needs.
func withTypeOf(h http.Header, ep endpoint) http.Header {
	switch {
	case ep.json:
		return withJSON(h)
	case ep.form:
		return withType(h, "application/x-www-form-urlencoded")
	}
	return h
}

func withJSON(h http.Header) http.Header { return withType(h, "application/json") }

func withType(h http.Header, ct string) http.Header {
	out := h.Clone()
	if out == nil {
		out = http.Header{}
	}
	out.Set("Content-Type", ct)
	return out
}

func suffixIfNoQuery(target, s string) string {
	if strings.Contains(target, "?") {
		return ""
	}
	return s
}

func trunc(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

type hostileResponse struct {
	status int
	header http.Header
	body   []byte
}

// send sends hr with its target verbatim on the request line and decodes
// a JSON answer into out when out is not nil.
func send(t *testing.T, s *stack, hr hostileRequest, out any) hostileResponse {
	t.Helper()
	base, err := url.Parse(s.gatewayURL)
	require.NoError(t, err)
	path, query, _ := strings.Cut(hr.target, "?")
	var body io.Reader
	if hr.body != nil {
		body = bytes.NewReader(hr.body)
	}
	req, err := http.NewRequestWithContext(t.Context(), hr.method, s.gatewayURL, body)
	require.NoError(t, err)
	// An opaque path goes on the request line as it is, except that one
	// starting with "//" would be sent as an absolute URL; such paths
	// have no escapes here and go as a plain path.
	u := &url.URL{Scheme: base.Scheme, Host: base.Host, Opaque: path, RawQuery: query}
	if strings.HasPrefix(path, "//") {
		u = &url.URL{Scheme: base.Scheme, Host: base.Host, Path: path, RawQuery: query}
	}
	req.URL = u
	for k, v := range hr.header {
		req.Header[k] = v
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	require.NoError(t, err, "%s %.200s", hr.method, hr.target)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if out != nil {
		require.NoError(t, json.Unmarshal(b, out), "%s %s: %d %s", hr.method, hr.target, resp.StatusCode, b)
	}
	return hostileResponse{status: resp.StatusCode, header: resp.Header, body: b}
}

// rawStatus writes request bytes to the gateway over TCP and returns the
// status of the answer.
func rawStatus(t *testing.T, addr, request string) int {
	t.Helper()
	var d net.Dialer
	conn, err := d.DialContext(t.Context(), "tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, request)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err, "%q", request)
	defer resp.Body.Close()
	return resp.StatusCode
}

// checkShape asserts that an error answer has the error shape of the
// dialect serving the target's path.
func checkShape(t *testing.T, target string, r hostileResponse) {
	t.Helper()
	var m map[string]any
	require.NoError(t, json.Unmarshal(r.body, &m), "%d for %.200s is no JSON object: %.300q", r.status, target, r.body)
	path, _, _ := strings.Cut(target, "?")
	str := func(k string) bool { v, ok := m[k].(string); return ok && v != "" }
	switch dialectOf(path) {
	case "rocketchat":
		if r.status == http.StatusUnauthorized {
			assert.True(t, m["status"] == "error" && str("message"), "Rocket.Chat 401 shape for %.200s: %v", target, m)
			return
		}
		assert.True(t, m["success"] == false && str("error"), "Rocket.Chat error shape for %.200s: %v", target, m)
	case "rebilly":
		assert.True(t, m["status"] == float64(r.status) && str("type") && str("title") && str("error") && m["detail"] != nil,
			"Rebilly problem shape for %.200s: %v", target, m)
	case "mytracker":
		_, hasData := m["data"]
		assert.True(t, m["code"] == float64(r.status) && str("message") && hasData, "myTracker shape for %.200s: %v", target, m)
	default:
		// RFC 9457 problem details.
		assert.True(t, m["status"] == float64(r.status) && str("type") && str("title") && str("detail"),
			"native problem shape for %.200s: %v", target, m)
		assert.Equal(t, "application/problem+json", r.header.Get("Content-Type"), "native problem type for %.200s", target)
	}
}

// dialectOf names the dialect whose shape errors under path have, by the
// prefixes the gateway's dialects are served under.
func dialectOf(path string) string {
	switch {
	case strings.HasPrefix(path, "/api/v1/"):
		return "rocketchat"
	case strings.HasPrefix(path, "/api/raw/"):
		return "mytracker"
	case strings.HasPrefix(path, "/experimental/"), strings.HasPrefix(path, "/data-exports"), strings.HasPrefix(path, "/organizations/"):
		return "rebilly"
	}
	return "native"
}
