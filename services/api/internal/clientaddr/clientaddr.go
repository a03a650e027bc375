// Package clientaddr finds the address of the client behind a request, for rate
// limiting. The peer address (RemoteAddr) is the answer unless the peer is a proxy
// listed as trusted: X-Forwarded-For is written by whoever sent the request, so it is
// believed only as far back as the chain of trusted proxies reaches.
package clientaddr

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ParsePrefixes parses a list of CIDR prefixes (10.0.0.0/8, fd00::/8) or single
// addresses, which stand for a prefix of one address.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for _, s := range list {
		s = strings.TrimSpace(s)
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q: want a CIDR prefix such as 10.0.0.0/8 or an address", s)
		}
		if p.Addr().Is4In6() {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Resolver finds client addresses. The zero value trusts no proxy.
type Resolver struct {
	Trusted []netip.Prefix
}

// Addr returns the client address of r, and false when even the peer address is
// unusable (a handler called without a network connection, for instance).
//
// When the peer is trusted, X-Forwarded-For is read from the right: each proxy
// appends the address it received the request from, so the rightmost address that
// is not a trusted proxy is the client. Entries left of it were written by the client
// and are ignored. An unparsable entry stops the walk at the last trusted hop, so a
// client cannot pick its own bucket with garbage.
func (res Resolver) Addr(r *http.Request) (netip.Addr, bool) {
	peer, ok := parseHostPort(r.RemoteAddr)
	if !ok {
		return netip.Addr{}, false
	}
	if !res.trusted(peer) {
		return peer, true
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		h := strings.TrimSpace(hops[i])
		if h == "" {
			continue
		}
		a, err := netip.ParseAddr(h)
		if err != nil {
			return client, true
		}
		client = a.Unmap().WithZone("")
		if !res.trusted(client) {
			return client, true
		}
	}
	return client, true
}

func (res Resolver) trusted(a netip.Addr) bool {
	for _, p := range res.Trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func parseHostPort(s string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		host = s
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// Key is the rate-limit key of an address: the address itself for IPv4, its /64
// network for IPv6, since one subscriber usually holds a whole /64 and could otherwise
// take a fresh bucket for every request.
func Key(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}
