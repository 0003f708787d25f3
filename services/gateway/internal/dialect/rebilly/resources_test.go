package rebilly_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	"dataport.dev/services/gateway/internal/gatewaytest"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/demo"
	"dataport.dev/shared/recordquery"
)

// TestRegisteredResources: the resources a data export may name are the
// registry's, as the caller's organization sees them, in the real gateway.
func TestRegisteredResources(t *testing.T) {
	e := gatewaytest.New(t, gatewaytest.Options{})
	ctx := t.Context()
	// As the seeder does.
	for _, def := range demo.BillingResources() {
		require.NoError(t, e.Resources.Register(ctx, def))
	}
	caller := gatewaytest.APIKey(gatewaytest.UserAPIKey)
	subject, err := bus.TaskSubject(bus.TaskRecords)
	require.NoError(t, err)
	create := func(t *testing.T, body string) gatewaytest.Response {
		t.Helper()
		return e.Do(t, http.MethodPost, "/data-exports", caller, body)
	}
	invalid := func(t *testing.T, r gatewaytest.Response, field, message string) {
		t.Helper()
		require.Equal(t, http.StatusUnprocessableEntity, r.Status, "%s", r.Body)
		p := r.JSON(t)
		assert.Equal(t, "Invalid data", p["error"])
		bad := p["invalidFields"].([]any)[0].(map[string]any)
		assert.Equal(t, field, bad["field"])
		assert.Contains(t, bad["message"], message)
	}

	formats := map[string]exportv1.Format{"csv": exportv1.Format_FORMAT_CSV, "json": exportv1.Format_FORMAT_JSON, "xml": exportv1.Format_FORMAT_XML}
	for _, def := range demo.BillingResources() {
		for word, format := range formats {
			t.Run(def.Name+" as "+word, func(t *testing.T) {
				r := create(t, fmt.Sprintf(`{"name":"All %s","resource":%q,"format":%q}`, def.Name, def.Name, word))
				require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
				it := r.JSON(t)
				assert.Equal(t, def.Name, it["resource"])
				tasks := e.TasksOf(t, subject, it["id"].(string))
				require.Len(t, tasks, 1)
				sc := tasks[0].GetRecords()
				assert.Equal(t, def.Name, sc.GetResource())
				assert.Equal(t, def.Defaults(), sc.GetFields(), "the registered default fields")
				assert.Equal(t, format, tasks[0].GetFormat())
				assert.Equal(t, gatewaytest.Org, tasks[0].GetScope().GetOrganizationId(), "the exporter reads the caller's organization only")
			})
		}
	}
	t.Run("registered fields filter, sort and bound a date range", func(t *testing.T) {
		r := create(t, `{"name":"Paid","resource":"invoices","format":"csv","fields":["id","amount","dueTime"],
			"arguments":{"filter":"status:paid","sort":"-amount"},"dateRange":{"start":"-30 days","end":"now","field":"dueTime"}}`)
		require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
		invalid(t, create(t, `{"name":"n","resource":"invoices","format":"csv","fields":["id","nope"]}`), "fields", `"nope"`)
		invalid(t, create(t, `{"name":"n","resource":"invoices","format":"csv","arguments":{"filter":"nope:1"}}`), "arguments.filter", `"nope"`)
		invalid(t, create(t, `{"name":"n","resource":"invoices","format":"csv","dateRange":{"start":"-1 day","end":"now","field":"amount"}}`),
			"dateRange.field", "not a date")
	})
	t.Run("an unregistered resource is invalid", func(t *testing.T) {
		invalid(t, create(t, `{"name":"n","resource":"payments","format":"csv"}`), "resource", `"payments" is not one of `)
	})
	t.Run("another organization's resource does not exist for the caller", func(t *testing.T) {
		require.NoError(t, e.Resources.Register(ctx, recordquery.Resource{Name: "gizmos", Organization: "globex",
			Fields: []recordquery.Field{{Name: "id"}}}))
		r := create(t, `{"name":"n","resource":"gizmos","format":"csv"}`)
		invalid(t, r, "resource", `"gizmos" is not one of `)
		assert.NotContains(t, string(r.Body), "globex")
		msg := r.JSON(t)["invalidFields"].([]any)[0].(map[string]any)["message"].(string)
		_, known, _ := strings.Cut(msg, "is not one of ")
		assert.Contains(t, known, "customers")
		assert.NotContains(t, known, "gizmos", "nor is it listed")
	})
	t.Run("a resource registered now is exportable", func(t *testing.T) {
		body := `{"name":"n","resource":"widgets","format":"json","fields":["id","size"]}`
		invalid(t, create(t, body), "resource", `"widgets"`)
		require.NoError(t, e.Resources.Register(ctx, recordquery.Resource{Name: "widgets", Organization: gatewaytest.Org,
			Fields: []recordquery.Field{{Name: "id"}, {Name: "size", Type: recordquery.TypeNumber}}}))
		r := create(t, body)
		require.Equal(t, http.StatusCreated, r.Status, "%s", r.Body)
		tasks := e.TasksOf(t, subject, r.JSON(t)["id"].(string))
		require.Len(t, tasks, 1)
		assert.Equal(t, []string{"id", "size"}, tasks[0].GetRecords().GetFields())
	})
}
