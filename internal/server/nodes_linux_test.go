package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"codeexec/internal/config"
	"codeexec/internal/executor"
	"codeexec/internal/store"
	"codeexec/internal/testenv"
)

func TestNodeSignature(t *testing.T) {
	secret := []byte(strings.Repeat("s", 32))
	now := time.Now()
	h := signNode(secret, "node_a", "POST", "/v1/sessions/sess_1/execute", now)
	if !verifyNode(secret, h, "POST", "/v1/sessions/sess_1/execute", now) {
		t.Fatalf("a fresh signature %q does not verify", h)
	}
	f := strings.Fields(h)
	for name, bad := range map[string]struct {
		secret               []byte
		header, method, path string
		at                   time.Time
	}{
		"another secret":  {[]byte(strings.Repeat("t", 32)), h, "POST", "/v1/sessions/sess_1/execute", now},
		"no secret":       {nil, h, "POST", "/v1/sessions/sess_1/execute", now},
		"another method":  {secret, h, "DELETE", "/v1/sessions/sess_1/execute", now},
		"another path":    {secret, h, "POST", "/v1/sessions/sess_2/execute", now},
		"another node":    {secret, strings.Join([]string{f[0], "node_b", f[2], f[3]}, " "), "POST", "/v1/sessions/sess_1/execute", now},
		"replayed later":  {secret, h, "POST", "/v1/sessions/sess_1/execute", now.Add(2 * nodeAuthSkew)},
		"from the future": {secret, h, "POST", "/v1/sessions/sess_1/execute", now.Add(-2 * nodeAuthSkew)},
		"another version": {secret, "v2" + h[2:], "POST", "/v1/sessions/sess_1/execute", now},
		"truncated":       {secret, h[:len(h)-2], "POST", "/v1/sessions/sess_1/execute", now},
		"garbage":         {secret, "v1 a b c", "POST", "/v1/sessions/sess_1/execute", now},
		"empty":           {secret, "", "POST", "/v1/sessions/sess_1/execute", now},
	} {
		if verifyNode(bad.secret, bad.header, bad.method, bad.path, bad.at) {
			t.Errorf("%s: verifies, want refused", name)
		}
	}
}

// twoNodes are two servers sharing one store and one executor, each on
// its own loopback listener, as two nodes sharing PostgreSQL would (the
// store's own tests run its node methods against PostgreSQL).
type twoNodes struct {
	a, b       *Server
	aURL, bURL string
	aHS        *http.Server
}

const nodeTestKey = "node-test-key-aaaaaaaaaaaa"

func startTwoNodes(t testing.TB, lease time.Duration) *twoNodes {
	t.Helper()
	testenv.Root(t, "sessions need root (sandboxes with a uid range and cgroups)")
	testenv.Python(t)
	ctx := context.Background()
	st, err := store.Open(ctx, t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ex, err := executor.New(ctx, executor.Config{PoolSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ex.Close() })
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	start := func() (*Server, *http.Server, string) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		cfg := config.Default()
		cfg.APIKeys = []string{nodeTestKey}
		cfg.AdvertiseAddr, cfg.NodeSecret, cfg.NodeLease = ln.Addr().String(), strings.Repeat("n", 32), lease
		s := New(cfg, ex, st, log)
		if err := s.StartNode(ctx); err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: s}
		go hs.Serve(ln)
		t.Cleanup(func() { hs.Close(); s.Close() })
		return s, hs, "http://" + ln.Addr().String()
	}
	n := &twoNodes{}
	n.a, n.aHS, n.aURL = start()
	n.b, _, n.bURL = start()
	return n
}

// nodeCall sends a request with the test's key and returns the status,
// the body and the response's X-Request-Id.
func nodeCall(t testing.TB, method, url string, body string, header ...string) (int, []byte, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+nodeTestKey)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data, resp.Header.Get("X-Request-Id")
}

func field(t testing.TB, data []byte, name string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	if e, ok := m["error"].(map[string]any); ok && name == "code" {
		s, _ := e["code"].(string)
		return s
	}
	s, _ := m[name].(string)
	return s
}

