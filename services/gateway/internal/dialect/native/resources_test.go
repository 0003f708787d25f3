package native_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/shared/demo"
	"dataport.dev/shared/recordquery"
)

// TestCreateRecordsOfRegisteredResources: a native record export may name
// any resource the registry holds for the caller's organization, as the
// Rebilly dialect's may, with RFC 9457 problems for the rest.
func TestCreateRecordsOfRegisteredResources(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	ctx := t.Context()
	// As the seeder does.
	for _, def := range demo.BillingResources() {
		require.NoError(t, e.Resources.Register(ctx, def))
	}
	problem := func(t *testing.T, r gatewaytest.Response, field, message string) map[string]any {
		t.Helper()
		invalid(t, r, http.StatusUnprocessableEntity, field)
		p := r.JSON(t)
		assert.Contains(t, p["errors"].([]any)[0].(map[string]any)["message"], message)
		return p
	}
	post := func(t *testing.T, body string) gatewaytest.Response {
		t.Helper()
		return e.Do(t, http.MethodPost, "/v1/exports", gatewaytest.AsUser, body)
	}

	formats := map[string]exportv1.Format{"csv": exportv1.Format_FORMAT_CSV, "json": exportv1.Format_FORMAT_JSON, "xml": exportv1.Format_FORMAT_XML}
	for _, def := range demo.BillingResources() {
		for word, format := range formats {
			t.Run(def.Name+" as "+word, func(t *testing.T) {
				v := create(t, e, gatewaytest.AsUser, fmt.Sprintf(`{"kind": "records", "format": %q, "records": {"resource": %q}}`, word, def.Name))
				job := e.Job(t, v["id"].(string))
				assert.Equal(t, format, job.GetFormat())
				assert.Equal(t, gatewaytest.Org, job.GetOrganizationId(), "the caller's default organization")
				tasks := e.TasksOf(t, "exports.tasks.records", job.GetId())
				require.Len(t, tasks, 1)
				sc := tasks[0].GetRecords()
				assert.Equal(t, def.Name, sc.GetResource())
				assert.Equal(t, def.Defaults(), sc.GetFields(), "the registered default fields")
				assert.Equal(t, gatewaytest.Org, tasks[0].GetScope().GetOrganizationId(), "the exporter reads the caller's organization only")
			})
		}
	}
	t.Run("registered fields filter, sort and bound a date range", func(t *testing.T) {
		v := create(t, e, gatewaytest.AsUser, `{"kind": "records", "records": {"resource": "invoices", "organizationId": "acme",
			"fields": ["id", "amount", "dueTime"], "filter": "status:paid", "sort": "-amount",
			"dateRange": {"start": "-30 days", "end": "now", "field": "dueTime"}}}`)
		sc := e.Job(t, v["id"].(string)).GetRecords()
		assert.Equal(t, []string{"id", "amount", "dueTime"}, sc.GetFields())
		assert.Equal(t, "dueTime", sc.GetDateRange().GetField())
		problem(t, post(t, `{"kind": "records", "records": {"resource": "invoices", "fields": ["id", "nope"]}}`), "records.fields", `"nope"`)
		problem(t, post(t, `{"kind": "records", "records": {"resource": "invoices", "filter": "nope:1"}}`), "records.filter", `"nope"`)
		problem(t, post(t, `{"kind": "records", "records": {"resource": "invoices", "dateRange": {"start": "-1 day", "end": "now", "field": "amount"}}}`),
			"records.dateRange.field", "not a date")
	})
	t.Run("an unregistered resource is invalid", func(t *testing.T) {
		p := problem(t, post(t, `{"kind": "records", "records": {"resource": "payments"}}`), "records.resource", `"payments" is not one of `)
		assert.Contains(t, p["errors"].([]any)[0].(map[string]any)["message"], "customers", "the caller's resources are listed")
	})
	t.Run("another organization's resource does not exist for the caller", func(t *testing.T) {
		require.NoError(t, e.Resources.Register(ctx, recordquery.Resource{Name: "gizmos", Organization: "globex",
			Fields: []recordquery.Field{{Name: "id"}}}))
		r := post(t, `{"kind": "records", "records": {"resource": "gizmos"}}`)
		p := problem(t, r, "records.resource", `"gizmos" is not one of `)
		assert.NotContains(t, string(r.Body), "globex")
		_, known, _ := strings.Cut(p["errors"].([]any)[0].(map[string]any)["message"].(string), "is not one of ")
		assert.NotContains(t, known, "gizmos", "nor is it listed")
	})
	t.Run("a registered resource needs an organization", func(t *testing.T) {
		// The admin belongs to none; invoices are kept per organization.
		problem(t, e.Do(t, http.MethodPost, "/v1/exports", gatewaytest.AsAdmin, `{"kind": "records", "records": {"resource": "invoices"}}`),
			"records.resource", "belongs to an organization")
	})
	t.Run("a resource registered now is exportable", func(t *testing.T) {
		body := `{"kind": "records", "format": "json", "records": {"resource": "widgets", "fields": ["id", "size"]}}`
		problem(t, post(t, body), "records.resource", `"widgets"`)
		require.NoError(t, e.Resources.Register(ctx, recordquery.Resource{Name: "widgets", Organization: gatewaytest.Org,
			Fields: []recordquery.Field{{Name: "id"}, {Name: "size", Type: recordquery.TypeNumber}}}))
		v := create(t, e, gatewaytest.AsUser, body)
		tasks := e.TasksOf(t, "exports.tasks.records", v["id"].(string))
		require.Len(t, tasks, 1)
		assert.Equal(t, []string{"id", "size"}, tasks[0].GetRecords().GetFields())
	})
	t.Run("a recurring export of a registered resource", func(t *testing.T) {
		v := create(t, e, gatewaytest.AsUser, `{"kind": "records", "records": {"resource": "customers"}, "recurring": {"instruction": "FREQ=DAILY"}}`)
		assert.NotNil(t, v["recurrence"])
	})
}
