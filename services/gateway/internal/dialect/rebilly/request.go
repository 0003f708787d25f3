package rebilly

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/jobstore"
	"dataport.dev/services/gateway/internal/plan"
)

// maxBody bounds a create or update body.
const maxBody = 1 << 20

// maxIDLength is Rebilly's limit on export ids.
const maxIDLength = 50

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

// formatWord is the inverse of formats, spelled out: a list takes it for
// every export it considers, and a switch needs no map iterator.
func formatWord(f exportv1.Format) string {
	switch f {
	case exportv1.Format_FORMAT_CSV:
		return "csv"
	case exportv1.Format_FORMAT_JSON:
		return "json"
	case exportv1.Format_FORMAT_JSON_API:
		return "json-api"
	case exportv1.Format_FORMAT_XML:
		return "xml"
	case exportv1.Format_FORMAT_PDF:
		return "pdf"
	case exportv1.Format_FORMAT_JSONL:
		return "jsonl"
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

// recordsFields are the names of a data export's record fields.
var recordsFields = plan.RecordsFields{
	Resource: "resource", Fields: "fields", Filter: "arguments.filter", Sort: "arguments.sort", DateRange: "dateRange",
}

// validID reports whether id can name an export.
func validID(id string) bool { return len(id) <= maxIDLength && jobstore.ValidID(id) }

// build validates req against lim and the resources cat offers, and
// returns the job it asks for, with Records and (for a recurring export)
// Recurrence filled in. Relative dates are resolved against now in loc.
// The error is a failed registry lookup.
func build(ctx context.Context, cat plan.Catalog, req *request, now time.Time, loc *time.Location, lim plan.Limits) (*exportv1.Job, []invalidField, error) {
	var bad []invalidField
	add := func(field, format string, args ...any) {
		bad = append(bad, invalidField{Field: field, Message: fmt.Sprintf(format, args...)})
	}
	job := &exportv1.Job{
		Kind:    exportv1.JobKind_JOB_KIND_RECORDS,
		Dialect: dialectName,
		State:   exportv1.JobState_JOB_STATE_PENDING,
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
	rr := plan.RecordsRequest{Resource: req.Resource, Fields: req.Fields}
	if a := req.Arguments; a != nil {
		rr.Filter, rr.Sort, rr.Q = a.Filter, a.Sort, a.Q
	}
	if dr := req.DateRange; dr != nil {
		rr.DateRange = &plan.DateRangeRequest{Start: dr.Start, End: dr.End, Field: dr.Field}
	}
	sc, invalid, err := plan.Records(ctx, cat, rr, recordsFields, now, loc, lim.Records())
	if err != nil {
		return nil, nil, err
	}
	bad = append(bad, invalid...)
	job.Records = sc
	emails, invalid := plan.Emails(req.EmailNotification, "emailNotification", lim.MaxEmailRecipients)
	bad = append(bad, invalid...)
	job.NotifyEmails = emails
	if rc := req.Recurring; rc != nil {
		rec, invalid := plan.Recurrence(rc.Instruction, rc.Start, "recurring", now, lim.MinInterval)
		bad = append(bad, invalid...)
		job.Recurrence = rec
	}
	if len(bad) > 0 {
		return nil, bad, nil
	}
	return job, nil, nil
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
