// Package egress is the SSRF guard of the calls Dataport makes to URLs its
// users chose (per-export webhooks): which URLs may be called at all, and
// which addresses a connection may reach. The gateway checks a URL when an
// export names it, so a request for a webhook into the cluster is refused
// at once with a reason; the notifier checks every connection when it is
// dialed, after DNS resolution, so a name that resolves (or re-resolves,
// DNS rebinding) to a forbidden address is refused too. Both use one Guard
// built from the same allowlist (DATAPORT_WEBHOOK_ALLOWLIST).
package egress

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
)

// ErrRefused marks a URL or address Dataport will not call: a malformed or
// non-HTTP URL, one with credentials in it, or one that leads to an address
// the guard forbids. No retry can change that.
var ErrRefused = errors.New("egress: refused")

// Guard decides which hosts and addresses may be called. The zero value
// allows only public addresses. It is safe for concurrent use.
type Guard struct {
	allow []netip.Prefix
	hosts map[string]bool
}

// NewGuard returns a guard that also allows allow: exact host names and
// IP addresses or CIDR prefixes that may be called although they are
// loopback, private, link-local and so on. Empty entries are skipped.
func NewGuard(allow []string) *Guard {
	g := &Guard{hosts: map[string]bool{}}
	for _, a := range allow {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if p, err := netip.ParsePrefix(a); err == nil {
			g.allow = append(g.allow, p.Masked())
			continue
		}
		if ip, err := netip.ParseAddr(a); err == nil {
			g.allow = append(g.allow, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
			continue
		}
		g.hosts[strings.ToLower(a)] = true
	}
	return g
}

// AllowsHost reports whether host is allowed by name, so that connections
// to it need no address check.
func (g *Guard) AllowsHost(host string) bool { return g.hosts[strings.ToLower(host)] }

// CheckURL accepts absolute http and https URLs without user info (the
// shape every call needs) and returns them parsed; an error wraps
// ErrRefused.
func CheckURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrRefused, err)
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%w: scheme %q (want http or https)", ErrRefused, u.Scheme)
	case u.Hostname() == "":
		return nil, fmt.Errorf("%w: no host in %q", ErrRefused, RedactURL(raw))
	case u.User != nil:
		return nil, fmt.Errorf("%w: credentials in URL", ErrRefused)
	}
	return u, nil
}

// Check is CheckURL plus what can be told of the destination without a
// DNS lookup: an IP literal must be allowed (public, or in the
// allowlist), and so must a "localhost" name. Other names are checked
// when the connection is dialed (Control).
func (g *Guard) Check(raw string) (*url.URL, error) {
	u, err := CheckURL(raw)
	if err != nil {
		return nil, err
	}
	host := strings.ToLower(u.Hostname())
	if g.AllowsHost(host) {
		return u, nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if err := g.checkAddr(ip); err != nil {
			return nil, err
		}
		return u, nil
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return nil, fmt.Errorf("%w: %s is not allowed for webhooks (it is this host; allow it with DATAPORT_WEBHOOK_ALLOWLIST)", ErrRefused, host)
	}
	return u, nil
}

// Control is a net.Dialer Control function that refuses connections to
// forbidden addresses, with an error wrapping ErrRefused.
func (g *Guard) Control(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrRefused, address)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrRefused, address)
	}
	return g.checkAddr(ip)
}

func (g *Guard) checkAddr(ip netip.Addr) error {
	ip = ip.Unmap().WithZone("")
	for _, p := range g.allow {
		if p.Contains(ip) {
			return nil
		}
	}
	if Forbidden(ip) {
		return fmt.Errorf("%w: address %s is not allowed for webhooks (it is not public; allow it with DATAPORT_WEBHOOK_ALLOWLIST)", ErrRefused, ip)
	}
	return nil
}

// forbiddenPrefixes are non-public ranges netip.Addr has no predicate for.
var forbiddenPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // CGNAT, RFC 6598
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
	netip.MustParsePrefix("64:ff9b::/96"),   // NAT64: may embed any IPv4
	netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
	netip.MustParsePrefix("2002::/16"),      // 6to4: may embed any IPv4
	netip.MustParsePrefix("fec0::/10"),      // deprecated site-local
}

// Forbidden reports loopback, private (RFC 1918, RFC 4193), link-local,
// unspecified, multicast, CGNAT and other non-public addresses.
func Forbidden(ip netip.Addr) bool {
	ip = ip.Unmap().WithZone("")
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return true
	}
	for _, p := range forbiddenPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// RedactURL drops user info, query and fragment, which may carry tokens,
// so a URL can be logged and shown in a job.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User, u.RawQuery, u.Fragment, u.ForceQuery = nil, "", "", false
	return u.String()
}
