package native

import (
	"net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/plan"
	"dataport.dev/shared/egress"
)

// createFields are the first names of the fields an Invalid may name:
// the body's own, or what the decoder names (an unknown field).
var createFields = []string{"body", "kind", "format", "name", "room", "userData", "records", "recurring", "notify"}

// FuzzDecodeCreate feeds the create body's parser and checks arbitrary
// bodies. Nothing panics; a refusal names a field and says what is wrong;
// an accepted request is what the handler may plan without looking again:
// a known kind in one of its formats, dates in order, only public
// webhooks, bare addresses, a records scope exactly for record exports,
// and recurrence only for them.
func FuzzDecodeCreate(f *testing.F) {
	for _, s := range []string{
		`{"kind": "room", "room": {"id": "GENERAL", "from": "2024-01-01", "to": "2024-01-31"}, "format": "html"}`,
		`{"kind": "user-data", "userData": {"fullExport": true}, "format": "json"}`,
		`{"kind": "records", "format": "jsonl", "records": {"resource": "transactions", "fields": ["id"], "filter": "currency:USD", "sort": "-createdTime",
			"dateRange": {"start": "-7 days", "end": "now"}, "chunking": {"maxRows": 1000, "gzip": true}}, "recurring": {"instruction": "FREQ=DAILY"}}`,
		`{"kind": "room", "room": {"id": "GENERAL"}, "notify": {"emails": ["a@example.com"], "webhooks": ["https://hooks.example.com/x", "http://127.0.0.1/"]}}`,
		`{"kind": "records", "records": {"resource": "events", "fields": []}, "recurring": {"start": "x"}}`,
		`{"kind": 1}`, `[]`, `{"kind": "room"} x`, `{"colour": 1}`, ``,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	lim := plan.Limits{}.WithDefaults()
	guard := egress.NewGuard(nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		req, bad := decodeCreate(body)
		if bad != nil {
			checkInvalid(t, body, bad)
			return
		}
		c, bad := req.check(now, time.UTC, lim, guard)
		if bad != nil {
			checkInvalid(t, body, bad)
			return
		}
		kind := word(c.kind)
		if !slices.Contains(kindFormats[kind], c.format) {
			t.Fatalf("%q: accepted %s export as %s", body, kind, word(c.format))
		}
		// A resource that is not built in is the registry's to check once
		// the organization is known, so its scope is still a request here.
		if (c.kind == exportv1.JobKind_JOB_KIND_RECORDS) != (c.records != nil || c.recordsReq != nil) ||
			(c.records != nil && c.recordsReq != nil) {
			t.Fatalf("%q: %s export with records scope %v, request %v", body, kind, c.records, c.recordsReq)
		}
		if c.recordsReq != nil {
			if r := c.recordsReq.Resource; r == nil || *r == "" {
				t.Fatalf("%q: a registry resource without a name", body)
			}
		}
		if c.recurrence != nil && c.kind != exportv1.JobKind_JOB_KIND_RECORDS {
			t.Fatalf("%q: a %s export recurs", body, kind)
		}
		if c.kind == exportv1.JobKind_JOB_KIND_ROOM && c.roomID == "" {
			t.Fatalf("%q: room export without a room", body)
		}
		if c.from != nil && c.to != nil && c.from.AsTime().After(c.to.AsTime()) {
			t.Fatalf("%q: from %v after to %v", body, c.from.AsTime(), c.to.AsTime())
		}
		for _, u := range c.webhooks {
			if _, err := guard.Check(u); err != nil {
				t.Fatalf("%q: accepted webhook %q: %v", body, u, err)
			}
		}
		for _, e := range c.emails {
			if a, err := mail.ParseAddress(e); err != nil || a.Address != e {
				t.Fatalf("%q: accepted address %q", body, e)
			}
		}
		if len(c.emails) > lim.MaxEmailRecipients || len(c.webhooks) > lim.MaxWebhooks {
			t.Fatalf("%q: %d addresses, %d webhooks", body, len(c.emails), len(c.webhooks))
		}
	})
}

func checkInvalid(t *testing.T, body []byte, bad []plan.Invalid) {
	t.Helper()
	for _, b := range bad {
		if b.Message == "" || b.Field == "" {
			t.Fatalf("%q: refusal without field or message: %+v", body, b)
		}
		first, _, _ := strings.Cut(b.Field, ".")
		first, _, _ = strings.Cut(first, "[")
		// An unknown field is named as sent, wherever it was.
		if !slices.Contains(createFields, first) && !strings.Contains(b.Message, "not a field") {
			t.Fatalf("%q: refusal names %q", body, b.Field)
		}
	}
}
