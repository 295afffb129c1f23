package testenv

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// recorder is a testing.TB whose Skipf and Fatalf record the message and
// end the goroutine, as the real ones do, without ending the test.
type recorder struct {
	testing.TB
	skip, fatal string
}

func (r *recorder) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// run calls f with a recorder for t in a goroutine of its own, and reports
// what f did: skipped, failed, or ran to its end.
func run(t *testing.T, f func(testing.TB)) (r *recorder, finished bool) {
	t.Helper()
	r = &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
		finished = true
	}()
	<-done
	return r, finished
}

func TestMissing(t *testing.T) {
	for _, ci := range []string{"", "true"} {
		t.Run("CI="+ci, func(t *testing.T) {
			t.Setenv("CI", ci)
			log := filepath.Join(t.TempDir(), "skips")
			t.Setenv(SkipLogEnv, log)
			r, finished := run(t, func(tb testing.TB) { Missing(tb, "a thing (get it somewhere)") })
			if finished {
				t.Fatalf("Missing returned; want it to end the test")
			}
			data, err := os.ReadFile(log)
			if ci == "" {
				if r.fatal != "" || !strings.Contains(r.skip, "a thing (get it somewhere)") {
					t.Errorf("without CI: skip %q, fatal %q; want a skip naming the thing", r.skip, r.fatal)
				}
				want := "internal/testenv\ta thing (get it somewhere)\t" + t.Name() + "\n"
				if err != nil || string(data) != want {
					t.Errorf("skip log = %q, %v; want %q", data, err, want)
				}
				return
			}
			if r.skip != "" || !strings.Contains(r.fatal, "CI is set") || !strings.Contains(r.fatal, "a thing") {
				t.Errorf("with CI: skip %q, fatal %q; want a failure naming the thing", r.skip, r.fatal)
			}
			if !os.IsNotExist(err) {
				t.Errorf("with CI the skip log was written: %q, %v", data, err)
			}
		})
	}
}

func TestRequirements(t *testing.T) {
	Python(t) // Python's own cases below need the interpreter
	t.Setenv("CI", "")
	t.Setenv(SkipLogEnv, "")
	tests := []struct {
		name     string
		f        func(testing.TB)
		stops    bool
		wantSkip []string // in the skip message
	}{
		{"root", func(tb testing.TB) { Root(tb, "to do root things") }, os.Geteuid() != 0, nil},
		{"euid 0", func(tb testing.TB) { root(tb, 0, "to do root things") }, false, nil},
		{"euid 1000", func(tb testing.TB) { root(tb, 1000, "to do root things") }, true,
			[]string{"root (euid is 1000): to do root things"}},
		{"file present", func(tb testing.TB) { File(tb, "testenv.go", "golang-go") }, false, nil},
		{"file missing", func(tb testing.TB) { File(tb, "no-such-file.h", "linux-libc-dev") }, true,
			[]string{"no-such-file.h", "Debian package linux-libc-dev"}},
		{"python stdlib", func(tb testing.TB) {
			if got := Python(tb, "json", "importlib"); got != PythonPath {
				tb.Errorf("Python() = %q, want %q", got, PythonPath)
			}
		}, false, nil},
		{"python module missing", func(tb testing.TB) { Python(tb, "json", "codeexec_no_such_module") }, true,
			[]string{"the Python modules codeexec_no_such_module for " + PythonPath, "python3-codeexec_no_such_module"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, finished := run(t, tt.f)
			if r.fatal != "" {
				t.Fatalf("failed with CI unset: %s", r.fatal)
			}
			if finished == tt.stops {
				t.Fatalf("finished = %v (skip %q), want %v", finished, r.skip, !tt.stops)
			}
			for _, w := range tt.wantSkip {
				if !strings.Contains(r.skip, w) {
					t.Errorf("skip message %q lacks %q", r.skip, w)
				}
			}
		})
	}
}

// TestOnePolicy checks that the module's tests skip only through this
// package: no other test calls Skip, Skipf or SkipNow, or reads CI.
func TestOnePolicy(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	self, _ := filepath.Abs(".")
	var files int
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (path == self || d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		files++
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			switch name := sel.Sel.Name; name {
			case "Skip", "Skipf", "SkipNow":
				t.Errorf("%s: calls %s; skip with package testenv (Missing, Root, File, Python)", fset.Position(call.Pos()), name)
			case "Getenv", "LookupEnv":
				if len(call.Args) == 1 {
					if lit, ok := call.Args[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						if s, _ := strconv.Unquote(lit.Value); s == "CI" {
							t.Errorf("%s: reads CI; use testenv.CI or testenv.Missing", fset.Position(call.Pos()))
						}
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("found no test files under %s", root)
	}
}
