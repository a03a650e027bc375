package clientaddr_test

import (
	"net/http"
	"net/netip"
	"testing"

	"github.com/outboxtodo/outboxtodo/services/api/internal/clientaddr"
)

func TestAddr(t *testing.T) {
	t.Parallel()
	trusted, err := clientaddr.ParsePrefixes([]string{"10.0.0.0/8", " 192.168.1.1 ", "fd00::/8"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, remote string
		xff          []string
		trust        bool
		want         string
	}{
		{"no proxy trusted: header ignored", "203.0.113.9:1234", []string{"198.51.100.1"}, false, "203.0.113.9"},
		{"untrusted peer: header ignored", "203.0.113.9:1234", []string{"198.51.100.1"}, true, "203.0.113.9"},
		{"trusted proxy", "10.1.2.3:80", []string{"198.51.100.1"}, true, "198.51.100.1"},
		{"client-written entries left of the client are ignored", "10.1.2.3:80", []string{"1.1.1.1, 198.51.100.1"}, true, "198.51.100.1"},
		{"chain of trusted proxies", "10.1.2.3:80", []string{"198.51.100.1, 192.168.1.1", "10.9.9.9"}, true, "198.51.100.1"},
		{"garbage stops at the last trusted hop", "10.1.2.3:80", []string{"198.51.100.1, nonsense, 10.4.4.4"}, true, "10.4.4.4"},
		{"only trusted hops", "10.1.2.3:80", []string{"10.4.4.4"}, true, "10.4.4.4"},
		{"no header", "10.1.2.3:80", nil, true, "10.1.2.3"},
		{"ipv6 peer", "[2001:db8::1]:443", nil, false, "2001:db8::1"},
		{"mapped ipv4 peer", "[::ffff:203.0.113.9]:443", nil, false, "203.0.113.9"},
		{"trusted ipv6 proxy", "[fd00::1]:80", []string{"2001:db8::7"}, true, "2001:db8::7"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := &http.Request{RemoteAddr: c.remote, Header: http.Header{}}
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			res := clientaddr.Resolver{}
			if c.trust {
				res.Trusted = trusted
			}
			got, ok := res.Addr(r)
			if !ok || got.String() != c.want {
				t.Fatalf("got %v %v, want %s", got, ok, c.want)
			}
		})
	}
	if _, ok := (clientaddr.Resolver{}).Addr(&http.Request{RemoteAddr: "pipe"}); ok {
		t.Fatal("an address from nothing")
	}
}

func TestParsePrefixesRejects(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"10.0.0.0/33", "example.com", "", "10.0.0.0/8/8"} {
		if _, err := clientaddr.ParsePrefixes([]string{s}); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestKeyGroupsIPv6By64(t *testing.T) {
	t.Parallel()
	a, b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	if clientaddr.Key(a) != clientaddr.Key(b) || clientaddr.Key(a) == clientaddr.Key(netip.MustParseAddr("2001:db8:1:3::1")) {
		t.Fatalf("%s %s", clientaddr.Key(a), clientaddr.Key(b))
	}
	if clientaddr.Key(netip.MustParseAddr("203.0.113.9")) != "203.0.113.9" {
		t.Fatal("ipv4 key")
	}
}

func FuzzAddr(f *testing.F) {
	for _, s := range []string{"198.51.100.1", "1.1.1.1, 10.0.0.1", "nonsense", ",,,", "fe80::1%eth0", "::ffff:1.2.3.4", ""} {
		f.Add("10.1.2.3:80", s)
		f.Add("[2001:db8::1]:1", s)
	}
	trusted, err := clientaddr.ParsePrefixes([]string{"10.0.0.0/8"})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, remote, xff string) {
		r := &http.Request{RemoteAddr: remote, Header: http.Header{"X-Forwarded-For": {xff}}}
		peer, peerOK := clientaddr.Resolver{}.Addr(r)
		got, ok := clientaddr.Resolver{Trusted: trusted}.Addr(r)
		if ok != peerOK {
			t.Fatal("trusting proxies changed whether there is an address")
		}
		if !ok {
			return
		}
		if !got.IsValid() || got.Zone() != "" || got.Is4In6() {
			t.Fatalf("address %v", got)
		}
		// The header is believed only from a trusted peer.
		if !trusted[0].Contains(peer) && got != peer {
			t.Fatalf("untrusted peer %v moved the address to %v", peer, got)
		}
		_ = clientaddr.Key(got)
	})
}
