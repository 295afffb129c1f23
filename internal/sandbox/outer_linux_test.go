package sandbox

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

func startPython(t *testing.T, code string) (stdout, stderr string, err error) {
	t.Helper()
	return startPythonEnv(t, code, nil)
}

func startPythonEnv(t *testing.T, code string, env []string) (stdout, stderr string, err error) {
	t.Helper()
	requireRoot(t)
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		requireOrSkip(t, "/usr/bin/python3 is missing (apt-get install python3)")
	}
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	cmd, err := Start(Config{
		Path: "/usr/bin/python3", Args: []string{"python3", "-s", "-c", code},
		Env:     append([]string{"PATH=/usr/bin:/bin"}, env...),
		Files:   map[string][]byte{"hello": []byte("hi")},
		HostUID: 3_000_000, HostGID: 3_000_000, IDCount: 65536,
		Stderr: errW, ExtraFiles: []*os.File{outW},
	})
	outW.Close()
	errW.Close()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	var o, e bytes.Buffer
	done := make(chan struct{})
	go func() { o.ReadFrom(outR); close(done) }()
	e.ReadFrom(errR)
	<-done
	err = cmd.Wait()
	return o.String(), e.String(), err
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		requireOrSkip(t, "the sandbox needs root (CAP_SYS_ADMIN) to map a uid range and manage cgroups")
	}
}

// requireOrSkip skips outside CI and fails on CI, where every
// prerequisite must be installed.
func requireOrSkip(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("prerequisite missing on CI: %s", why)
	}
	t.Skip(why)
}

func TestOuterSandboxView(t *testing.T) {
	code := `
import os, socket
out = os.fdopen(3, "w")
def say(k, v): print(k + "=" + repr(v), file=out)
say("root", sorted(os.listdir("/")))
say("uid", (os.getuid(), os.getgid()))
say("pid", os.getpid())
say("hostname", socket.gethostname())
say("file", open("/run/codeexec/hello").read())
status = dict(l.split(":", 1) for l in open("/proc/self/status"))
say("nnp", status["NoNewPrivs"].strip())
say("net", sorted(os.listdir("/sys/class/net")) if os.path.exists("/sys/class/net") else None)
for p in ["/", "/usr/x", "/etc/x", "/run/codeexec/x"]:
    try:
        open(p if p != "/" else "/x", "w"); say("write " + p, "ok")
    except OSError as e:
        say("write " + p, e.errno)
open("/tmp/x", "w").write("ok"); say("tmp", "ok")
import numpy
say("numpy", int(numpy.arange(10).sum()))
`
	out, errOut, err := startPython(t, code)
	if err != nil {
		t.Fatalf("sandboxed python: %v\nstderr: %s", err, errOut)
	}
	for _, want := range []string{
		"root=['bin', 'dev', 'etc', 'lib', 'lib64', 'mnt', 'proc', 'run', 'sbin', 'tmp', 'usr', 'var']",
		"uid=(0, 0)", "pid=1", "nnp='1'", "hostname='sandbox'", "file='hi'",
		"write /=30", "write /usr/x=30", "write /etc/x=30", "write /run/codeexec/x=30",
		"tmp='ok'", "numpy=45",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("sandbox view lacks %q; got:\n%s\nstderr: %s", want, out, errOut)
		}
	}
}
