package mytracker

import (
	"net/url"
	"slices"
	"strconv"
	"testing"
	"time"

	"dataport.dev/shared/recordquery"
)

// FuzzParseCreate feeds create.json arbitrary form bodies (as
// r.ParseForm would read them). A rejected request has a detail for its
// 400; an accepted one selects distinct columns of the events stream (no
// more than the limit), has dateFrom <= dateTo, and its filter parses and
// says exactly what the request asked for: the event type, the integer
// app ids and the two-letter countries, nothing else. Seeds live in
// testdata/fuzz/FuzzParseCreate.
func FuzzParseCreate(f *testing.F) {
	for _, s := range []string{
		"event=installs&selectors=id,createdTime&dateFrom=2026-06-01&dateTo=2026-06-30",
		"event=payments&selectors[]=id&selectors[]=revenue&dateFrom=2026-06-01&dateTo=2026-06-01&idApp=1,2&country=US,de",
		"event=installs&selectors=id&dateFrom=2026-06-02&dateTo=2026-06-01",
		"event=installs&selectors=id&dateFrom=2026-06-01&dateTo=2026-06-30&idApp=18446744073709551616",
		"event=installs&selectors=id&dateFrom=2026-06-01&dateTo=2026-06-30&idApp=-1",
		"event=installs&selectors=id&dateFrom=2026-06-01&dateTo=2026-06-30&country=!U",
		"event=installs&selectors=id&dateFrom=2026-06-01&dateTo=2026-06-30&country=%22x",
		"event=installs&selectors=id&dateFrom=2026-06-01&dateTo=2026-06-30&country=a%3B",
		"event=installs&selectors=id&dateFrom=0000-01-01&dateTo=9999-12-31",
		"event=installs%00&selectors=id%0D%0A&dateFrom=2026-06-01",
		"event=launches&selectors=nope",
		"event=customEvents&selectors=id&dateFrom=2026-02-30&dateTo=2026-03-01",
		"event=customEvents&selectors=id&dateFrom=2026-02-01&dateTo=2026-03-01&eventName[]=a%22%3B(b&eventName[]=c%5C&eventNameInvert=1",
		"event=payments&selectors=id&dateFrom=2026-02-01&dateTo=2026-03-01&idApp=1,2&SDKKey=00004399666566289449&isVerified=1&idCountry=188&idAd=7",
		"event=installs&selectors=id&dateFrom=2026-02-01&dateTo=2026-03-01&SDKKey=a%7Cb&idProject=x",
		"",
	} {
		f.Add(s)
	}
	loc := time.FixedZone("test", 3*3600)
	allowed, _ := recordquery.Fields(recordquery.ResourceEvents)
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return // ParseForm fails and create answers 400 Malformed request
		}
		p, bad := parseCreate(form, loc, DefaultMaxFields)
		if bad != "" {
			return
		}
		if len(p.selectors) > DefaultMaxFields {
			t.Fatalf("%q: %d selectors accepted", body, len(p.selectors))
		}
		for i, s := range p.selectors {
			if !slices.Contains(allowed, s) || slices.Contains(p.selectors[:i], s) {
				t.Fatalf("%q: selector %q accepted", body, s)
			}
		}
		if p.to.Before(p.from) || p.from.Location() != loc {
			t.Fatalf("%q: range %v..%v", body, p.from, p.to)
		}
		flt, err := recordquery.ParseFilter(p.filter)
		if err != nil {
			t.Fatalf("%q: filter %q does not parse: %v", body, p.filter, err)
		}
		if err := recordquery.ValidateFields(recordquery.ResourceEvents, flt.Fields()); err != nil {
			t.Fatalf("%q: filter %q: %v", body, p.filter, err)
		}
		exact := func(c recordquery.Condition, ok func(string) bool) {
			if len(c.Exclude) != 0 || len(c.Include) == 0 {
				t.Fatalf("%q: filter %q: condition %+v", body, p.filter, c)
			}
			for _, v := range c.Include {
				if v.Kind != recordquery.ValueExact || !ok(v.Text) {
					t.Fatalf("%q: filter %q: value %+v of %s", body, p.filter, v, c.Field)
				}
			}
		}
		isID := func(s string) bool { _, err := strconv.ParseUint(s, 10, 64); return err == nil }
		seen := map[string]bool{}
		check := func(c recordquery.Condition, inGroup bool) {
			if seen[c.Field] {
				t.Fatalf("%q: filter %q: %s twice", body, p.filter, c.Field)
			}
			seen[c.Field] = true
			if inGroup && c.Field != "appId" && c.Field != "sdkKey" {
				t.Fatalf("%q: filter %q: %s in a group", body, p.filter, c.Field)
			}
			switch c.Field {
			case "eventType":
				exact(c, func(s string) bool { return s == events[p.event] })
			case "appId", "accountId", "adId", "campaignId", "countryId", "projectId":
				exact(c, isID)
			case "sdkKey":
				exact(c, sdkKey)
			case "country":
				exact(c, countryCode)
			case "isVerified":
				exact(c, func(s string) bool { return p.event == "payments" && (s == "0" || s == "1") })
			case "eventName":
				// Names are free text, all included or all excluded.
				if p.event != "customEvents" || len(c.Include) > 0 == (len(c.Exclude) > 0) {
					t.Fatalf("%q: filter %q: eventName %+v", body, p.filter, c)
				}
				for _, v := range append(c.Include, c.Exclude...) {
					if v.Kind != recordquery.ValueExact {
						t.Fatalf("%q: filter %q: eventName value %+v", body, p.filter, v)
					}
				}
			default:
				t.Fatalf("%q: filter %q names %s", body, p.filter, c.Field)
			}
		}
		for i, c := range flt.Conds {
			if (i == 0) != (c.Field == "eventType") {
				t.Fatalf("%q: filter %q: conditions %v", body, p.filter, flt.Fields())
			}
			if c.Any != nil {
				if len(c.Any) != 2 {
					t.Fatalf("%q: filter %q: group %+v", body, p.filter, c)
				}
				for _, a := range c.Any {
					check(a, true)
				}
				continue
			}
			check(c, false)
		}
	})
}
