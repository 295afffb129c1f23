// Package testenv is the one policy codeexec's tests follow when the machine
// lacks something a test needs (root, /usr/bin/python3 and its libraries, a
// file from a Debian package): the test is skipped, saying what is missing
// and how to get it, unless the CI environment variable is set, in which case
// it fails. CI runs as root after scripts/deps.sh, so there every test runs.
//
// Tests call only these functions to skip; TestOnePolicy checks that no
// other test calls t.Skip or reads CI itself.
//
// When SkipLogEnv names a file, each skip also appends one line to it,
// "dir<TAB>reason<TAB>test", dir being the package's directory in the module:
// make test prints a summary of that file at the end, since go test without
// -v does not show skips.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// PythonPath is the interpreter the sandboxes run: Debian's python3, which
// scripts/deps.sh installs with the libraries the sandbox preloads.
const PythonPath = "/usr/bin/python3"

// SkipLogEnv is the environment variable naming the file skips are appended
// to (make test sets it).
const SkipLogEnv = "CODEEXEC_TEST_SKIPLOG"

// CI reports whether the CI environment variable is set: then nothing a
// test needs may be missing.
func CI() bool { return os.Getenv("CI") != "" }

// Missing stops t for want of need, a phrase saying what is missing and how
// to get it: t fails when CI is set and is skipped otherwise.
func Missing(t testing.TB, need string) {
	t.Helper()
	if CI() {
		t.Fatalf("CI is set, but this test's environment lacks %s", need)
	}
	logSkip(t, need)
	t.Skipf("skipped, lacking %s (with CI set this fails)", need)
}

// Root requires euid 0; why says what the test does that needs root.
func Root(t testing.TB, why string) {
	t.Helper()
	root(t, os.Geteuid(), why)
}

func root(t testing.TB, euid int, why string) {
	t.Helper()
	if euid != 0 {
		Missing(t, fmt.Sprintf("root (euid is %d): %s", euid, why))
	}
}

// File requires path to exist; debianPackage is the package that
// provides it.
func File(t testing.TB, path, debianPackage string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		Missing(t, fmt.Sprintf("%s (Debian package %s; scripts/deps.sh installs it): %v", path, debianPackage, err))
	}
}

// Python requires PythonPath and that it can import each of modules, and
// returns PythonPath.
func Python(t testing.TB, modules ...string) string {
	t.Helper()
	if err := pythonStarts(); err != nil {
		Missing(t, fmt.Sprintf("%s (Debian package python3; scripts/deps.sh installs it): %v", PythonPath, err))
	}
	var missing, pkgs []string
	for _, m := range modules {
		if !pythonHas(m) {
			missing = append(missing, m)
			pkgs = append(pkgs, "python3-"+strings.ToLower(m))
		}
	}
	if len(missing) > 0 {
		Missing(t, fmt.Sprintf("the Python modules %s for %s (Debian packages %s; scripts/deps.sh installs them)",
			strings.Join(missing, ", "), PythonPath, strings.Join(pkgs, " ")))
	}
	return PythonPath
}

// pythonStarts runs PythonPath once per test binary.
var pythonStarts = sync.OnceValue(func() error {
	out, err := exec.Command(PythonPath, "-c", "print('ok')").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
})

var (
	modulesMu sync.Mutex
	modules   = map[string]bool{}
)

// pythonHas reports whether PythonPath finds module, asking once per
// module and test binary. It looks the module up without importing it.
func pythonHas(module string) bool {
	modulesMu.Lock()
	defer modulesMu.Unlock()
	has, ok := modules[module]
	if !ok {
		const script = "import importlib.util, sys; sys.exit(importlib.util.find_spec(sys.argv[1]) is None)"
		has = exec.Command(PythonPath, "-c", script, module).Run() == nil
		modules[module] = has
	}
	return has
}

// logSkip appends t's skip to the file SkipLogEnv names, if any. A failure
// to write is reported with t.Log: the skip itself still happens.
func logSkip(t testing.TB, need string) {
	t.Helper()
	name := os.Getenv(SkipLogEnv)
	if name == "" {
		return
	}
	line := fmt.Sprintf("%s\t%s\t%s\n", packageDir(), strings.ReplaceAll(need, "\t", " "), t.Name())
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err == nil {
		// One write of a short line with O_APPEND: lines from test
		// binaries running at once do not interleave.
		_, err = f.WriteString(line)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		t.Logf("testenv: recording the skip in %s: %v", name, err)
	}
}

// packageDir is the directory go test runs the test binary in (the
// package's), relative to the module root when it finds go.mod above it.
func packageDir() string {
	wd, err := os.Getwd()
	if err != nil {
		return "?"
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if rel, err := filepath.Rel(dir, wd); err == nil {
				return rel
			}
			return wd
		}
		if filepath.Dir(dir) == dir {
			return wd
		}
	}
}
