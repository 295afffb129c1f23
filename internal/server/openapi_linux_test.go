package server_test

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestContractEdges makes the requests the other tests do not, so that
// the parts of docs/openapi.yaml they would leave unchecked are checked
// against the server too (startService validates every exchange): range
// and conditional downloads, listings, every error event, the streams
// of a session, errors of each kind of route, the operational endpoints.
func TestContractEdges(t *testing.T) {
	s := startService(t, nil)
	get := func(path, key string, header ...string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", s.url+path, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	wantStatus := func(what string, got, want int) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %d, want %d", what, got, want)
		}
	}

	f := upload(t, s, keyA, "digits.txt", "0123456789")
	content := "/v1/files/" + f["id"].(string) + "/content"
	resp, body := get(content, keyA, "Range", "bytes=2-4")
	wantStatus("range", resp.StatusCode, 206)
	if body != "234" {
		t.Errorf("range body = %q, want 234", body)
	}
	resp, _ = get(content, keyA, "Range", "bytes=100-")
	wantStatus("range past the end", resp.StatusCode, 416)
	resp, _ = get(content, keyA, "If-Modified-Since", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
	wantStatus("If-Modified-Since", resp.StatusCode, 304)
	resp, _ = get(content, keyA, "If-Unmodified-Since", time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat))
	wantStatus("If-Unmodified-Since", resp.StatusCode, 412)
	st, list := s.call("GET", "/v1/files", keyA, nil)
	if data, _ := list["data"].([]any); st != 200 || len(data) != 1 {
		t.Errorf("list files = %d %v", st, list)
	}
	if st, _ := s.call("GET", "/v1/files/"+f["id"].(string), keyA, nil); st != 200 {
		t.Errorf("get file = %d", st)
	}
	st, _ = s.call("DELETE", "/v1/files/file-000000000000000000000000", keyA, nil)
	wantStatus("delete unknown file", st, 404)
	st, _ = s.call("GET", "/v1/files", "", nil)
	wantStatus("list files without a key", st, 401)
	st, _ = s.call("POST", "/v1/files", keyA, `{"not":"multipart"}`)
	wantStatus("upload without multipart", st, 400)

	// A session: its stream, with an exception, and its files.
	st, sess := s.call("POST", "/v1/sessions", keyA, map[string]any{"memory_limit_mb": 256, "idle_timeout": 60})
	if st != 200 {
		t.Fatalf("create session = %d %v", st, sess)
	}
	id := sess["id"].(string)
	stream := s.do("POST", "/v1/sessions/"+id+"/execute", keyA, map[string]any{
		"code": "import sys\nprint('out')\nprint('err', file=sys.stderr)\ndisplay({'a': 1})\nopen('made.txt', 'w').write('abc')\n1/0", "stream": true})
	var events []string
	for _, ev := range readEvents(t, stream.Body) {
		events = append(events, ev.name)
	}
	stream.Body.Close()
	// stdout and stderr are two pipes: their events may come in either order.
	if n := len(events); n != 5 || !slices.Contains(events, "stdout") || !slices.Contains(events, "stderr") ||
		events[2] != "display" || events[3] != "error" || events[4] != "done" {
		t.Errorf("session stream events = %v, want stdout and stderr, display, error, done", events)
	}
	st, files := s.call("GET", "/v1/sessions/"+id+"/files", keyA, nil)
	if data, _ := files["data"].([]any); st != 200 || len(data) != 1 {
		t.Errorf("session files = %d %v", st, files)
	}
	resp, body = get("/v1/sessions/"+id+"/files/made.txt", keyA, "Range", "bytes=1-")
	if resp.StatusCode != 206 || body != "bc" {
		t.Errorf("session range = %d %q, want 206 bc", resp.StatusCode, body)
	}
	resp, _ = get("/v1/sessions/"+id+"/files/none.txt", keyA)
	wantStatus("missing session file", resp.StatusCode, 404)
	// A path with ".." is redirected to its clean form (which here is
	// no route for PUT).
	st, _ = s.call("PUT", "/v1/sessions/"+id+"/files/a/../../b", keyA, "x")
	wantStatus("PUT with ..", st, 404)
	st, _ = s.call("POST", "/v1/sessions/"+id+"/execute", keyA, map[string]any{"code": "1", "session_id": "sess_other"})
	wantStatus("session_id of another session", st, 400)
	if st, _ := s.call("DELETE", "/v1/sessions/"+id, keyA, nil); st != 200 {
		t.Errorf("delete session = %d", st)
	}
	st, files = s.call("GET", "/v1/sessions/"+id+"/files", keyA, nil)
	if data, _ := files["data"].([]any); st != 200 || len(data) != 1 {
		t.Errorf("ended session files = %d %v", st, files)
	}
	st, _ = s.call("PUT", "/v1/sessions/"+id+"/files/late.txt", keyA, "x")
	wantStatus("PUT into an ended session", st, 410)
	st, _ = s.call("GET", "/v1/sessions/sess_000000000000000000000000/files", keyA, nil)
	wantStatus("files of an unknown session", st, 404)
	st, _ = s.call("POST", "/v1/sessions", keyA, map[string]any{"idle_timeout": -1})
	wantStatus("negative idle_timeout", st, 400)

	// Results of each kind: an exception, a timeout, network refused.
	st, res := s.call("POST", "/v1/execute", keyA, map[string]any{"code": "raise ValueError('no')"})
	if errObj, _ := res["error"].(map[string]any); st != 200 || res["status"] != "error" || errObj["name"] != "ValueError" {
		t.Errorf("exception = %d %v", st, res)
	}
	st, res = s.call("POST", "/v1/execute", keyA, map[string]any{"code": "import time\ntime.sleep(5)", "timeout": 0.2})
	if st != 200 || res["status"] != "timeout" {
		t.Errorf("timeout = %d %v", st, res)
	}

	// The operational endpoints and the catch-all.
	resp, body = get("/metrics", "")
	if resp.StatusCode != 200 || !strings.Contains(body, "codeexec_executions_total") {
		t.Errorf("/metrics = %d", resp.StatusCode)
	}
	resp, _ = get("/openapi.json", "")
	wantStatus("/openapi.json", resp.StatusCode, 200)
	resp, _ = get("/v1/nothing", keyA)
	wantStatus("unknown URL", resp.StatusCode, 404)
	st, _ = s.call("GET", "/v1/models", keyA, nil)
	wantStatus("models without a provider", st, 503)
}
