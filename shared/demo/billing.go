package demo

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/structpb"

	sourcev1 "dataport.dev/proto/gen/dataport/source/v1"
	"dataport.dev/shared/recordquery"
)

// Rebilly's common resources beyond transactions, registered and filled by
// the seeder.
const (
	ResourceCustomers     = "customers"
	ResourceSubscriptions = "subscriptions"
	ResourceInvoices      = "invoices"
)

// seedBilling seeds the billing resources' own generator, so the rest of
// the data set draws exactly what it drew before they existed.
const seedBilling = 20260502

// BillingResources are the registry definitions of customers,
// subscriptions and invoices, with Rebilly's field names. They are
// registered for every organization, as the host would publish them.
func BillingResources() []recordquery.Resource {
	f := func(name string, t recordquery.FieldType) recordquery.Field {
		return recordquery.Field{Name: name, Type: t}
	}
	const (
		s  = recordquery.TypeString
		n  = recordquery.TypeNumber
		b  = recordquery.TypeBoolean
		dt = recordquery.TypeDatetime
	)
	return []recordquery.Resource{
		{
			Name: ResourceCustomers,
			Fields: []recordquery.Field{f("id", s), f("email", s), f("firstName", s), f("lastName", s), f("company", s),
				f("country", s), f("websiteId", s), f("lifetimeRevenue", n), f("currency", s), f("invoiceCount", n),
				f("paymentCount", n), f("lastPaymentTime", dt), f("createdTime", dt), f("updatedTime", dt)},
			DefaultFields: []string{"id", "email", "firstName", "lastName", "company", "country", "createdTime", "updatedTime"},
			DateField:     "createdTime",
		},
		{
			Name: ResourceSubscriptions,
			Fields: []recordquery.Field{f("id", s), f("customerId", s), f("websiteId", s), f("status", s), f("planId", s),
				f("quantity", n), f("amount", n), f("currency", s), f("recurringInterval", s), f("inTrial", b),
				f("startTime", dt), f("renewalTime", dt), f("canceledTime", dt), f("rebillNumber", n),
				f("createdTime", dt), f("updatedTime", dt)},
			DefaultFields: []string{"id", "customerId", "status", "planId", "amount", "currency", "startTime", "renewalTime", "createdTime"},
			TextFields:    []string{"id", "customerId", "status", "planId", "currency"},
			DateField:     "createdTime",
		},
		{
			Name: ResourceInvoices,
			Fields: []recordquery.Field{f("id", s), f("invoiceNumber", n), f("customerId", s), f("subscriptionId", s),
				f("websiteId", s), f("status", s), f("currency", s), f("subtotalAmount", n), f("discountAmount", n),
				f("taxAmount", n), f("amount", n), f("amountDue", n), f("issuedTime", dt), f("dueTime", dt), f("paidTime", dt),
				f("createdTime", dt), f("updatedTime", dt)},
			DefaultFields: []string{"id", "invoiceNumber", "customerId", "status", "currency", "amount", "amountDue", "dueTime", "createdTime"},
			TextFields:    []string{"id", "customerId", "subscriptionId", "status", "currency"},
			DateField:     "createdTime",
		},
	}
}

var (
	firstNames = []string{"Olivia", "Liam", "Emma", "Noah", "Ava", "Lucas", "Mia", "Mateo", "Sofia", "Hiro", "Aiko", "Lena",
		"Jonas", "Chloé", "Amélie", "Priya", "Arjun", "Zoë", "Björn", "Inès", "Diego", "Ana", "Tomás", "Yuki"}
	lastNames = []string{"Smith", "Johnson", "Müller", "Schmidt", "García", "Martin", "Bernard", "Rossi", "Tanaka", "Sato",
		"Silva", "Santos", "Patel", "Kumar", "O'Brien", "van Dijk", "Nowak", "Dubois", "Fernández", "Nguyen"}
	companies = []string{"", "", "", "Initech", "Hooli", "Vandelay Industries", "Umbrella Corp", "Stark & Wayne LLC",
		"Soylent, Inc.", "Wonka Ltd", "Tyrell <Corp>"}
	websites = []string{"web_main", "web_store", "web_eu"}
	plans    = []struct {
		id       string
		amount   float64
		interval string
	}{
		{"starter-monthly", 19, "1 month"}, {"pro-monthly", 49, "1 month"}, {"pro-annual", 490, "1 year"},
		{"team-monthly", 99, "1 month"}, {"storage-addon", 5, "1 month"},
	}
	subscriptionStatuses = []string{"active", "paused", "canceled", "churned", "pending"}
	subscriptionWeights  = []int{60, 5, 15, 10, 10}
	invoiceStatuses      = []string{"paid", "unpaid", "past-due", "voided", "draft", "refunded", "partially-paid"}
	invoiceWeights       = []int{62, 10, 8, 5, 5, 5, 5}
	currencyOf           = map[string]string{"US": "USD", "DE": "EUR", "FR": "EUR", "ES": "EUR", "NL": "EUR", "GB": "GBP", "CA": "CAD", "JP": "JPY", "BR": "USD", "IN": "USD"}
)

