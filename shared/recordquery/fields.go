// Package recordquery is the query language of record exports, shared by the
// gateway (which validates requests and resolves relative dates when a run is
// planned) and the exporter (which applies filter, sort, text search and
// column selection to every record it streams).
//
// It describes exportable resources and their columns (Resource; the host
// publishes them in a registry, see shared/resources, and the built-in ones
// are defined here), parses Rebilly's filter and sort syntax, resolves
// absolute and relative dates in a given time zone, and evaluates parsed
// queries against records seen through a getter function, so it does not
// depend on how records are stored.
package recordquery

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
)

// Built-in resources: the ones every installation has. They are registered
// like any other resource (shared/resources registers them at start).
const (
	ResourceTransactions = "transactions"
	ResourceEvents       = "events"
	ResourceMessages     = "messages"
	ResourceRooms        = "rooms"
	ResourceUsers        = "users"
)

// Sources say where a resource's records come from. Only SourceRecords
// takes new resources: the others are the workspace's directory and chat
// data, read by code that knows their shape and access rules.
const (
	// SourceRecords: the records stream, one subject per resource and
	// organization (records.<resource>.<organization>).
	SourceRecords = "records"
	// SourceChat: the chat stream (messages).
	SourceChat = "chat"
	// SourceRooms and SourceUsers: the rooms and users buckets.
	SourceRooms = "rooms"
	SourceUsers = "users"
)

// FieldType is what a column holds, where it matters: a date range applies
// only to a datetime column. Empty means untyped (compared as found).
type FieldType string

// Field types.
const (
	TypeString   FieldType = "string"
	TypeNumber   FieldType = "number"
	TypeBoolean  FieldType = "boolean"
	TypeDatetime FieldType = "datetime"
	TypeList     FieldType = "list"
)

// Field is one column of a resource.
type Field struct {
	Name string    `json:"name"`
	Type FieldType `json:"type,omitempty"`
}

// Resource describes one exportable resource: its columns in default
// order, the columns an export has when it names none, the columns a q
// search looks at, the column a date range applies to by default, accepted
// alternative column names, and who may export it.
//
// It is stored as JSON in the resource registry, so the JSON names are a
// contract with the hosts that register resources.
type Resource struct {
	Name string `json:"name"`
	// Organization owns the resource: only its exports see it. Empty:
	// every organization's (each still reads only its own records).
	Organization string `json:"organization,omitempty"`
	// Source is where records come from; empty is SourceRecords.
	Source string  `json:"source,omitempty"`
	Fields []Field `json:"fields"`
	// DefaultFields are the columns when a request names none; empty:
	// every field.
	DefaultFields []string `json:"defaultFields,omitempty"`
	// TextFields are the columns a q search looks at; empty: the string
	// and untyped fields.
	TextFields []string `json:"textFields,omitempty"`
	// DateField is the default column of a date range; empty:
	// createdTime.
	DateField string            `json:"dateField,omitempty"`
	Aliases   map[string]string `json:"aliases,omitempty"`
	// Builtin marks the definitions this package owns: they are brought
	// up to date at start, while the host's own entries are left alone.
	Builtin bool `json:"builtin,omitempty"`
}

// SourceOf returns the resource's source, SourceRecords when unset.
func (r Resource) SourceOf() string {
	if r.Source == "" {
		return SourceRecords
	}
	return r.Source
}

// VisibleTo reports whether an export of org may name the resource.
func (r Resource) VisibleTo(org string) bool {
	return r.Organization == "" || r.Organization == org
}

// Columns returns every column in default order (a copy).
func (r Resource) Columns() []string {
	out := make([]string, len(r.Fields))
	for i, f := range r.Fields {
		out[i] = f.Name
	}
	return out
}

// Defaults returns the columns an export has when the request names none.
func (r Resource) Defaults() []string {
	if len(r.DefaultFields) > 0 {
		return slices.Clone(r.DefaultFields)
	}
	return r.Columns()
}

// Text returns the columns a q search looks at.
func (r Resource) Text() []string {
	if len(r.TextFields) > 0 {
		return slices.Clone(r.TextFields)
	}
	var out []string
	for _, f := range r.Fields {
		if f.Type == "" || f.Type == TypeString {
			out = append(out, f.Name)
		}
	}
	return out
}

// TimeField returns the column a date range applies to when the request
// names none.
func (r Resource) TimeField() string {
	if r.DateField != "" {
		return r.DateField
	}
	return "createdTime"
}

// Canonical maps an accepted alias onto its column; other names are
// returned as they are.
func (r Resource) Canonical(field string) string {
	if c, ok := r.Aliases[field]; ok {
		return c
	}
	return field
}

// Type returns the type of a column (or alias); "" when untyped or unknown.
func (r Resource) Type(field string) FieldType {
	field = r.Canonical(field)
	for _, f := range r.Fields {
		if f.Name == field {
			return f.Type
		}
	}
	return ""
}

