// Package config is a small declarative loader for environment variables.
//
// Each service builds its own typed config struct by asking a Loader for the
// variables it needs. The Loader reads through an injected getenv function
// (never os.Getenv), validates each value, collects every error instead of
// stopping at the first, and remembers every variable it was asked for so the
// service can print its effective configuration (secrets masked) at start and
// document its variables:
//
//	l := config.New(getenv)
//	c := config.LoadCommon(l)
//	port := l.Int("DATAPORT_HTTP_PORT", 8080, 1, 65535, "HTTP listen port")
//	if err := l.Err(); err != nil {
//		return fmt.Errorf("config: %w", err)
//	}
//	l.Print(stdout)
//
// A Loader is not safe for concurrent use; it is meant to be used once, from
// run, before anything else starts.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// mask is what Print shows for a non-empty secret.
const mask = "****"

// Var describes one variable a Loader was asked for. It is what Vars returns
// for documentation and tests.
type Var struct {
	// Name is the environment variable name, e.g. DATAPORT_NATS_URL.
	Name string
	// Default is the default value as text ("" when there is none). A
	// secret's default is reported as is: defaults are not secrets.
	Default string
	// Doc is the one-line human description given by the caller.
	Doc string
	// Secret marks values that Print masks.
	Secret bool
}

// entry is a Var plus the effective value the Loader settled on.
type entry struct {
	Var
	value string
}

// Loader reads and validates environment variables. Use New to create one.
//
// Every accessor returns a usable value even on error (the default, or the
// zero value for Required), so a caller can load all its fields first and
// check Err once at the end. Asking twice for the same name records it once;
// the later call's description wins.
type Loader struct {
	getenv func(string) string
	vars   map[string]entry
	errs   []error
	// env is DATAPORT_ENV once read; "" until Env is first called.
	env string
}

// New returns a Loader that reads variables through getenv. A nil getenv
// behaves as an empty environment.
func New(getenv func(string) string) *Loader {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	return &Loader{getenv: getenv, vars: make(map[string]entry)}
}

// lookup returns the raw value of name with surrounding whitespace removed.
func (l *Loader) lookup(name string) string {
	return strings.TrimSpace(l.getenv(name))
}

// record remembers a variable and its effective value.
func (l *Loader) record(v Var, value string) {
	l.vars[v.Name] = entry{Var: v, value: value}
}

// fail records a validation error for name and its raw value. Credentials
// inside a URL are masked: the error is printed to the console and logs.
func (l *Loader) fail(name, raw, format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf("%s=%q: %s", name, maskURLCredentials(raw), fmt.Sprintf(format, args...)))
}

// String returns the value of name, or def when the variable is unset or
// empty.
func (l *Loader) String(name, def, doc string) string {
	v := l.lookup(name)
	if v == "" {
		v = def
	}
	l.record(Var{Name: name, Default: def, Doc: doc}, v)
	return v
}

// Required returns the value of name and records an error when it is unset
// or empty.
func (l *Loader) Required(name, doc string) string {
	v := l.lookup(name)
	if v == "" {
		l.errs = append(l.errs, fmt.Errorf("%s: required but not set", name))
	}
	l.record(Var{Name: name, Doc: doc}, v)
	return v
}

// Secret is String for values that must not be printed: Print shows "****"
// for a non-empty value and "" for an empty one. Surrounding whitespace is
// kept, since it may be part of a password.
func (l *Loader) Secret(name, def, doc string) string {
	v := l.getenv(name)
	if strings.TrimSpace(v) == "" {
		v = def
	}
	l.record(Var{Name: name, Default: def, Doc: doc, Secret: true}, v)
	return v
}

// Int returns the integer value of name, or def when unset. It records an
// error when the value is not a base-10 integer or lies outside [min, max];
// def itself is not checked against the range.
func (l *Loader) Int(name string, def int, min, max int, doc string) int {
	raw := l.lookup(name)
	v := def
	if raw != "" {
		n, err := strconv.Atoi(raw)
		switch {
		case err != nil:
			l.fail(name, raw, "not an integer")
		case n < min || n > max:
			l.fail(name, raw, "out of range [%d, %d]", min, max)
		default:
			v = n
		}
	}
	l.record(Var{Name: name, Default: strconv.Itoa(def), Doc: doc}, strconv.Itoa(v))
	return v
}

// Bool returns the boolean value of name, or def when unset. It accepts
// true/false, 1/0 and yes/no in any letter case and records an error for
// anything else.
func (l *Loader) Bool(name string, def bool, doc string) bool {
	raw := l.lookup(name)
	v := def
	if raw != "" {
		switch strings.ToLower(raw) {
		case "true", "1", "yes":
			v = true
		case "false", "0", "no":
			v = false
		default:
			l.fail(name, raw, "not a boolean (want true/false, 1/0 or yes/no)")
		}
	}
	l.record(Var{Name: name, Default: strconv.FormatBool(def), Doc: doc}, strconv.FormatBool(v))
	return v
}

