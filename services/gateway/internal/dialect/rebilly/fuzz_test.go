package rebilly_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// serve runs one request through the dialect's router in process, so
// header and query values reach the handlers exactly as given (no HTTP
// client or server cleans them up first) and a handler panic fails the
// fuzz target instead of being swallowed by net/http.
func (e *env) serve(method, path, rawQuery string, hdr http.Header) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, "http://gw.test/", nil)
	r.URL = &url.URL{Path: path, RawQuery: rawQuery}
	r.RequestURI = ""
	for k, v := range hdr {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	e.srv.Config.Handler.ServeHTTP(w, r)
	return w
}

// checkProblem asserts that an error answer is Rebilly's problem object.
func checkProblem(t *testing.T, what string, w *httptest.ResponseRecorder) map[string]any {
	t.Helper()
	if w.Code < 400 || w.Code >= 500 {
		t.Fatalf("%s: status %d: %s", what, w.Code, w.Body)
	}
	var p map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil {
		t.Fatalf("%s: status %d: body is no JSON object: %q", what, w.Code, w.Body)
	}
	if p["status"] != float64(w.Code) || p["error"] == "" || p["type"] == nil || p["detail"] == nil {
		t.Fatalf("%s: status %d: not a Rebilly problem: %s", what, w.Code, w.Body)
	}
	return p
}

// FuzzListQuery sends GET /data-exports arbitrary query strings over a
// collection of three exports. The answer is a 200 page no longer than
// the limit, with pagination headers that echo limit and offset, or a 422
// problem naming only list parameters; never a 5xx. Seeds (huge and
// overflowing numbers among them) live in testdata/fuzz/FuzzListQuery.
func FuzzListQuery(f *testing.F) {
	for _, s := range []string{
		"limit=5&sort=-createdTime,name&filter=status:completed", "limit=2&offset=1", "offset=9223372036854775807",
		"limit=1000&offset=9223372036854775807", "limit=9223372036854775807", "limit=-1", "offset=-1", "limit=1e400",
		"limit=99999999999999999999", "offset=0x10", "limit=%00", "filter=name:%22a%0D%0Ab%22", "filter=status:pending;format:csv,json",
		"sort=name&sort=-id", "sort=name,name", "sort=nope", "filter=nope:1", "q=%E2%98%83&expand=user", "expand=user,recordCount",
		"q=%", "filter=%zz", "&&&=&", "filter=createdTime:2026-01-01..", "sort=%2Ename",
	} {
		f.Add(s)
	}
	e := newEnv(f)
	hdr := http.Header{"Reb-Apikey": {aliceKey}}
	for _, name := range []string{"alpha", "bravo", "charlie"} {
		body := `{"name":"` + name + `","resource":"transactions","format":"csv"}`
		r := httptest.NewRequest(http.MethodPost, base, strings.NewReader(body))
		r.Header = hdr.Clone()
		w := httptest.NewRecorder()
		e.srv.Config.Handler.ServeHTTP(w, r)
		if w.Code != http.StatusCreated {
			f.Fatalf("create %s: %d %s", name, w.Code, w.Body)
		}
	}
	params := []string{"limit", "offset", "filter", "sort", "expand"}
	f.Fuzz(func(t *testing.T, rawQuery string) {
		w := e.serve(http.MethodGet, base, rawQuery, hdr)
		if w.Code != http.StatusOK {
			p := checkProblem(t, "query "+strconv.Quote(rawQuery), w)
			if w.Code != http.StatusUnprocessableEntity {
				t.Fatalf("query %q: status %d", rawQuery, w.Code)
			}
			fields, _ := p["invalidFields"].([]any)
			if len(fields) == 0 {
				t.Fatalf("query %q: 422 without invalidFields: %s", rawQuery, w.Body)
			}
			for _, x := range fields {
				if fv, _ := x.(map[string]any); !slices.Contains(params, fmt.Sprint(fv["field"])) {
					t.Fatalf("query %q: invalid field %v", rawQuery, x)
				}
			}
			return
		}
		var items []map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &items); err != nil {
			t.Fatalf("query %q: 200 body %q: %v", rawQuery, w.Body, err)
		}
		limit, err1 := strconv.Atoi(w.Header().Get("Pagination-Limit"))
		offset, err2 := strconv.Atoi(w.Header().Get("Pagination-Offset"))
		total, err3 := strconv.Atoi(w.Header().Get("Pagination-Total"))
		if err1 != nil || err2 != nil || err3 != nil || limit < 0 || offset < 0 || total < 0 || total > 3 {
			t.Fatalf("query %q: pagination headers %v", rawQuery, w.Header())
		}
		if len(items) > limit || len(items) > max(total-offset, 0) {
			t.Fatalf("query %q: %d items for limit %d offset %d total %d", rawQuery, len(items), limit, offset, total)
		}
	})
}

