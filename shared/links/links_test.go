package links_test

import (
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"dataport.dev/shared/links"
)

func TestSignedLinks(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	secret := []byte("s3cret")
	s := links.New("https://exports.example.com/", secret, time.Hour, clock)

	raw, exp := s.URL("job1", "general room.json")
	assert.Equal(t, now.Add(time.Hour), exp)
	u, err := url.Parse(raw)
	require.NoError(t, err)
	assert.Equal(t, "https", u.Scheme)
	assert.Equal(t, "exports.example.com", u.Host)
	assert.Equal(t, "/v1/exports/job1/files/general room.json", u.Path)
	q := u.Query()
	assert.Equal(t, strconv.FormatInt(exp.Unix(), 10), q.Get("exp"))
	assert.Equal(t, links.Signature(secret, "job1", "general room.json", exp.Unix()), q.Get("sig"))

	assert.NoError(t, s.Verify("job1", "general room.json", q.Get("exp"), q.Get("sig")))

	cases := []struct {
		name, job, file, exp, sig string
		want                      error
	}{
		{"other job", "job2", "general room.json", q.Get("exp"), q.Get("sig"), links.ErrBadSignature},
		{"other file", "job1", "other.json", q.Get("exp"), q.Get("sig"), links.ErrBadSignature},
		{"later expiry", "job1", "general room.json", strconv.FormatInt(exp.Unix()+3600, 10), q.Get("sig"), links.ErrBadSignature},
		{"no signature", "job1", "general room.json", q.Get("exp"), "", links.ErrBadSignature},
		{"signature not hex", "job1", "general room.json", q.Get("exp"), "zz", links.ErrBadSignature},
		{"no expiry", "job1", "general room.json", "", q.Get("sig"), links.ErrBadSignature},
		{"other secret", "job1", "general room.json", q.Get("exp"), links.Signature([]byte("x"), "job1", "general room.json", exp.Unix()), links.ErrBadSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.ErrorIs(t, s.Verify(tc.job, tc.file, tc.exp, tc.sig), tc.want)
		})
	}

	t.Run("expired", func(t *testing.T) {
		later := links.New("https://exports.example.com", secret, time.Hour, func() time.Time { return exp })
		assert.ErrorIs(t, later.Verify("job1", "general room.json", q.Get("exp"), q.Get("sig")), links.ErrExpired)
		// An expired link with a bad signature is reported as bad, not as
		// expired.
		assert.ErrorIs(t, later.Verify("job1", "general room.json", q.Get("exp"), q.Get("sig")[1:]+"0"), links.ErrBadSignature)
	})
}

func TestURLUntilMatchesExternallyComputedSignature(t *testing.T) {
	// The signature was computed outside Go (Python's hmac module), so this
	// pins the link format, not this code's idea of it.
	const secret = "dev-only-link-secret-change-me"
	exp := time.Unix(1767225600, 999_000_000)
	for _, base := range []string{"http://127.0.0.1:8080", "http://127.0.0.1:8080/"} {
		s := links.New(base, []byte(secret), time.Hour, nil)
		assert.Equal(t,
			"http://127.0.0.1:8080/v1/exports/job-123/files/general%20room.json?exp=1767225600&sig=ba1755436d954391e3e7825a53f2d460e559f07c1906bc996874862af2e8b9ff",
			s.URLUntil("job-123", "general room.json", exp))
	}
}

// TestKeyRotation: after a rotation the Signer signs with the newest key
// and still accepts links signed with the previous one, so links already
// mailed keep working until they expire; a key dropped from the list no
// longer verifies anything.
func TestKeyRotation(t *testing.T) {
	now := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	oldKey, newKey := []byte("old-key-0123456789abcdef0123456789"), []byte("new-key-0123456789abcdef0123456789")
	before := links.New("https://x.example", oldKey, time.Hour, clock)
	after := links.NewRotating("https://x.example", [][]byte{newKey, oldKey}, time.Hour, clock)
	retired := links.NewRotating("https://x.example", [][]byte{newKey}, time.Hour, clock)

	query := func(raw string) url.Values {
		u, err := url.Parse(raw)
		require.NoError(t, err)
		return u.Query()
	}
	oldLink, _ := before.URL("job1", "a.csv")
	newLink, exp := after.URL("job1", "a.csv")
	oq, nq := query(oldLink), query(newLink)

	assert.Equal(t, links.Signature(newKey, "job1", "a.csv", exp.Unix()), nq.Get("sig"), "signs with the newest key")
	assert.NoError(t, after.Verify("job1", "a.csv", nq.Get("exp"), nq.Get("sig")))
	assert.NoError(t, after.Verify("job1", "a.csv", oq.Get("exp"), oq.Get("sig")), "accepts a link signed before the rotation")
	assert.ErrorIs(t, before.Verify("job1", "a.csv", nq.Get("exp"), nq.Get("sig")), links.ErrBadSignature, "the old Signer does not know the new key")
	assert.ErrorIs(t, retired.Verify("job1", "a.csv", oq.Get("exp"), oq.Get("sig")), links.ErrBadSignature, "a retired key verifies nothing")
}
