package server_test

import (
	"encoding/base64"
	"strings"
	"testing"
)

// TestBashOverHTTP runs language "bash" on /v1/execute and in a session,
// where it shares /mnt/data with Python, and checks the exit code, a
// non-zero one, a timeout and the validation of language.
func TestBashOverHTTP(t *testing.T) {
	s := startService(t, nil)
	st, body := s.call("POST", "/v1/execute", keyA, map[string]any{"language": "bash",
		"code":  "wc -l < in.txt; echo oops >&2",
		"files": []map[string]any{{"path": "in.txt", "content_base64": base64.StdEncoding.EncodeToString([]byte("a\nb\nc\n"))}}})
	if st != 200 || body["status"] != "ok" || body["stdout"] != "3\n" || body["stderr"] != "oops\n" || body["exit_code"] != 0.0 {
		t.Errorf("bash execute = %d %v", st, body)
	}
	st, body = s.call("POST", "/v1/execute", keyA, map[string]any{"language": "bash", "code": "grep -q x /dev/null"})
	if e, _ := body["error"].(map[string]any); st != 200 || body["status"] != "error" || body["exit_code"] != 1.0 || e["name"] != "ExitCode" {
		t.Errorf("bash exit 1 = %d %v", st, body)
	}
	st, body = s.call("POST", "/v1/execute", keyA, map[string]any{"language": "bash", "code": "sleep 60", "timeout": 0.5})
	if _, has := body["exit_code"]; st != 200 || body["status"] != "timeout" || has {
		t.Errorf("bash timeout = %d %v", st, body)
	}
	st, body = s.call("POST", "/v1/execute", keyA, map[string]any{"language": "ruby", "code": "puts 1"})
	if param, _, _ := errOf(body); st != 400 || param != "language" {
		t.Errorf("language ruby = %d %v", st, body)
	}
	st, body = s.call("POST", "/v1/execute", keyA, map[string]any{"language": "python", "code": "print(1)"})
	if _, has := body["exit_code"]; st != 200 || body["stdout"] != "1\n" || has {
		t.Errorf("language python = %d %v", st, body)
	}

	st, sess := s.call("POST", "/v1/sessions", keyA, map[string]any{})
	if st != 200 {
		t.Fatalf("create session = %d %v", st, sess)
	}
	id := sess["id"].(string)
	steps := []struct{ lang, code, want string }{
		{"python", "open('notes.txt', 'w').write('hello from python\\n')", ""},
		{"bash", "pwd; tr a-z A-Z < notes.txt | tee upper.txt", "/mnt/data\nHELLO FROM PYTHON\n"},
		{"python", "print(open('upper.txt').read().split())", "['HELLO', 'FROM', 'PYTHON']\n"},
	}
	for i, step := range steps {
		st, body := s.call("POST", "/v1/sessions/"+id+"/execute", keyA, map[string]any{"language": step.lang, "code": step.code})
		if st != 200 || body["status"] != "ok" || body["stdout"] != step.want {
			t.Fatalf("step %d (%s) = %d %v", i, step.lang, st, body)
		}
	}
	st, body = s.call("POST", "/v1/sessions/"+id+"/execute", keyA, map[string]any{"language": "bash", "code": "exit 7"})
	if st != 200 || body["status"] != "error" || body["exit_code"] != 7.0 || !strings.Contains(body["error"].(map[string]any)["value"].(string), "7") {
		t.Errorf("session bash exit 7 = %d %v", st, body)
	}
}
