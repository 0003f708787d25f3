package plan

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/schedule"
	"dataport.dev/shared/recordquery"
	"dataport.dev/shared/resources"
)

// RecordsRequest is what a record export asks for. Absent fields are nil
// pointers, so "not sent" and "sent empty" can be told apart.
type RecordsRequest struct {
	Resource *string
	// Fields nil means the resource's default columns; empty is an error.
	Fields           []string
	Filter, Sort, Q  string
	DateRange        *DateRangeRequest
	MaxRowsPerChunk  uint64
	MaxBytesPerChunk uint64
	GzipChunks       bool
}

// DateRangeRequest bounds records on one of their time fields; Start and
// End may be relative ("-7 days", "yesterday").
type DateRangeRequest struct {
	Start, End, Field *string
}

// RecordsFields are the names the dialect's body gives the fields of a
// RecordsRequest, for Invalid.Field. DateRange is a prefix: its
// parts are DateRange+".start", ".end" and ".field".
type RecordsFields struct {
	Resource, Fields, Filter, Sort, DateRange string
}

// RecordsLimits bound one record export.
type RecordsLimits struct {
	// MaxFields caps Fields.
	MaxFields int
	// MaxRows and MaxBytes go into the scope: an export over either is
	// rejected by the exporter (0: no cap).
	MaxRows, MaxBytes uint64
}

// Resources finds the record resources an organization's exports may
// name; *resources.Registry is the implementation.
type Resources interface {
	// Get returns the definition of name as org's exports see it, or an
	// error wrapping resources.ErrNotFound (nonexistent, or another
	// organization's).
	Get(ctx context.Context, org, name string) (recordquery.Resource, error)
	// Names lists the names org's exports may use.
	Names(ctx context.Context, org string) ([]string, error)
}

// Catalog is what one organization's record exports may name.
type Catalog struct {
	// Registry is the host's resource registry; nil: the built-in
	// resources only (recordquery.Builtins).
	Registry Resources
	// Organization is the export's organization, "" for none.
	Organization string
}

// lookup returns the definition of name; ok is false when the
// organization may not name it.
func (c Catalog) lookup(ctx context.Context, name string) (recordquery.Resource, bool, error) {
	if c.Registry == nil {
		def, ok := recordquery.Builtin(name)
		return def, ok, nil
	}
	def, err := c.Registry.Get(ctx, c.Organization, name)
	switch {
	case err == nil:
		return def, true, nil
	case errors.Is(err, resources.ErrNotFound):
		return recordquery.Resource{}, false, nil
	}
	return recordquery.Resource{}, false, fmt.Errorf("resource %s: %w", name, err)
}

// known lists the names for an error message; a failed listing leaves
// the message without them rather than failing the request.
func (c Catalog) known(ctx context.Context) string {
	names := recordquery.Resources()
	if c.Registry != nil {
		var err error
		if names, err = c.Registry.Names(ctx, c.Organization); err != nil {
			return "a registered resource"
		}
	}
	return strings.Join(names, ", ")
}

