package egress

import (
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidPattern(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []struct {
		pattern string
		want    string // canonical form, or "" for invalid
	}{
		{"example.com", "example.com"},
		{"*.example.com", "*.example.com"},
		{"API.Example.COM.", "api.example.com"},
		{"*.Example.com.", "*.example.com"},
		{"a-b.example", "a-b.example"},
		{"xn--bcher-kva.example", "xn--bcher-kva.example"},
		{"localhost", "localhost"},
		{"1e100.net", "1e100.net"},
		{"0x.example", "0x.example"},
		{long + ".example", long + ".example"},
		{"", ""},
		{".", ""},
		{"*", ""},
		{"*.", ""},
		{"**.example.com", ""},
		{"*.*.example.com", ""},
		{"a.*.example", ""},
		{"*example.com", ""},
		{"example..com", ""},
		{"example.com..", ""},
		{".example.com", ""},
		{"-a.example", ""},
		{"a-.example", ""},
		{"exa mple.com", ""},
		{"exa_mple.com", ""},
		{"ex%41mple.com", ""},
		{"\u00ebxample.com", ""},
		{"example.com:443", ""},
		{"1.2.3.4", ""},
		{"127.1", ""},
		{"2852039166", ""},
		{"0x7f000001", ""},
		{"*.0x7f", ""},
		{"example.123", ""},
		{"[::1]", ""},
		{"::1", ""},
		{long + "a.example", ""},
		{strings.Repeat("a.", 127) + "ab", ""}, // 256 bytes
	}
	for _, tt := range tests {
		got, err := canonicalPattern(tt.pattern)
		if (err == nil) != (tt.want != "") || got != tt.want {
			t.Errorf("canonicalPattern(%q) = %q, %v; want %q", tt.pattern, got, err, tt.want)
		}
		if (ValidPattern(tt.pattern) == nil) != (tt.want != "") {
			t.Errorf("ValidPattern(%q) = %v, want valid %v", tt.pattern, ValidPattern(tt.pattern), tt.want != "")
		}
	}
}

func TestMatch(t *testing.T) {
	tests := []struct {
		host, pattern string
		want          bool
	}{
		{"api.example.com", "api.example.com", true},
		{"api.example.com", "example.com", false},
		{"x.api.example.com", "api.example.com", false},
		{"a.example.com", "*.example.com", true},
		{"a.b.example.com", "*.example.com", true},
		{"example.com", "*.example.com", false},
		{"badexample.com", "*.example.com", false},
		{"example.com.evil", "*.example.com", false},
	}
	for _, tt := range tests {
		if got := match(tt.host, tt.pattern); got != tt.want {
			t.Errorf("match(%q, %q) = %v, want %v", tt.host, tt.pattern, got, tt.want)
		}
	}
}

func TestNarrow(t *testing.T) {
	op := Policy{
		Allow:     []string{"api.example.com", "*.corp.example", "Mixed.Case.Example."},
		HTTPPorts: []int{8080},
		MaxBytes:  1000,
		MaxConns:  3,
		Headers:   map[string]map[string]string{"api.example.com": {"Authorization": "x"}},
	}
	tests := []struct {
		name    string
		ask     []string
		want    []string // nil: an error naming bad
		bad     string
		wantErr bool
	}{
		{name: "nothing", ask: nil, want: []string{}},
		{name: "exact", ask: []string{"api.example.com"}, want: []string{"api.example.com"}},
		{name: "case and dot", ask: []string{"API.example.com."}, want: []string{"api.example.com"}},
		{name: "stored case", ask: []string{"mixed.case.example"}, want: []string{"mixed.case.example"}},
		{name: "name under wildcard", ask: []string{"a.b.corp.example"}, want: []string{"a.b.corp.example"}},
		{name: "same wildcard", ask: []string{"*.corp.example"}, want: []string{"*.corp.example"}},
		{name: "narrower wildcard", ask: []string{"*.a.corp.example", "api.example.com"}, want: []string{"*.a.corp.example", "api.example.com"}},
		{name: "apex of wildcard", ask: []string{"corp.example"}, wantErr: true, bad: "corp.example"},
		{name: "wider wildcard", ask: []string{"*.example.com"}, wantErr: true, bad: "*.example.com"},
		{name: "wildcard under exact", ask: []string{"*.api.example.com"}, wantErr: true, bad: "*.api.example.com"},
		{name: "other", ask: []string{"api.example.com", "other.example.com"}, wantErr: true, bad: "other.example.com"},
		{name: "everything", ask: []string{"*"}, wantErr: true, bad: "*"},
		{name: "IP", ask: []string{"10.0.0.1"}, wantErr: true, bad: "10.0.0.1"},
		{name: "suffix trick", ask: []string{"evilcorp.example"}, wantErr: true, bad: "evilcorp.example"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := op.Narrow(tt.ask)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), strconv.Quote(tt.bad)) {
					t.Errorf("Narrow(%q) = %v, %v; want an error naming %q", tt.ask, got.Allow, err, tt.bad)
				}
				return
			}
			if err != nil {
				t.Fatalf("Narrow(%q): %v", tt.ask, err)
			}
			want := op
			want.Allow = tt.want
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("Narrow(%q) (-want +got):\n%s", tt.ask, diff)
			}
			// Whatever the narrowed policy allows, the operator's does.
			for _, q := range got.Allow {
				host := strings.Replace(q, "*", "x", 1)
				if !allowedBy(op.Allow, host) {
					t.Errorf("Narrow(%q) allows %q, which %q does not", tt.ask, host, op.Allow)
				}
			}
		})
	}
}

