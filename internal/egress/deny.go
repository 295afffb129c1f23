package egress

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// DefaultDeny reports whether a must not be dialled, and why: reason is a
// noun phrase with its article ("a private address") that reads well in
// "resolves to <reason> (10.1.2.3)".
//
// It denies every address that is not ordinary global unicast: loopback,
// private (RFC 1918), link-local (which holds the cloud metadata service at
// 169.254.169.254), carrier-grade NAT 100.64.0.0/10, multicast, unspecified,
// broadcast, 0.0.0.0/8, 240.0.0.0/4, benchmarking, documentation and IETF
// special-purpose ranges; IPv6 loopback, unspecified, unique local
// fc00::/7, link-local fe80::/10, site-local, multicast and every IPv6
// address outside 2000::/3. IPv4-mapped addresses (::ffff:a.b.c.d) are
// judged by their IPv4 address; every other form that embeds an IPv4
// address (IPv4-compatible ::/96, IPv4-translated, NAT64 64:ff9b::/96 and
// 64:ff9b:1::/48, 6to4 2002::/16, Teredo 2001::/32) is denied whatever the
// address it embeds, because a gateway on the path may turn it into that
// IPv4 address. (So a host that reaches IPv4 only through NAT64 gets no
// egress.) Last, it denies the host's own interface addresses, read once on
// first use: addresses added later are not seen.
func DefaultDeny(a netip.Addr) (reason string, denied bool) {
	return deny(a, ownAddrs())
}

// ownAddrs returns the host's interface addresses. On error it returns
// none: the fixed ranges above still hold.
var ownAddrs = sync.OnceValue(func() []netip.Addr {
	addrs, _ := net.InterfaceAddrs()
	var out []netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out
})

// deny is DefaultDeny with the host's own addresses given.
func deny(a netip.Addr, own []netip.Addr) (string, bool) {
	if !a.IsValid() {
		return "an invalid address", true
	}
	a = a.Unmap()
	for _, c := range denyRanges {
		if c.prefix.Contains(a.WithZone("")) {
			return c.reason(a), true
		}
	}
	if a.Is6() && !global6.Contains(a.WithZone("")) {
		return "a non-global IPv6 address", true
	}
	if a.Zone() != "" {
		return "a scoped address", true
	}
	for _, o := range own {
		if a == o {
			return "the host's own address", true
		}
	}
	return "", false
}

// global6 is IPv6 global unicast; everything outside is reserved.
var global6 = netip.MustParsePrefix("2000::/3")

type denyRange struct {
	prefix netip.Prefix
	reason func(netip.Addr) string
}

// denyRanges is searched in order, so a narrower range comes before the
// wider one holding it.
var denyRanges = []denyRange{
	// IPv4 (RFC 6890 and the IANA special-purpose registry).
	r("0.0.0.0/32", "an unspecified address"),
	r("0.0.0.0/8", `a "this network" address`),
	r("10.0.0.0/8", "a private address"),
	r("100.64.0.0/10", "a carrier-grade NAT address"),
	r("127.0.0.0/8", "a loopback address"),
	r("169.254.169.254/32", "a cloud metadata address"),
	r("169.254.0.0/16", "a link-local address"),
	r("172.16.0.0/12", "a private address"),
	r("192.0.0.0/24", "an IETF protocol assignment address"),
	r("192.0.2.0/24", "a documentation address"),
	r("192.88.99.0/24", "a 6to4 relay anycast address"),
	r("192.168.0.0/16", "a private address"),
	r("198.18.0.0/15", "a benchmarking address"),
	r("198.51.100.0/24", "a documentation address"),
	r("203.0.113.0/24", "a documentation address"),
	r("224.0.0.0/4", "a multicast address"),
	r("255.255.255.255/32", "a broadcast address"),
	r("240.0.0.0/4", "a reserved address"),

	// IPv6. IPv4-mapped addresses were unmapped above.
	r("::/128", "an unspecified address"),
	r("::1/128", "a loopback address"),
	embeds("::/96", "an IPv4-compatible address", 12),
	embeds("::ffff:0:0:0/96", "an IPv4-translated address", 12),
	embeds("64:ff9b::/96", "a NAT64 address", 12),
	r("64:ff9b:1::/48", "a local-use NAT64 address"),
	r("100::/64", "a discard-only address"),
	r("2001::/32", "a Teredo address"),
	r("2001:2::/48", "a benchmarking address"),
	r("2001:10::/28", "an ORCHID address"),
	r("2001:20::/28", "an ORCHIDv2 address"),
	r("2001::/23", "an IETF protocol assignment address"),
	r("2001:db8::/32", "a documentation address"),
	embeds("2002::/16", "a 6to4 address", 2),
	r("3fff::/20", "a documentation address"),
	r("5f00::/16", "an SRv6 SID address"),
	r("fc00::/7", "a unique local address"),
	r("fe80::/10", "a link-local address"),
	r("fec0::/10", "a site-local address"),
	r("ff00::/8", "a multicast address"),
}

func r(prefix, reason string) denyRange {
	return denyRange{netip.MustParsePrefix(prefix), func(netip.Addr) string { return reason }}
}

// embeds is a range whose addresses carry an IPv4 address at byte offset
// off; the reason names it, since that is where the packet may end up.
func embeds(prefix, reason string, off int) denyRange {
	return denyRange{netip.MustParsePrefix(prefix), func(a netip.Addr) string {
		b := a.As16()
		return fmt.Sprintf("%s embedding %s", reason, netip.AddrFrom4([4]byte(b[off:off+4])))
	}}
}