// Records validates req against the resources cat offers and returns the
// scope it asks for. Relative dates are resolved against now in loc. The
// error is a failed registry lookup (the request may be fine).
func Records(ctx context.Context, cat Catalog, req RecordsRequest, names RecordsFields, now time.Time, loc *time.Location, lim RecordsLimits) (*exportv1.RecordsScope, []Invalid, error) {
	var bad []Invalid
	add := func(field, format string, args ...any) {
		bad = append(bad, Invalid{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	sc := &exportv1.RecordsScope{
		MaxRows: lim.MaxRows, MaxBytes: lim.MaxBytes,
		MaxRowsPerChunk: req.MaxRowsPerChunk, MaxBytesPerChunk: req.MaxBytesPerChunk, GzipChunks: req.GzipChunks,
	}
	if req.Resource == nil || *req.Resource == "" {
		add(names.Resource, "is required (%s)", cat.known(ctx))
		return nil, bad, nil
	}
	resource := *req.Resource
	def, ok, err := cat.lookup(ctx, resource)
	if err != nil {
		return nil, nil, err
	}
	if !ok {
		add(names.Resource, "%q is not one of %s", resource, cat.known(ctx))
		return nil, bad, nil
	}
	sc.Resource = resource
	switch {
	case req.Fields == nil:
		sc.Fields = def.Defaults()
	case len(req.Fields) == 0:
		add(names.Fields, "must name at least one field")
	case len(req.Fields) > lim.MaxFields:
		add(names.Fields, "names %d fields; at most %d are allowed", len(req.Fields), lim.MaxFields)
	default:
		if dup := recordquery.Duplicate(req.Fields); dup != "" {
			add(names.Fields, "names %q twice; name each field once", dup)
		} else if err := def.ValidateFields(req.Fields); err != nil {
			add(names.Fields, "%v", err)
		} else {
			sc.Fields = req.Fields
		}
	}
	if f, err := recordquery.ParseFilter(req.Filter); err != nil {
		add(names.Filter, "%v", err)
	} else if err := def.ValidateFields(f.Fields()); err != nil {
		add(names.Filter, "%v", err)
	} else {
		sc.Filter = req.Filter
	}
	if keys, err := recordquery.ParseSort(req.Sort); err != nil {
		add(names.Sort, "%v", err)
	} else {
		fields := make([]string, 0, len(keys))
		for _, k := range keys {
			fields = append(fields, k.Field)
		}
		if err := def.ValidateFields(fields); err != nil {
			add(names.Sort, "%v", err)
		} else {
			sc.Sort = req.Sort
		}
	}
	sc.Q = req.Q
	if dr := req.DateRange; dr != nil {
		// Rebilly's documented default, kept in the scope as the request
		// (or its default) named it.
		field := "createdTime"
		if dr.Field != nil && *dr.Field != "" {
			field = *dr.Field
		}
		if err := def.ValidateDateField(field); err != nil {
			add(names.DateRange+".field", "%v", err)
		}
		sc.DateRange = &exportv1.DateRange{Field: field}
		if dr.Start == nil || *dr.Start == "" {
			add(names.DateRange+".start", "is required")
		} else {
			sc.DateRange.Start = *dr.Start
		}
		if dr.End == nil || *dr.End == "" {
			add(names.DateRange+".end", "is required")
		} else {
			sc.DateRange.End = *dr.End
		}
		if sc.DateRange.Start != "" && sc.DateRange.End != "" {
			if err := ResolveRange(sc.DateRange, names.DateRange, now, loc); err != nil {
				bad = append(bad, *err)
			}
		}
	}
	if len(bad) > 0 {
		return nil, bad, nil
	}
	return sc, nil, nil
}

// ResolveRange fills From/To from the range's expressions; relative ones
// ("-7 days", "yesterday", ...) count from now in loc. field is the
// range's name in the body, for the Invalid.
func ResolveRange(dr *exportv1.DateRange, field string, now time.Time, loc *time.Location) *Invalid {
	from, err := recordquery.ResolveDate(dr.GetStart(), now, loc)
	if err != nil {
		return &Invalid{Field: field + ".start", Message: err.Error()}
	}
	to, err := recordquery.ResolveDate(dr.GetEnd(), now, loc)
	if err != nil {
		return &Invalid{Field: field + ".end", Message: err.Error()}
	}
	if to.Before(from) {
		return &Invalid{Field: field + ".end", Message: "is before " + field + ".start"}
	}
	dr.From, dr.To = timestamppb.New(from), timestamppb.New(to)
	return nil
}

// Emails checks a list of notification addresses, at most max of them,
// each a bare address (no display name, no line break). field names the
// list; its entries are field[i].
func Emails(list []string, field string, max int) ([]string, []Invalid) {
	if n := len(list); n > max {
		return nil, []Invalid{{Field: field, Message: fmt.Sprintf("lists %d addresses; at most %d are allowed", n, max)}}
	}
	var out []string
	var bad []Invalid
	for i, e := range list {
		// A bare address only: net/mail accepts display names and folds
		// some line breaks away, and neither belongs in this list.
		a, err := mail.ParseAddress(e)
		if err != nil || a.Address != e || strings.ContainsAny(e, "\r\n") {
			bad = append(bad, Invalid{Field: fmt.Sprintf("%s[%d]", field, i), Message: fmt.Sprintf("%q is not an email address", e)})
			continue
		}
		out = append(out, e)
	}
	return out, bad
}

// Recurrence checks an RFC 5545 rule and its start (RFC 3339; empty means
// now) and returns the recurrence with its first occurrence. An
// instruction more frequent than minInterval is refused. field names the
// recurrence; its parts are field.instruction and field.start.
func Recurrence(instruction *string, start *string, field string, now time.Time, minInterval time.Duration) (*exportv1.Recurrence, []Invalid) {
	var bad []Invalid
	add := func(f, format string, args ...any) {
		bad = append(bad, Invalid{Field: f, Message: fmt.Sprintf(format, args...)})
	}
	first := now
	if start != nil && *start != "" {
		t, err := time.Parse(time.RFC3339, *start)
		switch {
		case err != nil:
			add(field+".start", "%q is not an RFC 3339 date-time", *start)
		case t.Before(time.Unix(0, 0)):
			add(field+".start", "must be 1970-01-01T00:00:00Z or later")
		default:
			first = t
		}
	}
	if instruction == nil || *instruction == "" {
		add(field+".instruction", "is required (an RFC 5545 RRULE such as FREQ=DAILY;BYHOUR=6)")
		return nil, bad
	}
	if _, err := schedule.Validate(*instruction, first, now, minInterval); errors.Is(err, schedule.ErrTooFrequent) {
		add(field, "%v", err)
		return nil, bad
	} else if err != nil {
		add(field+".instruction", "%v", err)
		return nil, bad
	}
	rec := &exportv1.Recurrence{Instruction: *instruction, Start: timestamppb.New(first.UTC().Truncate(time.Second))}
	next, err := schedule.Next(rec, first, true)
	if err != nil {
		add(field+".instruction", "%v", err)
	}
	rec.Next = next
	if len(bad) > 0 {
		return nil, bad
	}
	return rec, nil
}

// Tenant refuses an export of organization records outside any
// organization: every resource but the workspace's own (messages, rooms,
// users) is kept per organization. field names the resource.
func Tenant(sc *exportv1.RecordsScope, org, field string) []Invalid {
	if def, ok := recordquery.Builtin(sc.GetResource()); ok && def.SourceOf() != recordquery.SourceRecords {
		return nil
	}
	if org == "" {
		return []Invalid{{Field: field, Message: "this resource belongs to an organization; export it from an organization you are a member of"}}
	}
	return nil
}

// RecordsTask is the one task of a record export (or of one run of a
// recurring one): the job's scope, read for its owner.
func RecordsTask(job *exportv1.Job) *exportv1.ExportTask {
	return &exportv1.ExportTask{
		PartKind: exportv1.PartKind_PART_KIND_RECORDS,
		UserId:   job.GetOwnerId(),
		Records:  proto.Clone(job.GetRecords()).(*exportv1.RecordsScope),
	}
}

// Defaults of Limits.
const (
	DefaultMaxEmailRecipients = 10
	DefaultMaxWebhooks        = 5
	DefaultMaxFields          = 100
)

// Limits bound what one export request may ask for, in every dialect that
// creates record exports or recurring ones (Rebilly, native). Zero values
// take the defaults (MaxRows and MaxBytes: no cap).
type Limits struct {
	// MinInterval is the shortest time allowed between two occurrences of
	// a recurring export (schedule.DefaultMinInterval).
	MinInterval time.Duration
	// MaxEmailRecipients caps the addresses one export notifies;
	// MaxWebhooks the webhooks (native only).
	MaxEmailRecipients, MaxWebhooks int
	// MaxFields caps the columns of a record export.
	MaxFields int
	// MaxRows and MaxBytes go into every record export's (and every
	// run's) RecordsScope: an export over either is rejected by the
	// exporter.
	MaxRows, MaxBytes uint64
}

// WithDefaults fills the zero values.
func (l Limits) WithDefaults() Limits {
	if l.MinInterval <= 0 {
		l.MinInterval = schedule.DefaultMinInterval
	}
	if l.MaxEmailRecipients <= 0 {
		l.MaxEmailRecipients = DefaultMaxEmailRecipients
	}
	if l.MaxWebhooks <= 0 {
		l.MaxWebhooks = DefaultMaxWebhooks
	}
	if l.MaxFields <= 0 {
		l.MaxFields = DefaultMaxFields
	}
	return l
}

// Records are the limits of a record export's scope.
func (l Limits) Records() RecordsLimits {
	return RecordsLimits{MaxFields: l.MaxFields, MaxRows: l.MaxRows, MaxBytes: l.MaxBytes}
}
