package demo

import (
	"fmt"
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

// transactions generates n payment transactions in created_time order.
func (g *generator) transactions(n int) []*sourcev1.Record {
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
	return out
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
		fields := map[string]*structpb.Value{
			"id":          str(id),
			"eventType":   str(typ),
			"appId":       num(pick(g, appIDs)),
			"deviceId":    str(pick(g, devices)),
			"country":     str(pick(g, countries)),
			"platform":    str(pick(g, platforms)),
			"revenue":     num(revenue),
			"createdTime": str(recordTime(created)),
		}
		out[i] = record(id, ResourceEvents, created, created, fields)
	}
	return out
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