// TestForwardToTheSessionsNode runs a session made on node a through node
// b: its variables, a stream, its files and its deletion; then a dies and
// its session is 503 from b until a's lease lapses, 410 after, its files
// still downloadable.
func TestForwardToTheSessionsNode(t *testing.T) {
	n := startTwoNodes(t, 3*time.Second)
	code, body, _ := nodeCall(t, "POST", n.aURL+"/v1/sessions", "")
	if code != 200 {
		t.Fatalf("create session on a = %d %s", code, body)
	}
	id := field(t, body, "id")
	if code, body, _ := nodeCall(t, "POST", n.bURL+"/v1/sessions/"+id+"/execute", `{"code":"x = 41"}`); code != 200 || field(t, body, "status") != "ok" {
		t.Fatalf("execute through b = %d %s", code, body)
	}
	code, body, rid := nodeCall(t, "POST", n.bURL+"/v1/sessions/"+id+"/execute", `{"code":"print(x + 1)"}`)
	if code != 200 || field(t, body, "stdout") != "42\n" {
		t.Fatalf("the variable through b = %d %s, want stdout 42", code, body)
	}
	if !strings.HasPrefix(rid, "req_") {
		t.Errorf("X-Request-Id of a forwarded request = %q, want one id", rid)
	}
	code, body, _ = nodeCall(t, "POST", n.bURL+"/v1/sessions/"+id+"/execute", `{"code":"print('a'); print('b')", "stream": true}`)
	if code != 200 || !bytes.Contains(body, []byte("event: stdout")) || !bytes.Contains(body, []byte("event: done")) {
		t.Errorf("a stream through b = %d %s, want stdout and done events", code, body)
	}
	if code, body, _ := nodeCall(t, "PUT", n.bURL+"/v1/sessions/"+id+"/files/in.txt", "hello"); code != 200 {
		t.Fatalf("upload through b = %d %s", code, body)
	}
	if code, body, _ := nodeCall(t, "POST", n.bURL+"/v1/sessions/"+id+"/execute",
		`{"code":"open('/mnt/data/out.txt', 'w').write(open('/mnt/data/in.txt').read() * 2)"}`); code != 200 || field(t, body, "status") != "ok" {
		t.Fatalf("write a file through b = %d %s", code, body)
	}
	if code, body, _ := nodeCall(t, "GET", n.bURL+"/v1/sessions/"+id+"/files/out.txt", ""); code != 200 || string(body) != "hellohello" {
		t.Errorf("download through b = %d %q, want hellohello", code, body)
	}
	if code, body, _ := nodeCall(t, "GET", n.bURL+"/v1/sessions/"+id, ""); code != 200 || field(t, body, "status") != "active" {
		t.Errorf("GET the session through b = %d %s, want active", code, body)
	}
	// A client cannot pose as a node.
	forged := signNode([]byte(strings.Repeat("x", 32)), "node_x", "GET", "/v1/sessions/"+id, time.Now())
	if code, body, _ := nodeCall(t, "GET", n.aURL+"/v1/sessions/"+id, "", nodeAuthHeader, forged); code != 401 || field(t, body, "code") != "invalid_node_auth" {
		t.Errorf("a forged node signature = %d %s, want 401 invalid_node_auth", code, body)
	}
	// Deleting through b ends it on a.
	code, body, _ = nodeCall(t, "POST", n.aURL+"/v1/sessions", "")
	del := field(t, body, "id")
	if code, body, _ := nodeCall(t, "DELETE", n.bURL+"/v1/sessions/"+del, ""); code != 200 {
		t.Errorf("delete through b = %d %s", code, body)
	}
	if code, body, _ := nodeCall(t, "POST", n.aURL+"/v1/sessions/"+del+"/execute", `{"code":"1"}`); code != 410 {
		t.Errorf("execute on a after deleting through b = %d %s, want 410", code, body)
	}

	// Node a dies: it stops answering, and its lease is no longer renewed.
	n.aHS.Close()
	close(n.a.node.stop)
	<-n.a.node.done
	n.a.node = nil // (Close would leave the nodes again)
	code, body, _ = nodeCall(t, "POST", n.bURL+"/v1/sessions/"+id+"/execute", `{"code":"1"}`)
	if code != 503 || field(t, body, "code") != "node_unavailable" {
		// (The lease may have lapsed already on a very slow machine.)
		if code != 410 {
			t.Errorf("execute on a dead node within its lease = %d %s, want 503 node_unavailable", code, body)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for code != 410 && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		code, body, _ = nodeCall(t, "POST", n.bURL+"/v1/sessions/"+id+"/execute", `{"code":"1"}`)
	}
	if code != 410 || field(t, body, "code") != "session_expired" {
		t.Fatalf("execute after the dead node's lease = %d %s, want 410 session_expired", code, body)
	}
	if code, body, _ := nodeCall(t, "GET", n.bURL+"/v1/sessions/"+id, ""); code != 200 || !bytes.Contains(body, []byte(`"end_reason":"node_lost"`)) {
		t.Errorf("the lost session = %d %s, want end_reason node_lost", code, body)
	}
	if code, body, _ := nodeCall(t, "GET", n.bURL+"/v1/sessions/"+id+"/files/out.txt", ""); code != 200 || string(body) != "hellohello" {
		t.Errorf("download of the lost session's file = %d %q, want hellohello", code, body)
	}
	if code, body, _ := nodeCall(t, "POST", n.bURL+"/v1/execute", `{"code":"print(6 * 7)"}`); code != 200 || field(t, body, "stdout") != "42\n" {
		t.Errorf("single-use execution on b = %d %s", code, body)
	}
}

// BenchmarkForwardedExecution measures what forwarding adds to a session
// execution: the same session's `1` on its own node and through the
// other, alternating, reported as medians (target: at most 1 ms added).
func BenchmarkForwardedExecution(b *testing.B) {
	n := startTwoNodes(b, 15*time.Second)
	code, body, _ := nodeCall(b, "POST", n.aURL+"/v1/sessions", "")
	if code != 200 {
		b.Fatalf("create session = %d %s", code, body)
	}
	id := field(b, body, "id")
	var direct, forwarded []time.Duration
	run := func(base string, into *[]time.Duration) {
		start := time.Now()
		if code, body, _ := nodeCall(b, "POST", base+"/v1/sessions/"+id+"/execute", `{"code":"1"}`); code != 200 {
			b.Fatalf("execute = %d %s", code, body)
		}
		*into = append(*into, time.Since(start))
	}
	run(n.aURL, &direct)
	run(n.bURL, &forwarded)
	direct, forwarded = direct[:0], forwarded[:0]
	b.ResetTimer()
	for range b.N {
		run(n.aURL, &direct)
		run(n.bURL, &forwarded)
	}
	med := func(d []time.Duration) float64 {
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds())
	}
	b.ReportMetric(med(direct), "direct-µs")
	b.ReportMetric(med(forwarded), "forwarded-µs")
	b.ReportMetric(med(forwarded)-med(direct), "added-µs")
}
