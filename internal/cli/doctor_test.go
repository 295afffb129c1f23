//go:build linux

package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"codeexec/internal/testenv"
)

// TestDoctor runs every check for real: on CI (root, Debian's python3
// libraries installed by make test) each must pass.
func TestDoctor(t *testing.T) {
	testenv.Root(t, "the doctor's checks need root (uid-range mapping, cgroups)")
	var stdout, stderr bytes.Buffer
	code := runDoctor(context.Background(), []string{"--json"}, &stdout, &stderr)
	var got []finding
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatalf("runDoctor(--json) printed %q, stderr %q: %v", stdout.String(), stderr.String(), err)
	}
	for _, f := range got {
		if f.Status != statusOK {
			t.Errorf("check not ok: %s", f)
		}
	}
	if code != 0 {
		t.Errorf("runDoctor(--json) = %d, want 0", code)
	}
	// Every check must have run, one line per library.
	for _, want := range append([]string{"root", "user namespaces", "namespaces", "seccomp", "cgroup", "python3 at", "command unzip", "command sqlite3", "pip"}, doctorModules...) {
		found := false
		for _, f := range got {
			found = found || strings.Contains(f.What, want)
		}
		if !found {
			t.Errorf("no check mentions %q in %v", want, got)
		}
	}
}

func TestDoctorMissingModule(t *testing.T) {
	testenv.File(t, doctorPython, "python3")
	const module = "codeexec_no_such_module"
	got := checkModule(context.Background(), module)
	want := finding{
		Status: statusFail,
		What:   "python module " + module,
		Why:    "ModuleNotFoundError: No module named '" + module + "'",
		Fix:    "apt-get install -y python3-" + module,
	}
	if got != want {
		t.Errorf("checkModule(%q) = %+v, want %+v", module, got, want)
	}
}

func TestDoctorFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{name: "help", args: []string{"-h"}, want: 0},
		{name: "unknown flag", args: []string{"--nope"}, want: 2},
		{name: "argument", args: []string{"extra"}, want: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := runDoctor(context.Background(), tt.args, &stdout, &stderr); got != tt.want {
				t.Errorf("runDoctor(%q) = %d, want %d", tt.args, got, tt.want)
			}
			if !strings.Contains(stderr.String(), "Usage: codeexec doctor") {
				t.Errorf("runDoctor(%q) printed %q to stderr, want the usage", tt.args, stderr.String())
			}
		})
	}
}

func TestDebianPackage(t *testing.T) {
	tests := []struct {
		name, module, want string
	}{
		{name: "plain", module: "numpy", want: "python3-numpy"},
		{name: "capitalised", module: "PIL", want: "python3-pil"},
		{name: "submodule", module: "matplotlib.pyplot", want: "python3-matplotlib"},
		{name: "exception", module: "cv2", want: "python3-opencv"},
		{name: "exception submodule", module: "cv2.data", want: "python3-opencv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := debianPackage(tt.module); got != tt.want {
				t.Errorf("debianPackage(%q) = %q, want %q", tt.module, got, tt.want)
			}
		})
	}
}

func TestFindingString(t *testing.T) {
	tests := []struct {
		name string
		f    finding
		want string
	}{
		{name: "ok", f: ok("seccomp filters"), want: "ok   seccomp filters"},
		{name: "fail", f: fail("python module scipy", "ModuleNotFoundError: No module named 'scipy'", "apt-get install -y python3-scipy"),
			want: "FAIL python module scipy: ModuleNotFoundError: No module named 'scipy'; fix: apt-get install -y python3-scipy"},
		{name: "warn without fix", f: warn("swap", "on", ""), want: "warn swap: on"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.String(); got != tt.want {
				t.Errorf("%+v.String() = %q, want %q", tt.f, got, tt.want)
			}
		})
	}
}
