package recordquery

import (
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type rec map[string]any

func (r rec) get(f string) (any, bool) { v, ok := r[f]; return v, ok }

var txns = []rec{
	{"id": "t1", "status": "approved", "currency": "USD", "amount": 10.0, "description": `Order "special", with quotes`, "createdTime": time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC), "tags": []string{"a", "b"}},
	{"id": "t2", "status": "declined", "currency": "EUR", "amount": 25.5, "description": "Pro plan (annual)", "createdTime": time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)},
	{"id": "t3", "status": "Approved", "currency": "usd", "amount": 3.0, "description": "", "createdTime": time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC), "customerId": "cus_1"},
	{"id": "t4", "status": "refunded", "currency": "GBP", "amount": 100.0, "description": "Refund of order 7", "createdTime": "2026-03-15T08:00:00Z"},
}

func matching(t *testing.T, filter string) []string {
	t.Helper()
	f, err := ParseFilter(filter)
	require.NoError(t, err, filter)
	var ids []string
	for _, r := range txns {
		if f.Match(r.get) {
			ids = append(ids, r["id"].(string))
		}
	}
	return ids
}

func TestFilterMatch(t *testing.T) {
	tests := []struct {
		filter string
		want   []string
	}{
		{"", []string{"t1", "t2", "t3", "t4"}},
		{"status:approved", []string{"t1", "t3"}},
		{"status:approved,declined", []string{"t1", "t2", "t3"}},
		{"status:approved;currency:USD", []string{"t1", "t3"}},
		{"status:approved;currency:EUR", nil},
		{"status:!approved", []string{"t2", "t4"}},
		{"status:!approved,declined", []string{"t4"}},
		{"status:approved,declined,!declined", []string{"t1", "t3"}},
		{"amount:5..30", []string{"t1", "t2"}},
		{"amount:10..", []string{"t1", "t2", "t4"}},
		{"amount:..10", []string{"t1", "t3"}},
		{"amount:25.5", []string{"t2"}},
		{"createdTime:2026-02-01..2026-03-01T12:00:00Z", []string{"t2", "t3"}},
		{"createdTime:2026-03-10..", []string{"t4"}},
		{"description:*order*", []string{"t1", "t4"}},
		{"description:pro*", []string{"t2"}},
		{"description:null", []string{"t3"}},
		{"customerId:null", []string{"t1", "t2", "t4"}},
		{"customerId:!null", []string{"t3"}},
		{`description:"Order \"special\", with quotes"`, []string{"t1"}},
		{"tags:b", []string{"t1"}},
		{" status : approved ; ; currency:usd ;", []string{"t1", "t3"}},
		{"id:t1,t4;amount:50..", []string{"t4"}},
		// Groups: at least one of their conditions (myTracker's idApp or
		// SDKKey), ANDed with the rest.
		{"(status:declined|currency:GBP)", []string{"t2", "t4"}},
		{"(status:declined,refunded | amount:3)", []string{"t2", "t3", "t4"}},
		{"(status:declined|currency:GBP);amount:..50", []string{"t2"}},
		{"amount:..50;(currency:usd|customerId:!null)", []string{"t1", "t3"}},
		{`(description:"a|b)"|id:t1)`, []string{"t1"}},
		{"(status:!approved)", []string{"t2", "t4"}},
		{"status:approved|declined", nil}, // outside a group "|" is part of the value, as in Rebilly
	}
	for _, tc := range tests {
		t.Run(tc.filter, func(t *testing.T) {
			assert.Equal(t, tc.want, matching(t, tc.filter))
		})
	}
}

