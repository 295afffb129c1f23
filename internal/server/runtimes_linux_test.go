package server_test

import (
	"strings"
	"testing"

	"codeexec/internal/python"
)

func TestRuntimes(t *testing.T) {
	s := startService(t, nil)
	st, body := s.call("GET", "/v1/runtimes", keyA, nil)
	if st != 200 {
		t.Fatalf("GET /v1/runtimes = %d %v", st, body)
	}
	langs, _ := body["languages"].([]any)
	var names []string
	for _, l := range langs {
		m := l.(map[string]any)
		names = append(names, m["name"].(string)+" "+m["version"].(string))
	}
	if len(names) != 2 || !strings.HasPrefix(names[0], "python 3.") || !strings.HasPrefix(names[1], "bash ") {
		t.Errorf("languages %v", names)
	}
	// The version Python reports in the sandbox is the one listed.
	_, res := s.call("POST", "/v1/execute", keyA, map[string]any{"code": "import platform; print('python', platform.python_version())"})
	if res["stdout"] != names[0]+"\n" {
		t.Errorf("sandbox says %q, runtimes %q", res["stdout"], names[0])
	}
	libs, _ := body["libraries"].([]any)
	got := map[string]map[string]any{}
	for _, l := range libs {
		m := l.(map[string]any)
		got[m["name"].(string)] = m
	}
	for _, l := range python.Libraries {
		m, ok := got[l.Name]
		if !ok || m["version"] == "" || m["import"] != l.Import || m["preloaded"] != l.Preload {
			t.Errorf("library %s: %v", l.Name, m)
		}
	}
	if st, _ := s.call("GET", "/v1/runtimes", "", nil); st != 401 {
		t.Errorf("without a key = %d, want 401", st)
	}
}
