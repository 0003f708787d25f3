package recordquery

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// absoluteLayouts are the absolute forms ResolveDate accepts besides
// RFC 3339. Layouts without a zone are read in the caller's location.
var absoluteLayouts = []string{
	"2006-01-02T15:04:05.999999999",
	"2006-01-02T15:04:05",
	"2006-01-02T15:04",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02 15:04:05",
	"2006-01-02 15:04",
	"2006-01-02",
}

// maxRelative bounds the number in "N units" so arithmetic cannot overflow
// (a million years is far beyond any real export).
const maxRelative = 1_000_000

func parseAbsolute(s string, loc *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("empty date")
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if len(s) > 1 && s[0] == '@' {
		n, err := strconv.ParseInt(s[1:], 10, 64)
		if err == nil && n > -1e12 && n < 1e12 {
			return time.Unix(n, 0).In(loc), nil
		}
	}
	for _, l := range absoluteLayouts {
		if t, err := time.ParseInLocation(l, s, loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("not an absolute date: %q", s)
}

// ResolveDate turns an absolute or relative date expression into a time,
// the way PHP's strtotime (which Rebilly's dateRange follows) reads them.
//
// Absolute: RFC 3339 ("2026-05-01T10:00:00Z"), "YYYY-MM-DD",
// "YYYY-MM-DD HH:MM[:SS]", "YYYY-MM-DDTHH:MM[:SS]" and "@<unix seconds>";
// forms without a zone are in loc.
//
// Relative, from now in loc, case-insensitive, combinable left to right
// ("yesterday noon", "first day of last month midnight", "2026-05-01 +1 week"):
//
//	now                          now
//	today, midnight              00:00 today
//	noon                         12:00 the same day
//	yesterday, tomorrow          00:00 of the day before / after
//	+N unit, -N unit, N unit ago unit: sec, second, min, minute, hour, day,
//	                             week, fortnight, month, year (plural ok);
//	                             keeps the time of day
//	next|last|previous|this unit ±1 (0 for this) unit
//	first day of / last day of   first / last day of the month reached by
//	                             the rest ("first day of last month"),
//	                             keeping the time of day, as PHP does
//	monday … sunday              00:00 of that weekday, today or later
//	next|last monday             strictly after / before today, 00:00
//	monday this|next|last week   that weekday of the (ISO, Monday-first)
//	                             week, 00:00
//	HH:MM[:SS]                   sets the time of day
//
// The result is in loc. Errors name the word that could not be read.
func ResolveDate(expr string, now time.Time, loc *time.Location) (time.Time, error) {
	if loc == nil {
		loc = time.UTC
	}
	s := strings.TrimSpace(expr)
	if s == "" {
		return time.Time{}, errors.New("date: empty expression")
	}
	if t, err := parseAbsolute(s, loc); err == nil {
		return inYearRange(expr, t.In(loc))
	}
	toks := strings.Fields(strings.ToLower(s))
	t := now.In(loc)
	i := 0
	// A leading absolute date anchors the relative words that follow.
	if len(toks) >= 2 {
		if a, err := parseAbsolute(toks[0]+" "+toks[1], loc); err == nil && strings.Contains(toks[1], ":") {
			t, i = a, 2
		}
	}
	if i == 0 {
		if a, err := parseAbsolute(toks[0], loc); err == nil {
			t, i = a, 1
		}
	}

	// "first/last day of" must see the month offset before the day is
	// fixed, or Jan 31 + 1 month would overflow into March.
	dayOf := 0 // 1 first, 2 last
	for k := i; k+2 < len(toks); k++ {
		if toks[k+1] == "day" && toks[k+2] == "of" && (toks[k] == "first" || toks[k] == "last") {
			if toks[k] == "first" {
				dayOf = 1
			} else {
				dayOf = 2
			}
		}
	}
	if dayOf != 0 {
		t = time.Date(t.Year(), t.Month(), 1, t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), loc)
	}

	for i < len(toks) {
		tok := toks[i]
		switch {
		case tok == "now":
			i++
		case tok == "today" || tok == "midnight":
			t = startOfDay(t)
			i++
		case tok == "noon":
			t = startOfDay(t).Add(12 * time.Hour)
			i++
		case tok == "yesterday":
			t = startOfDay(t).AddDate(0, 0, -1)
			i++
		case tok == "tomorrow":
			t = startOfDay(t).AddDate(0, 0, 1)
			i++
		case (tok == "first" || tok == "last") && i+2 < len(toks) && toks[i+1] == "day" && toks[i+2] == "of":
			i += 3 // applied around the loop
		case isWeekday(tok):
			wd, _ := weekday(tok)
			if i+2 < len(toks) && toks[i+2] == "week" {
				off, ok := relWord(toks[i+1])
				if !ok {
					return time.Time{}, fmt.Errorf("date: %q: unknown word %q before \"week\"", expr, toks[i+1])
				}
				t = isoWeekStart(t).AddDate(0, 0, 7*off+(int(wd)+6)%7)
				i += 3
				continue
			}
			t = startOfDay(t)
			t = t.AddDate(0, 0, (int(wd)-int(t.Weekday())+7)%7)
			i++
		case isRelWord(tok) && i+1 < len(toks):
			off, _ := relWord(tok)
			next := toks[i+1]
			if wd, ok := weekday(next); ok {
				t = startOfDay(t)
				d := (int(wd) - int(t.Weekday()) + 7) % 7
				switch {
				case off > 0 && d == 0:
					d = 7
				case off < 0:
					d = -((int(t.Weekday()) - int(wd) + 7) % 7)
					if d == 0 {
						d = -7
					}
				case off == 0:
					// "this monday": today or later, like a bare weekday.
				}
				t = t.AddDate(0, 0, d)
				i += 2
				continue
			}
			nt, ok := addUnit(t, next, off)
			if !ok {
				return time.Time{}, fmt.Errorf("date: %q: unknown unit %q after %q", expr, next, tok)
			}
			t = nt
			i += 2
		case isNumber(tok):
			n, err := strconv.Atoi(strings.TrimPrefix(tok, "+"))
			if err != nil || n > maxRelative || n < -maxRelative {
				return time.Time{}, fmt.Errorf("date: %q: number %q out of range", expr, tok)
			}
			unit := ""
			if i+1 < len(toks) {
				unit = toks[i+1]
			}
			step := 2
			if i+2 < len(toks) && toks[i+2] == "ago" {
				n, step = -n, 3
			}
			nt, ok := addUnit(t, unit, n)
			if !ok {
				return time.Time{}, fmt.Errorf("date: %q: expected a unit after %q, got %q", expr, tok, unit)
			}
			t = nt
			i += step
		case isClock(tok):
			c, err := time.Parse("15:04:05", padClock(tok))
			if err != nil {
				return time.Time{}, fmt.Errorf("date: %q: bad time of day %q", expr, tok)
			}
			t = time.Date(t.Year(), t.Month(), t.Day(), c.Hour(), c.Minute(), c.Second(), 0, loc)
			i++
		default:
			// Signs glued to numbers with units ("-7days") are common too.
			if n, unit, ok := splitGlued(tok); ok {
				nt, ok := addUnit(t, unit, n)
				if ok {
					t = nt
					i++
					continue
				}
			}
			return time.Time{}, fmt.Errorf("date: %q: cannot read %q", expr, tok)
		}
	}
	if dayOf == 2 {
		t = time.Date(t.Year(), t.Month()+1, 0, t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), loc)
	}
	return inYearRange(expr, t)
}

