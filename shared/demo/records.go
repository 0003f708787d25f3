package demo

import (
	"fmt"
	"hash/fnv"
	"math"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
)

var (
	currencies   = []string{"USD", "USD", "USD", "EUR", "EUR", "GBP", "CAD", "JPY"}
	gateways     = []string{"stripe", "braintree", "adyen", "paypal", "authorize-net"}
	products     = []string{"Starter plan (monthly)", "Pro plan (annual)", "Team plan (monthly)", "Add-on: extra storage", "Setup fee", "Consulting, 2h"}
	eventTypes   = []string{"install", "launch", "payment", "custom"}
	eventWeights = []int{20, 55, 10, 15}
	platforms    = []string{"ios", "android", "web"}
	countries    = []string{"US", "US", "US", "DE", "DE", "GB", "FR", "JP", "BR", "IN", "CA", "ES", "NL"}
	appIDs       = []float64{10001, 10002, 20417}
	// trickyDescriptions probe CSV, XML and PDF escaping of record fields.
	trickyDescriptions = []string{
		`Order "special", with quotes, and commas`,
		"=HYPERLINK(\"http://evil.example\",\"click\")",
		"multi\nline\ndescription",
		"<b>bold?</b> & <script>alert(1)</script>",
		"Café ☕ crème brûlée — 東京",
	}
)

// recordTime formats times in record fields as Rebilly does.
func recordTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// transactions generates n payment transactions in created_time order,
// and the ids of the customers they name.
func (g *generator) transactions(n int) ([]*sourcev1.Record, []string) {
	customers := make([]string, 300)
	for i := range customers {
		customers[i] = "cus_" + g.token(12, alnum)
	}
	times := g.uniformTimes(n, BaseTime, BaseTime.Add(Span))
	out := make([]*sourcev1.Record, n)
	for i, created := range times {
		id := "txn_" + g.token(17, alnum)
		typ := pick(g, []string{"sale", "sale", "sale", "sale", "sale", "sale", "authorize", "authorize", "refund"})
		status := []string{"approved", "declined", "refunded", "pending"}[g.weighted([]int{70, 12, 8, 10})]
		if typ == "refund" && status == "refunded" {
			status = "approved"
		}
		currency := pick(g, currencies)
		amount := math.Exp(2+g.r.NormFloat64()) * 10
		if currency == "JPY" {
			amount = math.Round(amount * 100)
		} else {
			amount = math.Round(amount*100) / 100
		}
		amount = max(amount, 1)
		desc := fmt.Sprintf("Order #%d — %s", 10000+i, pick(g, products))
		if g.chance(0.01) {
			desc = pick(g, trickyDescriptions)
		}
		updated := created
		if status == "refunded" {
			updated = created.Add(time.Duration(1+g.r.IntN(14*24)) * time.Hour)
		}
		fields := map[string]*structpb.Value{
			"id":          str(id),
			"customerId":  str(pick(g, customers)),
			"amount":      num(amount),
			"currency":    str(currency),
			"status":      str(status),
			"type":        str(typ),
			"gateway":     str(pick(g, gateways)),
			"description": str(desc),
			"createdTime": str(recordTime(created)),
		}
		out[i] = record(id, ResourceTransactions, created, updated, fields)
	}
	return out, customers
}

// events generates n tracker events in created_time order.
func (g *generator) events(n int) []*sourcev1.Record {
	devices := make([]string, 800)
	for i := range devices {
		devices[i] = g.token(16, hexDigits)
	}
	times := g.uniformTimes(n, BaseTime, BaseTime.Add(Span))
	out := make([]*sourcev1.Record, n)
	for i, created := range times {
		id := "evt_" + g.token(17, alnum)
		typ := eventTypes[g.weighted(eventWeights)]
		revenue := 0.0
		if typ == "payment" {
			revenue = math.Round((0.99+float64(g.r.IntN(50)))*100) / 100
		}
		// Drawn in this order, as ever, so the data stays the same.
		app := pick(g, appIDs)
		device := pick(g, devices)
		country := pick(g, countries)
		platform := pick(g, platforms)
		fields := map[string]*structpb.Value{
			"id":          str(id),
			"eventType":   str(typ),
			"appId":       num(app),
			"deviceId":    str(device),
			"country":     str(country),
			"platform":    str(platform),
			"revenue":     num(revenue),
			"createdTime": str(recordTime(created)),
		}
		trackerFields(fields, id, typ, app, country)
		out[i] = record(id, ResourceEvents, created, created, fields)
	}
	return out
}

// myTracker's dimensions of the demo apps: each app has its SDK key,
// account and project; campaigns and tracking links belong to an app.
var (
	trackerApps = map[float64]struct {
		sdkKey              string
		account, project    float64
		campaigns, trackers []float64
	}{
		10001: {"00004399666566289449", 3, 234, []float64{66, 14}, []float64{87877, 464746}},
		10002: {"00004399666566289448", 3, 234, []float64{66, 71}, []float64{87878, 464747}},
		20417: {"00007120934512876001", 6, 456, []float64{902}, []float64{511230}},
	}
	// trackerCountries stands for myTracker's Countries dictionary.
	trackerCountries = map[string]float64{
		"US": 188, "DE": 70, "GB": 200, "FR": 66, "JP": 97, "BR": 26, "IN": 88, "CA": 33, "ES": 171, "NL": 131,
	}
	customEventNames = []string{"level_up", "tutorial_complete", "share", "purchase_intent", "invite_sent"}
)

// trackerFields adds the columns myTracker's raw export filters on. They
// are derived from the event's id and its drawn values, never drawn
// themselves, so the rest of the demo data is what it was.
func trackerFields(fields map[string]*structpb.Value, id, typ string, app float64, country string) {
	h := fnv.New32a()
	h.Write([]byte(id))
	n := int(h.Sum32() & 0x7fffffff)
	a := trackerApps[app]
	fields["sdkKey"] = str(a.sdkKey)
	fields["accountId"] = num(a.account)
	fields["projectId"] = num(a.project)
	fields["campaignId"] = num(a.campaigns[n%len(a.campaigns)])
	fields["adId"] = num(a.trackers[(n/7)%len(a.trackers)])
	fields["countryId"] = num(trackerCountries[country])
	switch typ {
	case "payment":
		// Most store receipts verify.
		fields["isVerified"] = num(float64(min(1, (n/11)%10)))
	case "custom":
		fields["eventName"] = str(customEventNames[(n/13)%len(customEventNames)])
	}
}

func str(s string) *structpb.Value  { return structpb.NewStringValue(s) }
func num(f float64) *structpb.Value { return structpb.NewNumberValue(f) }

func record(id, resource string, created, updated time.Time, fields map[string]*structpb.Value) *sourcev1.Record {
	return &sourcev1.Record{
		Id:          id,
		Resource:    resource,
		CreatedTime: timestamppb.New(created),
		UpdatedTime: timestamppb.New(updated),
		Fields:      &structpb.Struct{Fields: fields},
	}
}
