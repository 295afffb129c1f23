package egress

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"codeexec/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The network safety rules of these tests: every packet goes to loopback.
// Names resolve through world, a fake resolver; every dial goes through
// world.Dial, which fails the test instead of dialling anything but
// loopback; and the proxy's DenyAddrs is DefaultDeny except for 127.0.0.1,
// where the test servers listen.

var testServerAddr = netip.MustParseAddr("127.0.0.1")

func denyButTestServers(a netip.Addr) (string, bool) {
	if a.Unmap() == testServerAddr {
		return "", false
	}
	return DefaultDeny(a)
}

// world is the proxy's view of the network: a fake resolver and a
// loopback-only dialer that record what they were asked.
type world struct {
	t       *testing.T
	mu      sync.Mutex
	lookups map[string]int
	dials   []string
}

func newWorld(t *testing.T) *world { return &world{t: t, lookups: map[string]int{}} }

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func (w *world) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	name, ok := strings.CutSuffix(host, ".")
	if !ok {
		w.t.Errorf("LookupNetIP(%q): not fully qualified, so search domains would apply", host)
	}
	w.lookups[name]++
	switch name {
	case "allowed.test", "a.wild.test", "b.a.wild.test":
		return addrs("127.0.0.1"), nil
	case "internal.test":
		return addrs("10.0.0.1"), nil
	case "meta.test":
		return addrs("169.254.169.254"), nil
	case "mixed.test":
		return addrs("127.0.0.1", "10.0.0.1"), nil
	case "mapped.test":
		return addrs("::ffff:10.0.0.1"), nil
	case "mapped-ok.test":
		return addrs("::ffff:127.0.0.1"), nil
	case "nat64.test":
		return addrs("64:ff9b::a9fe:a9fe"), nil
	case "rebind.test":
		// Loopback for the check, then an internal address: a proxy
		// that resolved again to dial would hit the safety net.
		if w.lookups[name] == 1 {
			return addrs("127.0.0.1"), nil
		}
		return addrs("10.0.0.1"), nil
	case "nxdomain.test":
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	w.t.Errorf("LookupNetIP(%q): a name the test did not expect to be resolved", host)
	return nil, &net.DNSError{Err: "unexpected name", Name: host, IsNotFound: true}
}

// Dial is the last line of defence: it dials loopback only, and fails the
// test if asked for anything else.
func (w *world) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	w.mu.Lock()
	w.dials = append(w.dials, addr)
	w.mu.Unlock()
	ap, err := netip.ParseAddrPort(addr)
	if network != "tcp" || err != nil || !ap.Addr().IsLoopback() {
		w.t.Errorf("Dial(%q, %q): not a loopback IP:port; the proxy must never get here", network, addr)
		return nil, errors.New("test safety net: refusing a non-loopback dial")
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

func (w *world) Dials() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.dials...)
}

func (w *world) Lookups(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.lookups[name]
}

// upstream is a pair of loopback servers, plain and TLS, with the same
// handlers; it remembers the headers of the last request.
type upstream struct {
	plain, tls *httptest.Server
	mu         sync.Mutex
	last       http.Header
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.last = r.Header.Clone()
		u.mu.Unlock()
		fmt.Fprintf(w, "hello %s", r.Host)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	})
	chunk := strings.Repeat("x", 16<<10)
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("length") {
			w.Header().Set("Content-Length", strconv.Itoa(64*len(chunk)))
		}
		for range 64 { // 1 MiB
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "got %d", n)
	})
	u.plain = httptest.NewServer(mux)
	u.tls = httptest.NewUnstartedServer(mux)
	// Tunnels that the tests close before a handshake are not news.
	u.tls.Config.ErrorLog = log.New(io.Discard, "", 0)
	u.tls.TLS = &tls.Config{Certificates: []tls.Certificate{testCert(t)}}
	u.tls.StartTLS()
	t.Cleanup(u.plain.Close)
	t.Cleanup(u.tls.Close)
	return u
}

func port(s *httptest.Server) int { return s.Listener.Addr().(*net.TCPAddr).Port }

