package rebilly

import (
	"testing"
	"time"
)

// TestFormatWordIsTheInverseOfFormats: every format a request may name
// is shown by the word that names it.
func TestFormatWordIsTheInverseOfFormats(t *testing.T) {
	for w, f := range formats {
		if got := formatWord(f); got != w {
			t.Errorf("formatWord(%v) = %q, want %q", f, got, w)
		}
	}
}

// TestListedSecsAreTheTextsSeconds: the seconds the list sorts a time by
// are those of the time's text read back, for the years the text holds
// and for those it cannot.
func TestListedSecsAreTheTextsSeconds(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2026, 6, 15, 12, 0, 0, 999_999_999, time.UTC),
		time.Date(1969, 12, 31, 23, 59, 59, 500_000_000, time.UTC),
		time.Date(2026, 6, 15, 14, 0, 0, 1, time.FixedZone("", 2*3600)),
		time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(0, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999, time.UTC),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(-44, 3, 15, 0, 0, 0, 0, time.UTC),
		{},
	} {
		if got, want := listedSecs(tm), parsedSecs(rfc3339(tm)); got != want {
			t.Errorf("%v: %d, its text's %d", tm, got, want)
		}
	}
}