func (r Resource) has(field string) bool {
	if _, alias := r.Aliases[field]; alias {
		return true
	}
	return slices.ContainsFunc(r.Fields, func(f Field) bool { return f.Name == field })
}

// ValidateFields checks that every field is a column (or alias) of the
// resource; the error names the first unknown field.
func (r Resource) ValidateFields(fields []string) error {
	for _, f := range fields {
		if !r.has(f) {
			return fmt.Errorf("unknown field %q for resource %s (known: %s)", f, r.Name, strings.Join(r.Columns(), ", "))
		}
	}
	return nil
}

// ValidateDateField checks that field can bound a date range: a column
// that is a datetime or untyped.
func (r Resource) ValidateDateField(field string) error {
	if err := r.ValidateFields([]string{field}); err != nil {
		return err
	}
	if t := r.Type(field); t != "" && t != TypeDatetime {
		return fmt.Errorf("field %q of resource %s is a %s, not a date", field, r.Name, t)
	}
	return nil
}

var (
	resourceName = regexp.MustCompile(`^[a-z][a-zA-Z0-9_-]{0,63}$`)
	fieldName    = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	orgName      = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// Validate checks a definition before it is registered: a name that can
// stand as a subject token and a key, unique well-formed fields, and
// defaults, text fields, date field and aliases that name fields.
func (r Resource) Validate() error {
	if !resourceName.MatchString(r.Name) {
		return fmt.Errorf("resource name %q: a lower-case letter, then up to 63 letters, digits, _ or -", r.Name)
	}
	if r.Organization != "" && !orgName.MatchString(r.Organization) {
		return fmt.Errorf("resource %s: organization %q is not an organization id", r.Name, r.Organization)
	}
	switch r.SourceOf() {
	case SourceRecords, SourceChat, SourceRooms, SourceUsers:
	default:
		return fmt.Errorf("resource %s: unknown source %q", r.Name, r.Source)
	}
	if len(r.Fields) == 0 {
		return fmt.Errorf("resource %s: no fields", r.Name)
	}
	seen := make(map[string]bool, len(r.Fields))
	var errs []error
	for _, f := range r.Fields {
		if !fieldName.MatchString(f.Name) || strings.HasSuffix(f.Name, ".") {
			errs = append(errs, fmt.Errorf("field name %q: letters, digits, _, - and . only", f.Name))
		}
		if seen[f.Name] {
			errs = append(errs, fmt.Errorf("field %q twice", f.Name))
		}
		seen[f.Name] = true
		switch f.Type {
		case "", TypeString, TypeNumber, TypeBoolean, TypeDatetime, TypeList:
		default:
			errs = append(errs, fmt.Errorf("field %q: unknown type %q", f.Name, f.Type))
		}
	}
	check := func(what string, names []string) {
		for _, n := range names {
			if !seen[n] {
				errs = append(errs, fmt.Errorf("%s %q is not a field", what, n))
			}
		}
	}
	check("default field", r.DefaultFields)
	check("text field", r.TextFields)
	if r.DateField != "" {
		check("date field", []string{r.DateField})
	}
	for _, a := range slices.Sorted(maps.Keys(r.Aliases)) {
		if seen[a] {
			errs = append(errs, fmt.Errorf("alias %q is a field", a))
		}
		check("alias target", []string{r.Aliases[a]})
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("resource %s: %w", r.Name, err)
	}
	return nil
}

// typed builds fields from names, typing the ones in types.
func typed(names []string, types map[string]FieldType) []Field {
	out := make([]Field, len(names))
	for i, n := range names {
		out[i] = Field{Name: n, Type: types[n]}
	}
	return out
}

var builtinTypes = map[string]FieldType{
	"createdTime": TypeDatetime, "updatedTime": TypeDatetime, "ts": TypeDatetime, "editedAt": TypeDatetime,
	"amount": TypeNumber, "revenue": TypeNumber, "appId": TypeNumber, "tcount": TypeNumber,
	"accountId": TypeNumber, "adId": TypeNumber, "campaignId": TypeNumber, "countryId": TypeNumber, "projectId": TypeNumber,
	"isVerified": TypeNumber, "usernames": TypeList, "roles": TypeList, "attachments": TypeList,
}

// builtins is the table of built-in definitions; never modified (Builtins
// and Builtin hand out copies).
var builtins = []Resource{
	{
		Name: ResourceEvents, Builtin: true,
		// The columns after updatedTime are what myTracker's raw
		// export filters on (SDKKey, idAccount, idAd, idCampaign,
		// idCountry, idProject, isVerified, eventName); they are not
		// default columns, so exports that name no fields are as they
		// were.
		Fields: typed([]string{"id", "eventType", "appId", "deviceId", "country", "platform", "revenue", "createdTime", "updatedTime",
			"sdkKey", "accountId", "adId", "campaignId", "countryId", "projectId", "isVerified", "eventName"}, builtinTypes),
		DefaultFields: []string{"id", "eventType", "appId", "deviceId", "country", "platform", "revenue", "createdTime", "updatedTime"},
		TextFields:    []string{"id", "eventType", "deviceId", "country", "platform", "eventName"},
		DateField:     "createdTime",
	},
	{
		Name: ResourceMessages, Source: SourceChat, Builtin: true,
		Fields: typed([]string{"_id", "rid", "ts", "u._id", "u.username", "u.name", "msg", "t", "tmid", "tcount",
			"editedAt", "editedBy.username", "attachments"}, builtinTypes),
		DefaultFields: []string{"_id", "rid", "ts", "u.username", "msg"},
		TextFields:    []string{"_id", "rid", "u.username", "u.name", "msg", "attachments"},
		DateField:     "ts",
		Aliases:       map[string]string{"createdTime": "ts", "id": "_id"},
	},
	{
		Name: ResourceRooms, Source: SourceRooms, Builtin: true,
		Fields:     typed([]string{"id", "name", "type", "topic", "usernames", "createdTime"}, builtinTypes),
		TextFields: []string{"id", "name", "topic", "usernames"},
		DateField:  "createdTime",
	},
	{
		Name: ResourceTransactions, Builtin: true,
		Fields: typed([]string{"id", "customerId", "amount", "currency", "status", "type", "gateway", "description",
			"createdTime", "updatedTime"}, builtinTypes),
		TextFields: []string{"id", "customerId", "currency", "status", "type", "gateway", "description"},
		DateField:  "createdTime",
	},
	{
		Name: ResourceUsers, Source: SourceUsers, Builtin: true,
		Fields:     typed([]string{"id", "username", "name", "email", "roles", "createdTime"}, builtinTypes),
		TextFields: []string{"id", "username", "name", "email", "roles"},
		DateField:  "createdTime",
	},
}

// Clone returns a deep copy of r.
func (r Resource) Clone() Resource {
	r.Fields = slices.Clone(r.Fields)
	r.DefaultFields = slices.Clone(r.DefaultFields)
	r.TextFields = slices.Clone(r.TextFields)
	r.Aliases = maps.Clone(r.Aliases)
	return r
}

// Builtins returns the built-in resource definitions, sorted by name.
func Builtins() []Resource {
	out := make([]Resource, len(builtins))
	for i, r := range builtins {
		out[i] = r.Clone()
	}
	return out
}

// Builtin returns the built-in definition of a resource.
func Builtin(name string) (Resource, bool) {
	r, ok := builtin(name)
	return r.Clone(), ok
}

// builtin is Builtin without the copy, for this package's read-only use.
func builtin(name string) (Resource, bool) {
	for _, r := range builtins {
		if r.Name == name {
			return r, true
		}
	}
	return Resource{}, false
}

// Resources lists the built-in resources in a stable order.
func Resources() []string {
	var out []string
	for _, r := range builtins {
		out = append(out, r.Name)
	}
	return out
}

// Fields returns every column of a built-in resource in default order; ok
// is false for any other resource. The slice is a copy.
func Fields(resource string) ([]string, bool) {
	r, ok := builtin(resource)
	if !ok {
		return nil, false
	}
	return r.Columns(), true
}

// DefaultFields returns the columns an export of a built-in resource has
// when the request names none; nil for any other resource.
func DefaultFields(resource string) []string {
	r, ok := builtin(resource)
	if !ok {
		return nil
	}
	return r.Defaults()
}

// TextFields returns the columns a q search of a built-in resource looks
// at.
func TextFields(resource string) []string {
	r, _ := builtin(resource)
	return slices.Clone(r.TextFields)
}

// TimeField returns the column a date range of a built-in resource
// applies to when the request names none ("createdTime", or "ts" for
// messages); "" for any other resource.
func TimeField(resource string) string {
	r, ok := builtin(resource)
	if !ok {
		return ""
	}
	return r.TimeField()
}

// Canonical maps an accepted alias of a built-in resource (e.g.
// "createdTime" for messages, whose time column is "ts") onto the column
// name; other names are returned as they are.
func Canonical(resource, field string) string {
	r, _ := builtin(resource)
	return r.Canonical(field)
}

// ValidateFields checks that every field is a column (or alias) of a
// built-in resource; the error names the first unknown field.
func ValidateFields(resource string, fields []string) error {
	r, ok := builtin(resource)
	if !ok {
		return fmt.Errorf("unknown resource %q (known: %s)", resource, strings.Join(Resources(), ", "))
	}
	return r.ValidateFields(fields)
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
