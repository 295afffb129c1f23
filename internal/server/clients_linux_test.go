package server_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
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
	// The flood starts a second after the marker process, so that the
	// test sees the execution run before it is dropped.
	code := "import subprocess, sys, time\nsubprocess.Popen(['sleep', '3600'])\ntime.sleep(1)\nwhile True:\n    sys.stdout.write('x' * 4000 + '\\n')\n    sys.stdout.flush()\n"
	body, _ := json.Marshal(map[string]any{"code": code, "stream": true, "timeout": 300, "output_limit_bytes": 16 << 20})
	postNeverRead(t, s, body)
	// Never read. The marker process shows the execution runs, then it
	// must go.
	// (Generous: on a loaded machine a sandbox may take seconds.)
	for i := 0; i < 1200 && sleepers(t) == 0; i++ {
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

// postNeverRead POSTs body to /v1/execute with keyA from a connection
// with a small receive buffer, so that the server's writes block soon
// when the caller does not read; the connection closes with the test.
func postNeverRead(t *testing.T, s *service, body []byte) net.Conn {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		c.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		return err
	}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /v1/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", keyA, len(body), body)
	return conn
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

// TestInputFilesStreamed: a stored file goes from the store to the
// sandbox, and an upload to a session from the body to the store and the
// sandbox, without the server ever holding the content: what the server
// allocates for each is far below the file's size.
func TestInputFilesStreamed(t *testing.T) {
	s := startService(t, nil)
	const size = 48 << 20
	f := upload(t, s, keyA, "big.bin", strings.Repeat("x", size))
	_, sess := s.call("POST", "/v1/sessions", keyA, map[string]any{})
	sid, _ := sess["id"].(string)
	check := fmt.Sprintf("import os\nprint(sorted((n, os.path.getsize('/mnt/data/'+n)) for n in os.listdir('/mnt/data') if n.startswith('in')))\n")
	want := func(names ...string) string {
		var parts []string
		for _, n := range names {
			parts = append(parts, fmt.Sprintf("('%s', %d)", n, size))
		}
		return "[" + strings.Join(parts, ", ") + "]\n"
	}
	measure := func(name string, do func() (int, map[string]any), wantOut string) {
		t.Helper()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		st, res := do()
		runtime.ReadMemStats(&after)
		if st != 200 || (wantOut != "" && res["stdout"] != wantOut) {
			t.Errorf("%s = %d %v, want stdout %q", name, st, res, wantOut)
		}
		grew := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: the server allocated %d MiB for %d MiB of input", name, grew>>20, size>>20)
		if grew > size/2 {
			t.Errorf("%s: the server allocated %d MiB for a %d MiB file: it holds the content", name, grew>>20, size>>20)
		}
	}
	measure("execute with a stored file twice", func() (int, map[string]any) {
		return s.call("POST", "/v1/execute", keyA, map[string]any{"code": check,
			"files": []map[string]any{{"file_id": f["id"], "path": "in1.bin"}, {"file_id": f["id"], "path": "in2.bin"}}})
	}, want("in1.bin", "in2.bin"))
	measure("session execute with a stored file", func() (int, map[string]any) {
		return s.call("POST", "/v1/sessions/"+sid+"/execute", keyA, map[string]any{"code": check,
			"files": []map[string]any{{"file_id": f["id"], "path": "in1.bin"}}})
	}, want("in1.bin"))
	measure("upload to a session", func() (int, map[string]any) {
		req, _ := http.NewRequest("PUT", s.url+"/v1/sessions/"+sid+"/files/in2.bin", io.LimitReader(zeros{}, size))
		req.ContentLength = size
		req.Header.Set("Authorization", "Bearer "+keyA)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}, "")
	if st, res := s.call("POST", "/v1/sessions/"+sid+"/execute", keyA, map[string]any{"code": check}); st != 200 || res["stdout"] != want("in1.bin", "in2.bin") {
		t.Errorf("session files after the upload = %d %v", st, res)
	}
	// The session's copies are kept: downloadable once it ended.
	s.call("DELETE", "/v1/sessions/"+sid, keyA, nil)
	for _, p := range []string{"in1.bin", "in2.bin"} {
		resp := s.do("GET", "/v1/sessions/"+sid+"/files/"+p, keyA, nil)
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n != size {
			t.Errorf("ended session's %s = %d, %d bytes, want 200 and %d", p, resp.StatusCode, n, size)
		}
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestSlowBodies: a client that sends its body slowly (or never) is cut
// off after --body-read-timeout, and while it sends it holds one place
// for bodies being decoded: one key may not take them all.
func TestSlowBodies(t *testing.T) {
	s := startService(t, func(c *config.Config) { c.BodyReadTimeout = time.Second; c.DecodeConcurrency = 2 })
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/execute HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"code\": ", keyA)
	// While it holds its key's one place, the key's next body waits and
	// is refused as busy; another key is served.
	var st int
	var body map[string]any
	for range 50 {
		if st, body = s.call("POST", "/v1/execute", keyA, map[string]any{"code": "print(1)"}); st == 429 {
			break
		}
		time.Sleep(20 * time.Millisecond) // the slow request may not be read yet
	}
	if _, code, _ := errOf(body); st != 429 || code != "busy" {
		t.Errorf("a second body of the key while one is being read = %d %v, want 429 busy", st, body)
	}
	if st, body := s.call("POST", "/v1/execute", keyB, map[string]any{"code": "print(1)"}); st != 200 {
		t.Errorf("another key's execution = %d %v, want 200", st, body)
	}
	// The slow body is cut off and answered.
	conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the client that never finished its body got no answer: %v", err)
	}
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(data), "body_timeout") {
		t.Errorf("the slow body was answered %d %s, want 408 body_timeout", resp.StatusCode, data)
	}
	if st, body := s.call("POST", "/v1/execute", keyA, map[string]any{"code": "print(1)"}); st != 200 {
		t.Errorf("the key's execution after the slow body ended = %d %v, want 200", st, body)
	}
}

