// Package links mints and verifies Dataport's signed download links. The
// gateway serves them; the notifier puts them in emails, so both must agree
// byte for byte.
//
// A link is <public URL>/v1/exports/<jobId>/files/<name>?exp=<unix>&sig=<hex>
// where sig is the lower-case hex HMAC-SHA256, keyed with the link secret,
// of "<jobId>/<name>/<exp>". The link is a bearer credential: whoever holds
// it may download that one file until exp, without other authentication.
// That is why it is short-lived and bound to one job and one file name.
//
// Keys rotate without breaking links already sent: a Signer signs with the
// newest of its keys and accepts a link signed with any of them, so the
// previous key stays listed until the links it signed have expired.
package links

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// Errors returned by Verify. A link whose signature does not match is
// reported as ErrBadSignature even when it is also expired, so that an
// expiry answer (410) only ever confirms a link the gateway really issued.
var (
	ErrBadSignature = errors.New("links: bad signature")
	ErrExpired      = errors.New("links: link expired")
)

// Signer mints and verifies links. It is safe for concurrent use.
type Signer struct {
	base string
	// keys[0] signs; every key verifies.
	keys [][]byte
	ttl  time.Duration
	now  func() time.Time
}

// New returns a Signer for links under baseURL (the gateway's public URL,
// without a trailing slash) valid for ttl, with one key. now is the clock;
// nil means time.Now.
func New(baseURL string, secret []byte, ttl time.Duration, now func() time.Time) *Signer {
	return NewRotating(baseURL, [][]byte{secret}, ttl, now)
}

// NewRotating is New with several keys, newest first: links are signed with
// keys[0] and verified against every key, so links signed before a rotation
// stay valid until they expire. keys must not be empty.
func NewRotating(baseURL string, keys [][]byte, ttl time.Duration, now func() time.Time) *Signer {
	if now == nil {
		now = time.Now
	}
	for len(baseURL) > 0 && baseURL[len(baseURL)-1] == '/' {
		baseURL = baseURL[:len(baseURL)-1]
	}
	return &Signer{base: baseURL, keys: slices.Clone(keys), ttl: ttl, now: now}
}

// Signature returns the hex HMAC-SHA256 of "<jobID>/<name>/<exp>" under
// secret.
func Signature(secret []byte, jobID, name string, exp int64) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(jobID + "/" + name + "/" + strconv.FormatInt(exp, 10)))
	return hex.EncodeToString(m.Sum(nil))
}

// Path is the URL path (escaped) of a job's file.
func Path(jobID, name string) string {
	return "/v1/exports/" + url.PathEscape(jobID) + "/files/" + url.PathEscape(name)
}

// URL returns the signed link for a job's file and when it expires. Expiry
// is whole seconds, as the link carries it.
func (s *Signer) URL(jobID, name string) (string, time.Time) {
	exp := time.Unix(s.now().Add(s.ttl).Unix(), 0).UTC()
	return s.URLUntil(jobID, name, exp), exp
}

// URLUntil returns the signed link for a job's file valid until exp
// (truncated to whole seconds), so several links can share one expiry.
func (s *Signer) URLUntil(jobID, name string, exp time.Time) string {
	e := exp.Unix()
	q := url.Values{}
	q.Set("exp", strconv.FormatInt(e, 10))
	q.Set("sig", Signature(s.keys[0], jobID, name, e))
	return s.base + Path(jobID, name) + "?" + q.Encode()
}

// Verify checks the exp and sig query values of a link to jobID's file
// name: the signature first, in constant time against each key, then the
// expiry.
func (s *Signer) Verify(jobID, name, exp, sig string) error {
	n, err := strconv.ParseInt(exp, 10, 64)
	if err != nil {
		return ErrBadSignature
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return ErrBadSignature
	}
	// Every key is tried, so the time taken does not tell which one
	// matched.
	ok := false
	for _, k := range s.keys {
		want, _ := hex.DecodeString(Signature(k, jobID, name, n))
		if hmac.Equal(got, want) {
			ok = true
		}
	}
	if !ok {
		return ErrBadSignature
	}
	if !s.now().Before(time.Unix(n, 0)) {
		return ErrExpired
	}
	return nil
}