func TestParseFilterErrors(t *testing.T) {
	tests := []struct {
		filter string
		field  string
		msg    string
	}{
		{"status", "status", "expected field:value"},
		{":x", "", "missing field name"},
		{"status:", "status", "empty value"},
		{"status:a,,b", "status", "empty value"},
		{"st atus:a", "st atus", "invalid field name"},
		{"status:@myList", "status", "value lists"},
		{`status:"open`, "status", "unterminated"},
		{"amount:..", "amount", "at least one bound"},
		{"amount:10..1", "amount", "empty"},
		{"amount:1..2..3", "amount", "more than one"},
		{`status:a"b`, "status", "quote inside"},
		{`status:"a"x`, "status", "unexpected"},
		{"(status:a", "", "unclosed"},
		{"(status:a;currency:b)", "", "unclosed"},
		{"(status:a)x", "", "unexpected"},
		{"((status:a))", "", "do not nest"},
		{"(status:a|)", "", "expected field:value"},
		{"()", "", "expected field:value"},
		{"(sta|tus:a)", "sta", "expected field:value"},
	}
	for _, tc := range tests {
		t.Run(tc.filter, func(t *testing.T) {
			_, err := ParseFilter(tc.filter)
			require.Error(t, err)
			var pe *ParseError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, "filter", pe.Param)
			assert.Equal(t, tc.field, pe.Field)
			assert.Contains(t, err.Error(), tc.msg)
			if tc.field != "" {
				assert.Contains(t, err.Error(), `"`+tc.field+`"`)
			}
		})
	}
}

func TestFilterFields(t *testing.T) {
	f, err := ParseFilter("status:a;u.username:alice;(appId:1|sdkKey:2)")
	require.NoError(t, err)
	assert.Equal(t, []string{"status", "u.username", "appId", "sdkKey"}, f.Fields())
	assert.Error(t, ValidateFields(ResourceTransactions, f.Fields()))
	assert.NoError(t, ValidateFields(ResourceMessages, []string{"u.username", "createdTime"}))
}

func TestParseSort(t *testing.T) {
	keys, err := ParseSort("-createdTime, name,+amount")
	require.NoError(t, err)
	assert.Equal(t, []SortKey{{"createdTime", true}, {"name", false}, {"amount", false}}, keys)
	assert.Equal(t, []string{"createdTime", "name", "amount"}, SortFields(keys))

	keys, err = ParseSort("  ")
	require.NoError(t, err)
	assert.Empty(t, keys)

	for _, bad := range []string{"a,,b", "-", "na me", "a,a", "a;b"} {
		_, err := ParseSort(bad)
		var pe *ParseError
		require.ErrorAs(t, err, &pe, bad)
		assert.Equal(t, "sort", pe.Param)
	}
}

func TestLessSortsRecords(t *testing.T) {
	rs := slices.Clone(txns)
	keys, err := ParseSort("currency,-amount")
	require.NoError(t, err)
	sort.SliceStable(rs, func(i, j int) bool { return Less(keys, rs[i].get, rs[j].get) })
	var ids []string
	for _, r := range rs {
		ids = append(ids, r["id"].(string))
	}
	// EUR, GBP, then usd/USD by amount descending.
	assert.Equal(t, []string{"t2", "t4", "t1", "t3"}, ids)

	keys, _ = ParseSort("customerId")
	assert.True(t, Less(keys, txns[0].get, txns[2].get), "missing sorts first")
	keys, _ = ParseSort("-customerId")
	assert.False(t, Less(keys, txns[0].get, txns[2].get))
}

func TestMatchQ(t *testing.T) {
	fields := []string{"id", "status", "description"}
	tests := []struct {
		q    string
		want []string
	}{
		{"", []string{"t1", "t2", "t3", "t4"}},
		{"ORDER", []string{"t1", "t4"}},
		{"order refund", []string{"t4"}},
		{"approv", []string{"t1", "t3"}},
		{"nothing-like-this", nil},
	}
	for _, tc := range tests {
		t.Run(tc.q, func(t *testing.T) {
			var ids []string
			for _, r := range txns {
				if MatchQ(tc.q, r.get, fields) {
					ids = append(ids, r["id"].(string))
				}
			}
			assert.Equal(t, tc.want, ids)
		})
	}
}

