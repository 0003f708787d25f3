// Package recordquery is the query language of record exports, shared by the
// gateway (which validates requests and resolves relative dates when a run is
// planned) and the exporter (which applies filter, sort, text search and
// column selection to every record it streams).
//
// It knows the exportable resources and their columns, parses Rebilly's
// filter and sort syntax, resolves absolute and relative dates in a given
// time zone, and evaluates parsed queries against records seen through a
// getter function, so it does not depend on how records are stored.
package recordquery

import (
	"fmt"
	"slices"
	"strings"
)

// Resources that can be exported as records.
const (
	ResourceTransactions = "transactions"
	ResourceEvents       = "events"
	ResourceMessages     = "messages"
	ResourceRooms        = "rooms"
	ResourceUsers        = "users"
)

// resourceSpec describes the columns of one resource. fields is in the
// default column order; text lists the columns a q search looks at;
// timeField is the column a date range applies to by default; aliases map
// accepted alternative names onto columns.
type resourceSpec struct {
	fields    []string
	defaults  []string
	text      []string
	timeField string
	aliases   map[string]string
}

var resources = map[string]resourceSpec{
	ResourceTransactions: {
		fields:    []string{"id", "customerId", "amount", "currency", "status", "type", "gateway", "description", "createdTime", "updatedTime"},
		text:      []string{"id", "customerId", "currency", "status", "type", "gateway", "description"},
		timeField: "createdTime",
	},
	ResourceEvents: {
		// The columns after updatedTime are what myTracker's raw export
		// filters on (SDKKey, idAccount, idAd, idCampaign, idCountry,
		// idProject, isVerified, eventName); they are not default columns,
		// so exports that name no fields are as they were.
		fields: []string{"id", "eventType", "appId", "deviceId", "country", "platform", "revenue", "createdTime", "updatedTime",
			"sdkKey", "accountId", "adId", "campaignId", "countryId", "projectId", "isVerified", "eventName"},
		defaults:  []string{"id", "eventType", "appId", "deviceId", "country", "platform", "revenue", "createdTime", "updatedTime"},
		text:      []string{"id", "eventType", "deviceId", "country", "platform", "eventName"},
		timeField: "createdTime",
	},
	ResourceMessages: {
		fields:    []string{"_id", "rid", "ts", "u._id", "u.username", "u.name", "msg", "t", "tmid", "tcount", "editedAt", "editedBy.username", "attachments"},
		defaults:  []string{"_id", "rid", "ts", "u.username", "msg"},
		text:      []string{"_id", "rid", "u.username", "u.name", "msg", "attachments"},
		timeField: "ts",
		aliases:   map[string]string{"createdTime": "ts", "id": "_id"},
	},
	ResourceRooms: {
		fields:    []string{"id", "name", "type", "topic", "usernames", "createdTime"},
		text:      []string{"id", "name", "topic", "usernames"},
		timeField: "createdTime",
	},
	ResourceUsers: {
		fields:    []string{"id", "username", "name", "email", "roles", "createdTime"},
		text:      []string{"id", "username", "name", "email", "roles"},
		timeField: "createdTime",
	},
}

// Resources lists the exportable resources in a stable order.
func Resources() []string {
	out := make([]string, 0, len(resources))
	for r := range resources {
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

// Fields returns every known column of a resource in default order; ok is
// false for an unknown resource. The slice is a copy.
func Fields(resource string) ([]string, bool) {
	s, ok := resources[resource]
	if !ok {
		return nil, false
	}
	return slices.Clone(s.fields), true
}

// DefaultFields returns the columns an export has when the request names
// none; nil for an unknown resource.
func DefaultFields(resource string) []string {
	s, ok := resources[resource]
	if !ok {
		return nil
	}
	if s.defaults != nil {
		return slices.Clone(s.defaults)
	}
	return slices.Clone(s.fields)
}

// TextFields returns the columns a q search looks at.
func TextFields(resource string) []string {
	return slices.Clone(resources[resource].text)
}

// TimeField returns the column a date range applies to when the request
// names none ("createdTime", or "ts" for messages).
func TimeField(resource string) string { return resources[resource].timeField }

// Canonical maps an accepted alias (e.g. "createdTime" for messages, whose
// time column is "ts") onto the column name; other names are returned as
// they are.
func Canonical(resource, field string) string {
	if c, ok := resources[resource].aliases[field]; ok {
		return c
	}
	return field
}

// ValidateFields checks that every field is a column (or alias) of the
// resource; the error names the first unknown field.
func ValidateFields(resource string, fields []string) error {
	s, ok := resources[resource]
	if !ok {
		return fmt.Errorf("unknown resource %q (known: %s)", resource, strings.Join(Resources(), ", "))
	}
	for _, f := range fields {
		if _, alias := s.aliases[f]; alias || slices.Contains(s.fields, f) {
			continue
		}
		return fmt.Errorf("unknown field %q for resource %s (known: %s)", f, resource, strings.Join(s.fields, ", "))
	}
	return nil
}

// Duplicate returns the first column name that occurs twice in fields, or
// "": a repeated column is a mistake of the request, and each copy would
// cost a column in every row.
func Duplicate(fields []string) string {
	seen := make(map[string]bool, len(fields))
	for _, f := range fields {
		if seen[f] {
			return f
		}
		seen[f] = true
	}
	return ""
}