func (u *upstream) lastHeader() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.last
}

// policy allows the test names on the servers' ports.
func (u *upstream) policy() Policy {
	return Policy{
		Allow: []string{
			"allowed.test", "*.wild.test", "internal.test", "meta.test", "mixed.test",
			"mapped.test", "mapped-ok.test", "nat64.test", "rebind.test", "nxdomain.test",
		},
		HTTPPorts: []int{port(u.plain)},
		TLSPorts:  []int{port(u.tls)},
	}
}

// proxy serves a Proxy for pol on loopback and closes it when t ends.
type proxy struct {
	*Proxy
	addr string
}

func startProxy(t *testing.T, pol Policy, w *world) *proxy {
	t.Helper()
	p := New(pol, Options{Resolver: w, Dial: w.Dial, DenyAddrs: denyButTestServers, Timeout: 5 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- p.Serve(ln) }()
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("Serve() = %v, want nil after Close", err)
		}
	})
	return &proxy{p, ln.Addr().String()}
}

// testCert returns a self-signed certificate for the test names that
// resolve to the test servers.
func testCert(t *testing.T) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "egress test"},
		DNSNames:              []string{"allowed.test", "a.wild.test", "b.a.wild.test", "rebind.test", "mapped-ok.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// client returns an HTTP client using the proxy that trusts u's TLS
// certificate. It follows no redirect unless follow is set.
func (p *proxy) client(t *testing.T, u *upstream, follow bool) *http.Client {
	pool := x509.NewCertPool()
	pool.AddCert(u.tls.Certificate())
	tr := &http.Transport{
		Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: p.addr, User: url.UserPassword("sandbox", "pw")}),
		TLSClientConfig: &tls.Config{RootCAs: pool},
	}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	if !follow {
		c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	}
	return c
}

func get(t *testing.T, c *http.Client, url string) (*http.Response, string, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

// raw sends "<line> HTTP/1.1" to the proxy with a Host header naming an
// allowed host, which the proxy must ignore, and returns the response.
func (p *proxy) raw(t *testing.T, line string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "%s HTTP/1.1\r\nHost: allowed.test\r\n\r\n", line)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s: read response: %v", line, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestProxyAllows(t *testing.T) {
	u := newUpstream(t)
	w := newWorld(t)
	p := startProxy(t, u.policy(), w)
	c := p.client(t, u, false)
	hp, ht := port(u.plain), port(u.tls)
	tests := []struct {
		name, url, want string
	}{
		{"http", fmt.Sprintf("http://allowed.test:%d/", hp), fmt.Sprintf("hello allowed.test:%d", hp)},
		{"https", fmt.Sprintf("https://allowed.test:%d/", ht), fmt.Sprintf("hello allowed.test:%d", ht)},
		{"wildcard subdomain", fmt.Sprintf("http://a.wild.test:%d/", hp), fmt.Sprintf("hello a.wild.test:%d", hp)},
		{"wildcard deeper", fmt.Sprintf("https://b.a.wild.test:%d/", ht), fmt.Sprintf("hello b.a.wild.test:%d", ht)},
		{"case and trailing dot", fmt.Sprintf("http://ALLOWED.Test.:%d/", hp), fmt.Sprintf("hello allowed.test:%d", hp)},
		{"IPv4-mapped answer", fmt.Sprintf("http://mapped-ok.test:%d/", hp), fmt.Sprintf("hello mapped-ok.test:%d", hp)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body, err := get(t, c, tt.url)
			if err != nil {
				t.Fatalf("GET %s: %v", tt.url, err)
			}
			if resp.StatusCode != 200 || body != tt.want {
				t.Errorf("GET %s = %d %q, want 200 %q", tt.url, resp.StatusCode, body, tt.want)
			}
		})
	}
	for _, d := range w.Dials() {
		if ap := netip.MustParseAddrPort(d); ap.Addr() != testServerAddr {
			t.Errorf("dialled %s, want only %s", d, testServerAddr)
		}
	}
	c.CloseIdleConnections()
	p.Close() // makes the log final
	log := p.Log()
	if len(log) != len(tests) {
		t.Fatalf("Log() has %d entries, want %d: %+v", len(log), len(tests), log)
	}
	for i, a := range log {
		if !a.Allowed || a.Reason != "" || a.BytesSent == 0 || a.BytesReceived == 0 {
			t.Errorf("Log()[%d] = %+v, want allowed, with bytes both ways", i, a)
		}
	}
}