func TestFields(t *testing.T) {
	for _, r := range []string{ResourceTransactions, ResourceEvents, ResourceMessages, ResourceRooms, ResourceUsers} {
		fs, ok := Fields(r)
		require.True(t, ok, r)
		assert.NotEmpty(t, fs)
		assert.NoError(t, ValidateFields(r, DefaultFields(r)))
		assert.NoError(t, ValidateFields(r, []string{TimeField(r)}))
		for _, tf := range TextFields(r) {
			assert.Contains(t, fs, tf)
		}
	}
	_, ok := Fields("payments")
	assert.False(t, ok)
	assert.Nil(t, DefaultFields("payments"))
	err := ValidateFields(ResourceTransactions, []string{"id", "bogus"})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `"bogus"`)
	assert.ErrorContains(t, ValidateFields("payments", nil), `"payments"`)
	assert.Equal(t, []string{"_id", "rid", "ts", "u.username", "msg"}, DefaultFields(ResourceMessages))
	assert.Equal(t, "ts", Canonical(ResourceMessages, "createdTime"))
	assert.Equal(t, "createdTime", Canonical(ResourceTransactions, "createdTime"))
	assert.NotContains(t, mustFields(ResourceUsers), "auth_token_sha256")
}

func mustFields(r string) []string { f, _ := Fields(r); return f }

func TestResolveDate(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		berlin = time.FixedZone("CET", 3600)
	}
	// Wednesday 2026-05-13 15:04:05 in Berlin.
	now := time.Date(2026, 5, 13, 15, 4, 5, 0, berlin)
	day := func(y int, m time.Month, d, h, mi, s int) time.Time { return time.Date(y, m, d, h, mi, s, 0, berlin) }
	tests := []struct {
		expr string
		want time.Time
	}{
		{"2026-05-01T10:00:00Z", time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)},
		{"2026-05-01", day(2026, 5, 1, 0, 0, 0)},
		{"2026-05-01 08:30:00", day(2026, 5, 1, 8, 30, 0)},
		{"2026-05-01T08:30", day(2026, 5, 1, 8, 30, 0)},
		{"now", now},
		{"today", day(2026, 5, 13, 0, 0, 0)},
		{"midnight", day(2026, 5, 13, 0, 0, 0)},
		{"Yesterday", day(2026, 5, 12, 0, 0, 0)},
		{"tomorrow", day(2026, 5, 14, 0, 0, 0)},
		{"yesterday noon", day(2026, 5, 12, 12, 0, 0)},
		{"-7 days", day(2026, 5, 6, 15, 4, 5)},
		{"-7days", day(2026, 5, 6, 15, 4, 5)},
		{"+1 week", day(2026, 5, 20, 15, 4, 5)},
		{"2 hours ago", day(2026, 5, 13, 13, 4, 5)},
		{"-1 month", day(2026, 4, 13, 15, 4, 5)},
		{"last month", day(2026, 4, 13, 15, 4, 5)},
		{"next year", day(2027, 5, 13, 15, 4, 5)},
		{"first day of last month", day(2026, 4, 1, 15, 4, 5)},
		{"first day of last month midnight", day(2026, 4, 1, 0, 0, 0)},
		{"last day of this month", day(2026, 5, 31, 15, 4, 5)},
		{"last day of next month", day(2026, 6, 30, 15, 4, 5)},
		{"first day of this month 00:00", day(2026, 5, 1, 0, 0, 0)},
		{"monday this week", day(2026, 5, 11, 0, 0, 0)},
		{"sunday this week", day(2026, 5, 17, 0, 0, 0)},
		{"monday next week", day(2026, 5, 18, 0, 0, 0)},
		{"monday last week", day(2026, 5, 4, 0, 0, 0)},
		{"friday", day(2026, 5, 15, 0, 0, 0)},
		{"wednesday", day(2026, 5, 13, 0, 0, 0)},
		{"next wednesday", day(2026, 5, 20, 0, 0, 0)},
		{"last wednesday", day(2026, 5, 6, 0, 0, 0)},
		{"last friday", day(2026, 5, 8, 0, 0, 0)},
		{"today 14:30", day(2026, 5, 13, 14, 30, 0)},
		{"2026-01-31 +1 month", day(2026, 3, 3, 0, 0, 0)},
		{"@0", time.Unix(0, 0).In(berlin)},
	}
	for _, tc := range tests {
		t.Run(tc.expr, func(t *testing.T) {
			got, err := ResolveDate(tc.expr, now, berlin)
			require.NoError(t, err)
			assert.True(t, tc.want.Equal(got), "want %s, got %s", tc.want, got)
			assert.Equal(t, berlin, got.Location())
		})
	}
	// Jan 31: "first day of next month" must land in February, not March.
	jan31 := time.Date(2026, 1, 31, 9, 0, 0, 0, time.UTC)
	got, err := ResolveDate("first day of next month", jan31, time.UTC)
	require.NoError(t, err)
	assert.Equal(t, time.Date(2026, 2, 1, 9, 0, 0, 0, time.UTC), got)
	got, err = ResolveDate("last day of next month", jan31, time.UTC)
	require.NoError(t, err)
	assert.Equal(t, time.Date(2026, 2, 28, 9, 0, 0, 0, time.UTC), got)
}