// Duration returns the value of name parsed with time.ParseDuration
// (e.g. "25s", "1m30s"), or def when unset. It records an error when the
// value does not parse or is not greater than zero.
func (l *Loader) Duration(name string, def time.Duration, doc string) time.Duration {
	raw := l.lookup(name)
	v := def
	if raw != "" {
		d, err := time.ParseDuration(raw)
		switch {
		case err != nil:
			l.fail(name, raw, "not a duration (e.g. 30s, 1m)")
		case d <= 0:
			l.fail(name, raw, "must be greater than zero")
		default:
			v = d
		}
	}
	l.record(Var{Name: name, Default: def.String(), Doc: doc}, v.String())
	return v
}

// Enum returns the value of name, or def when unset, and records an error
// when the value is not one of allowed. Matching is exact (case-sensitive).
func (l *Loader) Enum(name, def string, allowed []string, doc string) string {
	raw := l.lookup(name)
	v := def
	if raw != "" {
		if slices.Contains(allowed, raw) {
			v = raw
		} else {
			l.fail(name, raw, "must be one of %s", strings.Join(allowed, "|"))
		}
	}
	if len(allowed) > 0 {
		doc = fmt.Sprintf("%s (one of %s)", doc, strings.Join(allowed, "|"))
	}
	l.record(Var{Name: name, Default: def, Doc: doc}, v)
	return v
}

// HostPort returns the value of name, or def when unset, and records an
// error unless the value is "host:port" as accepted by net.SplitHostPort
// with a numeric port in 0..65535. The host may be empty (":9000").
func (l *Loader) HostPort(name, def, doc string) string {
	raw := l.lookup(name)
	v := def
	if raw != "" {
		if err := checkHostPort(raw); err != nil {
			l.fail(name, raw, "%s", err)
		} else {
			v = raw
		}
	}
	l.record(Var{Name: name, Default: def, Doc: doc}, v)
	return v
}

func checkHostPort(s string) error {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		return errors.New("not host:port")
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return errors.New("port must be a number in 0..65535")
	}
	return nil
}

// URL returns the value of name, or def when unset, and records an error
// unless the value is an absolute URL with a scheme and a host (e.g.
// "nats://127.0.0.1:4222"). An empty value with an empty default is allowed
// and returns "" (use Required to demand one).
func (l *Loader) URL(name, def, doc string) string {
	raw := l.lookup(name)
	v := def
	if raw != "" {
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			l.fail(name, raw, "not a URL")
		case u.Scheme == "" || u.Host == "":
			l.fail(name, raw, "not an absolute URL with scheme and host")
		default:
			v = raw
		}
	}
	l.record(Var{Name: name, Default: def, Doc: doc}, v)
	return v
}

// Err returns nil when every variable read so far was valid, or the
// errors.Join of one error per bad variable, each naming the variable and
// its raw value, like `DATAPORT_X="abc": not an integer`.
func (l *Loader) Err() error {
	return errors.Join(l.errs...)
}

// Print writes one NAME=value line per variable the Loader was asked for,
// sorted by name, with the effective value; secrets are shown as "****"
// (or "" when empty), and so is the user-info part of any URL in a value
// ("nats://****@nats:4222"), because people put passwords and tokens there.
func (l *Loader) Print(w io.Writer) {
	for _, e := range l.sorted() {
		v := e.value
		if e.Secret && v != "" {
			v = mask
		}
		fmt.Fprintf(w, "%s=%s\n", e.Name, maskURLCredentials(v))
	}
}

// urlUserInfo matches the "user:password@" (or "token@") of every URL in a
// value, including each URL of a comma-separated list. The user-info run
// is greedy up to the last "@" before the path, so a password holding an
// unescaped "@" is masked whole.
var urlUserInfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s,]*@`)

// maskURLCredentials replaces the user-info of every URL in s with "****".
func maskURLCredentials(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	return urlUserInfo.ReplaceAllString(s, "${1}"+mask+"@")
}

// Vars returns every variable the Loader was asked for, sorted by name.
func (l *Loader) Vars() []Var {
	es := l.sorted()
	vs := make([]Var, len(es))
	for i, e := range es {
		vs[i] = e.Var
	}
	return vs
}

func (l *Loader) sorted() []entry {
	es := make([]entry, 0, len(l.vars))
	for _, e := range l.vars {
		es = append(es, e)
	}
	slices.SortFunc(es, func(a, b entry) int { return strings.Compare(a.Name, b.Name) })
	return es
}
