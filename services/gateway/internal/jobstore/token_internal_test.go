package jobstore

import (
	"regexp"
	"strings"
	"testing"
)

// TestPlainTokenIsTheKeyAlphabet pins plainToken to the pattern keys were
// first written with, so that a job indexed before keeps its keys.
func TestPlainTokenIsTheKeyAlphabet(t *testing.T) {
	pattern := regexp.MustCompile(`^[a-z0-9_]{1,32}$`)
	for _, s := range []string{"", "rebilly", "rocketchat", "room", "user_data", "a1_", "Rebilly", "my-tracker", "a.b", "a b", "ä",
		strings.Repeat("a", 32), strings.Repeat("a", 33), "x*", "x>", "{", "`", "/", ":", "@", "[", "\x00"} {
		if got, want := plainToken(s), pattern.MatchString(s); got != want {
			t.Errorf("plainToken(%q) = %v, want %v", s, got, want)
		}
	}
}