// TestSlowHeaders: a client that never finishes its headers is cut off.
func TestSlowHeaders(t *testing.T) {
	s := startService(t, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/execute HTTP/1.1\r\nHost: x\r\n")
	conn.SetReadDeadline(time.Now().Add(60 * time.Second))
	n, err := io.Copy(io.Discard, conn)
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		t.Fatalf("the connection of a client that never finished its headers is still open after 60 s")
	}
	t.Logf("closed after %d bytes: %v", n, err)
}

// TestSlowReaderGivesBackAdmission: a client that does not read its
// result does not keep its admission: with one execution allowed per
// key, the key's next execution runs while the first result is still
// being written.
func TestSlowReaderGivesBackAdmission(t *testing.T) {
	s := startService(t, func(c *config.Config) { c.KeyConcurrency = 1; c.StreamWriteTimeout = 2 * time.Minute })
	body, _ := json.Marshal(map[string]any{"code": "print('x' * (12 << 20))", "output_limit_bytes": 16 << 20})
	postNeverRead(t, s, body)
	// Never read. Until its execution is over the key's next one is
	// refused; after, it must run although the first result is unread.
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, res := s.call("POST", "/v1/execute", keyA, map[string]any{"code": "print(1)"})
		if st == 200 {
			break
		}
		// While the first runs: concurrency_limit; while its body is
		// still being read (the key has one place for that): busy.
		if _, code, _ := errOf(res); st != 429 || (code != "concurrency_limit" && code != "busy") {
			t.Fatalf("the key's second execution = %d %v, want 200 or, while the first runs, 429", st, res)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the key's second execution is still refused 30 s later: the unread result keeps the admission")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestStorageQuota: what one key stores is bounded in files and bytes;
// an execution whose outputs would pass the quota says so per file in
// its result, and the files already stored stay intact.
func TestStorageQuota(t *testing.T) {
	s := startService(t, func(c *config.Config) { c.KeyFiles = 3; c.KeyStorageMB = 1 })
	first := upload(t, s, keyA, "first.txt", "one")
	upload(t, s, keyA, "second.txt", "two")
	st, res := s.call("POST", "/v1/execute", keyA, map[string]any{"code": "for n in 'abc':\n    open(f'/mnt/data/{n}.txt', 'w').write(n)\n"})
	if st != 200 || res["status"] != "ok" {
		t.Fatalf("execute = %d %v", st, res)
	}
	files, _ := res["files"].([]any)
	stored, refused := 0, 0
	for _, f := range files {
		f, _ := f.(map[string]any)
		id, _ := f["id"].(string)
		msg, _ := f["error"].(string)
		switch {
		case id != "" && msg == "":
			stored++
		case id == "" && strings.Contains(msg, "quota"):
			refused++
		default:
			t.Errorf("output file %v: want an id, or no id and an error about the quota", f)
		}
	}
	if stored != 1 || refused != 2 {
		t.Errorf("outputs at a quota of 3 files with 2 stored: %d stored, %d refused, want 1 and 2 (%v)", stored, refused, files)
	}
	resp := s.do("GET", "/v1/files/"+fmt.Sprint(first["id"])+"/content", keyA, nil)
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(data) != "one" {
		t.Errorf("a file stored before the quota was reached = %d %q, want it intact", resp.StatusCode, data)
	}
	// Uploads are refused with a clear error; another key is not.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	fw, _ := mw.CreateFormFile("file", "more.txt")
	fw.Write([]byte("more"))
	mw.Close()
	req, _ := http.NewRequest("POST", s.url+"/v1/files", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+keyA)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(data), "storage_quota") {
		t.Errorf("upload past the quota = %d %s, want 413 storage_quota", resp.StatusCode, data)
	}
	upload(t, s, keyB, "theirs.txt", "fine")
	// Deleting a file makes room; a file larger than the bytes left is
	// refused too.
	if st, res := s.call("DELETE", "/v1/files/"+fmt.Sprint(first["id"]), keyA, nil); st != 200 {
		t.Fatalf("delete = %d %v", st, res)
	}
	upload(t, s, keyA, "again.txt", "fits")
	if st, res := s.call("DELETE", "/v1/files/"+fmt.Sprint(upload(t, s, keyB, "x", "x")["id"]), keyB, nil); st != 200 {
		t.Fatalf("delete = %d %v", st, res)
	}
	_, sess := s.call("POST", "/v1/sessions", keyB, map[string]any{})
	sid, _ := sess["id"].(string)
	req, _ = http.NewRequest("PUT", s.url+"/v1/sessions/"+sid+"/files/big.bin", io.LimitReader(zeros{}, 2<<20))
	req.ContentLength = 2 << 20
	req.Header.Set("Authorization", "Bearer "+keyB)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(data), "storage_quota") {
		t.Errorf("a 2 MiB upload to a session at a quota of 1 MiB = %d %s, want 413 storage_quota", resp.StatusCode, data)
	}
}