func TestProxyDenies(t *testing.T) {
	u := newUpstream(t)
	hp, ht := port(u.plain), port(u.tls)
	const (
		ipLiteral = "IP address literals are not allowed"
		badHost   = "invalid host name"
		notListed = "not in the allowlist"
	)
	type tc struct {
		name       string
		line       string
		wantCode   int
		wantReason string // in the body and, for 403, the header
		lookups    bool   // whether resolving is expected (never dialling)
	}
	var tests []tc
	// Every spelling of an internal address, as a plain-HTTP host and as a
	// CONNECT authority. None may be resolved or dialled.
	for _, h := range []string{
		"169.254.169.254", "169.254.169.254.", "2852039166", "0xA9FEA9FE", "0xa9fea9fe.",
		"0xa9.0xfe.0xa9.0xfe", "0251.0376.0251.0376", "169.254.43518", "169.16689662",
		"127.1", "127.0.0.1", "0177.0.0.1", "0x7f000001", "0", "0x", "10.0.0.1",
		"[::]", "[::1]", "[::ffff:169.254.169.254]", "[::ffff:a9fe:a9fe]", "[::FFFF:A9FE:A9FE]",
		"[64:ff9b::a9fe:a9fe]", "[64:ff9b::169.254.169.254]", "[2002:a9fe:a9fe::]",
		"[2001:0:4136:e378:8000:63bf:3fff:fdd2]", "[fe80::1%25eth0]", "[fd00:ec2::254]",
		"allowed.test.169.254.169.254", "allowed.test.0x7f",
	} {
		tests = append(tests,
			tc{"GET " + h, "GET http://" + h + "/latest/meta-data/", 403, ipLiteral, false},
			tc{"CONNECT " + h, "CONNECT " + h + ":" + strconv.Itoa(ht), 403, ipLiteral, false})
	}
	tests = append(tests, []tc{
		// Names that are not in the allowlist, or not names at all.
		{"other domain", fmt.Sprintf("GET http://other.test:%d/", hp), 403, notListed, false},
		{"other domain CONNECT", fmt.Sprintf("CONNECT other.test:%d", ht), 403, notListed, false},
		{"wildcard apex", fmt.Sprintf("GET http://wild.test:%d/", hp), 403, notListed, false},
		{"suffix trick", fmt.Sprintf("GET http://evilallowed.test:%d/", hp), 403, notListed, false},
		{"prefix trick", fmt.Sprintf("GET http://allowed.test.evil:%d/", hp), 403, notListed, false},
		{"punycode lookalike", fmt.Sprintf("GET http://xn--allowd-3ve.test:%d/", hp), 403, notListed, false},
		{"unicode lookalike", fmt.Sprintf("GET http://allow\u0435d.test:%d/", hp), 403, badHost, false},
		{"fullwidth digits", "GET http://\uff11\uff12\uff17.\uff10.\uff10.\uff11/", 403, badHost, false},
		{"percent-encoded unicode", fmt.Sprintf("GET http://allow%%D0%%B5d.test:%d/", hp), 403, badHost, false},
		{"empty label", fmt.Sprintf("GET http://allowed..test:%d/", hp), 403, badHost, false},
		{"two trailing dots", fmt.Sprintf("GET http://allowed.test..:%d/", hp), 403, badHost, false},
		{"leading dot", fmt.Sprintf("CONNECT .allowed.test:%d", ht), 403, badHost, false},
		{"underscore", fmt.Sprintf("GET http://allowed_test:%d/", hp), 403, badHost, false},

		// Ports.
		{"default HTTP port not configured", "GET http://allowed.test/", 403, "port 80 is not allowed", false},
		{"TLS port for plain HTTP", fmt.Sprintf("GET http://allowed.test:%d/", ht), 403, fmt.Sprintf("port %d is not allowed", ht), false},
		{"HTTP port for CONNECT", fmt.Sprintf("CONNECT allowed.test:%d", hp), 403, fmt.Sprintf("port %d is not allowed", hp), false},
		{"default TLS port not configured", "CONNECT allowed.test:443", 403, "port 443 is not allowed", false},

		// Names that resolve to internal addresses: resolved, not dialled.
		{"name resolving to private", fmt.Sprintf("GET http://internal.test:%d/", hp), 403, "resolves to a private address (10.0.0.1)", true},
		{"name resolving to metadata", fmt.Sprintf("CONNECT meta.test:%d", ht), 403, "resolves to a cloud metadata address (169.254.169.254)", true},
		{"one bad answer among good", fmt.Sprintf("GET http://mixed.test:%d/", hp), 403, "resolves to a private address (10.0.0.1)", true},
		{"IPv4-mapped answer", fmt.Sprintf("GET http://mapped.test:%d/", hp), 403, "resolves to a private address (::ffff:10.0.0.1)", true},
		{"NAT64 answer", fmt.Sprintf("CONNECT nat64.test:%d", ht), 403, "resolves to a NAT64 address embedding 169.254.169.254 (64:ff9b::a9fe:a9fe)", true},
		{"unknown name", fmt.Sprintf("GET http://nxdomain.test:%d/", hp), 502, "cannot resolve host", true},

		// Requests a proxy does not serve.
		{"origin form", "GET /", 400, "bad request", false},
		{"asterisk", "OPTIONS *", 400, "bad request", false},
		{"https absolute form", fmt.Sprintf("GET https://allowed.test:%d/", ht), 400, "bad request", false},
		{"ftp", "GET ftp://allowed.test/", 400, "bad request", false},
		{"CONNECT without port", "CONNECT allowed.test", 400, "invalid port", false},
		{"CONNECT port with zero", "CONNECT allowed.test:0443", 400, "invalid port", false},
		{"CONNECT port too big", "CONNECT allowed.test:65979", 400, "invalid port", false},
		{"CONNECT path", "CONNECT /x", 400, "bad request", false},
		// Go's URL parser refuses percent-escapes of ASCII in hosts: the
		// request never reaches the proxy's handler.
		{"percent-encoded IP", "GET http://%31%32%37.0.0.1/", 400, "", false},
		{"bracketed name", fmt.Sprintf("CONNECT [allowed.test]:%d", ht), 400, "", false},
	}...)

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newWorld(t)
			p := startProxy(t, u.policy(), w)
			resp, body := p.raw(t, tt.line)
			if resp.StatusCode != tt.wantCode || !strings.Contains(body, tt.wantReason) {
				t.Errorf("%s = %d %q, want %d with %q", tt.line, resp.StatusCode, body, tt.wantCode, tt.wantReason)
			}
			if d := w.Dials(); len(d) != 0 {
				t.Errorf("%s dialled %v, want no dial", tt.line, d)
			}
			w.mu.Lock()
			lookups := fmt.Sprint(w.lookups)
			resolved := len(w.lookups) > 0
			w.mu.Unlock()
			if resolved != tt.lookups {
				t.Errorf("%s resolved %s, want resolving %v", tt.line, lookups, tt.lookups)
			}
			if tt.wantCode != 403 {
				return
			}
			if got := resp.Header.Get("X-Codeexec-Egress-Denied"); !strings.Contains(got, tt.wantReason) {
				t.Errorf("%s: X-Codeexec-Egress-Denied = %q, want %q", tt.line, got, tt.wantReason)
			}
			if !strings.HasPrefix(body, "codeexec egress denied: ") || strings.Count(body, "\n") != 1 || !strings.HasSuffix(body, "\n") {
				t.Errorf("%s: body %q, want one line starting with \"codeexec egress denied: \"", tt.line, body)
			}
			if strings.HasPrefix(tt.line, "CONNECT") && !strings.Contains(resp.Status, tt.wantReason) {
				t.Errorf("%s: status %q, want the reason in it for clients that show only the status line", tt.line, resp.Status)
			}
			p.Close()
			log := p.Log()
			if len(log) != 1 || log[0].Allowed || !strings.Contains(log[0].Reason, tt.wantReason) {
				t.Errorf("%s: Log() = %+v, want one denial with %q", tt.line, log, tt.wantReason)
			}
		})
	}
}