func allowedBy(patterns []string, host string) bool {
	h, err := canonicalHost(host)
	if err != nil {
		return false
	}
	for _, s := range patterns {
		if p, err := canonicalPattern(s); err == nil && match(h, p) {
			return true
		}
	}
	return false
}

func TestPolicyValidate(t *testing.T) {
	tests := []struct {
		name string
		p    Policy
		ok   bool
	}{
		{"zero", Policy{}, true},
		{"full", Policy{Allow: []string{"a.example"}, HTTPPorts: []int{80, 8080}, TLSPorts: []int{443},
			Headers: map[string]map[string]string{"a.example": {"Authorization": "Bearer x\ty"}}}, true},
		{"bad pattern", Policy{Allow: []string{"10.0.0.1"}}, false},
		{"bad port", Policy{TLSPorts: []int{0}}, false},
		{"bad header pattern", Policy{Headers: map[string]map[string]string{"*": {"A": "b"}}}, false},
		{"bad header name", Policy{Headers: map[string]map[string]string{"a.example": {"A B": "b"}}}, false},
		{"header injection", Policy{Headers: map[string]map[string]string{"a.example": {"A": "b\r\nEvil: 1"}}}, false},
	}
	for _, tt := range tests {
		if err := tt.p.Validate(); (err == nil) != tt.ok {
			t.Errorf("%s: Validate() = %v, want ok %v", tt.name, err, tt.ok)
		}
	}
}

