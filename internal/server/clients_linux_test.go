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