// TestProxyDeniesGoClient checks what a Go program sees: the reason.
func TestProxyDeniesGoClient(t *testing.T) {
	u := newUpstream(t)
	p := startProxy(t, u.policy(), newWorld(t))
	c := p.client(t, u, false)

	resp, body, err := get(t, c, fmt.Sprintf("http://other.test:%d/", port(u.plain)))
	want := fmt.Sprintf("codeexec egress denied: other.test:%d: not in the allowlist\n", port(u.plain))
	if err != nil || resp.StatusCode != 403 || body != want {
		t.Errorf("GET other.test = %v, %q, %v; want 403 %q", resp, body, err, want)
	}
	_, _, err = get(t, c, fmt.Sprintf("https://other.test:%d/", port(u.tls)))
	if err == nil || !strings.Contains(err.Error(), "not in the allowlist") {
		t.Errorf("GET https://other.test: error %v, want one naming the reason", err)
	}
}

func TestProxyRedirectToInternal(t *testing.T) {
	u := newUpstream(t)
	hp := port(u.plain)
	tests := []struct {
		name, to, wantReason string
	}{
		{"metadata literal", "http://169.254.169.254/latest/meta-data/", "IP address literals are not allowed"},
		{"decimal literal", "http://2852039166/", "IP address literals are not allowed"},
		{"name of metadata", fmt.Sprintf("http://meta.test:%d/", hp), "resolves to a cloud metadata address"},
		{"name of private", fmt.Sprintf("http://internal.test:%d/", hp), "resolves to a private address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			from := fmt.Sprintf("http://allowed.test:%d/redirect?to=%s", hp, url.QueryEscape(tt.to))
			p := startProxy(t, u.policy(), newWorld(t))

			// The proxy returns the redirect: it follows none itself.
			resp, _, err := get(t, p.client(t, u, false), from)
			if err != nil || resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != tt.to {
				t.Fatalf("GET %s = %v, %v; want 302 to %s", from, resp, err, tt.to)
			}
			// A client that follows it is denied on the second request.
			resp, body, err := get(t, p.client(t, u, true), from)
			if err != nil || resp.StatusCode != http.StatusForbidden || !strings.Contains(body, tt.wantReason) {
				t.Errorf("GET %s following redirects = %v, %q, %v; want 403 %q", from, resp, body, err, tt.wantReason)
			}
			p.Close()
			log := p.Log()
			if len(log) != 3 || !log[0].Allowed || !log[1].Allowed || log[2].Allowed {
				t.Errorf("Log() = %+v, want allowed, allowed, denied", log)
			}
		})
	}
}