// billing generates the customers (the ids transactions name), their
// subscriptions and invoices, each resource in created_time order. A
// customer belongs to an organization as the records do (orgOf), and its
// subscriptions and invoices to the same one.
func billing(customerIDs []string) map[string][]*sourcev1.Record {
	g := &generator{r: rand.New(rand.NewPCG(seedHi, seedBilling)), ids: make(map[string]bool)}
	end := BaseTime.Add(Span)
	type customer struct {
		id, org, currency string
		created           time.Time
	}
	times := g.uniformTimes(len(customerIDs), BaseTime.Add(-365*24*time.Hour), BaseTime.Add(Span/2))
	customers := make([]customer, len(customerIDs))
	var custRecs, subRecs, invRecs []*sourcev1.Record
	for i, id := range customerIDs {
		first, last := pick(g, firstNames), pick(g, lastNames)
		country := pick(g, countries)
		c := customer{id: id, org: orgOf(i), currency: currencyOf[country], created: times[i]}
		customers[i] = c
		email := strings.ToLower(strings.NewReplacer(" ", "", "'", "").Replace(first+"."+last)) + fmt.Sprintf("%d@example.com", i)
		fields := map[string]*structpb.Value{
			"id": str(id), "email": str(email), "firstName": str(first), "lastName": str(last),
			"country": str(country), "websiteId": str(pick(g, websites)), "currency": str(c.currency),
			"createdTime": str(recordTime(c.created)),
		}
		if co := pick(g, companies); co != "" {
			fields["company"] = str(co)
		}
		r := record(id, ResourceCustomers, c.created, c.created, fields)
		r.OrganizationId = c.org
		custRecs = append(custRecs, r)
	}
	// About 1.4 subscriptions per customer; each has monthly or yearly
	// invoices from its start until it ended or the history did.
	invoiceNo := 1000
	type payments struct {
		revenue        float64
		invoices, paid int
		lastPaid       time.Time
	}
	stats := make(map[string]*payments, len(customers))
	for i := range customers {
		c := customers[i]
		stats[c.id] = &payments{}
		nsubs := g.weighted([]int{20, 35, 30, 15})
		for range nsubs {
			p := pick(g, plans)
			id := "sub_" + g.token(17, alnum)
			start := c.created.Add(time.Duration(g.r.Int64N(int64(end.Sub(c.created))))).Truncate(time.Second)
			status := subscriptionStatuses[g.weighted(subscriptionWeights)]
			qty := 1.0
			if p.id == "team-monthly" {
				qty = float64(2 + g.r.IntN(20))
			}
			amount := money(p.amount*qty, c.currency)
			step := func(t time.Time) time.Time {
				if p.interval == "1 year" {
					return t.AddDate(1, 0, 0)
				}
				return t.AddDate(0, 1, 0)
			}
			stop := end
			var canceled time.Time
			if status == "canceled" || status == "churned" {
				canceled = start.Add(time.Duration(1+g.r.IntN(150)) * 24 * time.Hour)
				stop = earliest(canceled, end)
			}
			inTrial := status == "pending" && g.chance(0.5)
			rebills := 0
			renewal := step(start)
			for due := start; status != "pending" && due.Before(stop); due = step(due) {
				rebills++
				renewal = step(due)
				invoiceNo++
				invID := "in_" + g.token(17, alnum)
				istatus := invoiceStatuses[g.weighted(invoiceWeights)]
				if due.After(end.Add(-10 * 24 * time.Hour)) {
					istatus = pick(g, []string{"unpaid", "draft"})
				}
				discount := 0.0
				if g.chance(0.1) {
					discount = money(amount*0.2, c.currency)
				}
				tax := money((amount-discount)*0.08, c.currency)
				total := money(amount-discount+tax, c.currency)
				fields := map[string]*structpb.Value{
					"id": str(invID), "invoiceNumber": num(float64(invoiceNo)), "customerId": str(c.id), "subscriptionId": str(id),
					"websiteId": str(pick(g, websites)), "status": str(istatus), "currency": str(c.currency),
					"subtotalAmount": num(amount), "discountAmount": num(discount), "taxAmount": num(tax), "amount": num(total),
					"amountDue": num(total), "issuedTime": str(recordTime(due)), "dueTime": str(recordTime(due.Add(14 * 24 * time.Hour))),
					"createdTime": str(recordTime(due)),
				}
				updated := due
				st := stats[c.id]
				st.invoices++
				if istatus == "paid" || istatus == "refunded" || istatus == "partially-paid" {
					paid := due.Add(time.Duration(g.r.IntN(72*3600)) * time.Second)
					fields["paidTime"] = str(recordTime(paid))
					updated = paid
					if istatus == "partially-paid" {
						fields["amountDue"] = num(money(total/2, c.currency))
					} else {
						fields["amountDue"] = num(0)
					}
					st.paid++
					st.revenue += total
					if paid.After(st.lastPaid) {
						st.lastPaid = paid
					}
				}
				if istatus == "draft" {
					delete(fields, "issuedTime")
				}
				r := record(invID, ResourceInvoices, due, updated, fields)
				r.OrganizationId = c.org
				invRecs = append(invRecs, r)
			}
			fields := map[string]*structpb.Value{
				"id": str(id), "customerId": str(c.id), "websiteId": str(pick(g, websites)), "status": str(status),
				"planId": str(p.id), "quantity": num(qty), "amount": num(amount), "currency": str(c.currency),
				"recurringInterval": str(p.interval), "inTrial": structpb.NewBoolValue(inTrial),
				"startTime": str(recordTime(start)), "rebillNumber": num(float64(rebills)), "createdTime": str(recordTime(start)),
			}
			updated := start
			switch {
			case !canceled.IsZero():
				fields["canceledTime"] = str(recordTime(canceled))
				updated = canceled
			case status != "pending":
				fields["renewalTime"] = str(recordTime(renewal))
			}
			r := record(id, ResourceSubscriptions, start, earliest(updated, end), fields)
			r.OrganizationId = c.org
			subRecs = append(subRecs, r)
		}
	}
	for _, r := range custRecs {
		st := stats[r.GetId()]
		f := r.GetFields().GetFields()
		f["lifetimeRevenue"] = num(money(st.revenue, f["currency"].GetStringValue()))
		f["invoiceCount"] = num(float64(st.invoices))
		f["paymentCount"] = num(float64(st.paid))
		if !st.lastPaid.IsZero() {
			f["lastPaymentTime"] = str(recordTime(st.lastPaid))
		}
		f["updatedTime"] = str(recordTime(r.GetUpdatedTime().AsTime()))
	}
	byCreated := func(a, b *sourcev1.Record) int {
		if c := a.GetCreatedTime().AsTime().Compare(b.GetCreatedTime().AsTime()); c != 0 {
			return c
		}
		return strings.Compare(a.GetId(), b.GetId())
	}
	slices.SortStableFunc(subRecs, byCreated)
	slices.SortStableFunc(invRecs, byCreated)
	return map[string][]*sourcev1.Record{ResourceCustomers: custRecs, ResourceSubscriptions: subRecs, ResourceInvoices: invRecs}
}

// money rounds to the currency's minor unit.
func money(v float64, currency string) float64 {
	if currency == "JPY" {
		return math.Round(v)
	}
	return math.Round(v*100) / 100
}

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
