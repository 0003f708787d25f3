package recordquery

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// The fuzz targets below run briefly in `make fuzz-smoke`; their seed
// corpora (including inputs that once broke a parser) are committed under
// testdata/fuzz/<FuzzName>/.

// renderFilter writes f back in filter syntax, so that parsing the result
// gives f again. Exact values are always quoted; wildcards and ranges
// cannot be, and are written bare. A bare value that begins with '!'
// (which the parser only yields after a separator skipSpaces leaves alone,
// such as a newline, or after a negation's own '!') gets a newline in
// front, so that its '!' is not read as a negation.
func renderFilter(f Filter) string {
	var conds []string
	for _, c := range f.Conds {
		if c.Any != nil {
			var alts []string
			for _, a := range c.Any {
				alts = append(alts, renderCondition(a))
			}
			conds = append(conds, "("+strings.Join(alts, "|")+")")
			continue
		}
		conds = append(conds, renderCondition(c))
	}
	return strings.Join(conds, ";")
}

func renderCondition(c Condition) string {
	var vals []string
	for _, v := range c.Include {
		vals = append(vals, renderValue(v))
	}
	for _, v := range c.Exclude {
		vals = append(vals, "!"+renderValue(v))
	}
	return c.Field + ":" + strings.Join(vals, ",")
}

func renderValue(v Value) string {
	bare := func(s string) string {
		if strings.HasPrefix(s, "!") {
			return "\n" + s
		}
		return s
	}
	switch v.Kind {
	case ValueNull:
		return "null"
	case ValueWildcard:
		return bare(v.Text)
	case ValueRange:
		return bare(v.Lo + " .. " + v.Hi)
	}
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(v.Text) + `"`
}

func checkParseError(t *testing.T, err error, param, input string) {
	t.Helper()
	var pe *ParseError
	if !errors.As(err, &pe) {
		t.Fatalf("%s %q: error %v (%T) is not a *ParseError", param, input, err, err)
	}
	if pe.Param != param || pe.Pos < 0 || pe.Pos > len(input) || pe.Msg == "" {
		t.Fatalf("%s %q: malformed ParseError %+v", param, input, pe)
	}
}

func validField(f string) bool {
	if f == "" || f[0] == '.' || f[len(f)-1] == '.' {
		return false
	}
	for i := 0; i < len(f); i++ {
		if !validFieldByte(f[i]) {
			return false
		}
	}
	return true
}

// FuzzParseFilter: a rejected filter is a *ParseError pointing inside the
// input; an accepted one names only well-formed fields, survives a
// render/parse round trip, can be matched against any record without
// panicking, and passes ValidateFields only when every field it names is a
// column (or alias) of the resource.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{
		"status:approved", "status:approved,declined;currency:USD", "status:!declined",
		"amount:1..10", "amount:..10", "createdTime:2026-01-01..2026-02-01T00:00:00Z",
		"description:*refund*", "topic:null", "topic:!null", `description:"a, b; c \" \\ d"`,
		"u.username:alice", "a:\n!x*", "amount:1. ..2", "x:@list", "amount:10..1", "a:", ":b",
		`d:"a\"b"`, "x:!null", "a:*b*", "a:..", ":", ";;", "a:\"", "é:ü", "a:!!!x",
		"(appId:1,454|sdkKey:0042)", "(a:1|b:2);c:3", "(a:1", "((a:1))", "(a:\"|\")", "(a:x*|b:1..2)", "a:1|b", "()",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseFilter(s)
		if err != nil {
			checkParseError(t, err, "filter", s)
			return
		}
		var conds []Condition
		for _, c := range got.Conds {
			if c.Any != nil {
				if c.Field != "" || len(c.Include)+len(c.Exclude) != 0 {
					t.Fatalf("filter %q: a group with a field or values: %+v", s, c)
				}
				conds = append(conds, c.Any...)
				continue
			}
			conds = append(conds, c)
		}
		for _, c := range conds {
			if c.Any != nil {
				t.Fatalf("filter %q: nested group", s)
			}
			if !validField(c.Field) {
				t.Fatalf("filter %q: accepted field %q", s, c.Field)
			}
			if len(c.Include)+len(c.Exclude) == 0 {
				t.Fatalf("filter %q: condition on %q without values", s, c.Field)
			}
		}
		again, err := ParseFilter(renderFilter(got))
		if err != nil {
			t.Fatalf("filter %q: rendered as %q, which does not parse: %v", s, renderFilter(got), err)
		}
		if !reflect.DeepEqual(got, again) {
			t.Fatalf("filter %q: round trip through %q gives %+v, want %+v", s, renderFilter(got), again, got)
		}
		rec := map[string]any{"s": s, "n": float64(len(s)), "t": time.Unix(int64(len(s)), 0), "l": []string{s, ""}, "b": true}
		got.Match(func(field string) (any, bool) {
			v, ok := rec[field[:1]]
			return v, ok
		})
		for _, r := range Resources() {
			if ValidateFields(r, got.Fields()) != nil {
				continue
			}
			cols, _ := Fields(r)
			for _, field := range got.Fields() {
				if !slices.Contains(cols, Canonical(r, field)) {
					t.Fatalf("filter %q: field %q passes ValidateFields for %s but is no column", s, field, r)
				}
			}
		}
	})
}

