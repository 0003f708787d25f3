package mytracker_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/recordquery"
)

// TestCreateFilters: create.json takes the filters myTracker documents
// for raw exports, in its shapes ("1,454,23" or "idApp[]=1&idApp[]=454",
// eventName as a values array), and runs them on the events stream: idApp
// and SDKKey together keep what meets at least one of them, every other
// filter must hold too.
func TestCreateFilters(t *testing.T) {
	e := newEnv(t)
	base := func(event string, extra url.Values) url.Values {
		v := url.Values{"event": {event}, "selectors": {"id,appId"}, "dateFrom": {"2026-05-01"}, "dateTo": {"2026-05-31"}}
		for k, vs := range extra {
			v[k] = vs
		}
		return v
	}
	n := 0
	for _, tc := range []struct {
		name   string
		form   url.Values
		filter string
		// keep and drop are events the filter must keep and drop.
		keep, drop []map[string]any
	}{
		{"idApp as a list", base("installs", url.Values{"idApp": {"1,454,23"}}), "eventType:install;appId:1,454,23",
			[]map[string]any{{"eventType": "install", "appId": 454.0}}, []map[string]any{{"eventType": "install", "appId": 5.0}}},
		{"SDKKey alone", base("installs", url.Values{"SDKKey": {"00004399666566289449,00004399666566289448"}}),
			`eventType:install;sdkKey:"00004399666566289449","00004399666566289448"`,
			[]map[string]any{{"eventType": "install", "sdkKey": "00004399666566289448"}}, []map[string]any{{"eventType": "install", "sdkKey": "1"}}},
		{"idApp or SDKKey", base("launches", url.Values{"idApp[]": {"1", "454"}, "SDKKey[]": {"00004399666566289449"}}),
			`eventType:launch;(appId:1,454|sdkKey:"00004399666566289449")`,
			[]map[string]any{{"eventType": "launch", "appId": 1.0, "sdkKey": "x"}, {"eventType": "launch", "appId": 2.0, "sdkKey": "00004399666566289449"}},
			[]map[string]any{{"eventType": "launch", "appId": 2.0, "sdkKey": "x"}, {"eventType": "install", "appId": 1.0}}},
		{"every id filter", base("payments", url.Values{"idAccount": {"3,6"}, "idAd[]": {"87877", "464746"}, "idCampaign": {"66,14"},
			"idCountry": {"188,200"}, "idProject": {"234,456"}, "isVerified": {"1"}}),
			"eventType:payment;accountId:3,6;adId:87877,464746;campaignId:66,14;countryId:188,200;projectId:234,456;isVerified:1",
			[]map[string]any{{"eventType": "payment", "accountId": 3.0, "adId": 87877.0, "campaignId": 14.0, "countryId": 188.0, "projectId": 456.0, "isVerified": 1.0}},
			[]map[string]any{{"eventType": "payment", "accountId": 3.0, "adId": 87877.0, "campaignId": 14.0, "countryId": 188.0, "projectId": 456.0, "isVerified": 0.0},
				{"eventType": "payment", "accountId": 4.0, "adId": 87877.0, "campaignId": 14.0, "countryId": 188.0, "projectId": 456.0, "isVerified": 1.0}}},
		{"eventName", base("customEvents", url.Values{"eventName[]": {"level_up", `say "hi", then; (leave)`}}),
			`eventType:custom;eventName:"level_up","say \"hi\", then; (leave)"`,
			[]map[string]any{{"eventType": "custom", "eventName": `say "hi", then; (leave)`}}, []map[string]any{{"eventType": "custom", "eventName": "other"}}},
		{"eventName inverted", base("customEvents", url.Values{"eventName[]": {"level_up", "tutorial"}, "eventNameInvert": {"1"}}),
			`eventType:custom;eventName:!"level_up",!"tutorial"`,
			[]map[string]any{{"eventType": "custom", "eventName": "purchase"}}, []map[string]any{{"eventType": "custom", "eventName": "tutorial"}}},
		{"eventNameInvert off", base("customEvents", url.Values{"eventName[]": {"a"}, "eventNameInvert": {"0"}}), `eventType:custom;eventName:"a"`, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.do(t, http.MethodPost, "/api/raw/v1/export/create.json", aliceKey, tc.form)
			require.Equal(t, http.StatusOK, status, "%v", body)
			n++
			job, err := e.jobs.Get(t.Context(), "raw-"+body["data"].(map[string]any)["idRawExport"].(string))
			require.NoError(t, err)
			assert.Equal(t, tc.filter, job.GetRecords().GetFilter())
			f, err := recordquery.ParseFilter(job.GetRecords().GetFilter())
			require.NoError(t, err)
			require.NoError(t, recordquery.ValidateFields(recordquery.ResourceEvents, f.Fields()))
			get := func(r map[string]any) func(string) (any, bool) {
				return func(k string) (any, bool) { v, ok := r[k]; return v, ok }
			}
			for _, r := range tc.keep {
				assert.True(t, f.Match(get(r)), "keeps %v", r)
			}
			for _, r := range tc.drop {
				assert.False(t, f.Match(get(r)), "drops %v", r)
			}
		})
	}

	// Bad values get myTracker's error shape, naming the parameter.
	for _, tc := range []struct {
		name   string
		form   url.Values
		detail string
	}{
		{"idAccount not a number", base("installs", url.Values{"idAccount": {"3,x"}}), "idAccount: account ids are integers"},
		{"idAd negative", base("installs", url.Values{"idAd[]": {"-1"}}), "idAd: tracking link ids are integers"},
		{"idCampaign", base("installs", url.Values{"idCampaign": {"1.5"}}), "idCampaign: campaign ids are integers"},
		{"idCountry as a code", base("installs", url.Values{"idCountry": {"US"}}), "idCountry: country ids are integers"},
		{"idProject", base("installs", url.Values{"idProject": {"p"}}), "idProject: project ids are integers"},
		{"SDKKey with a filter in it", base("installs", url.Values{"SDKKey": {`1";appId:2`}}), "SDKKey: SDK keys are 1-64 letters and digits"},
		{"isVerified for installs", base("installs", url.Values{"isVerified": {"1"}}), "isVerified: only for payments"},
		{"isVerified twice", base("payments", url.Values{"isVerified": {"0,1"}}), "isVerified: one value, 0 or 1"},
		{"isVerified word", base("payments", url.Values{"isVerified": {"yes"}}), "isVerified: one value, 0 or 1"},
		{"eventName for payments", base("payments", url.Values{"eventName[]": {"a"}}), "eventName: only for customEvents"},
		{"eventName empty", base("customEvents", url.Values{"eventName[]": {""}}), "eventName: names are 1-255 characters of text"},
		{"eventName control", base("customEvents", url.Values{"eventName[]": {"a\nb"}}), "eventName: names are 1-255 characters of text"},
		{"eventNameInvert word", base("customEvents", url.Values{"eventName[]": {"a"}, "eventNameInvert": {"yes"}}), "eventNameInvert: 0 (off) or 1 (on)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.do(t, http.MethodPost, "/api/raw/v1/export/create.json", aliceKey, tc.form)
			assert.Equal(t, http.StatusBadRequest, status)
			assert.Equal(t, map[string]any{"code": 400.0, "message": "Bad Request", "data": map[string]any{"error": map[string]any{"detail": tc.detail}}}, body)
		})
	}
	assert.Equal(t, 7, n)
}
