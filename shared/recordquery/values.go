package recordquery

import (
	"cmp"
	"math"
	"strconv"
	"strings"
	"time"
)

// FormatValue is the text form of a field value, used by text search,
// wildcards and by every export format that writes text: times in UTC RFC
// 3339 (with milliseconds when they are not zero), numbers without
// exponent or trailing zeros, lists joined with ", ", nil as "".
func FormatValue(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case float64:
		if math.IsInf(x, 0) || math.IsNaN(x) {
			return strconv.FormatFloat(x, 'g', -1, 64)
		}
		return strconv.FormatFloat(x, 'f', -1, 64)
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32)
	case int:
		return strconv.Itoa(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case uint64:
		return strconv.FormatUint(x, 10)
	case uint32:
		return strconv.FormatUint(uint64(x), 10)
	case int32:
		return strconv.FormatInt(int64(x), 10)
	case bool:
		return strconv.FormatBool(x)
	case time.Time:
		return FormatTime(x)
	case []string:
		return strings.Join(x, ", ")
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = FormatValue(e)
		}
		return strings.Join(parts, ", ")
	}
	return ""
}

// FormatTime writes t in UTC as RFC 3339, with milliseconds only when t has
// a sub-second part, so record times round-trip as the source wrote them.
func FormatTime(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond() == 0 {
		return t.Format(time.RFC3339)
	}
	return t.Format("2006-01-02T15:04:05.000Z07:00")
}

func toFloat(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case float32:
		return float64(x), true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case int32:
		return float64(x), true
	case uint64:
		return float64(x), true
	case uint32:
		return float64(x), true
	}
	return 0, false
}

func parseNumber(s string) (float64, bool) {
	f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(f) {
		return 0, false
	}
	return f, true
}

// parseTime accepts the absolute forms of ResolveDate, in UTC when the text
// carries no zone.
func parseTime(s string) (time.Time, bool) {
	t, err := parseAbsolute(strings.TrimSpace(s), time.UTC)
	return t, err == nil
}

// compareValue compares a record value with a filter literal: numerically
// for numbers, chronologically for times (and for text that reads as a
// time when the literal does too), case-insensitively for text. ok is false
// when the two cannot be compared (e.g. a number with "abc").
func compareValue(v any, lit string) (int, bool) {
	if f, ok := toFloat(v); ok {
		g, ok := parseNumber(lit)
		if !ok {
			return 0, false
		}
		return cmp.Compare(f, g), true
	}
	switch x := v.(type) {
	case time.Time:
		t, ok := parseTime(lit)
		if !ok {
			return 0, false
		}
		return x.Compare(t), true
	case bool:
		b, err := strconv.ParseBool(strings.ToLower(lit))
		if err != nil {
			return 0, false
		}
		if x == b {
			return 0, true
		}
		if !x {
			return -1, true
		}
		return 1, true
	case string:
		if f, ok := parseNumber(x); ok {
			if g, ok := parseNumber(lit); ok {
				return cmp.Compare(f, g), true
			}
		}
		if t, ok := parseTime(x); ok {
			if u, ok := parseTime(lit); ok {
				return t.Compare(u), true
			}
		}
		return strings.Compare(strings.ToLower(x), strings.ToLower(lit)), true
	}
	s := FormatValue(v)
	return strings.Compare(strings.ToLower(s), strings.ToLower(lit)), true
}

// typeRank orders values of different types in a sort: missing first, then
// booleans, numbers, times, text.
func typeRank(v any) int {
	if v == nil {
		return 0
	}
	if _, ok := toFloat(v); ok {
		return 2
	}
	switch v.(type) {
	case bool:
		return 1
	case time.Time:
		return 3
	}
	return 4
}

// compareAny is the total order of sorting: see typeRank across types;
// within a type numbers and times naturally, text case-insensitively with
// a case-sensitive tie break so the order is deterministic.
func compareAny(a, b any) int {
	ra, rb := typeRank(a), typeRank(b)
	if ra != rb {
		return cmp.Compare(ra, rb)
	}
	switch ra {
	case 0:
		return 0
	case 1:
		x, y := a.(bool), b.(bool)
		switch {
		case x == y:
			return 0
		case !x:
			return -1
		}
		return 1
	case 2:
		x, _ := toFloat(a)
		y, _ := toFloat(b)
		return cmp.Compare(x, y)
	case 3:
		return a.(time.Time).Compare(b.(time.Time))
	}
	x, y := FormatValue(a), FormatValue(b)
	if c := strings.Compare(strings.ToLower(x), strings.ToLower(y)); c != 0 {
		return c
	}
	return strings.Compare(x, y)
}

// CompareValues is the order Less and Compare use for one field's values,
// for callers that keep values outside records (e.g. an external sort):
// missing before booleans, numbers, times and text; text case-insensitive
// with a case-sensitive tie break.
func CompareValues(a, b any) int { return compareAny(a, b) }
