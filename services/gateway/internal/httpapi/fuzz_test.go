package httpapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/shared/links"
)

// FuzzNativeRequest sends the native API arbitrary job ids, file names,
// exp and sig values and query strings on each of its routes, with and
// without credentials, straight into the router (so NUL, CR/LF and
// malformed escapes reach it as given). Every answer is JSON; every
// error is a problem document (RFC 9457) with a 4xx; a download is refused before any
// lookup unless its link is signed (403, 410 for an expired signed one,
// 404 for a signed link to a job that does not exist). Never a 5xx.
// Seeds live in testdata/fuzz/FuzzNativeRequest.
func FuzzNativeRequest(f *testing.F) {
	expUnix := time.Now().Add(24 * time.Hour).Unix()
	exp := strconv.FormatInt(expUnix, 10)
	sig := links.Signature(gatewaytest.LinkSecret(), "nojob", "a.json", expUnix)
	oldSig := links.Signature(gatewaytest.LinkSecret(), "nojob", "a.json", 1)
	for _, c := range []struct {
		route     uint8
		id, name  string
		query     string
		anonymous bool
	}{
		{0, "", "", "", false}, {0, "", "", "limit=9223372036854775807&offset=-1", false}, {0, "", "", "", true},
		{1, "nojob", "", "", false}, {1, "..", "", "", false}, {1, "%2e%2e", "", "", false}, {1, "a%00b", "", "", false},
		{1, "a%0D%0Ab", "", "", false}, {1, strings.Repeat("x", 10000), "", "", false}, {1, "%zz", "", "", false},
		{2, "nojob", "", "", false}, {2, "a.b.>", "", "", false}, {2, "nojob", "", "", true},
		{3, "nojob", "a.json", "exp=" + exp + "&sig=" + sig, true},
		{3, "nojob", "a.json", "exp=1&sig=" + oldSig, true},
		{3, "nojob", "a.json", "exp=9223372036854775807&sig=00", true},
		{3, "nojob", "..%2F..%2Fetc%2Fpasswd", "exp=1e400&sig=zz", true},
		{3, "nojob", "a.json%00", "exp=" + exp + "&sig=" + sig, true},
		{3, "%2e%2e", "%2e%2e", "exp=&sig=", true},
		{3, "nojob", "a%zz", "exp=" + exp + "&sig=" + sig, true},
		{4, "nojob", "", "", false},
	} {
		f.Add(c.route, c.id, c.name, c.query, c.anonymous)
	}
	e := gatewaytest.New(f, gatewaytest.Options{})
	f.Fuzz(func(t *testing.T, route uint8, id, name, rawQuery string, anonymous bool) {
		method, path := http.MethodGet, "/v1/exports"
		switch route % 5 {
		case 1:
			path += "/" + id
		case 2:
			method, path = http.MethodPost, path+"/"+id+"/cancel"
		case 3:
			path += "/" + id + "/files/" + name
		case 4:
			method, path = http.MethodDelete, path+"/"+id
		}
		u, err := url.Parse(path)
		if err != nil || strings.ContainsAny(path, "?#") {
			t.Skip("not a request path")
		}
		u.RawQuery = rawQuery
		r := httptest.NewRequest(method, "http://gateway.invalid/", nil)
		r.URL, r.RequestURI = u, ""
		if !anonymous {
			r.Header["X-User-Id"] = []string{gatewaytest.AdminID}
			r.Header["X-Auth-Token"] = []string{gatewaytest.AdminToken}
		}
		w := httptest.NewRecorder()
		e.Router.ServeHTTP(w, r)
		var out map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("%s %s: status %d, body %q is no JSON object", method, u, w.Code, w.Body)
		}
		if w.Code == http.StatusOK {
			if route%5 != 0 || anonymous {
				t.Fatalf("%s %s: 200 %v", method, u, out)
			}
			return
		}
		if w.Code < 400 || w.Code >= 500 {
			t.Fatalf("%s %s: status %d: %v", method, u, w.Code, out)
		}
		if msg, ok := out["detail"].(string); !ok || msg == "" || out["status"] != float64(w.Code) || out["type"] == nil || out["title"] == nil {
			t.Fatalf("%s %s: error body %v is not the native shape", method, u, out)
		}
		if route%5 == 3 && w.Code != http.StatusForbidden && w.Code != http.StatusGone && w.Code != http.StatusNotFound {
			t.Fatalf("%s %s: download answered %d", method, u, w.Code)
		}
	})
}