// inYearRange bounds every result, absolute ones too ("@999999999999",
// "9999-12-31T23:59:59-23:59" read in UTC), to years 0-9999: beyond them a
// time is no valid protobuf Timestamp.
func inYearRange(expr string, t time.Time) (time.Time, error) {
	if t.Year() < 0 || t.Year() > 9999 {
		return time.Time{}, fmt.Errorf("date: %q: year %d out of range", expr, t.Year())
	}
	return t, nil
}

func startOfDay(t time.Time) time.Time {
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
}

func isoWeekStart(t time.Time) time.Time {
	t = startOfDay(t)
	return t.AddDate(0, 0, -((int(t.Weekday()) + 6) % 7))
}

var weekdays = map[string]time.Weekday{
	"sunday": time.Sunday, "monday": time.Monday, "tuesday": time.Tuesday, "wednesday": time.Wednesday,
	"thursday": time.Thursday, "friday": time.Friday, "saturday": time.Saturday,
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

func weekday(s string) (time.Weekday, bool) {
	w, ok := weekdays[s]
	return w, ok
}

func isWeekday(s string) bool { _, ok := weekdays[s]; return ok }

func relWord(s string) (int, bool) {
	switch s {
	case "next":
		return 1, true
	case "last", "previous":
		return -1, true
	case "this":
		return 0, true
	}
	return 0, false
}

func isRelWord(s string) bool { _, ok := relWord(s); return ok }

func isNumber(s string) bool {
	if s == "" {
		return false
	}
	if s[0] == '+' || s[0] == '-' {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func isClock(s string) bool {
	n := strings.Count(s, ":")
	if n < 1 || n > 2 || len(s) > 8 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] != ':' && (s[i] < '0' || s[i] > '9') {
			return false
		}
	}
	return true
}

func padClock(s string) string {
	parts := strings.Split(s, ":")
	for len(parts) < 3 {
		parts = append(parts, "00")
	}
	for i, p := range parts {
		if len(p) == 1 {
			parts[i] = "0" + p
		}
	}
	return strings.Join(parts, ":")
}

// splitGlued reads "-7days" / "+1week".
func splitGlued(s string) (int, string, bool) {
	j := 0
	if j < len(s) && (s[j] == '+' || s[j] == '-') {
		j++
	}
	k := j
	for k < len(s) && s[k] >= '0' && s[k] <= '9' {
		k++
	}
	if k == j || k == len(s) {
		return 0, "", false
	}
	n, err := strconv.Atoi(strings.TrimPrefix(s[:k], "+"))
	if err != nil || n > maxRelative || n < -maxRelative {
		return 0, "", false
	}
	return n, s[k:], true
}

// addUnit adds n units to t; ok is false for an unknown unit.
func addUnit(t time.Time, unit string, n int) (time.Time, bool) {
	switch strings.TrimSuffix(unit, "s") {
	case "sec", "second":
		return t.Add(time.Duration(n) * time.Second), true
	case "min", "minute":
		return t.Add(time.Duration(n) * time.Minute), true
	case "hour":
		return t.Add(time.Duration(n) * time.Hour), true
	case "day":
		return t.AddDate(0, 0, n), true
	case "week":
		return t.AddDate(0, 0, 7*n), true
	case "fortnight":
		return t.AddDate(0, 0, 14*n), true
	case "month":
		return t.AddDate(0, n, 0), true
	case "year":
		return t.AddDate(n, 0, 0), true
	}
	return t, false
}
