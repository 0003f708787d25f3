package httpapi_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzRoomsExportBody posts arbitrary bodies as an admin who may export
// every room of the fixtures: whatever the body, the answer is a JSON
// object with a 200 or a 4xx, never a 5xx. The router runs in process over
// a real NATS server, so accepted bodies really create jobs and tasks.
func FuzzRoomsExportBody(f *testing.F) {
	for _, seed := range []string{
		`{"rid": "iu7jtPAhvEeAS5tNq", "type": "file", "dateFrom": "2000-01-01", "dateTo": "2021-11-25", "format": "html"}`,
		`{"rid": "GENERAL", "type": "file", "format": "json"}`,
		`{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "2021-11-25T10:00:00+02:00", "dateTo": "9999-12-31"}`,
		`{"rid": "GENERAL", "type": "file", "format": "json", "dateFrom": "0001-01-01T00:00:00Z"}`,
		`{"rid": "GENERAL", "type": "file", "format": "json", "dateTo": "9999-12-31T23:59:59.999999999-23:59"}`,
		`{"rid": "GENERAL", "type": "email", "toUsers": ["root"], "subject": "x"}`,
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
	e := newEnv(f, envOptions{})
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequestWithContext(t.Context(), http.MethodPost, roomsExport, bytes.NewReader(body))
		req.Header.Set("X-User-Id", adminID)
		req.Header.Set("X-Auth-Token", adminToken)
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		e.router.ServeHTTP(rec, req)
		if rec.Code >= 500 || (rec.Code != http.StatusOK && rec.Code/100 != 4) {
			t.Fatalf("body %q: status %d: %s", body, rec.Code, rec.Body)
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatalf("body %q: answer is not a JSON object: %q", body, rec.Body)
		}
		if rec.Code == http.StatusOK && out["success"] != true {
			t.Fatalf("body %q: 200 without success: %q", body, rec.Body)
		}
		if rec.Code != http.StatusOK && (out["success"] != false || out["errorType"] == nil) {
			t.Fatalf("body %q: error not in Rocket.Chat's shape: %q", body, rec.Body)
		}
	})
}
