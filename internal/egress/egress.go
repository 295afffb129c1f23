// Package egress is the host-side filtering HTTP proxy through which
// sandboxed code may reach the network when an operator allows it.
//
// A Proxy serves one execution. It accepts CONNECT tunnels (HTTPS) and
// absolute-form plain HTTP requests with the usual methods (GET, HEAD,
// POST, PUT, PATCH, DELETE, OPTIONS; TRACE and every other method answer
// 405 Method Not Allowed before any other check, see methods in proxy.go),
// and admits a request only when every check passes, in this order, before
// anything is dialled:
//
//  1. the host is a domain name (IP literals in any encoding are refused)
//     that matches the Policy's allowlist;
//  2. the port is one the Policy allows for that kind of request;
//  3. the execution's byte budget is not spent;
//  4. the name resolves, once, and every address it resolves to passes
//     DenyAddrs (DefaultDeny: no loopback, private, link-local, metadata,
//     embedded-IPv4 or the host's own addresses);
//  5. the execution's connection budget is not spent.
//
// It then dials exactly one of the checked addresses, never the name again,
// so a DNS answer that changes between check and use (rebinding) cannot
// redirect the connection. Plain HTTP redirects are returned to the client,
// whose follow-up request is checked like any other.
//
// Denials answer 403 Forbidden (405 for a method) with a one-line
// plain-text reason that a program can print, and every attempt is
// recorded in Proxy.Log.
package egress

import (
	"errors"
	"fmt"
	"strings"
)

// Policy says what an execution may reach. The zero Policy allows nothing.
type Policy struct {
	// Allow lists the domains that may be reached: an exact name
	// ("api.example.com") or a wildcard ("*.example.com") that matches
	// every name below the suffix at any depth but not the suffix itself.
	// Matching ignores ASCII case and one trailing dot. IP addresses can
	// never be allowed (see ValidPattern). Empty means nothing is allowed.
	Allow []string

	// HTTPPorts are the ports allowed for plain http:// requests; nil or
	// empty means [80].
	HTTPPorts []int
	// TLSPorts are the ports allowed for CONNECT tunnels; nil or empty
	// means [443].
	TLSPorts []int

	// MaxBytes caps the bytes one execution moves through the proxy, both
	// directions summed, counted on the upstream side (headers, bodies and,
	// for tunnels, TLS records). A connection that crosses it is cut and
	// later requests are denied. Zero or less means 64 MiB.
	MaxBytes int64
	// MaxConns caps the upstream connections one execution may open: each
	// CONNECT tunnel and each plain-HTTP request (the proxy does not keep
	// upstream connections alive) counts, denied requests do not. Zero or
	// less means 32.
	MaxConns int

	// Headers maps an allowlist pattern to headers the proxy sets on plain
	// http:// requests to matching hosts, replacing any the client sent:
	// a way to use a credential that never enters the sandbox. When several
	// patterns match, the most specific wins (an exact name, else the
	// longest wildcard). Headers are never added inside CONNECT tunnels:
	// the proxy does not intercept TLS, so an https:// URL reaches the
	// server without them. Keep such credentials to services reached over
	// plain HTTP on a network the operator trusts. They are never added to
	// a refused request: TRACE, whose response echoes the request, and
	// every unusual method are refused before anything is looked up. A
	// server that echoes request headers for an allowed method (a debugging
	// endpoint such as httpbin's /headers) still hands them back: the
	// server is trusted with them.
	Headers map[string]map[string]string
}

// Defaults for the zero values of Policy's fields.
const (
	DefaultMaxBytes = 64 << 20
	DefaultMaxConns = 32
)

func (p Policy) httpPorts() []int {
	if len(p.HTTPPorts) == 0 {
		return []int{80}
	}
	return p.HTTPPorts
}

func (p Policy) tlsPorts() []int {
	if len(p.TLSPorts) == 0 {
		return []int{443}
	}
	return p.TLSPorts
}

func (p Policy) maxBytes() int64 {
	if p.MaxBytes <= 0 {
		return DefaultMaxBytes
	}
	return p.MaxBytes
}

func (p Policy) maxConns() int {
	if p.MaxConns <= 0 {
		return DefaultMaxConns
	}
	return p.MaxConns
}

// Validate reports the first invalid pattern, port or header of p.
func (p Policy) Validate() error {
	for _, s := range p.Allow {
		if err := ValidPattern(s); err != nil {
			return err
		}
	}
	for _, ports := range [][]int{p.HTTPPorts, p.TLSPorts} {
		for _, port := range ports {
			if port < 1 || port > 65535 {
				return fmt.Errorf("egress port %d is out of range", port)
			}
		}
	}
	for pat, hdrs := range p.Headers {
		if err := ValidPattern(pat); err != nil {
			return fmt.Errorf("egress headers: %w", err)
		}
		for k, v := range hdrs {
			if !validHeader(k, v) {
				return fmt.Errorf("egress headers for %q: invalid header %q", pat, k)
			}
		}
	}
	return nil
}

