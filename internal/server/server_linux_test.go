package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"codeexec/internal/cli"
	"codeexec/internal/config"
	"codeexec/internal/testenv"
	"codeexec/internal/upstream"
)

const (
	keyA = "test-key-aaaaaaaaaaaaaaaa"
	keyB = "test-key-bbbbbbbbbbbbbbbb"
)

// service is a running `codeexec serve` in this process.
type service struct {
	t    *testing.T
	url  string
	stop func()
}

// sseEvent is an event of a text/event-stream body.
type sseEvent struct{ name, data string }

// readEvents reads the events of a text/event-stream body until it ends,
// with the reader the service reads its model provider's streams with.
func readEvents(t *testing.T, r io.Reader) []sseEvent {
	t.Helper()
	var out []sseEvent
	sr := upstream.NewSSEReader(r)
	for {
		name, data, err := sr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading the stream: %v", err)
		}
		out = append(out, sseEvent{name, string(data)})
	}
}

// startService runs Serve with cfg (defaults for zero fields, a temp data
// dir unless set, two API keys) until the test ends or stop is called.
func startService(t *testing.T, mod func(*config.Config)) *service {
	t.Helper()
	testenv.Root(t, "the service needs root (sandboxes with a uid range and cgroups)")
	testenv.Python(t)
	cfg := config.Default()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.PoolSize = 2
	cfg.APIKeys = []string{keyA, keyB}
	cfg.LogLevel = "warn"
	if mod != nil {
		mod(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
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
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatal("service did not start in 60 s")
	}
	var once sync.Once
	s := &service{t: t, url: "http://" + addr}
	s.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve returned %v", err)
			}
		})
	}
	t.Cleanup(s.stop)
	checkAgainstSpec(t, s.url) // openapi_test.go
	// Wait until a sandbox is warm.
	for i := 0; i < 200; i++ {
		if resp, err := http.Get(s.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		time.Sleep(25 * time.Millisecond)
	}
	return s
}

// call sends a request with key and returns the status and decoded body.
func (s *service) call(method, path, key string, body any) (int, map[string]any) {
	s.t.Helper()
	resp := s.do(method, path, key, body)
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	if len(data) > 0 && json.Unmarshal(data, &out) != nil {
		out = map[string]any{"raw": string(data)}
	}
	return resp.StatusCode, out
}

func (s *service) do(method, path, key string, body any) *http.Response {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, s.url+path, rd)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

func errOf(body map[string]any) (param, code, msg string) {
	e, _ := body["error"].(map[string]any)
	param, _ = e["param"].(string)
	code, _ = e["code"].(string)
	msg, _ = e["message"].(string)
	return
}