func TestProxyDialsTheCheckedAddress(t *testing.T) {
	u := newUpstream(t)
	w := newWorld(t)
	p := startProxy(t, u.policy(), w)
	c := p.client(t, u, false)
	u1 := fmt.Sprintf("http://rebind.test:%d/", port(u.plain))
	if resp, _, err := get(t, c, u1); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s = %v, %v; want 200", u1, resp, err)
	}
	want := []string{fmt.Sprintf("127.0.0.1:%d", port(u.plain))}
	if diff := cmp.Diff(want, w.Dials()); diff != "" {
		t.Errorf("dials (-want +got):\n%s", diff)
	}
	if n := w.Lookups("rebind.test"); n != 1 {
		t.Errorf("rebind.test resolved %d times, want once", n)
	}
	// The name now resolves to an internal address: a new request sees it.
	resp, body, err := get(t, c, u1)
	if err != nil || resp.StatusCode != 403 || !strings.Contains(body, "resolves to a private address (10.0.0.1)") {
		t.Errorf("second GET %s = %v, %q, %v; want 403", u1, resp, body, err)
	}
}

func TestProxyByteLimit(t *testing.T) {
	u := newUpstream(t)
	const limit = 64 << 10
	tests := []struct {
		name, url string
	}{
		{"http", fmt.Sprintf("http://allowed.test:%d/big", port(u.plain))},
		{"https", fmt.Sprintf("https://allowed.test:%d/big", port(u.tls))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pol := u.policy()
			pol.MaxBytes = limit
			p := startProxy(t, pol, newWorld(t))
			c := p.client(t, u, false)
			resp, body, err := get(t, c, tt.url)
			if err == nil {
				t.Fatalf("GET %s = %d with %d bytes, want the download cut", tt.url, resp.StatusCode, len(body))
			}
			if len(body) >= limit {
				t.Errorf("GET %s got %d bytes before the cut, want < %d", tt.url, len(body), limit)
			}
			_, body, err = get(t, c, strings.TrimSuffix(tt.url, "big"))
			if tt.name == "http" && !strings.Contains(body, "byte limit of 65536 reached") {
				t.Errorf("next GET: %q, %v; want 403 byte limit", body, err)
			}
			if tt.name == "https" && (err == nil || !strings.Contains(err.Error(), "byte limit of 65536 reached")) {
				t.Errorf("next GET: %v; want the byte limit error", err)
			}
			c.CloseIdleConnections()
			p.Close()
			var total int64
			log := p.Log()
			for _, a := range log {
				total += a.BytesSent + a.BytesReceived
			}
			if total != limit || log[0].Reason != "byte limit of 65536 reached" {
				t.Errorf("Log() = %+v: %d bytes in all, want %d and the first entry cut", log, total, limit)
			}
		})
	}

	t.Run("announced length", func(t *testing.T) {
		pol := u.policy()
		pol.MaxBytes = limit
		p := startProxy(t, pol, newWorld(t))
		c := p.client(t, u, false)
		u1 := fmt.Sprintf("http://allowed.test:%d/big?length=1", port(u.plain))
		resp, body, err := get(t, c, u1)
		if err != nil || resp.StatusCode != 403 || !strings.Contains(body, "response of 1048576 bytes exceeds the byte limit of 65536") {
			t.Errorf("GET %s = %v, %q, %v; want 403 before the body", u1, resp, body, err)
		}
		// The budget is not spent: small requests still work.
		if resp, _, err := get(t, c, strings.TrimSuffix(u1, "big?length=1")); err != nil || resp.StatusCode != 200 {
			t.Errorf("small GET after = %v, %v; want 200", resp, err)
		}
	})

	t.Run("upload", func(t *testing.T) {
		pol := u.policy()
		pol.MaxBytes = limit
		p := startProxy(t, pol, newWorld(t))
		c := p.client(t, u, false)
		u1 := fmt.Sprintf("http://allowed.test:%d/upload", port(u.plain))
		resp, err := c.Post(u1, "text/plain", strings.NewReader(strings.Repeat("y", 1<<20)))
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 403 || !strings.Contains(string(body), "byte limit") {
				t.Errorf("POST 1 MiB = %d %q, want 403 byte limit or an error", resp.StatusCode, body)
			}
		}
	})
}

