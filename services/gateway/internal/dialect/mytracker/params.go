package mytracker

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

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
	apps := formList(form, "idApp")
	for _, a := range apps {
		if _, err := strconv.ParseUint(a, 10, 64); err != nil {
			return p, "idApp: app ids are integers"
		}
	}
	if len(apps) > 0 {
		conds = append(conds, "appId:"+strings.Join(apps, ","))
	}
	if cs := formList(form, "country"); len(cs) > 0 {
		for _, c := range cs {
			if !countryCode(c) {
				return p, "country: ISO 3166-1 alpha-2 codes"
			}
		}
		conds = append(conds, "country:"+strings.Join(cs, ","))
	}
	p.filter = strings.Join(conds, ";")
	return p, ""
}

// countryCode reports whether c is two ASCII letters. Checking only the
// length let "!U", "*a" or `"x` through into the filter as negations,
// wildcards and broken quotes.
func countryCode(c string) bool {
	return len(c) == 2 && asciiLetter(c[0]) && asciiLetter(c[1])
}

func asciiLetter(b byte) bool { return b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' }

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
