package rebilly

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/schedule"
	"dataport.dev/shared/recordquery"
)

// maxBody bounds a create or update body.
const maxBody = 1 << 20

// maxIDLength is Rebilly's limit on export ids.
const maxIDLength = 50

// Defaults of Limits.
const (
	DefaultMaxEmailRecipients = 10
	DefaultMaxFields          = 100
)

// Limits bound what one data export may ask for. Zero values take the
// defaults (MaxRows and MaxBytes: no cap).
type Limits struct {
	// MinInterval is the shortest time allowed between two occurrences of
	// a recurring export (schedule.DefaultMinInterval).
	MinInterval time.Duration
	// MaxEmailRecipients caps emailNotification.
	MaxEmailRecipients int
	// MaxFields caps fields.
	MaxFields int
	// MaxRows and MaxBytes go into every export's (and every run's)
	// RecordsScope: an export over either is rejected by the exporter.
	MaxRows, MaxBytes uint64
}

func (l Limits) withDefaults() Limits {
	if l.MinInterval <= 0 {
		l.MinInterval = schedule.DefaultMinInterval
	}
	if l.MaxEmailRecipients <= 0 {
		l.MaxEmailRecipients = DefaultMaxEmailRecipients
	}
	if l.MaxFields <= 0 {
		l.MaxFields = DefaultMaxFields
	}
	return l
}

// request is the writable part of a data export.
type request struct {
	ID                *string    `json:"id"`
	Name              *string    `json:"name"`
	Format            *string    `json:"format"`
	Resource          *string    `json:"resource"`
	Arguments         *arguments `json:"arguments"`
	EmailNotification []string   `json:"emailNotification"`
	Fields            []string   `json:"fields"`
	Recurring         *struct {
		Instruction *string `json:"instruction"`
		Start       *string `json:"start"`
	} `json:"recurring"`
	DateRange *struct {
		Start *string `json:"start"`
		End   *string `json:"end"`
		Field *string `json:"field"`
	} `json:"dateRange"`
}

var formats = map[string]exportv1.Format{
	"csv":      exportv1.Format_FORMAT_CSV,
	"json":     exportv1.Format_FORMAT_JSON,
	"json-api": exportv1.Format_FORMAT_JSON_API,
	"xml":      exportv1.Format_FORMAT_XML,
	"pdf":      exportv1.Format_FORMAT_PDF,
	"jsonl":    exportv1.Format_FORMAT_JSONL,
}

func formatWord(f exportv1.Format) string {
	for w, v := range formats {
		if v == f {
			return w
		}
	}
	return ""
}

// decodeRequest reads one JSON object; the error is a body problem.
func decodeRequest(body io.Reader) (*request, []invalidField) {
	data, err := io.ReadAll(io.LimitReader(body, maxBody+1))
	if err != nil || len(data) > maxBody {
		return nil, []invalidField{{Field: "body", Message: "the body must be a JSON object of at most 1 MiB"}}
	}
	if len(bytes.TrimSpace(data)) == 0 || bytes.TrimSpace(data)[0] != '{' {
		return nil, []invalidField{{Field: "body", Message: "the body must be a JSON object"}}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	var req request
	if err := dec.Decode(&req); err != nil {
		msg := "malformed JSON"
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return nil, []invalidField{{Field: te.Field, Message: "must be a " + te.Type.String()}}
		}
		return nil, []invalidField{{Field: "body", Message: msg}}
	}
	if dec.More() {
		return nil, []invalidField{{Field: "body", Message: "trailing data after the JSON object"}}
	}
	return &req, nil
}

// validID reports whether id can name an export.
func validID(id string) bool { return len(id) <= maxIDLength && jobstore.ValidID(id) }