func TestProxyConnLimit(t *testing.T) {
	u := newUpstream(t)
	pol := u.policy()
	pol.MaxConns = 2
	p := startProxy(t, pol, newWorld(t))
	c := p.client(t, u, false)
	urls := []string{
		fmt.Sprintf("http://allowed.test:%d/", port(u.plain)),
		fmt.Sprintf("https://allowed.test:%d/", port(u.tls)),
	}
	for _, u := range urls {
		if resp, _, err := get(t, c, u); err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s = %v, %v; want 200", u, resp, err)
		}
	}
	// The HTTPS tunnel is kept alive by the client and reused.
	if resp, _, err := get(t, c, urls[1]); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s again = %v, %v; want 200 over the same tunnel", urls[1], resp, err)
	}
	resp, body, err := get(t, c, urls[0])
	if err != nil || resp.StatusCode != 403 || !strings.Contains(body, "connection limit of 2 reached") {
		t.Errorf("third connection = %v, %q, %v; want 403 connection limit", resp, body, err)
	}
}

func TestProxyHeaders(t *testing.T) {
	u := newUpstream(t)
	pol := u.policy()
	pol.Headers = map[string]map[string]string{
		"allowed.test":   {"authorization": "Bearer s3cret"},
		"*.wild.test":    {"X-Wild": "any"},
		"*.a.wild.test":  {"X-Wild": "a"},
		"b.a.wild.test.": {"X-Wild": "exact"},
	}
	if err := pol.Validate(); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, pol, newWorld(t))
	c := p.client(t, u, false)
	hp := port(u.plain)
	tests := []struct {
		name, url string
		want      http.Header // among the headers the server saw
	}{
		{"replaces the client's", fmt.Sprintf("http://allowed.test:%d/", hp), http.Header{"Authorization": {"Bearer s3cret"}}},
		{"wildcard", fmt.Sprintf("http://a.wild.test:%d/", hp), http.Header{"Authorization": {"Bearer forged"}, "X-Wild": {"any"}}},
		{"most specific wins", fmt.Sprintf("http://b.a.wild.test:%d/", hp), http.Header{"X-Wild": {"exact"}}},
		// The proxy cannot add headers inside TLS: the server sees the
		// client's own.
		{"not over https", fmt.Sprintf("https://allowed.test:%d/", port(u.tls)), http.Header{"Authorization": {"Bearer forged"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", tt.url, nil)
			req.Header.Set("Authorization", "Bearer forged")
			req.Header.Set("Connection", "X-Hop")
			req.Header.Set("X-Hop", "1")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got := u.lastHeader()
			for k, v := range tt.want {
				if diff := cmp.Diff(v, got.Values(k)); diff != "" {
					t.Errorf("server saw %s (-want +got):\n%s", k, diff)
				}
			}
			if strings.HasPrefix(tt.url, "http:") {
				for _, k := range []string{"Proxy-Authorization", "X-Hop"} {
					if v := got.Values(k); v != nil {
						t.Errorf("server saw %s: %q, want it stripped", k, v)
					}
				}
			}
			var seen strings.Builder
			resp.Header.Write(&seen)
			if strings.Contains(seen.String()+string(body), "s3cret") {
				t.Errorf("the client saw the secret: %s%s", seen.String(), body)
			}
		})
	}
}

