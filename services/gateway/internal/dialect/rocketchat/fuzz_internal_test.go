package rocketchat

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"dataport.dev/services/gateway/internal/plan"
)

// FuzzRoomsExportParams decodes arbitrary rooms.export bodies the way the
// handler does and checks what its validation promises of an accepted
// one: a mail subject that is one header line of at most 998 bytes,
// bounded lists of well-formed message ids, and dates that are valid
// protobuf Timestamps in order, a plain dateTo ending at 23:59:59.999 of
// its day. Seeds live in testdata/fuzz/FuzzRoomsExportParams.
func FuzzRoomsExportParams(f *testing.F) {
	for _, s := range []string{
		`{"rid":"GENERAL","type":"file","format":"json","dateFrom":"2021-11-25","dateTo":"2021-11-25"}`,
		`{"rid":"GENERAL","type":"file","dateFrom":"2021-11-25T10:00:00+02:00","dateTo":"9999-12-31"}`,
		`{"rid":"GENERAL","type":"file","dateFrom":"0000-01-01","dateTo":"9999-12-31T23:59:59.999999999-23:59"}`,
		`{"rid":"GENERAL","type":"file","dateFrom":"2021-11-26","dateTo":"2021-11-25"}`,
		`{"rid":"GENERAL","type":"email","subject":"a\r\nBcc: x@y.z","messages":["m1"],"toEmails":["a@b.c"]}`,
		`{"rid":"GENERAL","type":"email","subject":"x","messages":["../m1","m\u0000"]}`,
		`{"rid":"GENERAL","type":"email","subject":"` + strings.Repeat("s", 999) + `","messages":["m1"]}`,
		`{"rid":"GENERAL","type":"email","subject":"x","messages":[]}`,
		`{"rid":"GENERAL","type":"email","messages":["m1"]}`,
		`{"dateFrom":1e400,"dateTo":9223372036854775807}`,
		`{"rid":"` + strings.Repeat("[", 10001) + `"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var b roomsExportBody
		if json.Unmarshal(raw, &b) != nil {
			return // answered error-invalid-params
		}
		if b.Type == "email" && checkMailParams(&b) == "" {
			s := *b.Subject
			if len(s) > maxSubjectBytes || strings.ContainsAny(s, "\r\n") || len(b.Messages) == 0 ||
				len(b.Messages) > maxMailMessages || len(b.ToUsers)+len(b.ToEmails) > maxRecipients {
				t.Fatalf("body %q: mail params accepted", raw)
			}
			for _, m := range b.Messages {
				if !messageIDPattern.MatchString(m) {
					t.Fatalf("body %q: message id %q accepted", raw, m)
				}
			}
		}
		from, to, err := plan.DateRange(b.DateFrom, b.DateTo)
		if err != nil {
			return // answered error-invalid-dates
		}
		if (from == nil) != (b.DateFrom == "") || (to == nil) != (b.DateTo == "") {
			t.Fatalf("body %q: open ends %v %v", raw, from, to)
		}
		if from != nil && from.CheckValid() != nil || to != nil && to.CheckValid() != nil {
			t.Fatalf("body %q: invalid timestamps %v %v", raw, from, to)
		}
		if from != nil && to != nil && from.AsTime().After(to.AsTime()) {
			t.Fatalf("body %q: %v after %v", raw, from.AsTime(), to.AsTime())
		}
		if day, err := time.Parse(time.DateOnly, b.DateTo); err == nil {
			if want := day.Add(24*time.Hour - time.Millisecond); !to.AsTime().Equal(want) {
				t.Fatalf("body %q: dateTo ends at %v, want %v", raw, to.AsTime(), want)
			}
		}
	})
}
