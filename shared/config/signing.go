package config

import (
	"fmt"
	"strings"
)

// Values of DATAPORT_ENV. Production is the default, so a deployment that
// forgets the variable gets the strict checks, and only a developer's
// machine (`make run`) opts out of them.
const (
	EnvDevelopment = "development"
	EnvProduction  = "production"
)

// MinSigningSecretBytes is the shortest signing key accepted outside
// development: the 32-byte output size of SHA-256, below which an HMAC-SHA256
// key is weaker than the hash (RFC 2104, section 3).
const MinSigningSecretBytes = 32

// placeholderWords mark values copied from examples, templates and
// development defaults rather than generated. A random key of the
// recommended form (`openssl rand -hex 32`, or base64) practically never
// contains one.
var placeholderWords = []string{
	"change-me", "change_me", "changeme",
	"replace-me", "replace_me", "replaceme",
	"dev-only", "secret", "example",
}

// Env returns DATAPORT_ENV: EnvDevelopment or EnvProduction (the default).
// It is read once; later calls return the same value.
func (l *Loader) Env() string {
	if l.env == "" {
		l.env = l.Enum("DATAPORT_ENV", EnvProduction, []string{EnvDevelopment, EnvProduction},
			"where the service runs; development relaxes the checks of signing secrets (make run sets it)")
	}
	return l.env
}

// Development reports whether DATAPORT_ENV is development.
func (l *Loader) Development() bool { return l.Env() == EnvDevelopment }

// SigningSecret is Secret for an HMAC key that protects something users
// rely on (download links, webhook signatures). In development it behaves
// like Secret, def included. Anywhere else it records an error, naming the
// variable but never the value, when the value is empty, equals def, looks
// like a placeholder (contains "change-me", "dev-only", "changeme",
// "secret", "example" and the like, in any letter case) or is shorter than
// MinSigningSecretBytes: such a key lets anyone who has read the source or
// the docs forge what it signs.
func (l *Loader) SigningSecret(name, def, doc string) string {
	raw := l.getenv(name)
	v := l.Secret(name, def, doc)
	if l.Development() {
		return v
	}
	switch {
	case strings.TrimSpace(raw) == "":
		l.weakSecret(name, "not set")
	case v == def:
		l.weakSecret(name, "is the well-known development default")
	default:
		if reason := weakness(v); reason != "" {
			l.weakSecret(name, reason)
		}
	}
	return v
}

// SigningSecrets reads a comma-separated list of signing keys, such as the
// previous keys that are still accepted during a key rotation. Empty items
// are dropped and an unset variable is an empty list. Outside development
// each key must pass the checks of SigningSecret. Print masks the whole
// value.
func (l *Loader) SigningSecrets(name, doc string) []string {
	v := l.Secret(name, "", doc)
	var keys []string
	for k := range strings.SplitSeq(v, ",") {
		if k = strings.TrimSpace(k); k != "" {
			keys = append(keys, k)
		}
	}
	if l.Development() {
		return keys
	}
	for i, k := range keys {
		if reason := weakness(k); reason != "" {
			l.weakSecret(name, fmt.Sprintf("key %d of %d %s", i+1, len(keys), reason))
		}
	}
	return keys
}

// SigningKeyRing reads a rotatable signing key: the key under name (as
// SigningSecret, with def) signs, and it and the earlier keys under
// previous (as SigningSecrets) verify, so a key can change without
// invalidating what the old one signed. The signing key comes first.
func (l *Loader) SigningKeyRing(name, def, doc, previous, previousDoc string) [][]byte {
	keys := [][]byte{[]byte(l.SigningSecret(name, def, doc))}
	for _, k := range l.SigningSecrets(previous, previousDoc) {
		keys = append(keys, []byte(k))
	}
	return keys
}

// weakness says why key is not acceptable as a signing key outside
// development, or returns "".
func weakness(key string) string {
	lower := strings.ToLower(key)
	for _, w := range placeholderWords {
		if strings.Contains(lower, w) {
			return fmt.Sprintf("looks like a placeholder (it contains %q)", w)
		}
	}
	if len(key) < MinSigningSecretBytes {
		return fmt.Sprintf("is %d bytes long; at least %d are required", len(key), MinSigningSecretBytes)
	}
	return ""
}

// weakSecret records why a signing secret was refused and how to fix it.
// The value itself stays out of the message, which ends up in logs.
func (l *Loader) weakSecret(name, reason string) {
	l.errs = append(l.errs, fmt.Errorf(
		"%s %s: outside development (DATAPORT_ENV=%s) set it to at least %d random bytes, e.g. $(openssl rand -hex 32); on a developer machine set DATAPORT_ENV=%s",
		name, reason, l.Env(), MinSigningSecretBytes, EnvDevelopment))
}
