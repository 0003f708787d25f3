package mytracker

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"dataport.dev/shared/recordquery"
)

// createParams is a validated create.json request.
type createParams struct {
	// event is the myTracker event name (installs ...); eventType the
	// events stream's word for it.
	event, eventType string
	selectors        []string
	// from and to are the first and the last day, at 00:00 in the
	// configured zone.
	from, to time.Time
	// filter is the recordquery filter of the event type, apps and
	// countries.
	filter string
}

// parseCreate validates create.json's form values, with at most
// maxFields selectors. The error is the
// detail of a 400: every value that reaches the filter is checked
// against a strict alphabet first, so no request can add conditions of
// its own.
func parseCreate(form url.Values, loc *time.Location, maxFields int) (createParams, string) {
	p := createParams{event: form.Get("event")}
	typ, ok := events[p.event]
	if !ok {
		return p, fmt.Sprintf("event: must be one of installs, launches, payments, customEvents (got %q)", p.event)
	}
	p.eventType = typ
	p.selectors = formList(form, "selectors")
	if len(p.selectors) == 0 {
		return p, "selectors: at least one field is required"
	}
	if len(p.selectors) > maxFields {
		return p, fmt.Sprintf("selectors: %d fields; at most %d are allowed", len(p.selectors), maxFields)
	}
	if dup := recordquery.Duplicate(p.selectors); dup != "" {
		return p, fmt.Sprintf("selectors: %q is named twice; name each field once", dup)
	}
	if err := recordquery.ValidateFields(recordquery.ResourceEvents, p.selectors); err != nil {
		return p, "selectors: " + err.Error()
	}
	var err error
	if p.from, err = time.ParseInLocation(time.DateOnly, form.Get("dateFrom"), loc); err != nil {
		return p, "dateFrom: must be a date YYYY-MM-DD"
	}
	if p.to, err = time.ParseInLocation(time.DateOnly, form.Get("dateTo"), loc); err != nil {
		return p, "dateTo: must be a date YYYY-MM-DD"
	}
	if p.to.Before(p.from) {
		return p, "dateTo: must not be before dateFrom"
	}
	conds := []string{"eventType:" + typ}
	// idApp and SDKKey: "when you use idApp and SDKKey filters
	// simultaneously, you get data that meet at least one condition".
	var either []string
	apps, bad := idList(form, "idApp", "app ids")
	if bad != "" {
		return p, bad
	}
	if len(apps) > 0 {
		either = append(either, "appId:"+strings.Join(apps, ","))
	}
	keys := formList(form, "SDKKey")
	for _, k := range keys {
		if !sdkKey(k) {
			return p, "SDKKey: SDK keys are 1-64 letters and digits"
		}
	}
	if len(keys) > 0 {
		either = append(either, "sdkKey:"+quoteAll(keys, ""))
	}
	switch len(either) {
	case 1:
		conds = append(conds, either[0])
	case 2:
		conds = append(conds, "("+strings.Join(either, "|")+")")
	}
	for _, f := range idFilters {
		ids, bad := idList(form, f.param, f.what)
		if bad != "" {
			return p, bad
		}
		if len(ids) > 0 {
			conds = append(conds, f.field+":"+strings.Join(ids, ","))
		}
	}
	if cs := formList(form, "country"); len(cs) > 0 {
		for _, c := range cs {
			if !countryCode(c) {
				return p, "country: ISO 3166-1 alpha-2 codes"
			}
		}
		conds = append(conds, "country:"+strings.Join(cs, ","))
	}
	if v := formList(form, "isVerified"); len(v) > 0 {
		switch {
		case p.event != "payments":
			return p, "isVerified: only for payments"
		case len(v) > 1 || v[0] != "0" && v[0] != "1":
			return p, "isVerified: one value, 0 or 1"
		}
		conds = append(conds, "isVerified:"+v[0])
	}
	invert := form.Get("eventNameInvert")
	if invert != "" && invert != "0" && invert != "1" {
		return p, "eventNameInvert: 0 (off) or 1 (on)"
	}
	if names := formValues(form, "eventName"); len(names) > 0 {
		switch {
		case p.event != "customEvents":
			return p, "eventName: only for customEvents"
		case len(names) > maxEventNames:
			return p, fmt.Sprintf("eventName: %d names; at most %d are allowed", len(names), maxEventNames)
		}
		for _, n := range names {
			if n == "" || len(n) > maxEventNameLength || !utf8.ValidString(n) || strings.ContainsFunc(n, unicode.IsControl) {
				return p, fmt.Sprintf("eventName: names are 1-%d characters of text", maxEventNameLength)
			}
		}
		neg := ""
		if invert == "1" {
			neg = "!"
		}
		conds = append(conds, "eventName:"+quoteAll(names, neg))
	}
	p.filter = strings.Join(conds, ";")
	return p, ""
}

// Bounds of the eventName filter.
const (
	maxEventNames      = 100
	maxEventNameLength = 255
)

// idFilters are create.json's integer id filters other than idApp, with
// the events column each filters on.
var idFilters = []struct{ param, field, what string }{
	{"idAccount", "accountId", "account ids"},
	{"idAd", "adId", "tracking link ids"},
	{"idCampaign", "campaignId", "campaign ids"},
	{"idCountry", "countryId", "country ids"},
	{"idProject", "projectId", "project ids"},
}

// idList reads a list of integer ids ("1,454" or repeated "name[]"); the
// second result is the detail of a 400.
func idList(form url.Values, name, what string) ([]string, string) {
	ids := formList(form, name)
	for _, id := range ids {
		if _, err := strconv.ParseUint(id, 10, 64); err != nil {
			return nil, name + ": " + what + " are integers"
		}
	}
	return ids, ""
}

// sdkKey reports whether k can be an SDK key (myTracker's are 20 digits).
func sdkKey(k string) bool {
	if len(k) == 0 || len(k) > 64 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !asciiLetter(k[i]) && (k[i] < '0' || k[i] > '9') {
			return false
		}
	}
	return true
}

// quoteAll writes values as quoted filter values, each prefixed with neg,
// so no value can add conditions of its own.
func quoteAll(values []string, neg string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	out := make([]string, len(values))
	for i, v := range values {
		out[i] = neg + `"` + r.Replace(v) + `"`
	}
	return strings.Join(out, ",")
}

// countryCode reports whether c is two ASCII letters. Checking only the
// length let "!U", "*a" or `"x` through into the filter as negations,
// wildcards and broken quotes.
func countryCode(c string) bool {
	return len(c) == 2 && asciiLetter(c[0]) && asciiLetter(c[1])
}

func asciiLetter(b byte) bool { return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' }

// formValues reads a list given as repeated "name[]" (or "name"), whole:
// myTracker's eventName is a values array, and a name may hold commas.
func formValues(form url.Values, name string) []string {
	var out []string
	for _, k := range []string{name, name + "[]"} {
		out = append(out, form[k]...)
	}
	return out
}

// formList reads a form value; "a,b" and repeated "a[]" both give lists.
func formList(form url.Values, name string) []string {
	var out []string
	for _, k := range []string{name, name + "[]"} {
		for _, v := range form[k] {
			for _, p := range strings.Split(v, ",") {
				if p = strings.TrimSpace(p); p != "" {
					out = append(out, p)
				}
			}
		}
	}
	return out
}
