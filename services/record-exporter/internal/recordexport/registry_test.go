package recordexport_test

import (
	"encoding/json"
	"encoding/xml"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	exportv1 "dataport.dev/proto/gen/dataport/export/v1"
	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/bus"
	"dataport.dev/shared/demo"
	"dataport.dev/shared/recordquery"
	"dataport.dev/shared/resources"
	"dataport.dev/shared/taskrun"
)

// xmlDoc reads a records XML file: each record's id and its columns in
// document order.
type xmlDoc struct {
	Records []struct {
		ID     string `xml:"id,attr"`
		Fields []struct {
			XMLName xml.Name
			Value   string `xml:",chardata"`
		} `xml:",any"`
	} `xml:"record"`
}

// TestRegisteredResources exports resources the registry defines and no
// code names: the seeder's customers, subscriptions and invoices, and one
// registered by the test itself.
func TestRegisteredResources(t *testing.T) {
	e := setup(t)
	x := e.exporter(t, nil)
	reg, err := resources.Open(t.Context(), e.ns.JS)
	require.NoError(t, err)

	for _, def := range demo.BillingResources() {
		recs := e.data.Records[def.Name]
		require.NotEmpty(t, recs, def.Name)
		t.Run(def.Name+" as csv", func(t *testing.T) {
			task := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: def.Name})
			require.NoError(t, x.Export(t.Context(), task))
			p := e.part(t, task.GetJobId())
			assert.Equal(t, def.Name+".csv", p.GetFile().GetName())
			rows := readCSV(t, e.download(t, p.GetFile()))
			require.Len(t, rows, len(recs)+1, "every record of %s, and only %s's", testOrg, testOrg)
			assert.Equal(t, def.Defaults(), rows[0], "the registered default fields")
			for i, r := range recs {
				for j, col := range rows[0] {
					want := field(r, col)
					if col == "createdTime" {
						want = r.GetCreatedTime().AsTime().UTC().Format(time.RFC3339)
					}
					assert.Equal(t, safe(want), rows[i+1][j], "%s of %s", col, r.GetId())
				}
			}
		})
		t.Run(def.Name+" as json", func(t *testing.T) {
			task := e.task(t, exportv1.Format_FORMAT_JSON, &exportv1.RecordsScope{Resource: def.Name, Fields: def.Columns()})
			require.NoError(t, x.Export(t.Context(), task))
			var got []map[string]any
			require.NoError(t, json.Unmarshal(e.download(t, e.part(t, task.GetJobId()).GetFile()), &got))
			require.Len(t, got, len(recs))
			for i, r := range recs {
				assert.Equal(t, r.GetId(), got[i]["id"])
				for k, v := range r.GetFields().GetFields() {
					if k == "createdTime" || k == "updatedTime" {
						continue // from the envelope, in the renderer's time format
					}
					assert.Equal(t, v.AsInterface(), got[i][k], "%s of %s", k, r.GetId())
				}
			}
		})
		t.Run(def.Name+" as xml", func(t *testing.T) {
			task := e.task(t, exportv1.Format_FORMAT_XML, &exportv1.RecordsScope{Resource: def.Name})
			require.NoError(t, x.Export(t.Context(), task))
			var doc xmlDoc
			require.NoError(t, xml.Unmarshal(e.download(t, e.part(t, task.GetJobId()).GetFile()), &doc))
			require.Len(t, doc.Records, len(recs))
			for i, r := range recs {
				assert.Equal(t, r.GetId(), doc.Records[i].ID)
				var cols []string
				for _, f := range doc.Records[i].Fields {
					cols = append(cols, f.XMLName.Local)
				}
				assert.Subset(t, def.Defaults(), cols, "columns of %s", r.GetId())
			}
		})
	}

	t.Run("filter, sort and date range on registered fields", func(t *testing.T) {
		from := demo.BaseTime.Add(30 * 24 * time.Hour)
		var want []string
		for _, r := range e.data.Records[demo.ResourceInvoices] {
			due, err := time.Parse(time.RFC3339, field(r, "dueTime"))
			require.NoError(t, err)
			if field(r, "status") == "paid" && !due.Before(from) {
				want = append(want, r.GetId())
			}
		}
		require.NotEmpty(t, want)
		task := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: demo.ResourceInvoices, Fields: []string{"id", "dueTime"},
			Filter: "status:paid", Sort: "invoiceNumber", DateRange: &exportv1.DateRange{Field: "dueTime", From: timestamppb.New(from)}})
		require.NoError(t, x.Export(t.Context(), task))
		rows := readCSV(t, e.download(t, e.part(t, task.GetJobId()).GetFile()))
		var got []string
		for _, row := range rows[1:] {
			got = append(got, row[0])
		}
		assert.ElementsMatch(t, want, got)
	})

	t.Run("a resource registered now exports", func(t *testing.T) {
		require.NoError(t, reg.Register(t.Context(), recordquery.Resource{
			Name: "widgets", Organization: testOrg,
			Fields: []recordquery.Field{{Name: "id"}, {Name: "size", Type: recordquery.TypeNumber}, {Name: "label"},
				{Name: "createdTime", Type: recordquery.TypeDatetime}},
			DefaultFields: []string{"id", "size", "label"},
		}))
		at := demo.BaseTime
		for org, ids := range map[string][]string{testOrg: {"w1", "w2", "w3"}, "globex": {"other"}} {
			subject, err := bus.RecordSubject("widgets", org)
			require.NoError(t, err)
			for i, id := range ids {
				data, err := proto.Marshal(&sourcev1.Record{Id: id, Resource: "widgets", OrganizationId: org,
					CreatedTime: timestamppb.New(at.Add(time.Duration(i) * time.Hour)),
					Fields: &structpb.Struct{Fields: map[string]*structpb.Value{
						"size": structpb.NewNumberValue(float64(10 * (i + 1))), "label": structpb.NewStringValue("<w" + id + ">"),
					}}})
				require.NoError(t, err)
				_, err = e.ns.JS.Publish(t.Context(), subject, data)
				require.NoError(t, err)
			}
		}
		for _, format := range []exportv1.Format{exportv1.Format_FORMAT_CSV, exportv1.Format_FORMAT_JSON, exportv1.Format_FORMAT_XML} {
			task := e.task(t, format, &exportv1.RecordsScope{Resource: "widgets", Sort: "-size"})
			require.NoError(t, x.Export(t.Context(), task), format)
			b := e.download(t, e.part(t, task.GetJobId()).GetFile())
			switch format {
			case exportv1.Format_FORMAT_CSV:
				assert.Equal(t, [][]string{{"id", "size", "label"}, {"w3", "30", "<ww3>"}, {"w2", "20", "<ww2>"}, {"w1", "10", "<ww1>"}}, readCSV(t, b))
			case exportv1.Format_FORMAT_JSON:
				var got []map[string]any
				require.NoError(t, json.Unmarshal(b, &got))
				assert.Equal(t, []map[string]any{{"id": "w3", "size": 30.0, "label": "<ww3>"}, {"id": "w2", "size": 20.0, "label": "<ww2>"},
					{"id": "w1", "size": 10.0, "label": "<ww1>"}}, got)
			case exportv1.Format_FORMAT_XML:
				var doc xmlDoc
				require.NoError(t, xml.Unmarshal(b, &doc))
				require.Len(t, doc.Records, 3)
				assert.Equal(t, "w3", doc.Records[0].ID)
			}
		}
	})

	t.Run("another organization's resource is unknown", func(t *testing.T) {
		require.NoError(t, reg.Register(t.Context(), recordquery.Resource{Name: "gizmos", Organization: "globex",
			Fields: []recordquery.Field{{Name: "id"}}}))
		task := e.task(t, exportv1.Format_FORMAT_CSV, &exportv1.RecordsScope{Resource: "gizmos"})
		err := x.Export(t.Context(), task)
		require.True(t, taskrun.IsRejected(err), "rejected: %v", err)
		var failed exportv1.ExportFailed
		require.True(t, e.event(t, bus.EventFailed, task.GetJobId(), &failed))
		assert.Contains(t, failed.GetReason(), `unknown resource "gizmos"`)
	})
}