func TestExecuteAndBadInput(t *testing.T) {
	// (network.allow without --egress-allow is refused below)
	s := startService(t, nil)
	st, body := s.call("POST", "/v1/execute", keyA, map[string]any{"code": "print(6*7)\n6*7"})
	if st != 200 || body["status"] != "ok" || body["stdout"] != "42\n" {
		t.Fatalf("execute = %d %v", st, body)
	}
	if r := body["result"].(map[string]any); r["text/plain"] != "42" {
		t.Errorf("result = %v", r)
	}
	tests := []struct {
		name      string
		body      string
		status    int
		wantParam string
	}{
		{"unknown field", `{"code":"1","bogus":1}`, 400, "bogus"},
		{"wrong type", `{"code":5}`, 400, "code"},
		{"trailing data", `{"code":"1"} {}`, 400, ""},
		{"not json", `code=1`, 400, ""},
		{"empty body", ``, 400, ""},
		{"missing code", `{}`, 400, "code"},
		{"empty code", `{"code":"  "}`, 400, "code"},
		{"NUL in code", `{"code":"print(1)\u0000"}`, 400, "code"},
		{"invalid UTF-8", "{\"code\":\"print('\xff')\"}", 400, "code"},
		{"zero timeout", `{"code":"1","timeout":0}`, 400, "timeout"},
		{"negative timeout", `{"code":"1","timeout":-1}`, 400, "timeout"},
		{"huge timeout", `{"code":"1","timeout":1e300}`, 400, "timeout"},
		{"memory over max", `{"code":"1","memory_limit_mb":99999999}`, 400, "memory_limit_mb"},
		{"path with dotdot", `{"code":"1","files":[{"path":"../x","content_base64":"eA=="}]}`, 400, "files[0].path"},
		{"absolute path", `{"code":"1","files":[{"path":"/etc/x","content_base64":"eA=="}]}`, 400, "files[0].path"},
		{"bad base64", `{"code":"1","files":[{"path":"x","content_base64":"%%%"}]}`, 400, "files[0].content_base64"},
		{"unknown file id", `{"code":"1","files":[{"file_id":"file-nope"}]}`, 404, ""},
		{"code over 1 MiB", `{"code":"` + strings.Repeat("#", 1<<20+1) + `"}`, 400, "code"},
		{"output limit zero", `{"code":"1","output_limit_bytes":0}`, 400, "output_limit_bytes"},
		{"output limit over max", `{"code":"1","output_limit_bytes":99999999999}`, 400, "output_limit_bytes"},
		{"network without egress", `{"code":"1","network":{"allow":["a.test"]}}`, 400, "network.allow"},
		{"body over the limit", `{"code":"` + strings.Repeat("#", 33<<20) + `"}`, 413, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, body := s.call("POST", "/v1/execute", keyA, tt.body)
			param, _, msg := errOf(body)
			if st != tt.status || param != tt.wantParam || msg == "" {
				t.Errorf("POST /v1/execute %s = %d param %q msg %q; want %d param %q", tt.name, st, param, msg, tt.status, tt.wantParam)
			}
		})
	}
	st, body = s.call("POST", "/v1/execute", keyA, map[string]any{"code": "print('x' * 100)", "output_limit_bytes": 10})
	if st != 200 || body["status"] != "output_limit" || body["stdout"] != "xxxxxxxxxx" {
		t.Errorf("output_limit_bytes 10 = %d %v", st, body)
	}
	// The service is still fine.
	if st, body := s.call("POST", "/v1/execute", keyA, map[string]any{"code": "print('fine')"}); st != 200 || body["stdout"] != "fine\n" {
		t.Errorf("after bad input: %d %v", st, body)
	}
}

func TestAuth(t *testing.T) {
	s := startService(t, nil)
	for _, key := range []string{"", "wrong-key-xxxxxxxxxxxxxxxx"} {
		resp := s.do("POST", "/v1/execute", key, map[string]any{"code": "1"})
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if _, code, _ := errOf(body); resp.StatusCode != 401 || code != "invalid_api_key" {
			t.Errorf("key %q: %d %v, want 401 invalid_api_key", key, resp.StatusCode, body)
		}
	}
	if st, _ := s.call("GET", "/healthz", "", nil); st != 200 {
		t.Errorf("/healthz = %d without a key, want 200", st)
	}
}

func TestStreamSSE(t *testing.T) {
	s := startService(t, nil)
	resp := s.do("POST", "/v1/execute", keyA, map[string]any{"code": "print('a')\ndisplay(1)\n2", "stream": true})
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type = %q", ct)
	}
	var events []string
	var done map[string]any
	for _, ev := range readEvents(t, resp.Body) {
		events = append(events, ev.name)
		if ev.name == "done" {
			json.Unmarshal([]byte(ev.data), &done)
		}
	}
	if got := strings.Join(events, ","); got != "stdout,display,result,done" {
		t.Errorf("events = %s", got)
	}
	if done["status"] != "ok" || done["stdout"] != "a\n" {
		t.Errorf("done = %v", done)
	}
}

