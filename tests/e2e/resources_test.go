package e2e

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/demo"
)

// TestRegisteredResourcesExport: Rebilly's customers, subscriptions and
// invoices, which the seeder registers and fills and no code names, export
// through every service in csv, json and xml, each with the caller's
// organization's records only; an unregistered resource answers 422.
func TestRegisteredResourcesExport(t *testing.T) {
	t.Parallel()
	s := startStack(t)
	alice := s.user(t, "alice") // acme
	d := demo.Generate()
	const path = "/data-exports"

	for _, res := range []string{demo.ResourceCustomers, demo.ResourceSubscriptions, demo.ResourceInvoices} {
		var want []string
		for _, r := range d.Records[res] {
			if r.GetOrganizationId() == "acme" {
				want = append(want, r.GetId())
			}
		}
		require.NotEmpty(t, want, res)
		ids := map[string]string{}
		for _, format := range []string{"csv", "json", "xml"} {
			ids[format] = rebillyCreate(t, s, alice, path, fmt.Sprintf(`{"name":"%s %s","resource":%q,"format":%q}`, res, format, res, format))
		}
		assert.Equal(t, want, csvColumn(t, rebillyDownload(t, s, alice, path, ids["csv"]), 0), "%s as csv", res)

		var rows []map[string]any
		require.NoError(t, json.Unmarshal(rebillyDownload(t, s, alice, path, ids["json"]), &rows))
		var got []string
		for _, r := range rows {
			got = append(got, fmt.Sprint(r["id"]))
		}
		assert.Equal(t, want, got, "%s as json", res)

		var doc struct {
			Records []struct {
				ID string `xml:"id,attr"`
			} `xml:"record"`
		}
		require.NoError(t, xml.Unmarshal(rebillyDownload(t, s, alice, path, ids["xml"]), &doc))
		got = got[:0]
		for _, r := range doc.Records {
			got = append(got, r.ID)
		}
		assert.Equal(t, want, got, "%s as xml", res)
	}

	assert.Equal(t, http.StatusUnprocessableEntity,
		rebilly(t, s, alice, http.MethodPost, path, `{"name":"n","resource":"payments","format":"csv"}`, nil))
}