// build validates req against lim and returns the job it asks for, with
// Records and (for a recurring export) Recurrence filled in. Relative
// dates are resolved against now in loc.
func build(req *request, now time.Time, loc *time.Location, lim Limits) (*exportv1.Job, []invalidField) {
	var bad []invalidField
	add := func(field, format string, args ...any) {
		bad = append(bad, invalidField{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	job := &exportv1.Job{
		Kind:    exportv1.JobKind_JOB_KIND_RECORDS,
		Dialect: dialectName,
		State:   exportv1.JobState_JOB_STATE_PENDING,
		Records: &exportv1.RecordsScope{MaxRows: lim.MaxRows, MaxBytes: lim.MaxBytes},
	}
	switch {
	case req.Name == nil || strings.TrimSpace(*req.Name) == "":
		add("name", "is required")
	case utf8.RuneCountInString(*req.Name) > 255 || !utf8.ValidString(*req.Name):
		add("name", "must be valid text of at most 255 characters")
	default:
		job.Name = *req.Name
	}
	if req.Format == nil {
		add("format", "is required (csv, json, json-api, xml, pdf or jsonl)")
	} else if f, ok := formats[*req.Format]; !ok {
		add("format", "%q is not one of csv, json, json-api, xml, pdf, jsonl", *req.Format)
	} else {
		job.Format = f
	}
	resource := ""
	if req.Resource == nil || *req.Resource == "" {
		add("resource", "is required (%s)", strings.Join(recordquery.Resources(), ", "))
	} else if _, ok := recordquery.Fields(*req.Resource); !ok {
		add("resource", "%q is not one of %s", *req.Resource, strings.Join(recordquery.Resources(), ", "))
	} else {
		resource = *req.Resource
	}
	sc := job.Records
	sc.Resource = resource
	if resource != "" {
		if req.Fields == nil {
			sc.Fields = recordquery.DefaultFields(resource)
		} else if len(req.Fields) == 0 {
			add("fields", "must name at least one field")
		} else if len(req.Fields) > lim.MaxFields {
			add("fields", "names %d fields; at most %d are allowed", len(req.Fields), lim.MaxFields)
		} else if dup := recordquery.Duplicate(req.Fields); dup != "" {
			add("fields", "names %q twice; name each field once", dup)
		} else if err := recordquery.ValidateFields(resource, req.Fields); err != nil {
			add("fields", "%v", err)
		} else {
			sc.Fields = req.Fields
		}
		if a := req.Arguments; a != nil {
			if f, err := recordquery.ParseFilter(a.Filter); err != nil {
				add("arguments.filter", "%v", err)
			} else if err := recordquery.ValidateFields(resource, f.Fields()); err != nil {
				add("arguments.filter", "%v", err)
			} else {
				sc.Filter = a.Filter
			}
			if keys, err := recordquery.ParseSort(a.Sort); err != nil {
				add("arguments.sort", "%v", err)
			} else {
				names := make([]string, 0, len(keys))
				for _, k := range keys {
					names = append(names, k.Field)
				}
				if err := recordquery.ValidateFields(resource, names); err != nil {
					add("arguments.sort", "%v", err)
				} else {
					sc.Sort = a.Sort
				}
			}
			sc.Q = a.Q
		}
		if dr := req.DateRange; dr != nil {
			field := "createdTime"
			if dr.Field != nil && *dr.Field != "" {
				field = *dr.Field
			}
			if err := recordquery.ValidateFields(resource, []string{field}); err != nil {
				add("dateRange.field", "%v", err)
			}
			sc.DateRange = &exportv1.DateRange{Field: field}
			if dr.Start == nil || *dr.Start == "" {
				add("dateRange.start", "is required")
			} else {
				sc.DateRange.Start = *dr.Start
			}
			if dr.End == nil || *dr.End == "" {
				add("dateRange.end", "is required")
			} else {
				sc.DateRange.End = *dr.End
			}
			if sc.DateRange.Start != "" && sc.DateRange.End != "" {
				if err := resolveRange(sc.DateRange, now, loc); err != nil {
					bad = append(bad, *err)
				}
			}
		}
	}
	if n := len(req.EmailNotification); n > lim.MaxEmailRecipients {
		add("emailNotification", "lists %d addresses; at most %d are allowed", n, lim.MaxEmailRecipients)
	} else {
		for i, e := range req.EmailNotification {
			// A bare address only: net/mail accepts display names and folds
			// some line breaks away, and neither belongs in this list.
			a, err := mail.ParseAddress(e)
			if err != nil || a.Address != e || strings.ContainsAny(e, "\r\n") {
				add(fmt.Sprintf("emailNotification[%d]", i), "%q is not an email address", e)
				continue
			}
			job.NotifyEmails = append(job.NotifyEmails, e)
		}
	}
	if rc := req.Recurring; rc != nil {
		start := now
		if rc.Start != nil && *rc.Start != "" {
			t, err := time.Parse(time.RFC3339, *rc.Start)
			switch {
			case err != nil:
				add("recurring.start", "%q is not an RFC 3339 date-time", *rc.Start)
			case t.Before(time.Unix(0, 0)):
				add("recurring.start", "must be 1970-01-01T00:00:00Z or later")
			default:
				start = t
			}
		}
		if rc.Instruction == nil || *rc.Instruction == "" {
			add("recurring.instruction", "is required (an RFC 5545 RRULE such as FREQ=DAILY;BYHOUR=6)")
		} else if _, err := schedule.Validate(*rc.Instruction, start, now, lim.MinInterval); errors.Is(err, schedule.ErrTooFrequent) {
			add("recurring", "%v", err)
		} else if err != nil {
			add("recurring.instruction", "%v", err)
		} else {
			job.Recurrence = &exportv1.Recurrence{Instruction: *rc.Instruction, Start: timestamppb.New(start.UTC().Truncate(time.Second))}
			next, err := schedule.Next(job.Recurrence, start, true)
			if err != nil {
				add("recurring.instruction", "%v", err)
			}
			job.Recurrence.Next = next
		}
	}
	if len(bad) > 0 {
		return nil, bad
	}
	return job, nil
}

// resolveRange fills From/To from the range's expressions; relative ones
// ("-7 days", "yesterday", ...) count from now in loc.
func resolveRange(dr *exportv1.DateRange, now time.Time, loc *time.Location) *invalidField {
	from, err := recordquery.ResolveDate(dr.GetStart(), now, loc)
	if err != nil {
		return &invalidField{Field: "dateRange.start", Message: err.Error()}
	}
	to, err := recordquery.ResolveDate(dr.GetEnd(), now, loc)
	if err != nil {
		return &invalidField{Field: "dateRange.end", Message: err.Error()}
	}
	if to.Before(from) {
		return &invalidField{Field: "dateRange.end", Message: "is before dateRange.start"}
	}
	dr.From, dr.To = timestamppb.New(from), timestamppb.New(to)
	return nil
}

// sameRequest reports whether two jobs ask for the same export, which is
// what makes a repeated PUT of an already queued export harmless.
func sameRequest(a, b *exportv1.Job) bool {
	ra, rb := a.GetRecords(), b.GetRecords()
	return a.GetName() == b.GetName() && a.GetFormat() == b.GetFormat() &&
		ra.GetResource() == rb.GetResource() && strings.Join(ra.GetFields(), ",") == strings.Join(rb.GetFields(), ",") &&
		ra.GetFilter() == rb.GetFilter() && ra.GetSort() == rb.GetSort() && ra.GetQ() == rb.GetQ() &&
		ra.GetDateRange().GetStart() == rb.GetDateRange().GetStart() && ra.GetDateRange().GetEnd() == rb.GetDateRange().GetEnd() &&
		ra.GetDateRange().GetField() == rb.GetDateRange().GetField() &&
		strings.Join(a.GetNotifyEmails(), ",") == strings.Join(b.GetNotifyEmails(), ",") &&
		(a.GetRecurrence() == nil) == (b.GetRecurrence() == nil)
}
