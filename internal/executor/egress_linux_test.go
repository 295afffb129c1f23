package executor

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"codeexec/internal/egress"
)

// Network safety: every server here listens on 127.0.0.1, names resolve
// only through testResolver, and the proxy's dialer refuses anything but
// loopback, so a broken filter fails the test instead of sending traffic.

type testResolver map[string][]netip.Addr

func (r testResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if a, ok := r[strings.TrimSuffix(host, ".")]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

type loopbackDialer struct {
	t     *testing.T
	mu    sync.Mutex
	dials []string
}

func (d *loopbackDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().IsLoopback() {
		d.t.Errorf("the egress proxy tried to dial %s %s: only loopback may be dialled in tests", network, addr)
		return nil, fmt.Errorf("test dialer: refusing %s", addr)
	}
	d.mu.Lock()
	d.dials = append(d.dials, addr)
	d.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func TestEgress(t *testing.T) {
	var gotSecret sync.Map
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if v := r.Header.Get("Authorization"); v != "" {
			gotSecret.Store(v, true)
		}
		switch r.URL.Path {
		case "/big":
			w.Write([]byte(strings.Repeat("x", 4<<20)))
		case "/redirect":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		default:
			fmt.Fprintf(w, "hello from %s", r.Host)
		}
	}))
	defer srv.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "secure hello")
	}))
	defer tlsSrv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	tlsPort := tlsSrv.Listener.Addr().(*net.TCPAddr).Port
	loop := netip.MustParseAddr("127.0.0.1")
	dialer := &loopbackDialer{t: t}
	e := newTestExecutor(t, Config{Egress: egress.Options{
		Resolver: testResolver{
			"allowed.test":  {loop},
			"api.test":      {loop},
			"other.test":    {loop},
			"internal.test": {netip.MustParseAddr("10.0.0.1")},
		},
		Dial: dialer.dial,
		DenyAddrs: func(a netip.Addr) (string, bool) {
			if a == loop {
				return "", false // the test servers
			}
			return egress.DefaultDeny(a)
		},
	}})
	policy := &egress.Policy{
		Allow:     []string{"allowed.test", "api.test", "internal.test"},
		HTTPPorts: []int{port}, TLSPorts: []int{tlsPort},
		MaxBytes: 1 << 20,
		Headers:  map[string]map[string]string{"api.test": {"Authorization": "Bearer host-secret-123"}},
	}
	tests := []struct {
		name string
		code string
		want []string // substrings of stdout
	}{
		{"requests to an allowed host", fmt.Sprintf("import requests\nprint(requests.get('http://allowed.test:%d/').text)", port),
			[]string{"hello from allowed.test"}},
		{"urllib to an allowed host", fmt.Sprintf("import urllib.request\nprint(urllib.request.urlopen('http://allowed.test:%d/').read().decode())", port),
			[]string{"hello from allowed.test"}},
		{"https through CONNECT", fmt.Sprintf("import requests\nr = requests.get('https://allowed.test:%d/', verify=False)\nprint(r.text)", tlsPort),
			[]string{"secure hello"}},
		{"denied domain", fmt.Sprintf("import requests\nr = requests.get('http://other.test:%d/')\nprint(r.status_code, r.text)", port),
			[]string{"403", "not in the allowlist"}},
		{"metadata address", "import requests\nfor u in ['http://169.254.169.254/', 'http://2852039166/', 'http://0xA9FEA9FE/', 'http://[::ffff:169.254.169.254]/', 'http://[64:ff9b::a9fe:a9fe]/', 'http://[2002:a9fe:a9fe::]/', 'http://[::]/', 'http://0251.0376.0251.0376/', 'http://169.254.43518/']:\n    r = requests.get(u)\n    print(r.status_code)",
			[]string{"403\n403\n403\n403\n403\n403\n403\n403\n403"}},
		{"a name resolving to an internal address", fmt.Sprintf("import requests\nr = requests.get('http://internal.test:%d/')\nprint(r.status_code, r.text)", port),
			[]string{"403", "private"}},
		{"redirect to an internal address", fmt.Sprintf("import requests\ntry:\n    r = requests.get('http://allowed.test:%d/redirect')\n    print(r.status_code, r.text)\nexcept Exception as e:\n    print('failed', e)", port),
			[]string{"403"}},
		{"direct connection without the proxy", fmt.Sprintf("import socket, os\nfor k in list(os.environ):\n    if 'proxy' in k.lower(): del os.environ[k]\ntry:\n    socket.create_connection(('127.0.0.1', %d), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print('refused', e.errno)", port),
			[]string{"refused"}},
		{"byte cap", fmt.Sprintf("import requests\ntry:\n    r = requests.get('http://allowed.test:%d/big')\n    print(r.status_code, len(r.content))\nexcept Exception as e:\n    print('failed', type(e).__name__)", port),
			[]string{"failed"}},
		{"secret header added by the proxy", fmt.Sprintf("import requests, os\nr = requests.get('http://api.test:%d/')\nprint(r.text)\nprint('host-secret-123' in str(os.environ), 'host-secret-123' in open('/proc/self/environ', 'rb').read().decode(errors='replace') if os.access('/proc/self/environ', os.R_OK) else False)", port),
			[]string{"hello from api.test", "False False"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := e.Execute(context.Background(), Request{Code: tt.code, Network: policy})
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != StatusOK {
				t.Fatalf("status %s: %+v\nstderr %s", res.Status, res.Error, res.Stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(res.Stdout, w) {
					t.Errorf("stdout %q lacks %q; network log %+v", res.Stdout, w, res.Network)
				}
			}
			if len(res.Network) == 0 && tt.name != "direct connection without the proxy" {
				t.Errorf("no network log")
			}
			if tt.name == "byte cap" {
				if strings.Contains(res.Stdout, fmt.Sprint(4<<20)) {
					t.Errorf("the whole 4 MiB arrived past a 1 MiB cap: %q", res.Stdout)
				}
			}
		})
	}
	if _, ok := gotSecret.Load("Bearer host-secret-123"); !ok {
		t.Error("the header the proxy adds never reached the server")
	}
	// Without a policy there is no network at all: lo is down.
	res, err := e.Execute(context.Background(), Request{Code: fmt.Sprintf("import socket\ntry:\n    socket.create_connection(('127.0.0.1', %d), timeout=2)\n    print('connected')\nexcept OSError as e:\n    print('refused')", port)})
	if err != nil || res.Stdout != "refused\n" || res.Network != nil {
		t.Errorf("without network: %+v, %v", res, err)
	}
}
