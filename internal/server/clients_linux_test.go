package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"codeexec/internal/config"
)

// TestSlowStreamingClient: a streaming client that never reads its
// events cannot hold a sandbox. Its execution floods output under a long
// timeout; the server must drop the client and kill the execution within
// about --stream-write-timeout, and go on serving others.
func TestSlowStreamingClient(t *testing.T) {
	s := startService(t, func(c *config.Config) { c.StreamWriteTimeout = time.Second })
	code := "import subprocess, sys\nsubprocess.Popen(['sleep', '3600'])\nwhile True:\n    sys.stdout.write('x' * 4000 + '\\n')\n    sys.stdout.flush()\n"
	body, _ := json.Marshal(map[string]any{"code": code, "stream": true, "timeout": 300, "output_limit_bytes": 16 << 20})
	// A small receive buffer, so the server's writes block soon.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		return err
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", keyA, len(body), body)
	// Never read. The marker process shows the execution runs, then it
	// must go.
	for i := 0; i < 200 && sleepers(t) == 0; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	if sleepers(t) == 0 {
		t.Fatal("the execution did not start")
	}
	start := time.Now()
	for sleepers(t) > 0 {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("the execution of a client that never reads still runs %v later", time.Since(start))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the execution of a client that never reads ended %v after it started", time.Since(start).Round(time.Millisecond))
	if st, res := s.call("POST", "/v1/execute", keyA, map[string]any{"code": "print(1)"}); st != 200 || res["status"] != "ok" {
		t.Errorf("next execution: %d %v", st, res)
	}
}

// TestSessionLimitRace fires many concurrent session creations at a key
// allowed 3: no more than 3 may exist at once, whatever the timing.
func TestSessionLimitRace(t *testing.T) {
	s := startService(t, func(c *config.Config) { c.KeySessions = 3; c.PoolSize = 4 })
	const n = 12
	codes := make(chan int, n)
	ids := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			st, body := s.call("POST", "/v1/sessions", keyA, map[string]any{})
			codes <- st
			if id, _ := body["id"].(string); st == 200 {
				ids <- id
			}
		})
	}
	wg.Wait()
	close(codes)
	close(ids)
	created, refused := 0, 0
	for st := range codes {
		switch st {
		case 200:
			created++
		case 429:
			refused++
		default:
			t.Errorf("POST /v1/sessions = %d, want 200 or 429", st)
		}
	}
	if created > 3 || created+refused != n {
		t.Errorf("%d sessions created and %d refused of %d, want at most 3 created", created, refused, n)
	}
	for id := range ids {
		s.call("DELETE", "/v1/sessions/"+id, keyA, nil)
	}
	// Deleted sessions give their places back.
	if st, body := s.call("POST", "/v1/sessions", keyA, map[string]any{}); st != 200 {
		t.Errorf("POST /v1/sessions after deleting all = %d %v", st, body)
	}
}