func TestCanonicalHost(t *testing.T) {
	tests := []struct {
		host, want string
		err        error
	}{
		{"Allowed.TEST.", "allowed.test", nil},
		{"xn--80ak6aa92e.test", "xn--80ak6aa92e.test", nil},
		{"169.254.169.254", "", errIPLiteral},
		{"169.254.169.254.", "", errIPLiteral},
		{"2852039166", "", errIPLiteral},
		{"0xA9FEA9FE", "", errIPLiteral},
		{"0251.0376.0251.0376", "", errIPLiteral},
		{"169.254.43518", "", errIPLiteral},
		{"127.1", "", errIPLiteral},
		{"0x", "", errIPLiteral},
		{"[::1]", "", errIPLiteral},
		{"::ffff:169.254.169.254", "", errIPLiteral},
		{"fe80::1%eth0", "", errIPLiteral},
		{"[allowed.test]", "", errIPLiteral},
		{"", "", errBadHost},
		{".", "", errBadHost},
		{"a..b", "", errBadHost},
		{"a.b..", "", errBadHost},
		{"%31%32%37.0.0.1", "", errIPLiteral},
		{"%31%32%37.example", "", errBadHost},
		{"allow\u0435d.test", "", errBadHost},
		{"\uff11\uff12\uff17.0.0.1", "", errIPLiteral},
		{"\uff11\uff12\uff17", "", errBadHost},
		{"a\x00.test", "", errBadHost},
	}
	for _, tt := range tests {
		got, err := canonicalHost(tt.host)
		if got != tt.want || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
			t.Errorf("canonicalHost(%q) = %q, %v; want %q, %v", tt.host, got, err, tt.want, tt.err)
		}
	}
}

// inetAton reports whether glibc's inet_aton, the most lenient IPv4 parser
// in common use, would take s: one to four dot-separated numbers, each
// decimal, 0-octal or 0x-hexadecimal. (Ranges are ignored: an out-of-range
// number is no safer a name.)
func inetAton(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return false
	}
	for _, p := range parts {
		switch {
		case strings.HasPrefix(p, "0x") || strings.HasPrefix(p, "0X"):
			if _, err := strconv.ParseUint("0"+p[2:], 16, 64); err != nil {
				return false
			}
		case strings.HasPrefix(p, "0"):
			if _, err := strconv.ParseUint(p, 8, 64); err != nil {
				return false
			}
		default:
			if _, err := strconv.ParseUint(p, 10, 64); err != nil {
				return false
			}
		}
	}
	return true
}

// FuzzHostMatch checks that the host normaliser and matcher never panic,
// that anything that parses as an IP address is an IP literal to them, and
// that a matched host is canonical.
func FuzzHostMatch(f *testing.F) {
	for _, s := range []string{
		"allowed.test", "ALLOWED.test.", "a.wild.test", "169.254.169.254", "2852039166", "0xA9FEA9FE",
		"0251.0376.0251.0376", "169.254.43518", "127.1", "[::ffff:169.254.169.254]", "[64:ff9b::a9fe:a9fe]",
		"1.2.3.4.", "0x", "xn--allowd-3ve.test", "allow\u0435d.test", "a..b", "%31", "",
	} {
		f.Add(s, "*.wild.test")
		f.Add(s, "allowed.test")
	}
	f.Fuzz(func(t *testing.T, host, pattern string) {
		h, err := canonicalHost(host)
		trimmed := strings.TrimSuffix(host, ".")
		_, v6err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
		if (inetAton(trimmed) || v6err == nil) && !errors.Is(err, errIPLiteral) {
			t.Fatalf("canonicalHost(%q) = %q, %v; want errIPLiteral", host, h, err)
		}
		pat, perr := canonicalPattern(pattern)
		if perr == nil {
			if again, err := canonicalPattern(pat); err != nil || again != pat {
				t.Fatalf("canonicalPattern(%q) = %q, but canonicalPattern(%q) = %q, %v", pattern, pat, pat, again, err)
			}
		}
		if err != nil {
			return
		}
		if again, err := canonicalHost(h); err != nil || again != h || h != strings.ToLower(trimmed) {
			t.Fatalf("canonicalHost(%q) = %q, not canonical: again %q, %v", host, h, again, err)
		}
		if !match(h, h) || match(h, "*."+h) {
			t.Fatalf("%q must match itself and not *.itself", h)
		}
		if perr == nil && match(h, pat) && !allowedBy([]string{pattern}, host) {
			t.Fatalf("match(%q, %q) disagrees with allowedBy", h, pat)
		}
	})
}