func TestResolveDateErrors(t *testing.T) {
	now := time.Date(2026, 5, 13, 15, 4, 5, 0, time.UTC)
	for _, expr := range []string{"", "   ", "banana", "-7 parsecs", "7", "next", "monday someday week", "+99999999999 days", "2026-13-01", "999999 years", "25:99"} {
		t.Run(expr, func(t *testing.T) {
			_, err := ResolveDate(expr, now, time.UTC)
			assert.Error(t, err)
		})
	}
}

func TestFormatValue(t *testing.T) {
	assert.Equal(t, "12.5", FormatValue(12.5))
	assert.Equal(t, "1000000", FormatValue(1e6))
	assert.Equal(t, "2026-05-01T10:00:00Z", FormatValue(time.Date(2026, 5, 1, 12, 0, 0, 0, time.FixedZone("x", 7200))))
	assert.Equal(t, "2026-05-01T10:00:00.250Z", FormatValue(time.Date(2026, 5, 1, 10, 0, 0, 250e6, time.UTC)))
	assert.Equal(t, "a, b", FormatValue([]string{"a", "b"}))
	assert.Equal(t, "", FormatValue(nil))
	assert.Equal(t, "true", FormatValue(true))
}

func TestResourceDefinitions(t *testing.T) {
	for _, r := range Builtins() {
		assert.NoError(t, r.Validate(), r.Name)
		assert.True(t, r.Builtin, r.Name)
		assert.True(t, r.VisibleTo("acme") && r.VisibleTo(""), "%s is every organization's", r.Name)
	}
	own := Resource{Name: "widgets", Organization: "acme",
		Fields: []Field{{Name: "id"}, {Name: "size", Type: TypeNumber}, {Name: "label", Type: TypeString}, {Name: "at", Type: TypeDatetime}}}
	require.NoError(t, own.Validate())
	assert.True(t, own.VisibleTo("acme"))
	assert.False(t, own.VisibleTo("globex"))
	assert.False(t, own.VisibleTo(""))
	assert.Equal(t, SourceRecords, own.SourceOf())
	assert.Equal(t, []string{"id", "size", "label", "at"}, own.Defaults(), "every field when none are default")
	assert.Equal(t, []string{"id", "label"}, own.Text(), "string and untyped fields when none are named")
	assert.Equal(t, "createdTime", own.TimeField())
	assert.NoError(t, own.ValidateDateField("at"))
	assert.ErrorContains(t, own.ValidateDateField("size"), "not a date")
	assert.ErrorContains(t, own.ValidateDateField("when"), `"when"`)
	assert.NoError(t, own.ValidateDateField("id"), "an untyped field may hold dates")
	cp := own.Clone()
	cp.Fields[0].Name = "changed"
	assert.Equal(t, "id", own.Fields[0].Name, "Clone copies the fields")
}