func TestParallelExecutions(t *testing.T) {
	s := startService(t, func(c *config.Config) { c.PoolSize = 4; c.QueueSize = 200; c.KeyConcurrency = 200 })
	var wg sync.WaitGroup
	errs := make(chan string, 100)
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, body := s.call("POST", "/v1/execute", keyA, map[string]any{"code": fmt.Sprintf("print(%d * 3)", i)})
			if want := strconv.Itoa(i*3) + "\n"; st != 200 || body["stdout"] != want {
				errs <- fmt.Sprintf("request %d: %d %v, want stdout %q", i, st, body["stdout"], want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestSessionLifecycle(t *testing.T) {
	s := startService(t, nil)
	st, sess := s.call("POST", "/v1/sessions", keyA, map[string]any{})
	if st != 200 || !strings.HasPrefix(sess["id"].(string), "sess_") {
		t.Fatalf("create session = %d %v", st, sess)
	}
	id := sess["id"].(string)
	steps := []struct{ code, want string }{
		{"x = 20\nopen('notes.txt', 'w').write('hello')", ""},
		{"x += 1\nprint(x)", "21\n"},
		{"print(x * 2, open('notes.txt').read())", "42 hello\n"},
	}
	for i, step := range steps {
		st, body := s.call("POST", "/v1/sessions/"+id+"/execute", keyA, map[string]any{"code": step.code})
		if st != 200 || body["stdout"] != step.want {
			t.Fatalf("step %d = %d %v", i, st, body)
		}
	}
	// Upload, list and download.
	if st, body := s.call("PUT", "/v1/sessions/"+id+"/files/data/in.csv", keyA, "a,b\n1,2\n"); st != 200 {
		t.Fatalf("upload = %d %v", st, body)
	}
	st, list := s.call("GET", "/v1/sessions/"+id+"/files", keyA, nil)
	if st != 200 || len(list["data"].([]any)) != 2 {
		t.Errorf("list = %d %v", st, list)
	}
	resp := s.do("GET", "/v1/sessions/"+id+"/files/notes.txt", keyA, nil)
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "hello" {
		t.Errorf("download = %d %q", resp.StatusCode, got)
	}
	// Another key sees nothing.
	if st, _ := s.call("GET", "/v1/sessions/"+id, keyB, nil); st != 404 {
		t.Errorf("other key GET session = %d, want 404", st)
	}
	if st, _ := s.call("POST", "/v1/sessions/"+id+"/execute", keyB, map[string]any{"code": "print(x)"}); st != 404 {
		t.Errorf("other key execute = %d, want 404", st)
	}
	// Delete: the variables are gone, the files stay downloadable.
	if st, _ := s.call("DELETE", "/v1/sessions/"+id, keyA, nil); st != 200 {
		t.Fatalf("delete = %d", st)
	}
	st, body := s.call("POST", "/v1/sessions/"+id+"/execute", keyA, map[string]any{"code": "print(x)"})
	if _, code, _ := errOf(body); st != 410 || code != "session_expired" {
		t.Errorf("execute after delete = %d %v, want 410 session_expired", st, body)
	}
	if st, body := s.call("GET", "/v1/sessions/"+id, keyA, nil); st != 200 || body["status"] != "expired" {
		t.Errorf("GET after delete = %d %v", st, body)
	}
	resp = s.do("GET", "/v1/sessions/"+id+"/files/notes.txt", keyA, nil)
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "hello" {
		t.Errorf("download after delete = %d %q", resp.StatusCode, got)
	}
}

func upload(t *testing.T, s *service, key, name, content string) map[string]any {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("purpose", "user_data")
	fw, _ := mw.CreateFormFile("file", name)
	fw.Write([]byte(content))
	mw.Close()
	req, _ := http.NewRequest("POST", s.url+"/v1/files", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != 200 {
		t.Fatalf("upload = %d %v", resp.StatusCode, body)
	}
	return body
}

func TestFilesSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	s := startService(t, func(c *config.Config) { c.DataDir = dir })
	f := upload(t, s, keyA, "sales.csv", "month,sales\n1,10\n2,30\n")
	fid := f["id"].(string)
	// Use the uploaded file by id; the generated file is stored too.
	st, res := s.call("POST", "/v1/execute", keyA, map[string]any{
		"code":  "import pandas as pd\ndf = pd.read_csv('sales.csv')\ndf.to_csv('total.csv')\nprint(df.sales.sum())",
		"files": []map[string]any{{"file_id": fid}},
	})
	if st != 200 || res["stdout"] != "40\n" {
		t.Fatalf("execute with file = %d %v", st, res)
	}
	files := res["files"].([]any)
	if len(files) != 1 {
		t.Fatalf("files = %v", files)
	}
	gen := files[0].(map[string]any)["id"].(string)
	_, sess := s.call("POST", "/v1/sessions", keyA, nil)
	sid := sess["id"].(string)
	s.call("POST", "/v1/sessions/"+sid+"/execute", keyA, map[string]any{"code": "v = 1\nopen('kept.txt','w').write('k')"})
	// Another key cannot see the file.
	if st, _ := s.call("GET", "/v1/files/"+fid, keyB, nil); st != 404 {
		t.Errorf("other key GET file = %d, want 404", st)
	}
	s.stop()

	s2 := startService(t, func(c *config.Config) { c.DataDir = dir })
	for _, id := range []string{fid, gen} {
		resp := s2.do("GET", "/v1/files/"+id+"/content", keyA, nil)
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || len(data) == 0 {
			t.Errorf("after restart GET %s content = %d %q", id, resp.StatusCode, data)
		}
	}
	st, body := s2.call("POST", "/v1/sessions/"+sid+"/execute", keyA, map[string]any{"code": "print(v)"})
	if _, code, _ := errOf(body); st != 410 || code != "session_expired" {
		t.Errorf("session after restart = %d %v, want 410 session_expired", st, body)
	}
	resp := s2.do("GET", "/v1/sessions/"+sid+"/files/kept.txt", keyA, nil)
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(data) != "k" {
		t.Errorf("session file after restart = %d %q", resp.StatusCode, data)
	}
	if st, _ := s2.call("DELETE", "/v1/files/"+fid, keyA, nil); st != 200 {
		t.Errorf("delete file = %d", st)
	}
	if st, _ := s2.call("GET", "/v1/files/"+fid, keyA, nil); st != 404 {
		t.Errorf("GET deleted file = %d, want 404", st)
	}
}

// sleepers counts host processes running `sleep 3600`, started by
// sandboxed code as a marker.
func sleepers(t *testing.T) int {
	n := 0
	dirs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, d := range dirs {
		b, _ := os.ReadFile(d)
		if string(b) == "sleep\x003600\x00" {
			n++
		}
	}
	return n
}

const sleeperCode = "import subprocess, time\nsubprocess.Popen(['sleep', '3600'])\nprint('started', flush=True)\ntime.sleep(3600)"

func waitNoSleepers(t *testing.T, what string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if sleepers(t) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Errorf("%s: %d sandboxed processes still run", what, sleepers(t))
}

func TestDisconnectFreesSandbox(t *testing.T) {
	s := startService(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	data, _ := json.Marshal(map[string]any{"code": sleeperCode, "stream": true, "timeout": 300})
	req, _ := http.NewRequestWithContext(ctx, "POST", s.url+"/v1/execute", bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+keyA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// Read until the code has started, then hang up.
	events := upstream.NewSSEReader(resp.Body)
	for {
		_, data, err := events.Next()
		if err != nil || strings.Contains(string(data), "started") {
			break
		}
	}
	// The code prints "started" once Popen has returned, yet on a loaded
	// machine the process with that command line showed up in /proc only
	// later (once in a dozen runs beside the executor's tests; 500 ms
	// after, it was there): wait for it.
	for i := 0; i < 100 && sleepers(t) == 0; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if sleepers(t) == 0 {
		t.Fatal("the marker process did not start")
	}
	cancel()
	resp.Body.Close()
	waitNoSleepers(t, "after the client disconnected")
	if st, body := s.call("POST", "/v1/execute", keyA, map[string]any{"code": "print(1)"}); st != 200 || body["status"] != "ok" {
		t.Errorf("after disconnect: %d %v", st, body)
	}
}

func TestQueueFull429(t *testing.T) {
	s := startService(t, func(c *config.Config) { c.PoolSize = 1; c.QueueSize = 1 })
	var wg sync.WaitGroup
	statuses := make(chan int, 4)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp := s.do("POST", "/v1/execute", keyA, map[string]any{"code": "import time\ntime.sleep(1.5)"})
			if resp.StatusCode == 429 && resp.Header.Get("Retry-After") == "" {
				t.Error("429 without Retry-After")
			}
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	close(statuses)
	n429 := 0
	for st := range statuses {
		if st == 429 {
			n429++
		}
	}
	if n429 == 0 {
		t.Error("no request got 429 with 4 concurrent executions, a pool of 1 and a queue of 1")
	}
	if st, body := s.call("POST", "/v1/execute", keyA, map[string]any{"code": "print(1)"}); st != 200 || body["status"] != "ok" {
		t.Errorf("after 429s: %d %v", st, body)
	}
	_, m := s.call("GET", "/metrics", "", nil)
	raw, _ := m["raw"].(string)
	for _, want := range []string{`codeexec_rejected_total{reason="queue_full"}`, `codeexec_executions_total{status="ok"}`, "codeexec_warm_sandboxes", "codeexec_warm_sandboxes_pandas", "codeexec_queue_depth", "codeexec_live_sessions"} {
		if !strings.Contains(raw, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestShutdownLeavesNothing(t *testing.T) {
	s := startService(t, func(c *config.Config) { c.ShutdownGrace = 500 * time.Millisecond })
	var wg sync.WaitGroup
	results := make(chan string, 2)
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data, _ := json.Marshal(map[string]any{"code": sleeperCode})
			req, _ := http.NewRequest("POST", s.url+"/v1/execute", bytes.NewReader(data))
			req.Header.Set("Authorization", "Bearer "+keyA)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				results <- err.Error()
				return
			}
			var body map[string]any
			json.NewDecoder(resp.Body).Decode(&body)
			resp.Body.Close()
			results <- fmt.Sprint(resp.StatusCode, " ", body["status"])
		}()
	}
	for i := 0; i < 100 && sleepers(t) < 2; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	s.stop()
	wg.Wait()
	close(results)
	for r := range results {
		if r != "200 killed" {
			t.Errorf("execution running at shutdown got %q, want 200 killed", r)
		}
	}
	waitNoSleepers(t, "after shutdown")
	// This process's executors live under codeexec/<pid>-<n>/.
	entries, _ := filepath.Glob(fmt.Sprintf("/sys/fs/cgroup/memory/codeexec/%d-*/c[0-9]*", os.Getpid()))
	if len(entries) > 0 {
		t.Errorf("cgroups left after shutdown: %v", entries)
	}
}

func TestNetworkRequestValidation(t *testing.T) {
	s := startService(t, func(c *config.Config) { c.EgressAllow = []string{"*.allowed.test"} })
	tests := []struct {
		name   string
		allow  []string
		status int
	}{
		{"wider than the operator's", []string{"evil.test"}, 400},
		{"bad pattern", []string{"*"}, 400},
		{"narrower", []string{"api.allowed.test"}, 200},
		{"none", []string{}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, body := s.call("POST", "/v1/execute", keyA, map[string]any{"code": "print(1)", "network": map[string]any{"allow": tt.allow}})
			if st != tt.status {
				t.Errorf("network.allow %v = %d %v, want %d", tt.allow, st, body, tt.status)
			}
			if param, _, _ := errOf(body); st == 400 && param != "network.allow" {
				t.Errorf("param = %q, want network.allow", param)
			}
		})
	}
}

// A session shows the idle timeout it was made with, not the server's.
func TestSessionShowsItsIdleTimeout(t *testing.T) {
	s := startService(t, nil)
	st, created := s.call("POST", "/v1/sessions", keyA, map[string]any{"idle_timeout": 42})
	if st != 200 || created["idle_timeout"] != 42.0 {
		t.Fatalf("create with idle_timeout 42 = %d %v", st, created)
	}
	if st, got := s.call("GET", "/v1/sessions/"+fmt.Sprint(created["id"]), keyA, nil); st != 200 || got["idle_timeout"] != 42.0 {
		t.Errorf("GET = %d %v, want idle_timeout 42", st, got)
	}
}
