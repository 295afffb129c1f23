package mcp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"codeexec/internal/cli"
	"codeexec/internal/config"
	"codeexec/internal/testenv"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds cmd/codeexec once for the tests of this package.
func binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "codeexec-mcp-test")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "codeexec")
		out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", binPath, "codeexec/cmd/codeexec").CombinedOutput()
		if err != nil {
			buildErr = err
			binPath = string(out)
		}
	})
	if buildErr != nil {
		t.Fatalf("go build: %v\n%s", buildErr, binPath)
	}
	return binPath
}

// stdio starts `codeexec mcp` as a subprocess and connects to it.
func stdio(t testing.TB, args ...string) *sdk.ClientSession {
	t.Helper()
	testenv.Root(t, "codeexec mcp runs sandboxes, which need root")
	testenv.Python(t, "matplotlib")
	cmd := exec.Command(binary(t), append([]string{"mcp", "--pool-size", "1"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "1"}, nil).Connect(context.Background(), &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("connect to codeexec mcp: %v\nstderr: %s", err, stderr.String())
	}
	t.Cleanup(func() {
		if err := cs.Close(); err != nil {
			t.Errorf("closing codeexec mcp: %v\nstderr: %s", err, stderr.String())
		}
	})
	return cs
}

func TestStdio(t *testing.T) {
	cs := stdio(t, "--log-level", "debug") // logs go to stderr, never into the protocol
	checkSession(t, cs)
	res := run(t, cs, "import matplotlib.pyplot as plt\nplt.plot([3, 1, 2])\nplt.show()\nopen('f.txt', 'w').write('x')")
	var image, link bool
	for _, c := range res.Content {
		switch c := c.(type) {
		case *sdk.ImageContent:
			image = bytes.HasPrefix(c.Data, []byte("\x89PNG"))
		case *sdk.ResourceLink:
			link = c.URI == "codeexec://files/f.txt"
		}
	}
	if !image || !link {
		t.Errorf("over stdio: image %v, file link %v; want both", image, link)
	}
	res = call(t, cs, "run_python", map[string]any{"code": "import time\ntime.sleep(30)", "timeout": 0.5})
	if !res.IsError || structured(t, res)["status"] != "timeout" {
		t.Errorf("timeout over stdio: %s", texts(res))
	}
}

const (
	keyA = "test-key-aaaaaaaaaaaaaaaa"
	keyB = "test-key-bbbbbbbbbbbbbbbb"
)

// serve runs `codeexec serve` in this process on loopback and returns its
// base URL.
func serve(t testing.TB, mod func(*config.Config)) string {
	t.Helper()
	testenv.Root(t, "the service runs sandboxes, which need root")
	testenv.Python(t, "matplotlib")
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.PoolSize = 2
	cfg.LogLevel = "warn"
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- cli.Serve(ctx, cfg, io.Discard, ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "http://" + addr
}

// bearer adds an API key to every request.
type bearer struct{ key string }

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.key != "" {
		r.Header.Set("Authorization", "Bearer "+b.key)
	}
	return http.DefaultTransport.RoundTrip(r)
}

func connectHTTP(t testing.TB, base, key string) (*sdk.ClientSession, error) {
	t.Helper()
	tr := &sdk.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: &http.Client{Transport: bearer{key}}, MaxRetries: -1}
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "1"}, nil).Connect(context.Background(), tr, nil)
	if err == nil {
		t.Cleanup(func() { cs.Close() })
	}
	return cs, err
}

