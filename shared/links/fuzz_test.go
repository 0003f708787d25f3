package links_test

import (
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"dataport.dev/shared/links"
)

// FuzzVerify: whatever a caller puts in the path and the exp and sig
// query values, a Signer with a current and a previous key answers nil,
// ErrBadSignature or ErrExpired, and nil only for the signature, under one
// of its keys, of exactly that job, file and a future expiry. Seeds live
// in testdata/fuzz/FuzzVerify.
func FuzzVerify(f *testing.F) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	secret := []byte("fuzz-secret")
	valid := now.Add(time.Hour).Unix()
	good := links.Signature(secret, "job1", "a.json", valid)
	for _, c := range [][4]string{
		{"job1", "a.json", strconv.FormatInt(valid, 10), good},
		{"job1", "a.json", "+" + strconv.FormatInt(valid, 10), good},
		{"job1", "a.json", "0" + strconv.FormatInt(valid, 10), strings.ToUpper(good)},
		{"job1", "a.json", strconv.FormatInt(now.Unix(), 10), links.Signature(secret, "job1", "a.json", now.Unix())},
		{"job1", "a.json", "9223372036854775807", links.Signature(secret, "job1", "a.json", 9223372036854775807)},
		{"job1", "a.json", "-9223372036854775808", links.Signature(secret, "job1", "a.json", -9223372036854775808)},
		{"job1", "a.json", "1e400", good},
		{"job1", "a.json/" + strconv.FormatInt(valid, 10), "", good},
		{"job1/a.json", strconv.FormatInt(valid, 10), "", good},
		{"job1\x00", "a.json\r\n", strconv.FormatInt(valid, 10), good},
		{"..", "../../etc/passwd", "", ""},
		{"job1", "a.json", strconv.FormatInt(valid, 10), good[:63]},
		{"job1", "a.json", strconv.FormatInt(valid, 10), good + "00"},
	} {
		f.Add(c[0], c[1], c[2], c[3])
	}
	previous := []byte("fuzz-previous-secret")
	f.Add("job1", "a.json", strconv.FormatInt(valid, 10), links.Signature(previous, "job1", "a.json", valid))
	s := links.NewRotating("https://gw.example", [][]byte{secret, previous}, time.Hour, func() time.Time { return now })
	signed := func(jobID, name, sig string, n int64) bool {
		return strings.EqualFold(sig, links.Signature(secret, jobID, name, n)) ||
			strings.EqualFold(sig, links.Signature(previous, jobID, name, n))
	}
	f.Fuzz(func(t *testing.T, jobID, name, exp, sig string) {
		err := s.Verify(jobID, name, exp, sig)
		switch {
		case err == nil:
			n, perr := strconv.ParseInt(exp, 10, 64)
			if perr != nil || !now.Before(time.Unix(n, 0)) {
				t.Fatalf("accepted exp %q at %v", exp, now)
			}
			if !signed(jobID, name, sig, n) {
				t.Fatalf("accepted sig %q for %q/%q/%d", sig, jobID, name, n)
			}
		case errors.Is(err, links.ErrExpired):
			n, _ := strconv.ParseInt(exp, 10, 64)
			if !signed(jobID, name, sig, n) {
				t.Fatalf("expired answered for a signature that does not match: %q", sig)
			}
		case errors.Is(err, links.ErrBadSignature):
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}

// FuzzLinkRoundTrip: a minted link, read back the way the gateway reads
// it (path segments unescaped, exp and sig from the query), verifies for
// its job and file and for no other file of a job id without '/' (job ids
// never contain one, which is what keeps "<job>/<name>/<exp>"
// unambiguous).
func FuzzLinkRoundTrip(f *testing.F) {
	for _, c := range [][3]string{
		{"job1", "general room.json", "other.json"},
		{"raw-1", "1.install.0123.1.csv.gz", "1.install.0123.2.csv.gz"},
		{"j", "a/b", "a%2Fb"},
		{"j", "..", "."},
		{"j", "\x00\r\n", ""},
		{"j", "ü?#&=+%", "ü"},
	} {
		f.Add(c[0], c[1], c[2])
	}
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	s := links.New("https://gw.example/", []byte("k"), time.Hour, func() time.Time { return now })
	f.Fuzz(func(t *testing.T, jobID, name, other string) {
		if jobID == "" || strings.Contains(jobID, "/") {
			t.Skip("not a job id")
		}
		raw, _ := s.URL(jobID, name)
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("minted link %q does not parse: %v", raw, err)
		}
		segs := strings.Split(strings.TrimPrefix(u.EscapedPath(), "/"), "/")
		if len(segs) != 5 || segs[0] != "v1" || segs[1] != "exports" || segs[3] != "files" {
			t.Fatalf("link %q: path %q", raw, u.EscapedPath())
		}
		gotJob, err1 := url.PathUnescape(segs[2])
		gotName, err2 := url.PathUnescape(segs[4])
		if err1 != nil || err2 != nil || gotJob != jobID || gotName != name {
			t.Fatalf("link %q reads back as %q/%q, want %q/%q", raw, gotJob, gotName, jobID, name)
		}
		q := u.Query()
		if err := s.Verify(gotJob, gotName, q.Get("exp"), q.Get("sig")); err != nil {
			t.Fatalf("link %q does not verify: %v", raw, err)
		}
		if other != name {
			if err := s.Verify(jobID, other, q.Get("exp"), q.Get("sig")); !errors.Is(err, links.ErrBadSignature) {
				t.Fatalf("link for %q verifies for %q: %v", name, other, err)
			}
		}
	})
}
