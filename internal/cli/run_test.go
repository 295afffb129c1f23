//go:build linux

package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"codeexec/internal/executor"
	"codeexec/internal/python"
	"codeexec/internal/testenv"
)

// runCLI runs `codeexec run args...` in-process and returns its exit code,
// standard output and standard error.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	code = runCmd(t.Context(), args, &o, &e)
	return code, o.String(), e.String()
}

// requireExecutor skips a test that starts an executor where it cannot run:
// only outside CI, and saying what is missing. On CI (root, python3
// installed by make test) it fails instead. Same rule as the executor's
// newTestExecutor.
func requireExecutor(t *testing.T) {
	t.Helper()
	testenv.Root(t, "codeexec run starts an executor, which needs root (namespaces with a uid range, cgroups)")
	testenv.Python(t)
}

// TestRunBadInput checks that bad arguments exit 2 with a message, before
// any sandbox is started (so it needs neither root nor python3).
func TestRunBadInput(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-script.py")
	tests := []struct {
		name       string
		args       []string
		wantStderr string
	}{
		{"empty -c", []string{"-c", ""}, "give one script"},
		{"no program", nil, "give one script"},
		{"two scripts", []string{"a.py", "b.py"}, "give one script"},
		{"-c and a script", []string{"-c", "print(1)", "a.py"}, "not both"},
		{"zero timeout", []string{"--timeout", "0", "-c", "print(1)"}, "--timeout must be positive"},
		{"negative timeout", []string{"--timeout=-1s", "-c", "print(1)"}, "--timeout must be positive"},
		{"negative memory", []string{"--memory", "-1", "-c", "print(1)"}, "--memory must be positive"},
		{"zero memory", []string{"--memory", "0", "-c", "print(1)"}, "--memory must be positive"},
		{"zero output limit", []string{"--output-limit", "0", "-c", "print(1)"}, "--output-limit must be positive"},
		{"negative procs", []string{"--procs", "-4", "-c", "print(1)"}, "--procs must be positive"},
		{"nonexistent script", []string{missing}, "no such file or directory"},
		{"nonexistent input file", []string{"--file", missing, "-c", "print(1)"}, "--file"},
		{"unknown flag", []string{"--no-such-flag", "-c", "print(1)"}, "flag provided but not defined"},
		{"malformed limit", []string{"--memory", "lots", "-c", "print(1)"}, "invalid value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tc.args...)
			if code != 2 || !strings.Contains(stderr, tc.wantStderr) {
				t.Errorf("run %q = exit %d, stderr %q; want exit 2, stderr containing %q", tc.args, code, stderr, tc.wantStderr)
			}
			if stdout != "" {
				t.Errorf("run %q printed %q on stdout, want nothing", tc.args, stdout)
			}
		})
	}
}