// FuzzAuthHeader sends arbitrary REB-APIKEY and Authorization values,
// NUL, CR/LF and non-JWT garbage included. The answer is a 200 for the
// one real key and a 401 problem otherwise; a malformed credential is
// never an internal error.
func FuzzAuthHeader(f *testing.F) {
	for _, c := range [][2]string{
		{aliceKey, ""}, {"", "Bearer " + aliceKey}, {"", "bearer  " + aliceKey + " "}, {"x\x00y", ""}, {"", "Bearer a.b.c"},
		{"", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9."}, {"", "Bearer ..."}, {"", "Basic YWxpY2U6eA=="},
		{"", "Bearer \r\nX-Injected: 1"}, {"", "Bearer " + strings.Repeat("A", 70000) + ".e30.x"}, {"", "Bearer"},
	} {
		f.Add(c[0], c[1])
	}
	e := newEnv(f)
	f.Fuzz(func(t *testing.T, apiKey, authorization string) {
		hdr := http.Header{}
		if apiKey != "" {
			hdr["Reb-Apikey"] = []string{apiKey}
		}
		if authorization != "" {
			hdr["Authorization"] = []string{authorization}
		}
		w := e.serve(http.MethodGet, base, "", hdr)
		valid := apiKey == aliceKey || apiKey == bobKey || apiKey == adminKey
		if apiKey == "" {
			scheme, tok, _ := strings.Cut(authorization, " ")
			tok = strings.TrimSpace(tok)
			valid = strings.EqualFold(scheme, "Bearer") && (tok == aliceKey || tok == bobKey || tok == adminKey)
		}
		if valid {
			if w.Code != http.StatusOK {
				t.Fatalf("%q %q: status %d: %s", apiKey, authorization, w.Code, w.Body)
			}
			return
		}
		checkProblem(t, strconv.Quote(apiKey)+" "+strconv.Quote(authorization), w)
		if w.Code != http.StatusUnauthorized {
			t.Fatalf("%q %q: status %d", apiKey, authorization, w.Code)
		}
	})
}

// FuzzBearerClaims signs tokens with the configured HS256 secret (or
// another algorithm or key) over arbitrary subjects and expiries: only a
// token of an accepted algorithm and key, naming an existing user and not
// yet expired, authenticates; everything else, subjects that are no valid
// key (NUL, ".", "*", ">") and expiries at the ends of int64 included, is
// a 401.
func FuzzBearerClaims(f *testing.F) {
	exp := now.Add(time.Hour).Unix()
	for _, c := range []struct {
		sub  string
		exp  int64
		kind uint8
	}{
		{"alice", exp, 0}, {"alice", exp, 1}, {"alice", exp, 2}, {"alice", exp, 3}, {"alice", now.Unix(), 0},
		{"alice", 9223372036854775807, 0}, {"alice", -9223372036854775808, 0}, {"mallory", exp, 0}, {"", exp, 0},
		{"a.b", exp, 0}, {"*", exp, 0}, {">", exp, 0}, {"alice\x00", exp, 0}, {"alice\r\n", exp, 0}, {"../root", exp, 0},
	} {
		f.Add(c.sub, c.exp, c.kind)
	}
	e := newEnv(f)
	f.Fuzz(func(t *testing.T, sub string, exp int64, kind uint8) {
		claims := jwt.MapClaims{"sub": sub, "exp": exp}
		var tok string
		var err error
		switch kind % 4 {
		case 0:
			tok, err = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(hsSecret))
		case 1:
			tok, err = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte("other secret"))
		case 2:
			tok, err = jwt.NewWithClaims(jwt.SigningMethodHS384, claims).SignedString([]byte(hsSecret))
		case 3:
			tok, err = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(e.rsaPEM))
		}
		if err != nil {
			t.Fatal(err)
		}
		w := e.serve(http.MethodGet, base, "", http.Header{"Authorization": {"Bearer " + tok}})
		valid := kind%4 == 0 && (sub == "alice" || sub == "bob" || sub == "root") && now.Before(time.Unix(exp, 0))
		if valid {
			if w.Code != http.StatusOK {
				t.Fatalf("sub %q exp %d: status %d: %s", sub, exp, w.Code, w.Body)
			}
			return
		}
		checkProblem(t, "sub "+strconv.Quote(sub), w)
		if w.Code != http.StatusUnauthorized {
			t.Fatalf("sub %q exp %d kind %d: status %d", sub, exp, kind, w.Code)
		}
	})
}
