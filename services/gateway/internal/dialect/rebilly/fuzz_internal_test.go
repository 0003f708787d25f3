package rebilly

import (
	"bytes"
	"encoding/json"
	"net/mail"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/plan"
	"dataport.dev/shared/recordquery"
)

// bodyFields are the names an invalidField of a create or update body
// starts with: the body itself or one of its fields (a type error names
// the nested field, e.g. "dateRange.start" or "fields.0").
var bodyFields = []string{"body", "id", "name", "format", "resource", "fields", "arguments",
	"emailNotification", "recurring", "dateRange"}

func checkInvalid(t *testing.T, body []byte, bad []invalidField) {
	t.Helper()
	if len(bad) == 0 {
		t.Fatalf("body %q: rejected without a reason", body)
	}
	for _, f := range bad {
		top := f.Field
		if i := strings.IndexAny(top, ".["); i >= 0 {
			top = top[:i]
		}
		if f.Message == "" || !slices.Contains(bodyFields, top) {
			t.Fatalf("body %q: invalid field %+v", body, f)
		}
	}
}

// FuzzDecodeRequest feeds decodeRequest and build arbitrary bodies. A
// rejected body is a list of named invalid fields (a 422), never a panic;
// an accepted one is a job whose every part is valid on its own: a known
// format and resource, columns of that resource, a filter and a sort that
// parse and name only its columns, a date range in order and within what
// a protobuf Timestamp holds, bare email addresses. Re-encoding the
// decoded request gives the same job. Seeds live in
// testdata/fuzz/FuzzDecodeRequest.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"name":"July","resource":"transactions","format":"csv","fields":["id","amount"],"arguments":{"filter":"status:approved","sort":"-createdTime","q":"USD"},"emailNotification":["ops@example.com"],"dateRange":{"start":"-7 days","end":"today"}}`,
		`{"name":"n","resource":"messages","format":"json","dateRange":{"start":"2026-01-01","end":"2026-02-01","field":"createdTime"}}`,
		`{"name":"n","resource":"events","format":"pdf","recurring":{"instruction":"FREQ=DAILY;BYHOUR=6","start":"2026-06-01T00:00:00Z"}}`,
		`{"name":"n","resource":"transactions","format":"csv","dateRange":{"start":"@999999999999","end":"@-999999999999"}}`,
		`{"name":"n","resource":"transactions","format":"csv","dateRange":{"start":"9999-12-31T23:59:59-23:59","end":"+1000000 years"}}`,
		`{"name":"n","resource":"transactions","format":"csv","emailNotification":["a@b.c\r\nBcc: x@y.z","\"Q\" <a@b.c>"]}`,
		`{"name":"\u0000","resource":"transactions\u0000","format":"csv\r\n"}`,
		`{"name":1e400,"resource":9223372036854775807,"format":-1}`,
		`{"name":"n","resource":"transactions","format":"csv","fields":[1,2]}`,
		`{"name":"n","resource":"transactions","format":"csv","arguments":[]}`,
		`{"name":"n","resource":"transactions","format":"csv","recurring":{"instruction":"FREQ=SECONDLY;INTERVAL=0"}}`,
		`{"id":"../../x","name":"n"}`,
		`{"name":"n"} {"name":"m"}`,
		`{"name":` + strings.Repeat("[", 20000) + `}`,
		`[` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat("}", 5000) + `]`,
		`{"name":"` + strings.Repeat("é", 300) + `","resource":"users","format":"xml"}`,
		"\xff\xfe{}", "", "null", `"x"`, `{`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)
	loc := time.FixedZone("test", -5*3600)
	lim := plan.Limits{}.WithDefaults()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, bad := decodeRequest(bytes.NewReader(body))
		if bad != nil {
			checkInvalid(t, body, bad)
			return
		}
		job, bad, err := build(t.Context(), plan.Catalog{}, req, now, loc, lim)
		if err != nil {
			t.Fatalf("body %q: the built-in catalog failed: %v", body, err)
		}
		if bad != nil {
			checkInvalid(t, body, bad)
			return
		}
		checkJob(t, body, job, lim)

		again, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("body %q: re-encode: %v", body, err)
		}
		req2, bad := decodeRequest(bytes.NewReader(again))
		if bad != nil {
			t.Fatalf("body %q: re-encoded as %s, rejected: %+v", body, again, bad)
		}
		job2, bad, _ := build(t.Context(), plan.Catalog{}, req2, now, loc, lim)
		if bad != nil || !proto.Equal(job, job2) {
			t.Fatalf("body %q: re-encoded as %s gives %v, %+v; want %v", body, again, job2, bad, job)
		}
	})
}

// checkJob asserts what build promises of an accepted request.
func checkJob(t *testing.T, body []byte, job *exportv1.Job, lim plan.Limits) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("body %q: accepted job %v: "+format, append([]any{body, job}, args...)...)
	}
	if n := job.GetName(); strings.TrimSpace(n) == "" || !utf8.ValidString(n) || utf8.RuneCountInString(n) > 255 {
		fail("name %q", n)
	}
	if formatWord(job.GetFormat()) == "" {
		fail("format %v", job.GetFormat())
	}
	sc := job.GetRecords()
	cols, ok := recordquery.Fields(sc.GetResource())
	if !ok {
		fail("resource %q", sc.GetResource())
	}
	named := func(what string, fields []string) {
		for _, f := range fields {
			if !slices.Contains(cols, recordquery.Canonical(sc.GetResource(), f)) {
				fail("%s names %q", what, f)
			}
		}
	}
	if len(sc.GetFields()) == 0 || len(sc.GetFields()) > lim.MaxFields {
		fail("%d fields", len(sc.GetFields()))
	}
	if len(job.GetNotifyEmails()) > lim.MaxEmailRecipients {
		fail("%d email recipients", len(job.GetNotifyEmails()))
	}
	named("fields", sc.GetFields())
	flt, err := recordquery.ParseFilter(sc.GetFilter())
	if err != nil {
		fail("filter: %v", err)
	}
	named("filter", flt.Fields())
	keys, err := recordquery.ParseSort(sc.GetSort())
	if err != nil {
		fail("sort: %v", err)
	}
	named("sort", recordquery.SortFields(keys))
	if dr := sc.GetDateRange(); dr != nil {
		named("dateRange.field", []string{dr.GetField()})
		if dr.GetFrom().CheckValid() != nil || dr.GetTo().CheckValid() != nil || dr.GetTo().AsTime().Before(dr.GetFrom().AsTime()) {
			fail("date range %v..%v", dr.GetFrom(), dr.GetTo())
		}
	}
	for _, e := range job.GetNotifyEmails() {
		a, err := mail.ParseAddress(e)
		if err != nil || a.Address != e || strings.ContainsAny(e, "\r\n") {
			fail("email %q", e)
		}
	}
	if rc := job.GetRecurrence(); rc != nil && (rc.GetInstruction() == "" || rc.GetStart().CheckValid() != nil) {
		fail("recurrence %v", rc)
	}
}
