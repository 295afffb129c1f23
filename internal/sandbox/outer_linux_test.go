package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"codeexec/internal/testenv"
)

func startPython(t *testing.T, code string) (stdout, stderr string, err error) {
	t.Helper()
	return startPythonEnv(t, code, nil)
}

func startPythonEnv(t *testing.T, code string, env []string) (stdout, stderr string, err error) {
	t.Helper()
	return runSandbox(t, pythonConfig(t, code, env))
}

// pythonConfig is a sandbox that runs code with python3, which writes its
// results to fd 3.
func pythonConfig(t *testing.T, code string, env []string) Config {
	t.Helper()
	requireRoot(t)
	testenv.Python(t)
	return Config{
		Path: "/usr/bin/python3", Args: []string{"python3", "-s", "-c", code},
		Env:   append([]string{"PATH=/usr/bin:/bin"}, env...),
		Files: map[string][]byte{"hello": []byte("hi")},
	}
}

// runSandbox runs c to its end, with a test id range and a pipe as the
// program's fd 3, and returns what the program wrote to fd 3 and to
// standard error.
func runSandbox(t *testing.T, c Config) (stdout, stderr string, err error) {
	t.Helper()
	outR, outW, _ := os.Pipe()
	errR, errW, _ := os.Pipe()
	defer outR.Close()
	defer errR.Close()
	c.HostUID, c.HostGID, c.IDCount = 3_000_000, 3_000_000, 65536
	c.Stderr, c.ExtraFiles = errW, []*os.File{outW}
	cmd, err := Start(c)
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

// hostDir makes a directory that the sandbox can bind (not under /tmp,
// which the init mounts over) and removes it at the end of the test.
func hostDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "codeexec-sandbox-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func requireRoot(t *testing.T) {
	t.Helper()
	testenv.Root(t, "the sandbox needs root (CAP_SYS_ADMIN) to map a uid range and manage cgroups")
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
say("ssl", sorted(os.listdir("/etc/ssl")))
import ssl
paths = ssl.get_default_verify_paths()
say("verify", (os.path.realpath(paths.cafile), os.path.realpath(paths.capath)))
say("cas", ssl.create_default_context().cert_store_stats()["x509_ca"] > 0)
`
	// HTTPS through the egress proxy needs the host's CA certificates,
	// and nothing else of /etc/ssl (not /etc/ssl/private).
	const caFile = "/etc/ssl/certs/ca-certificates.crt"
	testenv.File(t, caFile, "ca-certificates")
	ssl := "ssl=['certs']"
	if _, err := os.Stat("/etc/ssl/openssl.cnf"); err == nil {
		ssl = "ssl=['certs', 'openssl.cnf']"
	}
	out, errOut, err := startPython(t, code)
	if err != nil {
		t.Fatalf("sandboxed python: %v\nstderr: %s", err, errOut)
	}
	for _, want := range []string{
		"root=['bin', 'dev', 'etc', 'lib', 'lib64', 'mnt', 'proc', 'run', 'sbin', 'tmp', 'usr', 'var']",
		"uid=(0, 0)", "pid=1", "nnp='1'", "hostname='sandbox'", "file='hi'",
		"write /=30", "write /usr/x=30", "write /etc/x=30", "write /run/codeexec/x=30",
		"tmp='ok'", "numpy=45",
		ssl, "verify=('" + caFile + "', '/etc/ssl/certs')", "cas=True",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("sandbox view lacks %q; got:\n%s\nstderr: %s", want, out, errOut)
		}
	}
}

// TestReadOnlyBindsAreRecursive writes into a writable mount that lies
// below a read-only bind: a bind with MS_REC brings submounts along, and
// each of them must be read-only too.
func TestReadOnlyBindsAreRecursive(t *testing.T) {
	requireRoot(t)
	dir := hostDir(t)
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	// Writable for everyone, so that only a read-only mount can refuse.
	if err := os.Chmod(dir, 0o1777); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", sub, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size=64k"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", sub, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(sub, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", sub, err)
		}
	})
	code := `
import os, sys
out = os.fdopen(3, "w")
for d in sys.argv[1:]:
    try:
        open(d + "/x", "w"); print(d, "ok", file=out)
    except OSError as e:
        print(d, e.errno, file=out)
`
	c := pythonConfig(t, code, nil)
	c.Args = append(c.Args, dir, sub)
	c.extraBinds = []string{dir}
	out, errOut, err := runSandbox(t, c)
	if err != nil {
		t.Fatalf("sandboxed python: %v\nstderr: %s", err, errOut)
	}
	want := fmt.Sprintf("%s %d\n%s %d\n", dir, unix.EROFS, sub, unix.EROFS)
	if out != want {
		t.Errorf("writes below a read-only bind printed %q, want %q (errno %d is EROFS)", out, want, unix.EROFS)
	}
}

// TestNoSupplementaryGroups gives the server supplementary groups and
// checks that the sandbox has none: inside they would show as 65534, but
// the kernel still grants their host group's access, here to a file only
// that group may read.
func TestNoSupplementaryGroups(t *testing.T) {
	requireRoot(t)
	const group = 4242 // a host gid outside the sandbox's range
	dir := hostDir(t)
	secret := filepath.Join(dir, "secret")
	if err := os.WriteFile(secret, []byte("host group's secret"), 0o040); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{os.Chmod(dir, 0o755), os.Chown(secret, 0, group), os.Chmod(secret, 0o040)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	// syscall.Setgroups applies to every thread of the process.
	orig, err := syscall.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Setgroups([]int{group}); err != nil {
		t.Fatalf("setgroups: %v", err)
	}
	t.Cleanup(func() {
		if err := syscall.Setgroups(orig); err != nil {
			t.Errorf("restore groups %v: %v", orig, err)
		}
	})
	code := `
import os, sys
out = os.fdopen(3, "w")
groups = [l for l in open("/proc/self/status") if l.startswith("Groups:")]
print(repr(groups[0].split(":", 1)[1].strip()), file=out)
try:
    print(repr(open(sys.argv[1]).read()), file=out)
except OSError as e:
    print(e.errno, file=out)
`
	c := pythonConfig(t, code, nil)
	c.Args = append(c.Args, secret)
	c.extraBinds = []string{dir}
	out, errOut, err := runSandbox(t, c)
	if err != nil {
		t.Fatalf("sandboxed python: %v\nstderr: %s", err, errOut)
	}
	if want := fmt.Sprintf("''\n%d\n", unix.EACCES); out != want {
		t.Errorf("groups and read of a group-readable host file printed %q, want %q (no groups, EACCES)", out, want)
	}
}

// TestSandboxOutlivesStartingThread starts a sandbox from a goroutine
// that then exits locked to its thread, which makes Go end the thread,
// and then ends more threads that way. Pdeathsig fires when the thread
// that forked the sandbox exits (golang/go#27505), so the sandbox lives
// only if Start forked it from a thread of its own.
func TestSandboxOutlivesStartingThread(t *testing.T) {
	code := `
import os, signal
signal.signal(signal.SIGTERM, lambda *_: os._exit(7))
os.write(3, b"ready")
while True:
    signal.pause()
`
	c := pythonConfig(t, code, nil)
	outR, outW, _ := os.Pipe()
	defer outR.Close()
	c.HostUID, c.HostGID, c.IDCount = 3_000_000, 3_000_000, 65536
	c.ExtraFiles = []*os.File{outW}
	var cmd *exec.Cmd
	var err error
	endLockedThread(t, func() { cmd, err = Start(c) })
	outW.Close()
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	for range 8 {
		endLockedThread(t, func() {})
	}
	// As pid 1 of its namespace the program gets SIGTERM only once it has
	// a handler: wait for it to say so (or to die).
	buf := make([]byte, 5)
	if _, err := io.ReadFull(outR, buf); err != nil {
		t.Errorf("read the sandbox's ready: %v", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); cmd.ProcessState.ExitCode() != 7 {
		t.Errorf("sandbox after its starting thread ended: %v, want exit status 7 from its SIGTERM handler", err)
	}
}

// endLockedThread runs f in a goroutine locked to a thread that ends with
// the goroutine, and returns once the thread is gone.
func endLockedThread(t *testing.T, f func()) {
	t.Helper()
	tids := make(chan int)
	for {
		go func() {
			runtime.LockOSThread()
			tid := unix.Gettid()
			if tid == unix.Getpid() {
				// Go never ends the main thread: hold it until the test
				// ends so that the next goroutine gets another one.
				tids <- 0
				<-t.Context().Done()
				return
			}
			f()
			tids <- tid
		}()
		if tid := <-tids; tid != 0 {
			for {
				if _, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", tid)); errors.Is(err, os.ErrNotExist) {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}
	}
}
