package egress

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// echoServer is a loopback origin that, like a web server with TRACE
// enabled (Apache's TraceEnable is on by default), answers every method it
// does not know by echoing the request headers it received. It answers the
// usual methods with "ok <method>", and records every request.
type echoServer struct {
	*httptest.Server
	mu   sync.Mutex
	seen []*http.Request // method and headers only
}

func newEchoServer(t *testing.T) *echoServer {
	s := &echoServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.seen = append(s.seen, &http.Request{Method: r.Method, Header: r.Header.Clone()})
		s.mu.Unlock()
		switch r.Method {
		case "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS":
			io.Copy(io.Discard, r.Body)
			fmt.Fprintf(w, "ok %s", r.Method)
		default:
			w.Header().Set("Content-Type", "message/http")
			fmt.Fprintf(w, "%s %s %s\r\n", r.Method, r.RequestURI, r.Proto)
			r.Header.Write(w)
		}
	}))
	t.Cleanup(s.Close)
	return s
}

// take returns the requests seen since the last call.
func (s *echoServer) take() []*http.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.seen
	s.seen = nil
	return out
}

// TestProxyMethods checks that only the usual methods pass: TRACE, TRACK
// and every other method (methods are case-sensitive, so "trace" is simply
// unknown) are refused with 405 before the proxy resolves or dials anything,
// so the secret header is never injected into a request that a server could
// echo back to the sandbox. Max-Forwards and Via on an allowed method
// change nothing: the proxy never answers in the upstream's place.
func TestProxyMethods(t *testing.T) {
	const secret = "Bearer s3cret-never-in-the-sandbox"
	echo := newEchoServer(t)
	hp := port(echo.Server)
	pol := Policy{
		Allow:     []string{"allowed.test"},
		HTTPPorts: []int{hp},
		Headers:   map[string]map[string]string{"allowed.test": {"X-Secret": secret}},
	}
	if err := pol.Validate(); err != nil {
		t.Fatal(err)
	}
	target := fmt.Sprintf("http://allowed.test:%d/", hp)
	const allow = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, CONNECT"

	// send makes one request through a fresh proxy and returns the
	// response, its headers and body as text, the world and the proxy.
	send := func(t *testing.T, method string, hdr http.Header) (*http.Response, string, *world, *proxy) {
		t.Helper()
		w := newWorld(t)
		p := startProxy(t, pol, w)
		req, err := http.NewRequest(method, target, strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range hdr {
			req.Header[k] = v
		}
		tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: p.addr})}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, target, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var seen strings.Builder
		resp.Header.Write(&seen)
		seen.Write(body)
		if strings.Contains(seen.String(), "s3cret") {
			t.Errorf("%s: the sandbox saw the secret:\n%s", method, seen.String())
		}
		return resp, string(body), w, p
	}
	maxForwards := http.Header{"Max-Forwards": {"0"}}

	refused := []struct {
		name, method string
		hdr          http.Header
	}{
		{"TRACE", "TRACE", nil},
		{"TRACE with Max-Forwards 0", "TRACE", maxForwards},
		{"lowercase trace", "trace", nil},
		{"mixed-case Trace", "Trace", nil},
		{"TRACK", "TRACK", nil},
		{"PROPFIND", "PROPFIND", nil},
		{"made up", "ECHO-ME", nil},
		{"lowercase get", "get", nil},
		{"lowercase connect", "connect", nil},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			resp, body, w, p := send(t, tt.method, tt.hdr)
			reason := fmt.Sprintf("method %s is not allowed", tt.method)
			want := fmt.Sprintf("codeexec egress denied: allowed.test:%d: %s\n", hp, reason)
			if resp.StatusCode != http.StatusMethodNotAllowed || body != want {
				t.Errorf("%s = %d %q, want 405 %q", tt.method, resp.StatusCode, body, want)
			}
			if got := resp.Header.Get("Allow"); got != allow {
				t.Errorf("%s: Allow = %q, want %q", tt.method, got, allow)
			}
			if got := resp.Header.Get("X-Codeexec-Egress-Denied"); got != reason {
				t.Errorf("%s: X-Codeexec-Egress-Denied = %q, want %q", tt.method, got, reason)
			}
			if got := echo.take(); len(got) != 0 {
				t.Errorf("%s: upstream got %d requests, want none", tt.method, len(got))
			}
			if n, d := w.Lookups("allowed.test"), w.Dials(); n != 0 || len(d) != 0 {
				t.Errorf("%s: %d lookups and dials %v, want none before the refusal", tt.method, n, d)
			}
			p.Close()
			wantLog := []Access{{Host: "allowed.test", Port: hp, Reason: reason}}
			if got := p.Log(); fmt.Sprint(got) != fmt.Sprint(wantLog) {
				t.Errorf("%s: Log() = %+v, want %+v", tt.method, got, wantLog)
			}
		})
	}

	via := http.Header{"Max-Forwards": {"0"}, "Via": {"1.1 allowed.test, 1.1 codeexec"}}
	allowed := []struct {
		name, method string
		hdr          http.Header
	}{
		{"GET", "GET", nil},
		{"HEAD", "HEAD", nil},
		{"POST", "POST", nil},
		{"PUT", "PUT", nil},
		{"PATCH", "PATCH", nil},
		{"DELETE", "DELETE", nil},
		{"OPTIONS", "OPTIONS", nil},
		{"OPTIONS with Max-Forwards 0 and a Via loop", "OPTIONS", via},
		{"GET with Max-Forwards 0 and a Via loop", "GET", via},
	}
	for _, tt := range allowed {
		t.Run(tt.name, func(t *testing.T) {
			resp, body, _, p := send(t, tt.method, tt.hdr)
			want := "ok " + tt.method
			if tt.method == "HEAD" {
				want = ""
			}
			if resp.StatusCode != 200 || body != want {
				t.Errorf("%s = %d %q, want 200 %q from the upstream", tt.method, resp.StatusCode, body, want)
			}
			got := echo.take()
			if len(got) != 1 || got[0].Method != tt.method || got[0].Header.Get("X-Secret") != secret {
				t.Errorf("%s: upstream got %d requests, want one %s with the secret header", tt.method, len(got), tt.method)
			}
			p.Close()
			if log := p.Log(); len(log) != 1 || !log[0].Allowed {
				t.Errorf("%s: Log() = %+v, want one allowed entry", tt.method, log)
			}
		})
	}
}