// TestShutdownAnswersWaiters: an execution still waiting (here for its
// session's turn, behind a running one) when the shutdown grace period
// ends gets an answer, never an empty 200.
func TestShutdownAnswersWaiters(t *testing.T) {
	s := startService(t, func(c *config.Config) { c.ShutdownGrace = 500 * time.Millisecond })
	st, sess := s.call("POST", "/v1/sessions", keyA, map[string]any{})
	if st != 200 {
		t.Fatalf("POST /v1/sessions = %d %v", st, sess)
	}
	path := "/v1/sessions/" + sess["id"].(string) + "/execute"
	type answer struct {
		status int
		body   string
	}
	answers := make(chan answer, 2)
	send := func() {
		data, _ := json.Marshal(map[string]any{"code": sleeperCode})
		req, _ := http.NewRequest("POST", s.url+path, bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+keyA)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answers <- answer{0, err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		answers <- answer{resp.StatusCode, string(b)}
	}
	go send()
	for i := 0; i < 200 && sleepers(t) == 0; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	go send() // waits for the session's turn
	time.Sleep(300 * time.Millisecond)
	s.stop()
	for range 2 {
		a := <-answers
		if a.status == 0 || strings.TrimSpace(a.body) == "" {
			t.Errorf("a request in flight at shutdown got %d %q, want an answer with a body", a.status, a.body)
			continue
		}
		var body map[string]any
		json.Unmarshal([]byte(a.body), &body)
		_, code, _ := errOf(body)
		if !(a.status == 200 && body["status"] == "killed") && a.status != 503 && code != "session_expired" {
			t.Errorf("a request in flight at shutdown got %d %s, want 200 killed, 503 or 410", a.status, a.body)
		}
	}
}

// TestInputBytesCountedFirst: a small body naming one stored file many
// times is refused from the files' metadata, before the server reads
// them (it used to read the file once per mention).
func TestInputBytesCountedFirst(t *testing.T) {
	s := startService(t, nil)
	f := upload(t, s, keyA, "big.bin", strings.Repeat("x", 4<<20))
	var files []map[string]any
	for i := range 200 {
		files = append(files, map[string]any{"file_id": f["id"], "path": fmt.Sprintf("copy%d.bin", i)})
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	st, body := s.call("POST", "/v1/execute", keyA, map[string]any{"code": "print(1)", "files": files})
	runtime.ReadMemStats(&after)
	param, _, msg := errOf(body)
	if st != 400 || !strings.HasPrefix(param, "files[") || !strings.Contains(msg, "work directory") {
		t.Errorf("execute naming a 4 MiB file 200 times = %d %v, want 400 on files[n] about the work directory", st, body)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("the server allocated %d MiB for a refused request of %d bytes of JSON", grew>>20, len(fmt.Sprint(files)))
	}
}

// TestDownloadsAreNotPages: HTML and SVG written by sandboxed code, or
// uploaded, come back as attachments a browser neither sniffs nor runs,
// on every download path: a live session's file, the same file once the
// session ended, an execution's output by file id, and an upload.
func TestDownloadsAreNotPages(t *testing.T) {
	s := startService(t, nil)
	page := `<html><script>alert(document.domain)</script></html>`
	svg := `<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`
	code := fmt.Sprintf("open('/mnt/data/evil.html','w').write(%q)\nopen('/mnt/data/evil.svg','w').write(%q)\n", page, svg)

	_, sess := s.call("POST", "/v1/sessions", keyA, map[string]any{})
	id, _ := sess["id"].(string)
	if st, res := s.call("POST", "/v1/sessions/"+id+"/execute", keyA, map[string]any{"code": code}); st != 200 || res["status"] != "ok" {
		t.Fatalf("session execute = %d %v", st, res)
	}
	paths := map[string]string{
		"live session html": "/v1/sessions/" + id + "/files/evil.html",
		"live session svg":  "/v1/sessions/" + id + "/files/evil.svg",
	}
	st, res := s.call("POST", "/v1/execute", keyA, map[string]any{"code": code})
	if st != 200 {
		t.Fatalf("execute = %d %v", st, res)
	}
	files, _ := res["files"].([]any)
	if len(files) != 2 {
		t.Fatalf("execute files = %v, want evil.html and evil.svg", res["files"])
	}
	for _, f := range files {
		f, _ := f.(map[string]any)
		fid, _ := f["id"].(string)
		paths["output "+fmt.Sprint(f["path"])] = "/v1/files/" + fid + "/content"
	}
	up := upload(t, s, keyA, "upload.html", page)
	paths["upload"] = "/v1/files/" + fmt.Sprint(up["id"]) + "/content"

	check := func(name, path string) {
		t.Helper()
		resp := s.do("GET", path, keyA, nil)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), "<script>") {
			t.Errorf("%s: GET %s = %d %q", name, path, resp.StatusCode, body)
			return
		}
		h := resp.Header
		if d := h.Get("Content-Disposition"); !strings.HasPrefix(d, "attachment") {
			t.Errorf("%s: Content-Disposition = %q, want attachment", name, d)
		}
		if v := h.Get("X-Content-Type-Options"); v != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options = %q, want nosniff", name, v)
		}
		if csp := h.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "sandbox") {
			t.Errorf("%s: Content-Security-Policy = %q, want default-src 'none' and sandbox", name, csp)
		}
	}
	for name, path := range paths {
		check(name, path)
	}
	if st, res := s.call("DELETE", "/v1/sessions/"+id, keyA, nil); st != 200 {
		t.Fatalf("delete session = %d %v", st, res)
	}
	check("ended session html", "/v1/sessions/"+id+"/files/evil.html")
	check("ended session svg", "/v1/sessions/"+id+"/files/evil.svg")
}