// Narrow returns p restricted to patterns, the allowlist a request asks for.
// Every requested pattern must be covered by p.Allow: an exact name by the
// same name or a matching wildcard, a wildcard by the same or a wider
// wildcard. A request can therefore never widen p; the error names the first
// pattern that is not covered. An empty patterns list allows nothing (a
// caller with no request-level list should use p itself). Ports, limits and
// headers are kept from p.
func (p Policy) Narrow(patterns []string) (Policy, error) {
	var allow []string
	for _, s := range p.Allow {
		if c, err := canonicalPattern(s); err == nil {
			allow = append(allow, c)
		}
	}
	out := p
	out.Allow = make([]string, 0, len(patterns))
	for _, s := range patterns {
		q, err := canonicalPattern(s)
		if err != nil {
			return Policy{}, err
		}
		covered := false
		for _, a := range allow {
			if covers(a, q) {
				covered = true
				break
			}
		}
		if !covered {
			return Policy{}, fmt.Errorf("egress pattern %q is not in the operator's allowlist", s)
		}
		out.Allow = append(out.Allow, q)
	}
	return out, nil
}

// ValidPattern reports whether s is a valid allowlist pattern: a domain name
// of letters, digits and hyphens ("api.example.com"), optionally preceded
// by "*." ("*.example.com"). Case and one trailing dot do not matter. IP
// addresses, and names a lenient parser would read as one ("127.1",
// "0x7f.1"), are refused: the proxy never allows IP literals.
func ValidPattern(s string) error {
	_, err := canonicalPattern(s)
	return err
}

// canonicalPattern returns s lowercased, without a trailing dot.
func canonicalPattern(s string) (string, error) {
	name, wild := strings.CutPrefix(s, "*.")
	h, err := canonicalHost(name)
	switch {
	case errors.Is(err, errIPLiteral):
		return "", fmt.Errorf("egress pattern %q: IP addresses cannot be allowed, only domain names", s)
	case err != nil:
		return "", fmt.Errorf("egress pattern %q: want a domain name, optionally preceded by \"*.\"", s)
	case wild:
		return "*." + h, nil
	}
	return h, nil
}

// covers reports whether the canonical pattern a allows everything the
// canonical pattern q allows.
func covers(a, q string) bool {
	if a == q {
		return true
	}
	suffix, ok := strings.CutPrefix(a, "*")
	if !ok {
		return false // an exact name covers only itself
	}
	// suffix is ".example.com"; q is "x.example.com" or "*.x.example.com".
	return strings.HasSuffix(strings.TrimPrefix(q, "*"), suffix)
}

// match reports whether the canonical host matches the canonical pattern.
func match(host, pattern string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		// The suffix starts with a dot and host has no empty label, so
		// host has at least one label more than the suffix.
		return strings.HasSuffix(host, suffix)
	}
	return host == pattern
}

var (
	errIPLiteral = errors.New("IP address literals are not allowed")
	errBadHost   = errors.New("invalid host name")
	errByteLimit = errors.New("egress byte limit reached")
)

// canonicalHost returns the form of host that is matched against patterns:
// ASCII lowercase, without one trailing dot. It returns errIPLiteral for a
// host that is, or that some parser would read as, an IP address: one with a
// colon or bracket (IPv6) or whose last label is a number (the WHATWG URL
// standard's "ends in a number" rule, which covers every form inet_aton
// accepts: 2852039166, 0xA9FEA9FE, 0251.0376.0251.0376, 169.254.43518,
// 127.1). Otherwise it returns errBadHost unless host is a letter-digit-
// hyphen name with labels of 1 to 63 bytes, at most 253 bytes in all:
// percent-escapes, non-ASCII (IDNs must arrive as punycode, "xn--"),
// underscores and empty labels are refused, so no two spellings of a host
// can be told apart by the matcher but not by the resolver.
func canonicalHost(host string) (string, error) {
	if strings.ContainsAny(host, ":[]") {
		return "", errIPLiteral
	}
	h := strings.TrimSuffix(host, ".")
	if last := h[strings.LastIndexByte(h, '.')+1:]; isNumber(last) {
		return "", errIPLiteral
	}
	if h == "" || len(h) > 253 {
		return "", errBadHost
	}
	b := []byte(h)
	label := 0 // length of the current label
	for i, c := range b {
		switch {
		case 'A' <= c && c <= 'Z':
			b[i] = c + 'a' - 'A'
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '-':
			if label == 0 || i+1 == len(b) || b[i+1] == '.' {
				return "", errBadHost // a label may not start or end with '-'
			}
		case c == '.':
			if label == 0 {
				return "", errBadHost
			}
			label = 0
			continue
		default:
			return "", errBadHost
		}
		if label++; label > 63 {
			return "", errBadHost
		}
	}
	if label == 0 {
		return "", errBadHost // h ended in a dot: the host in two
	}
	return string(b), nil
}

// isNumber reports whether s is a decimal, octal or 0x-hexadecimal number
// (possibly "0x" alone) in the sense of inet_aton and the URL standard.
func isNumber(s string) bool {
	digits, hex := s, false
	if len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		digits, hex = s[2:], true
	} else if s == "" {
		return false
	}
	for _, c := range []byte(digits) {
		isDigit := '0' <= c && c <= '9'
		isHex := 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
		if !isDigit && !(hex && isHex) {
			return false
		}
	}
	return true
}

// validHeader reports whether name is an RFC 9110 token and value holds no
// control character but tab.
func validHeader(name, value string) bool {
	if name == "" {
		return false
	}
	for _, c := range []byte(name) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	for _, c := range []byte(value) {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}