func TestProxyIdleTunnel(t *testing.T) {
	u := newUpstream(t)
	w := newWorld(t)
	p := New(u.policy(), Options{Resolver: w, Dial: w.Dial, DenyAddrs: denyButTestServers, Timeout: 100 * time.Millisecond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	defer func() {
		p.Close()
		<-done
	}()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT allowed.test:%d HTTP/1.1\r\n\r\n", port(u.tls))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("CONNECT = %q, %v; want 200", line, err)
	}
	br.ReadString('\n')
	start := time.Now()
	if n, err := br.Read(make([]byte, 1)); err == nil {
		t.Fatalf("idle tunnel read %d bytes, want it closed", n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("idle tunnel closed after %v, want about 100ms", d)
	}
}

func TestProxyCloseEndsTunnels(t *testing.T) {
	u := newUpstream(t)
	p := startProxy(t, u.policy(), newWorld(t))
	c, err := net.Dial("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT allowed.test:%d HTTP/1.1\r\n\r\n", port(u.tls))
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("CONNECT = %q, %v; want 200", line, err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	br.ReadString('\n')
	if _, err := br.ReadByte(); err == nil {
		t.Error("tunnel still open after Close")
	}
	// A closed Proxy serves nothing.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := p.Serve(ln); err != nil {
		t.Errorf("Serve after Close = %v, want nil", err)
	}
}

func TestAccessJSON(t *testing.T) {
	got, err := json.Marshal([]Access{
		{Host: "api.example.com", Port: 443, BytesSent: 10, BytesReceived: 20, Allowed: true},
		{Host: "169.254.169.254", Port: 80, Reason: "IP address literals are not allowed"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"host":"api.example.com","port":443,"bytes_sent":10,"bytes_received":20,"allowed":true},` +
		`{"host":"169.254.169.254","port":80,"bytes_sent":0,"bytes_received":0,"allowed":false,"reason":"IP address literals are not allowed"}]`
	if string(got) != want {
		t.Errorf("json.Marshal = %s\nwant %s", got, want)
	}
}

// clientScript fetches each URL of argv[2:] through the proxy argv[1] with
// urllib and, when it is installed, requests, trusting the CA file in
// $CAFILE, and prints one JSON line per fetch: what a program would see.
const clientScript = `
import json, os, ssl, sys, urllib.error, urllib.request
proxy, urls = sys.argv[1], sys.argv[2:]
cafile = os.environ["CAFILE"]
opener = urllib.request.build_opener(
    urllib.request.ProxyHandler({"http": proxy, "https": proxy}),
    urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=cafile)))
for url in urls:
    try:
        with opener.open(url, timeout=10) as r:
            out = "%d %s" % (r.status, r.read().decode())
    except urllib.error.HTTPError as e:
        out = "%d %s" % (e.code, e.read().decode().strip())
    except Exception as e:
        out = "error %s" % e
    print(json.dumps(["urllib", url, out]))
try:
    import requests
except ImportError:
    sys.exit(0)
s = requests.Session()
s.trust_env = False
for url in urls:
    try:
        r = s.get(url, proxies={"http": proxy, "https": proxy}, verify=cafile, timeout=10)
        out = "%d %s" % (r.status_code, r.text.strip())
    except Exception as e:
        out = "error %s" % e
    print(json.dumps(["requests", url, out]))
`

// TestProxyPythonClients checks that Python's urllib and requests work
// through the proxy and show a denial's reason to the program.
func TestProxyPythonClients(t *testing.T) {
	py := testenv.Python(t, "requests")
	u := newUpstream(t)
	p := startProxy(t, u.policy(), newWorld(t))
	cafile := filepath.Join(t.TempDir(), "ca.pem")
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: u.tls.Certificate().Raw})
	if err := os.WriteFile(cafile, pemCert, 0o600); err != nil {
		t.Fatal(err)
	}
	hp, ht := port(u.plain), port(u.tls)
	tests := []struct{ url, want string }{
		{fmt.Sprintf("http://allowed.test:%d/", hp), fmt.Sprintf("200 hello allowed.test:%d", hp)},
		{fmt.Sprintf("https://allowed.test:%d/", ht), fmt.Sprintf("200 hello allowed.test:%d", ht)},
		{fmt.Sprintf("http://other.test:%d/", hp), fmt.Sprintf("403 codeexec egress denied: other.test:%d: not in the allowlist", hp)},
		{fmt.Sprintf("https://other.test:%d/", ht), fmt.Sprintf("codeexec egress denied: other.test:%d: not in the allowlist", ht)},
		{"http://169.254.169.254/latest/meta-data/", "403 codeexec egress denied: 169.254.169.254:80: IP address literals are not allowed"},
		{fmt.Sprintf("http://allowed.test:%d/redirect?to=http://2852039166/", hp), "403 codeexec egress denied: 2852039166:80: IP address literals are not allowed"},
	}
	args := []string{"-c", clientScript, "http://" + p.addr}
	for _, tt := range tests {
		args = append(args, tt.url)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "CAFILE=" + cafile}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3: %v\n%s", err, out)
	}
	seen := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		var got [3]string
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("python3 printed %q: %v", line, err)
		}
		seen[got[0]] = true
		for _, tt := range tests {
			if tt.url == got[1] && !strings.Contains(got[2], tt.want) {
				t.Errorf("%s GET %s: %q, want %q", got[0], got[1], got[2], tt.want)
			}
		}
	}
	if !seen["urllib"] {
		t.Errorf("python3 printed nothing for urllib:\n%s", out)
	}
	if !seen["requests"] {
		t.Log("requests is not installed: checked urllib only")
	}
}
