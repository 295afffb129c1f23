//go:build linux

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"codeexec/internal/python"
)

func init() {
	register("doctor", command{
		summary: "check that this host can run sandboxes and say how to fix what is missing",
		run:     runDoctor,
	})
}

// doctorPython is the interpreter the sandboxes run; it must come from
// Debian (DESIGN.md), so the doctor checks this path and not whatever
// python3 is first on PATH.
const doctorPython = "/usr/bin/python3"

// doctorModules are the import names of the sandbox's libraries
// (python.Libraries).
var doctorModules = func() []string {
	var out []string
	for _, l := range python.Libraries {
		out = append(out, l.Import)
	}
	return out
}()

// doctorImportTimeout bounds one import check: a cold import of scipy on a
// slow disk takes a few seconds, not a minute.
const doctorImportTimeout = time.Minute

// status is the outcome of one check.
type status string

const (
	statusOK   status = "ok"
	statusWarn status = "warn" // works, but not as well as it could
	statusFail status = "FAIL" // codeexec cannot run sandboxes until fixed
)

// finding is the result of one check. Why and Fix are empty when Status is
// statusOK.
type finding struct {
	Status status `json:"status"`
	What   string `json:"what"`
	Why    string `json:"why,omitempty"`
	Fix    string `json:"fix,omitempty"`
}

func ok(what string) finding { return finding{Status: statusOK, What: what} }

func fail(what, why, fix string) finding {
	return finding{Status: statusFail, What: what, Why: why, Fix: fix}
}

func warn(what, why, fix string) finding {
	return finding{Status: statusWarn, What: what, Why: why, Fix: fix}
}

// String formats f as one line: "ok   what" or "FAIL what: why; fix: how".
func (f finding) String() string {
	if f.Status == statusOK {
		return fmt.Sprintf("%-4s %s", f.Status, f.What)
	}
	s := fmt.Sprintf("%-4s %s: %s", f.Status, f.What, f.Why)
	if f.Fix != "" {
		s += "; fix: " + f.Fix
	}
	return s
}

func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	jsonOut := fs.Bool("json", false, "print the checks as a JSON array of {status, what, why, fix}")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `Usage: codeexec doctor [--json]

Doctor checks that this host can run codeexec's sandboxes: root, user
namespaces, seccomp, cgroups (v1 or v2), /usr/bin/python3 and each library
the sandbox preloads. It prints one line per check, "ok", "warn" or "FAIL"
with the reason and the fix, and exits 1 if any check failed.

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "codeexec doctor: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return 2
	}

	var all []finding
	runChecks(ctx, func(f finding) {
		all = append(all, f)
		if !*jsonOut {
			fmt.Fprintln(stdout, f)
		}
	})
	if *jsonOut {
		b, err := json.MarshalIndent(all, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "codeexec doctor: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s\n", b)
	}
	for _, f := range all {
		if f.Status == statusFail {
			return 1
		}
	}
	return 0
}

// runChecks runs every check in order and reports each finding as soon as
// it is known (the Python imports take about a second).
func runChecks(ctx context.Context, report func(finding)) {
	report(checkRoot())
	platformChecks(ctx, report)
	checkPython(ctx, report)
	checkTools(report)
}

// doctorTools are the commands language "bash" relies on, in the /usr the
// sandbox binds, with the Debian package of each.
var doctorTools = [][2]string{
	{"bash", "bash"}, {"grep", "grep"}, {"sed", "sed"}, {"awk", "mawk"}, {"find", "findutils"},
	{"unzip", "unzip"}, {"sqlite3", "sqlite3"}, {"file", "file"},
}

// checkTools reports each of doctorTools, and pip (for pip install at run
// time), one finding each.
func checkTools(report func(finding)) {
	for _, t := range doctorTools {
		what := "command " + t[0]
		if _, err := os.Stat("/usr/bin/" + t[0]); err != nil {
			report(fail(what, err.Error(), aptInstall(t[1])))
			continue
		}
		report(ok(what))
	}
	what := "pip (python3 -m pip)"
	if _, err := os.Stat("/usr/lib/python3/dist-packages/pip/__init__.py"); err != nil {
		report(fail(what, err.Error(), aptInstall("python3-pip")))
		return
	}
	report(ok(what))
}

func checkRoot() finding {
	const what = "running as root"
	if uid := os.Geteuid(); uid != 0 {
		return fail(what, fmt.Sprintf("effective uid is %d; mapping a range of uids into the sandbox and creating cgroups need root", uid),
			"run codeexec as root (e.g. with sudo)")
	}
	return ok(what)
}

// checkPython checks doctorPython and that it can import each of
// doctorModules, one finding each.
func checkPython(ctx context.Context, report func(finding)) {
	what := "python3 at " + doctorPython
	out, err := exec.CommandContext(ctx, doctorPython, "--version").CombinedOutput()
	if err != nil {
		pkgs := []string{"python3"}
		for _, m := range doctorModules {
			pkgs = append(pkgs, debianPackage(m))
		}
		report(fail(what, commandError(err, out), aptInstall(pkgs...)))
		for _, m := range doctorModules {
			report(fail("python module "+m, "no "+doctorPython, aptInstall("python3", debianPackage(m))))
		}
		return
	}
	report(ok(what + ": " + strings.TrimSpace(string(out))))
	for _, m := range doctorModules {
		report(checkModule(ctx, m))
	}
}

// checkModule imports module in a fresh interpreter. -I (isolated mode)
// ignores PYTHON* variables, the user's site-packages and the current
// directory, as the sandbox does.
func checkModule(ctx context.Context, module string) finding {
	ctx, cancel := context.WithTimeout(ctx, doctorImportTimeout)
	defer cancel()
	what := "python module " + module
	// The version is the distribution's (python.Library.Name), else the
	// top-level module's __version__.
	const script = `import importlib, importlib.metadata, sys
m = importlib.import_module(sys.argv[1])
try:
    v = importlib.metadata.version(sys.argv[2])
except Exception:
    v = getattr(sys.modules[sys.argv[1].split(".")[0]], "__version__", "")
print(v)`
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, doctorPython, "-I", "-c", script, module, distribution(module))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fail(what, commandError(err, stderr.Bytes()), aptInstall(debianPackage(module)))
	}
	if v := strings.TrimSpace(stdout.String()); v != "" {
		what += " " + v
	}
	return ok(what)
}

// commandError describes why a command failed: the last line it wrote
// (for Python, the exception), else err.
func commandError(err error, out []byte) string {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		return last
	}
	return err.Error()
}

// debianModulePackages lists the import names whose Debian package is not
// python3- followed by the lower-cased top-level name.
var debianModulePackages = map[string]string{
	"cv2": "python3-opencv",
}

// distribution is the name of module's distribution when python.Libraries
// has it, else module.
func distribution(module string) string {
	for _, l := range python.Libraries {
		if l.Import == module {
			return l.Name
		}
	}
	return module
}

// debianPackage returns the Debian package that provides the Python module
// module (an import name such as "PIL" or "matplotlib.pyplot").
func debianPackage(module string) string {
	for _, l := range python.Libraries {
		if l.Import == module {
			return l.Debian
		}
	}
	top, _, _ := strings.Cut(module, ".")
	if p, ok := debianModulePackages[top]; ok {
		return p
	}
	return "python3-" + strings.ToLower(top)
}

// aptInstall is the command that installs pkgs.
func aptInstall(pkgs ...string) string {
	return "apt-get install -y " + strings.Join(pkgs, " ")
}
