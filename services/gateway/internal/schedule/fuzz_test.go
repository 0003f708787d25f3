package schedule_test

import (
	"errors"
	"testing"
	"time"

	"dataport.dev/services/gateway/internal/schedule"
)

// FuzzRecurrence checks Validate's promise on arbitrary rules and starts:
// it returns (rrule-go loops forever on some rules Parse must refuse), and
// a rule it accepts never has two occurrences closer than the minimum,
// neither from its start nor from now. Seeds live in
// testdata/fuzz/FuzzRecurrence.
func FuzzRecurrence(f *testing.F) {
	for _, rule := range []string{
		"FREQ=DAILY;BYHOUR=6",
		"FREQ=MINUTELY;BYSECOND=0,30",
		"FREQ=HOURLY;INTERVAL=24;BYHOUR=5",
		"FREQ=DAILY;BYHOUR=0,23;BYMINUTE=10,30",
	} {
		f.Add(rule, t0.Add(-30*24*time.Hour).Unix())
	}
	const minInterval = time.Hour
	f.Fuzz(func(t *testing.T, rule string, startUnix int64) {
		start := time.Unix(startUnix, 0).UTC()
		r, err := schedule.Validate(rule, start, t0, minInterval)
		if err != nil {
			if !errors.Is(err, schedule.ErrInvalidRule) && !errors.Is(err, schedule.ErrTooFrequent) {
				t.Fatalf("Validate(%q): error %v wraps neither ErrInvalidRule nor ErrTooFrequent", rule, err)
			}
			return
		}
		// One walk (each After would start again from the start): the
		// first occurrences, then those after now.
		next := r.Iterator()
		var prev time.Time
		early, late := 0, 0
		for late < 100 {
			occ, ok := next()
			if !ok {
				return
			}
			if occ.After(t0) {
				late++
			}
			if !prev.IsZero() && (early < 100 || late > 0) {
				if gap := occ.Sub(prev); gap < minInterval {
					t.Fatalf("Validate accepted %q from %s, but %s and %s are %s apart", rule, start, prev, occ, gap)
				}
			}
			early++
			prev = occ
		}
	})
}
