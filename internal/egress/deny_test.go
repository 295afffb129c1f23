package egress

import (
	"net/netip"
	"testing"
)

func TestDefaultDeny(t *testing.T) {
	tests := []struct {
		addr string
		want string // reason; "" means allowed
	}{
		// Public addresses pass (they are only classified, never dialled).
		{"8.8.8.8", ""},
		{"1.1.1.1", ""},
		{"172.32.0.1", ""},
		{"100.128.0.1", ""},
		{"::ffff:8.8.8.8", ""},
		{"2606:4700:4700::1111", ""},

		// IPv4.
		{"0.0.0.0", "an unspecified address"},
		{"0.1.2.3", `a "this network" address`},
		{"10.1.2.3", "a private address"},
		{"172.16.0.1", "a private address"},
		{"172.31.255.255", "a private address"},
		{"192.168.1.1", "a private address"},
		{"127.0.0.1", "a loopback address"},
		{"127.255.255.254", "a loopback address"},
		{"169.254.169.254", "a cloud metadata address"},
		{"169.254.170.2", "a link-local address"},
		{"100.64.0.1", "a carrier-grade NAT address"},
		{"100.100.100.200", "a carrier-grade NAT address"},
		{"100.127.255.255", "a carrier-grade NAT address"},
		{"192.0.0.170", "an IETF protocol assignment address"},
		{"192.0.2.1", "a documentation address"},
		{"198.51.100.1", "a documentation address"},
		{"203.0.113.1", "a documentation address"},
		{"192.88.99.1", "a 6to4 relay anycast address"},
		{"198.18.0.1", "a benchmarking address"},
		{"198.19.255.255", "a benchmarking address"},
		{"224.0.0.1", "a multicast address"},
		{"239.255.255.250", "a multicast address"},
		{"240.0.0.1", "a reserved address"},
		{"255.255.255.255", "a broadcast address"},

		// IPv6, and IPv4 inside IPv6.
		{"::", "an unspecified address"},
		{"::1", "a loopback address"},
		{"::ffff:10.0.0.1", "a private address"},
		{"::ffff:127.0.0.1", "a loopback address"},
		{"::ffff:169.254.169.254", "a cloud metadata address"},
		{"::10.0.0.1", "an IPv4-compatible address embedding 10.0.0.1"},
		{"::8.8.8.8", "an IPv4-compatible address embedding 8.8.8.8"},
		{"::ffff:0:a9fe:a9fe", "an IPv4-translated address embedding 169.254.169.254"},
		{"64:ff9b::a9fe:a9fe", "a NAT64 address embedding 169.254.169.254"},
		{"64:ff9b::8.8.8.8", "a NAT64 address embedding 8.8.8.8"},
		{"64:ff9b:1::a00:1", "a local-use NAT64 address"},
		{"2002:a9fe:a9fe::1", "a 6to4 address embedding 169.254.169.254"},
		{"2002:808:808::1", "a 6to4 address embedding 8.8.8.8"},
		{"2001:0:4136:e378:8000:63bf:3fff:fdd2", "a Teredo address"},
		{"2001:1::1", "an IETF protocol assignment address"},
		{"2001:2::1", "a benchmarking address"},
		{"2001:10::1", "an ORCHID address"},
		{"2001:20::1", "an ORCHIDv2 address"},
		{"2001:db8::1", "a documentation address"},
		{"3fff::1", "a documentation address"},
		{"100::1", "a discard-only address"},
		{"5f00::1", "an SRv6 SID address"},
		{"fc00::1", "a unique local address"},
		{"fd00:ec2::254", "a unique local address"},
		{"fe80::1", "a link-local address"},
		{"fe80::1%eth0", "a link-local address"},
		{"fec0::1", "a site-local address"},
		{"ff02::1", "a multicast address"},
		{"4000::1", "a non-global IPv6 address"},
		{"2606:4700::1%eth0", "a scoped address"},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		got, denied := deny(a, nil)
		if got != tt.want || denied != (tt.want != "") {
			t.Errorf("deny(%s) = %q, %v; want %q", tt.addr, got, denied, tt.want)
		}
	}
	if got, denied := deny(netip.Addr{}, nil); !denied {
		t.Errorf("deny(zero Addr) = %q, %v; want denied", got, denied)
	}
}

func TestDenyOwnAddrs(t *testing.T) {
	own := []netip.Addr{netip.MustParseAddr("93.184.216.34"), netip.MustParseAddr("2606:2800:220:1::1")}
	tests := []struct {
		addr string
		want string
	}{
		{"93.184.216.34", "the host's own address"},
		{"::ffff:93.184.216.34", "the host's own address"},
		{"2606:2800:220:1::1", "the host's own address"},
		{"93.184.216.35", ""},
	}
	for _, tt := range tests {
		got, denied := deny(netip.MustParseAddr(tt.addr), own)
		if got != tt.want || denied != (tt.want != "") {
			t.Errorf("deny(%s, own) = %q, %v; want %q", tt.addr, got, denied, tt.want)
		}
	}
	// DefaultDeny reads this host's addresses: whatever they are, each
	// is denied.
	for _, a := range ownAddrs() {
		if _, denied := DefaultDeny(a); !denied {
			t.Errorf("DefaultDeny(%s) allows an address of this host", a)
		}
	}
}
