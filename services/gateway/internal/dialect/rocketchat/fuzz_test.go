package rocketchat_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"dataport.dev/services/gateway/internal/gatewaytest"
)

// FuzzRoomsExportBody posts arbitrary bodies as an admin who may export
// every room of the fixtures: whatever the body, the answer is a JSON
// object with a 200 or a 4xx, never a 5xx. Requests go to a real HTTP
// server over a real NATS server, so accepted bodies really create jobs
// and tasks.
func FuzzRoomsExportBody(f *testing.F) {
	for _, seed := range []string{
		seedExample,
		`{"rid": "GENERAL", "type": "file", "format": "json"}`,
		`{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "2021-11-25T10:00:00+02:00", "dateTo": "9999-12-31"}`,
		`{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "0001-01-01T00:00:00Z"}`,
		`{"rid": "GENERAL", "type": "file", "format": "json", "dateTo": "9999-12-31T23:59:59.999999999-23:59"}`,
		`{"rid": "GENERAL", "type": "email", "toUsers": ["root"], "subject": "x"}`,
		`{"rid": "GENERAL", "type": "email", "toUsers": ["root", "alice"], "toEmails": ["a@b.c"], "subject": "x", "messages": ["m1"]}`,
		`{"rid": "GENERAL", "type": "email", "toEmails": ["\"q\" <a@b.c>", "=?utf-8?q?x?= <b@c.d>"], "subject": "x", "messages": ["m1"]}`,
		`{"rid": "DirectRoomId00001", "type": "file", "format": "json"}`,
		`{"rid": "a.b.>", "type": "file", "format": "json"}`,
		`{"rid": "` + "\u0000" + `", "type": "file"}`,
		`{"rid": ["GENERAL"], "type": {"x": 1}}`,
		`{"rid": "GENERAL", "type": "file", "format": "json", "rid": "other"}`,
		`{"rid": null, "type": null, "format": null, "dateFrom": null}`,
		`{"dateFrom": 1e400}`,
		`[1, 2, 3]`,
		`"just a string"`,
		`null`,
		``,
		`{`,
		"\xff\xfe\x00",
	} {
		f.Add([]byte(seed))
	}
	e := gatewaytest.New(f, gatewaytest.Options{})
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.URL+roomsExport, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-User-Id", gatewaytest.AdminID)
		req.Header.Set("X-Auth-Token", gatewaytest.AdminToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("body %q: answer is not a JSON object: %v", body, err)
		}
		if resp.StatusCode >= 500 || (resp.StatusCode != http.StatusOK && resp.StatusCode/100 != 4) {
			t.Fatalf("body %q: status %d: %v", body, resp.StatusCode, out)
		}
		if resp.StatusCode == http.StatusOK && out["success"] != true {
			t.Fatalf("body %q: 200 without success: %v", body, out)
		}
		if resp.StatusCode != http.StatusOK && (out["success"] != false || out["errorType"] == nil) {
			t.Fatalf("body %q: error not in Rocket.Chat's shape: %v", body, out)
		}
	})
}

// FuzzRequestDataDownloadQuery sends users.requestDataDownload arbitrary
// query strings, signed in or not. Signed in, the answer is a 200 with
// success and an operation whose fullExport is exactly "fullExport=true"
// of the query (Rocket.Chat compares with 'true'); anonymous, it is
// Rocket.Chat's 401 body. Never a 5xx. Seeds live in
// testdata/fuzz/FuzzRequestDataDownloadQuery.
func FuzzRequestDataDownloadQuery(f *testing.F) {
	for _, s := range []string{
		"fullExport=true", "fullExport=false", "fullExport=TRUE", "fullExport=true&fullExport=false", "fullExport=1",
		"fullExport=%00", "fullExport=true%0D%0A", "fullExport=%zz", "fullExport", "=&&=", "fullExport=9223372036854775807",
		"exportOperation=../../x&roomList[]=GENERAL", "fullExport=t%72ue", ";fullExport=true",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	e := gatewaytest.New(f, gatewaytest.Options{})
	f.Fuzz(func(t *testing.T, rawQuery string, anonymous bool) {
		if strings.ContainsFunc(rawQuery, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == '#' }) {
			t.Skip("not sendable on a request line")
		}
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, e.URL+dataDownload, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.URL.RawQuery = rawQuery
		if !anonymous {
			req.Header.Set("X-User-Id", gatewaytest.UserID)
			req.Header.Set("X-Auth-Token", gatewaytest.UserToken)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatalf("query %q: answer is not a JSON object: %v", rawQuery, err)
		}
		if anonymous {
			if resp.StatusCode != http.StatusUnauthorized || out["status"] != "error" || out["message"] == nil {
				t.Fatalf("query %q: anonymous answer %d %v", rawQuery, resp.StatusCode, out)
			}
			return
		}
		if resp.StatusCode != http.StatusOK || out["success"] != true {
			t.Fatalf("query %q: status %d: %v", rawQuery, resp.StatusCode, out)
		}
		q, _ := url.ParseQuery(rawQuery)
		op, _ := out["exportOperation"].(map[string]any)
		if op["_id"] == "" || op["fullExport"] != (q.Get("fullExport") == "true") {
			t.Fatalf("query %q: operation %v", rawQuery, op)
		}
	})
}