// rawPost sends one JSON-RPC request to /mcp as a client would.
func rawPost(t *testing.T, base, key, sessionID, host string) int {
	t.Helper()
	body := `{"jsonrpc":"2.0","id":7,"method":"tools/list","params":{}}`
	req, _ := http.NewRequest("POST", base+"/mcp", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if sessionID != "" {
		req.Header.Set("Mcp-Session-Id", sessionID)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := bearer{key}.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestStreamableHTTP(t *testing.T) {
	base := serve(t, func(c *config.Config) {
		c.APIKeys = []string{keyA, keyB}
		c.KeySessions = 1
	})
	for name, key := range map[string]string{"no key": "", "wrong key": "test-key-wrong-wrong-wrong"} {
		if _, err := connectHTTP(t, base, key); err == nil {
			t.Errorf("%s: connected", name)
		}
		if code := rawPost(t, base, key, "", ""); code != http.StatusUnauthorized {
			t.Errorf("%s: POST /mcp is %d, want 401", name, code)
		}
	}
	a, err := connectHTTP(t, base, keyA)
	if err != nil {
		t.Fatal(err)
	}
	checkSession(t, a)

	t.Run("another key's session is invisible", func(t *testing.T) {
		if code := rawPost(t, base, keyA, a.ID(), ""); code != http.StatusOK {
			t.Fatalf("key A's own session: %d, want 200", code)
		}
		if code := rawPost(t, base, keyB, a.ID(), ""); code != http.StatusNotFound {
			t.Errorf("key B with key A's session id: %d, want 404", code)
		}
		b, err := connectHTTP(t, base, keyB)
		if err != nil {
			t.Fatal(err)
		}
		res := call(t, b, "run_python", map[string]any{"code": "x"})
		if !res.IsError || !strings.Contains(texts(res), "NameError") {
			t.Errorf("key B sees x: %s", texts(res))
		}
		if lr, err := b.ListResources(context.Background(), nil); err != nil || slices.ContainsFunc(lr.Resources, func(r *sdk.Resource) bool { return true }) {
			t.Errorf("key B lists resources %v, %v; want none", lr, err)
		}
	})

	t.Run("sandboxes count against --key-sessions", func(t *testing.T) {
		a2, err := connectHTTP(t, base, keyA)
		if err != nil {
			t.Fatal(err)
		}
		res := call(t, a2, "run_python", map[string]any{"code": "1"})
		if !res.IsError || !strings.Contains(texts(res), "limit of live sessions") {
			t.Fatalf("a second sandbox of key A past --key-sessions 1: %s", texts(res))
		}
		a.Close() // ends its MCP session, and so its sandbox
		for i := 0; ; i++ {
			res = call(t, a2, "run_python", map[string]any{"code": "6 * 7"})
			if !res.IsError {
				break
			}
			if i == 200 {
				t.Fatalf("the place of the closed session never came back: %s", texts(res))
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !strings.Contains(texts(res), "result: 42") {
			t.Errorf("6 * 7 = %s", texts(res))
		}
	})

	t.Run("progress over HTTP", func(t *testing.T) {
		got := make(chan string, 100)
		tr := &sdk.StreamableClientTransport{Endpoint: base + "/mcp", HTTPClient: &http.Client{Transport: bearer{keyB}}}
		cs, err := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "1"}, &sdk.ClientOptions{
			ProgressNotificationHandler: func(_ context.Context, req *sdk.ProgressNotificationClientRequest) { got <- req.Params.Message },
		}).Connect(context.Background(), tr, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer cs.Close()
		p := &sdk.CallToolParams{Name: "run_python", Arguments: map[string]any{"code": "import time\nprint('one', flush=True)\ntime.sleep(0.3)\nprint('two')"}}
		p.SetProgressToken(1)
		res, err := cs.CallTool(context.Background(), p)
		if err != nil || res.IsError {
			t.Fatalf("%v %v", err, res)
		}
		// Notifications may be handled after the result: wait for them.
		var all string
		for !strings.Contains(all, "two\n") {
			select {
			case m := <-got:
				all += m
			case <-time.After(30 * time.Second):
				t.Fatalf("progress over HTTP: %q, want the output", all)
			}
		}
		if !strings.HasPrefix(all, "one\n") {
			t.Errorf("progress over HTTP: %q, want one then two", all)
		}
	})
}

// TestHTTPWithoutKeys: an open server keeps the SDK's protection against
// DNS rebinding (a loopback connection naming another host).
func TestHTTPWithoutKeys(t *testing.T) {
	base := serve(t, func(c *config.Config) { c.PoolSize = 1 })
	cs, err := connectHTTP(t, base, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := texts(run(t, cs, "1 + 1")); !strings.Contains(got, "result: 2") {
		t.Errorf("1 + 1 = %q", got)
	}
	if code := rawPost(t, base, "", "", "evil.example:8080"); code != http.StatusForbidden {
		t.Errorf("Host evil.example on loopback: %d, want 403", code)
	}
}

// BenchmarkRoundTrip times run_python of print(1) over stdio in a warm
// session, client in this process and `codeexec mcp` a subprocess, and the
// REST API's execute in a warm session (POST /v1/sessions/{id}/execute)
// in the same run; it reports both medians.
func BenchmarkRoundTrip(b *testing.B) {
	cs := stdio(b)
	base := serve(b, func(c *config.Config) { c.PoolSize = 1 })
	ctx := context.Background()
	args := &sdk.CallToolParams{Name: "run_python", Arguments: map[string]any{"code": "print(1)"}}
	mcpCall := func() {
		if res, err := cs.CallTool(ctx, args); err != nil || res.IsError {
			b.Fatalf("run_python: %v %v", err, res)
		}
	}
	resp, err := http.Post(base+"/v1/sessions", "application/json", strings.NewReader("{}"))
	if err != nil {
		b.Fatal(err)
	}
	var sess struct{ ID string }
	json.NewDecoder(resp.Body).Decode(&sess)
	resp.Body.Close()
	body := []byte(`{"code": "print(1)"}`)
	restCall := func() {
		resp, err := http.Post(base+"/v1/sessions/"+sess.ID+"/execute", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("REST execute: %d", resp.StatusCode)
		}
	}
	for range 20 { // warm both
		mcpCall()
		restCall()
	}
	median := func(f func()) time.Duration {
		d := make([]time.Duration, 0, b.N)
		for range b.N {
			start := time.Now()
			f()
			d = append(d, time.Since(start))
		}
		slices.Sort(d)
		return d[len(d)/2]
	}
	b.ResetTimer()
	m := median(mcpCall)
	r := median(restCall)
	b.StopTimer()
	b.ReportMetric(float64(m.Microseconds())/1000, "mcp-stdio-median-ms")
	b.ReportMetric(float64(r.Microseconds())/1000, "rest-median-ms")
	b.ReportMetric(0, "ns/op")
	b.Logf("run_python print(1) over stdio: median %v; REST session execute: median %v (%d calls each)", m, r, b.N)
}

// TestMCPCommandFlags: codeexec mcp refuses bad flags and arguments
// before it starts anything, saying so on stderr, never on stdout.
func TestMCPCommandFlags(t *testing.T) {
	for _, args := range [][]string{{"extra"}, {"--no-such-flag"}, {"--timeout", "-1s"}, {"--egress-allow", "10.0.0.1"}} {
		cmd := exec.Command(binary(t), append([]string{"mcp"}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || stderr.Len() == 0 || stdout.Len() != 0 {
			t.Errorf("codeexec mcp %v: %v, stdout %q, stderr %q; want exit 2 and the reason on stderr", args, err, stdout.String(), stderr.String())
		}
	}
}