// FuzzParseSort: a rejected sort is a *ParseError; an accepted one names
// each well-formed field once and round-trips.
func FuzzParseSort(f *testing.F) {
	for _, s := range []string{"-createdTime,name", "+a", "a,a", "--a", "+-a", ",", "a,,b", "-", "", " a , -b ", ".a", "a.", "\x00", "é"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		keys, err := ParseSort(s)
		if err != nil {
			checkParseError(t, err, "sort", s)
			return
		}
		seen := map[string]bool{}
		var parts []string
		for _, k := range keys {
			if !validField(k.Field) || k.Field[0] == '-' || seen[k.Field] {
				t.Fatalf("sort %q: accepted key %+v", s, k)
			}
			seen[k.Field] = true
			p := k.Field
			if k.Desc {
				p = "-" + p
			}
			parts = append(parts, p)
		}
		again, err := ParseSort(strings.Join(parts, ","))
		if err != nil || !reflect.DeepEqual(keys, again) {
			t.Fatalf("sort %q: round trip gives %+v, %v; want %+v", s, again, err, keys)
		}
	})
}

// FuzzResolveDate: any expression either resolves to a time in years
// 0-9999 (in the caller's zone), the same on every call, or fails with a
// message; an RFC 3339 time in range resolves to itself.
func FuzzResolveDate(f *testing.F) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC).Unix()
	for _, s := range []string{
		"2026-05-01T10:00:00Z", "2026-05-01", "2026-05-01 10:00", "@1700000000", "@999999999999", "@-999999999999",
		"@9223372036854775807", "yesterday noon", "first day of last month midnight", "last day of next month",
		"2026-05-01 +1 week", "-7 days", "-7days", "3 weeks ago", "monday this week", "last day of next month 23:59:59", "next monday", "+1000000 years", "1000001 days",
		"monday next week", "next friday", "25:61", "9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+23:59",
		"\x00", "now\r\n", "today\u00a0",
	} {
		f.Add(s, now)
	}
	f.Fuzz(func(t *testing.T, s string, nowUnix int64) {
		// A clock far outside real use is not what this is about.
		nowUnix %= 200 * 365 * 86400
		loc := time.FixedZone("test", 5*3600+30*60)
		clock := time.Unix(1_700_000_000+nowUnix, 0)
		got, err := ResolveDate(s, clock, loc)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("date %q: empty error", s)
			}
			return
		}
		if got.Location() != loc {
			t.Fatalf("date %q: result in %v, want %v", s, got.Location(), loc)
		}
		if got.Year() < 0 || got.Year() > 9999 {
			t.Fatalf("date %q: accepted year %d", s, got.Year())
		}
		again, err := ResolveDate(s, clock, loc)
		if err != nil || !again.Equal(got) {
			t.Fatalf("date %q: second call gives %v, %v; first %v", s, again, err, got)
		}
		if want, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(s)); err == nil && !want.Equal(got) {
			t.Fatalf("date %q: RFC 3339 resolves to %v, want %v", s, got, want)
		}
	})
}

// FuzzValidateFields: a list that passes names only columns or aliases,
// and a rejection says why.
func FuzzValidateFields(f *testing.F) {
	for _, s := range []string{"transactions\x00id,amount", "messages\x00createdTime,u.username", "events\x00", "nope\x00id", "users\x00id,id", "rooms\x00\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		resource, list, _ := strings.Cut(s, "\x00")
		fields := strings.Split(list, ",")
		err := ValidateFields(resource, fields)
		cols, known := Fields(resource)
		if err != nil {
			if err.Error() == "" {
				t.Fatalf("%q: empty error", s)
			}
			return
		}
		if !known {
			t.Fatalf("%q: unknown resource accepted", s)
		}
		for _, field := range fields {
			if !slices.Contains(cols, Canonical(resource, field)) {
				t.Fatalf("%q: field %q accepted", s, field)
			}
		}
	})
}