// TestRun runs programs for real, one executor each (about 2 s apiece).
func TestRun(t *testing.T) {
	requireExecutor(t)
	dir := t.TempDir()

	t.Run("-c", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "-c", "print(1+1)")
		if code != 0 || stdout != "2\n" || stderr != "" {
			t.Errorf("run -c 'print(1+1)' = exit %d, stdout %q, stderr %q; want 0, %q, %q", code, stdout, stderr, "2\n", "")
		}
	})

	t.Run("script with input files", func(t *testing.T) {
		script := filepath.Join(dir, "script.py")
		csv := filepath.Join(dir, "local.csv")
		writeFile(t, script, `import pandas as pd
df = pd.read_csv("local.csv")
print(len(df), open("sub/copy.csv").read() == open("local.csv").read())
int(df["x"].sum())
`)
		writeFile(t, csv, "x\n1\n2\n3\n")
		// Flags after the script name work too; LOCAL:PATH picks the
		// path in /mnt/data.
		args := []string{script, "--file", csv, "--file", csv + ":sub/copy.csv"}
		code, stdout, stderr := runCLI(t, args...)
		if want := "3 True\n6\n"; code != 0 || stdout != want {
			t.Errorf("run %q = exit %d, stdout %q, stderr %q; want 0, %q", args, code, stdout, stderr, want)
		}
	})

	t.Run("stdin as JSON", func(t *testing.T) {
		old := stdin
		stdin = strings.NewReader("print('from stdin')\n6 * 7\n")
		t.Cleanup(func() { stdin = old })
		code, stdout, stderr := runCLI(t, "--json", "-")
		var res executor.Result
		dec := json.NewDecoder(strings.NewReader(stdout))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&res); err != nil {
			t.Fatalf("run --json - printed %q (stderr %q), not a result object: %v", stdout, stderr, err)
		}
		if dec.More() {
			t.Errorf("run --json - printed more than one JSON value: %q", stdout)
		}
		if code != 0 || stderr != "" {
			t.Errorf("run --json - = exit %d, stderr %q; want 0, %q", code, stderr, "")
		}
		got := executor.Result{Status: res.Status, Stdout: res.Stdout, Stderr: res.Stderr, Result: res.Result, Displays: res.Displays, Files: res.Files}
		want := executor.Result{Status: executor.StatusOK, Stdout: "from stdin\n", Result: python.Bundle{"text/plain": "42"}, Displays: []python.Bundle{}, Files: []executor.File{}}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("run --json - result (-want +got):\n%s", diff)
		}
		if !strings.HasPrefix(res.ID, "exec_") || res.DurationMS <= 0 {
			t.Errorf("run --json - id %q, duration_ms %v; want exec_..., > 0", res.ID, res.DurationMS)
		}
	})

	t.Run("exception", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "-c", "print('before')\ndef f():\n    return 1 / 0\nf()")
		if code != 1 || stdout != "before\n" {
			t.Errorf("run raising ZeroDivisionError = exit %d, stdout %q; want 1, %q", code, stdout, "before\n")
		}
		for _, want := range []string{"Traceback (most recent call last):", "line 3, in f", "return 1 / 0", "ZeroDivisionError: division by zero", "status: error"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("run raising ZeroDivisionError: stderr %q lacks %q", stderr, want)
			}
		}
		if strings.Contains(stderr, "runner.py") {
			t.Errorf("run raising ZeroDivisionError: traceback shows the runner's frames: %q", stderr)
		}
	})

	t.Run("--out", func(t *testing.T) {
		out := filepath.Join(dir, "out")
		code, stdout, stderr := runCLI(t, "--out", out, "-c", `import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [1, 4, 9])
plt.show()
with open("out.csv", "w") as f:
    f.write("a,b\n1,2\n")
`)
		if code != 0 || stdout != "" {
			t.Fatalf("run --out = exit %d, stdout %q, stderr %q; want 0, %q", code, stdout, stderr, "")
		}
		var saved []string
		for _, line := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
			if strings.HasPrefix(line, "saved ") {
				saved = append(saved, line)
			}
		}
		img, csv := filepath.Join(out, "image-1.png"), filepath.Join(out, "out.csv")
		if len(saved) != 2 || !strings.HasPrefix(saved[0], "saved "+img+" (") || saved[1] != "saved "+csv+" (8 bytes)" {
			t.Errorf("run --out: stderr %q; want one line each: saved %s (N bytes), saved %s (8 bytes)", stderr, img, csv)
		}
		if b, err := os.ReadFile(img); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) {
			t.Errorf("run --out: %s is not a PNG (%v)", img, err)
		}
		if b, err := os.ReadFile(csv); err != nil || string(b) != "a,b\n1,2\n" {
			t.Errorf("run --out: %s = %q, %v; want %q", csv, b, err, "a,b\n1,2\n")
		}
	})

	t.Run("timeout", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "--timeout", "1s", "-c", "while True: pass")
		if code != 1 || stdout != "" || !strings.Contains(stderr, "timed out after 1 s") || !strings.Contains(stderr, "status: timeout") {
			t.Errorf("run --timeout 1s spinning = exit %d, stdout %q, stderr %q; want 1, nothing, \"timed out after 1 s\" and \"status: timeout\"", code, stdout, stderr)
		}
	})
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
