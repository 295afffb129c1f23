package executor

// The adversarial suite of issue 2: each case is a real victim program that
// tries an attack through Executor.Execute (or a Session) and must fail
// safely, with a clear status, leaving the host untouched and the executor
// fine for the next execution. Every case runs on one shared executor to keep
// the suite fast; the executor is checked for leaked processes, cgroups,
// mounts and goroutines after it is closed.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// adversarialHostUID is the first host uid of the adversarial executor's
// range. It differs from the default so that another test binary running at
// the same time (go test ./...) cannot confuse the leak check.
const adversarialHostUID = 1_600_000_000

// hostSecretEnv is set in the test process before the executor starts; no
// sandbox may see it.
const (
	hostSecretEnv   = "CODEEXEC_TEST_SECRET"
	hostSecretValue = "hunter2"
)

// newCheckedExecutor is newTestExecutor with leak checks that run after the
// executor is closed: no process with a uid of its range, no cgroup of it,
// no new mount in the test's (the host's) mount namespace and no goroutine
// may be left.
func newCheckedExecutor(t *testing.T, cfg Config) *Executor {
	t.Helper()
	if cfg.HostUID == 0 {
		cfg.HostUID = adversarialHostUID
	}
	var cgDir string
	mounts := hostMounts(t)
	goroutines := goleak.IgnoreCurrent()
	// Cleanups run last-in first-out: this one runs after newTestExecutor's
	// Close.
	t.Cleanup(func() {
		checkNoLeaks(t, cfg.HostUID, cgDir)
		var added []string
		for _, m := range hostMounts(t) {
			if !slices.Contains(mounts, m) {
				added = append(added, m)
			}
		}
		if len(added) > 0 {
			t.Errorf("mounts appeared on the host while the executor ran: %q", added)
		}
		goleak.VerifyNone(t, goroutines)
	})
	e := newTestExecutor(t, cfg)
	cgDir = path.Dir(e.pool().zcg.Path())
	return e
}

// checkNoLeaks fails t if a process whose uid lies in the sandbox range of
// hostUID is still alive, or if the executor's cgroup directory cgDir (a
// path relative to the hierarchy roots, "" if unknown) still exists in any
// hierarchy, v1 or v2.
func checkNoLeaks(t *testing.T, hostUID int, cgDir string) {
	t.Helper()
	waitNoProcs(t, hostUID, hostUID+IDRange, 10*time.Second)
	if cgDir == "" {
		return
	}
	for _, root := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup"} {
		dir := filepath.Join(root, cgDir)
		if _, err := os.Stat(dir); err == nil {
			entries, _ := os.ReadDir(dir)
			var names []string
			for _, e := range entries {
				if e.IsDir() {
					names = append(names, e.Name())
				}
			}
			t.Errorf("cgroup %s outlived its executor (children %q)", dir, names)
		}
	}
}

// sandboxProcs lists the host processes any of whose uids (real, effective,
// saved, fs) lie in [lo, hi).
func sandboxProcs(lo, hi int) []string {
	entries, _ := os.ReadDir("/proc")
	var procs []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		status, err := os.ReadFile("/proc/" + e.Name() + "/status")
		if err != nil {
			continue // gone meanwhile
		}
		for _, line := range strings.Split(string(status), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "Uid:" {
				continue
			}
			for _, s := range f[1:] {
				if uid, _ := strconv.Atoi(s); uid >= lo && uid < hi {
					cmd, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
					procs = append(procs, fmt.Sprintf("pid %s uid %d %q", e.Name(), uid, bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
					break
				}
			}
		}
	}
	return procs
}

// waitNoProcs waits up to within for every host process with a uid in
// [lo, hi) to be gone.
func waitNoProcs(t *testing.T, lo, hi int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		procs := sandboxProcs(lo, hi)
		if len(procs) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d sandbox processes (uids %d..%d) still alive %v later: %q", len(procs), lo, hi-1, within, procs)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hostMounts returns the mount points of the test's mount namespace.
func hostMounts(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 4 {
			points = append(points, f[4])
		}
	}
	slices.Sort(points)
	return points
}

// uidPreamble runs before every case's code: it prints the sandbox uid so
// that the test can look for the child's processes on the host.
const uidPreamble = "import os as _ce_os\nprint('UID=%d' % _ce_os.getuid(), flush=True)\ndel _ce_os\n"

var uidLine = regexp.MustCompile(`(?m)^UID=(\d+)$`)

// adversary runs attacks on one executor.
type adversary struct {
	e *Executor
}

// attack is one case: code that tries something it must not achieve.
type attack struct {
	name   string
	code   string
	limits Limits
	sink   FileSink
	// maxWall bounds how long Execute may take (default 30 s, generous
	// for a loaded CI machine): longer means something hung.
	maxWall time.Duration
	check   func(t *testing.T, res *Result)
}

// run executes a, checks it, checks that no process of the child outlives
// the execution, and that the executor still runs code.
func (a *adversary) run(t *testing.T, at attack) {
	t.Helper()
	res := a.exec(t, Request{Code: uidPreamble + at.code, Limits: at.limits, Sink: at.sink}, at.maxWall)
	if at.check != nil {
		at.check(t, res)
	}
	a.noChildLeft(t, res)
	a.healthy(t)
}

// exec runs req once and returns its result, failing t on an error or when
// Execute takes longer than maxWall (default 30 s).
func (a *adversary) exec(t *testing.T, req Request, maxWall time.Duration) *Result {
	t.Helper()
	if maxWall == 0 {
		maxWall = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*maxWall)
	defer cancel()
	start := time.Now()
	res, err := a.e.Execute(ctx, req)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Execute: %v (after %v)", err, took)
	}
	logResult(t, res, took)
	if took > maxWall {
		t.Errorf("Execute took %v, want at most %v", took, maxWall)
	}
	return res
}

func logResult(t *testing.T, res *Result, took time.Duration) {
	t.Helper()
	t.Logf("status %s after %v, error %+v, truncated %+v, %d files, session_ended %v\nstdout: %s\nstderr: %s",
		res.Status, took.Round(time.Millisecond), res.Error, res.Truncated, len(res.Files), res.SessionEnded, clip(res.Stdout), clip(res.Stderr))
}

func clip(s string) string {
	if len(s) > 600 {
		return fmt.Sprintf("%s... (%d bytes)", s[:600], len(s))
	}
	return s
}

// noChildLeft checks that the host has no process left with the uid the
// case printed, and that the child's cgroup is removed.
func (a *adversary) noChildLeft(t *testing.T, res *Result) {
	t.Helper()
	m := uidLine.FindStringSubmatch(res.Stdout)
	switch {
	case m == nil && res.Status == StatusOK:
		t.Errorf("no UID= line in stdout: cannot check the child's processes")
		return
	case m == nil:
		// Stopped before its first line (a short timeout on a loaded
		// machine): the executor's leak check at the end still covers it.
		t.Logf("no UID= line in stdout: the child's processes are checked when the executor closes")
		return
	}
	uid, _ := strconv.Atoi(m[1])
	host := a.e.cfg.HostUID + uid
	waitNoProcs(t, host, host+1, 10*time.Second)
	// Child id N has uid childUIDBase+N (while N is small) and the cgroup
	// cN in every hierarchy.
	name := fmt.Sprintf("c%d", uid-childUIDBase)
	for deadline := time.Now().Add(10 * time.Second); ; {
		var left []string
		for _, root := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup"} {
			dir := filepath.Join(root, path.Dir(a.e.pool().zcg.Path()), name)
			if _, err := os.Stat(dir); err == nil {
				left = append(left, dir)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("the child's cgroup outlived it by 10 s: %q", left)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// healthy checks that the next execution on the executor is fine.
func (a *adversary) healthy(t *testing.T) {
	t.Helper()
	res := a.exec(t, Request{Code: `print("ok")`}, 0)
	if res.Status != StatusOK || res.Stdout != "ok\n" {
		t.Errorf("next Execute(print(\"ok\")) = status %s, stdout %q, error %+v; want ok", res.Status, res.Stdout, res.Error)
	}
}

// newSession opens a session, closed when t ends.
func (a *adversary) newSession(t *testing.T) *Session {
	t.Helper()
	s, err := a.e.NewSession(context.Background(), 0)
	if err != nil {
		t.Fatalf("NewSession: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

// sessionExec runs req in s, failing t on an error.
func sessionExec(t *testing.T, s *Session, req Request) *Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	res, err := s.Execute(ctx, req)
	if err != nil {
		t.Fatalf("Session.Execute: %v", err)
	}
	logResult(t, res, time.Since(start))
	return res
}

// Checks shared by the cases.

func wantStatus(t *testing.T, res *Result, want ...Status) {
	t.Helper()
	if !slices.Contains(want, res.Status) {
		t.Errorf("status = %s (error %+v), want one of %v", res.Status, res.Error, want)
	}
}

func wantError(t *testing.T, res *Result, status Status, substr ...string) {
	t.Helper()
	wantStatus(t, res, status)
	if res.Error == nil {
		t.Errorf("error = nil, want one mentioning %q", substr)
		return
	}
	text := res.Error.Name + ": " + res.Error.Value
	for _, s := range substr {
		if !strings.Contains(text, s) {
			t.Errorf("error = %q, want it to mention %q", text, s)
		}
	}
}

func wantStdout(t *testing.T, res *Result, substr ...string) {
	t.Helper()
	for _, s := range substr {
		if !strings.Contains(res.Stdout, s) {
			t.Errorf("stdout = %s\nwant it to contain %q", clip(res.Stdout), s)
		}
	}
}

func wantNotInOutput(t *testing.T, res *Result, substr ...string) {
	t.Helper()
	for _, s := range substr {
		if strings.Contains(res.Stdout, s) || strings.Contains(res.Stderr, s) {
			t.Errorf("output contains %q:\nstdout: %s\nstderr: %s", s, clip(res.Stdout), clip(res.Stderr))
		}
	}
}

func wantNoFiles(t *testing.T, res *Result) {
	t.Helper()
	if len(res.Files) != 0 {
		t.Errorf("files = %+v, want none", res.Files)
	}
}

// pyList renders strings as a Python list literal.
func pyList(ss []string) string {
	var b strings.Builder
	b.WriteString("[")
	for i, s := range ss {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(s)) // ASCII paths: a Go quoted string is a valid Python literal
	}
	b.WriteString("]")
	return b.String()
}

func TestAdversarial(t *testing.T) {
	// The secret must be in the environment before the executor (and its
	// zygote) starts: that is when it could leak.
	t.Setenv(hostSecretEnv, hostSecretValue)
	e := newCheckedExecutor(t, Config{PoolSize: 3, DataWarmup: true})
	a := &adversary{e: e}

	t.Run("host files", a.testHostFiles)
	t.Run("write host", a.testWriteHost)
	t.Run("processes", a.testProcesses)
	t.Run("privileges", a.testPrivileges)
	t.Run("syscalls", a.testSyscalls)
	t.Run("i386 and x32", a.testForeignABIs)
	t.Run("network", a.testNetwork)
	t.Run("resources", a.testResources)
	t.Run("session limits", a.testSessionLimits)
	t.Run("output", a.testOutput)
	t.Run("file system limits", a.testFileLimits)
	t.Run("links in work dir", a.testLinks)
	t.Run("protocol", a.testProtocol)
	t.Run("wall time", a.testWallTime)
	t.Run("frames", a.testFrames)
	t.Run("shared kernel limits", a.testSharedKernelLimits)
	t.Run("single-use isolation", a.testIsolation)
	t.Run("environment", a.testEnvironment)
}

// testHostFiles: nothing of the host beyond /usr and a few /etc files is
// readable, in particular not the service's own binary, its data, /root,
// /etc/shadow or the source tree.
func (a *adversary) testHostFiles(t *testing.T) {
	secret := "host-secret-" + newNonce()
	dataDir := t.TempDir() // stands for the service's data directory
	if err := os.WriteFile(filepath.Join(dataDir, "secret.txt"), []byte(secret), 0o644); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	paths := []string{
		"/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/root", "/root/.bash_history", "/root/.ssh",
		"/home", "/work", "/work/main/go.mod", "/var/lib", "/var/log", "/boot", "/srv", "/opt",
		os.Args[0], filepath.Dir(os.Args[0]), self,
		dataDir, filepath.Join(dataDir, "secret.txt"),
		"/proc/1/root/etc/shadow", "/proc/1/root" + self, "/proc/1/root/root", "/proc/1/root" + dataDir,
		fmt.Sprintf("/proc/%d/environ", os.Getpid()), fmt.Sprintf("/proc/%d/root/etc/shadow", os.Getpid()),
		"/proc/kcore", "/proc/sysrq-trigger", "/dev/mem", "/dev/kmsg", "/dev/sda", "/dev/vda",
		"/sys/fs/cgroup", "/sys/class/net", "/sys/firmware", "/run/systemd", "/var/run/docker.sock",
	}
	code := `import os
for p in ` + pyList(paths) + `:
    try:
        if os.path.isdir(p):
            print("LISTED", p, os.listdir(p)[:5])
        else:
            with open(p, "rb") as f:
                print("READ", p, f.read(64))
    except OSError as e:
        print("denied", p, type(e).__name__)
`
	a.run(t, attack{name: "host files", code: code, check: func(t *testing.T, res *Result) {
		wantStatus(t, res, StatusOK)
		for _, line := range strings.Split(res.Stdout, "\n") {
			if strings.HasPrefix(line, "READ") || strings.HasPrefix(line, "LISTED") {
				t.Errorf("the sandbox could read a host path: %s", line)
			}
		}
		if n := strings.Count(res.Stdout, "denied "); n != len(paths) {
			t.Errorf("%d paths denied, want %d", n, len(paths))
		}
		wantNotInOutput(t, res, secret)
	}})
}

// testWriteHost: / and /usr are read-only, and nothing written reaches the
// host.
func (a *adversary) testWriteHost(t *testing.T) {
	nonce := newNonce()[:12]
	creates := []string{"/usr/evil-" + nonce, "/evil-" + nonce, "/etc/evil-" + nonce, "/usr/lib/evil-" + nonce,
		"/usr/bin/evil-" + nonce, "/run/codeexec/evil-" + nonce, "/proc/evil-" + nonce}
	opens := []string{"/usr/bin/python3", "/etc/passwd", "/etc/hosts", "/etc/ld.so.cache", "/run/codeexec/runner.py",
		"/proc/sys/kernel/hostname", "/proc/sys/kernel/core_pattern", "/proc/sysrq-trigger",
		"/sys/kernel/mm/transparent_hugepage/enabled"}
	// A decoy in the host's /usr is what the code tries to change, so that
	// a broken sandbox damages nothing the machine needs.
	decoy := "/usr/lib/codeexec-adversarial-" + nonce
	if err := os.WriteFile(decoy, []byte("decoy"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(decoy); os.Remove(decoy + ".x") })
	st0, err := os.Stat(decoy)
	if err != nil {
		t.Fatal(err)
	}
	thp0, _ := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled")
	code := `import os
for p in ` + pyList(creates) + `:
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.close(fd)
        print("CREATED", p)
    except OSError as e:
        print("denied create", p, type(e).__name__)
    try:
        os.mkdir(p + ".d")
        print("CREATED", p + ".d")
    except OSError as e:
        print("denied mkdir", p, type(e).__name__)
# Opening for writing is the privilege check; nothing is written even if it
# succeeded, so a broken sandbox cannot damage the host's files.
for p in ` + pyList(opens) + `:
    try:
        os.close(os.open(p, os.O_WRONLY))
        print("OPENED FOR WRITING", p)
    except OSError as e:
        print("denied open", p, type(e).__name__)
decoy = "` + decoy + `"
print("decoy reads", open(decoy).read())  # the host's /usr is visible, read-only
for what, f in [("open decoy", lambda: os.close(os.open(decoy, os.O_WRONLY))),
                ("chmod", lambda: os.chmod(decoy, 0o4777)),
                ("chown", lambda: os.chown(decoy, os.getuid(), -1)),
                ("unlink", lambda: os.unlink(decoy)),
                ("rename", lambda: os.rename(decoy, decoy + ".x")),
                ("utime", lambda: os.utime(decoy, (0, 0))),
                ("truncate", lambda: os.truncate(decoy, 0)),
                ("unlink /etc/passwd", lambda: os.unlink("/etc/passwd")),
                ("symlink", lambda: os.symlink("/tmp", "/usr/evil-link-` + nonce + `"))]:
    try:
        f()
        print("SUCCEEDED", what)
    except OSError as e:
        print("denied", what, type(e).__name__)
`
	a.run(t, attack{name: "write host", code: code, check: func(t *testing.T, res *Result) {
		wantStatus(t, res, StatusOK)
		wantStdout(t, res, "decoy reads decoy\n")
		for _, bad := range []string{"CREATED", "OPENED FOR WRITING", "SUCCEEDED"} {
			if strings.Contains(res.Stdout, bad) {
				t.Errorf("the sandbox wrote to the host (%s):\n%s", bad, res.Stdout)
			}
		}
		for _, p := range append(creates, "/usr/evil-link-"+nonce) {
			for _, q := range []string{p, p + ".d"} {
				if _, err := os.Lstat(q); err == nil {
					t.Errorf("%s exists on the host", q)
					os.Remove(q)
				}
			}
		}
		if st, err := os.Stat(decoy); err != nil || st.Mode() != st0.Mode() || st.Size() != st0.Size() || !st.ModTime().Equal(st0.ModTime()) {
			t.Errorf("the decoy %s changed: %v %v", decoy, st, err)
		}
		if thp, _ := os.ReadFile("/sys/kernel/mm/transparent_hugepage/enabled"); !bytes.Equal(thp, thp0) {
			t.Errorf("transparent_hugepage/enabled changed: %q -> %q", thp0, thp)
		}
	}})
}

// testProcesses: a sandbox sees only its own processes: not the host's,
// not the zygote, not another sandbox's; and it can signal none of them.
func (a *adversary) testProcesses(t *testing.T) {
	// Another sandbox with a recognisable background process.
	other := a.newSession(t)
	mark := "other-sandbox-" + newNonce()[:12]
	res := sessionExec(t, other, Request{Code: uidPreamble + `import subprocess
p = subprocess.Popen(["/bin/sh", "-c", "exec sleep 1000", "` + mark + `"])
print("started", p.pid)`})
	wantStatus(t, res, StatusOK)
	// The host sees the other sandbox's two processes under its uid: the
	// leak checks, which look for such processes, do find them.
	if m := uidLine.FindStringSubmatch(res.Stdout); m == nil {
		t.Errorf("no UID= line from the other sandbox")
	} else {
		uid, _ := strconv.Atoi(m[1])
		if procs := sandboxProcs(a.e.cfg.HostUID+uid, a.e.cfg.HostUID+uid+1); len(procs) != 2 {
			t.Errorf("host sees the other sandbox's processes as %q, want its runner and sleep", procs)
		}
	}

	code := `import os, signal
pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
print("PIDS", pids)
print("PID", os.getpid(), "PPID", os.getppid())
for p in pids:
    if p == os.getpid():
        continue  # itself: a fork of the zygote, with the zygote's command line
    cmd = open("/proc/%d/cmdline" % p, "rb").read()
    if b"zygote" in cmd or b"` + mark + `" in cmd or b"codeexec" in cmd or b"sleep" in cmd:
        print("FOREIGN", p, cmd)
alive = []
for p in range(2, 33000):
    try:
        os.kill(p, 0)
        alive.append(p)
    except ProcessLookupError:
        pass
    except PermissionError:
        alive.append(p)
print("ALIVE", alive)
# kill(-1) signals every process the caller may signal except itself
# (kill(2)): it must not reach beyond the sandbox.
try:
    os.kill(-1, signal.SIGKILL)
except ProcessLookupError:
    pass  # nothing it may signal
print("after kill -1")
`
	a.run(t, attack{name: "process list", code: code, maxWall: 30 * time.Second, check: func(t *testing.T, res *Result) {
		wantStatus(t, res, StatusOK)
		wantStdout(t, res, "PIDS [1]\n", "PID 1 PPID 0\n", "ALIVE []\n", "after kill -1")
		wantNotInOutput(t, res, "FOREIGN")
	}})
	// The other sandbox and its process survived kill(-1).
	if !other.c.alive() {
		t.Errorf("another sandbox died when this one ran kill(-1, SIGKILL)")
	}
	res = sessionExec(t, other, Request{Code: `p.poll() is None`})
	if res.Status != StatusOK || res.Result["text/plain"] != "True" {
		t.Errorf("the other sandbox's background process: %+v", res)
	}
}

// testPrivileges: the code runs without capabilities, with no_new_privs and
// seccomp, and cannot become root.
func (a *adversary) testPrivileges(t *testing.T) {
	code := `import os
st = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
for k in ("CapInh", "CapPrm", "CapEff", "CapAmb", "NoNewPrivs", "Seccomp"):
    print(k, st[k].strip())
print("uid", os.getresuid(), "gid", os.getresgid(), "groups", os.getgroups())
for what, f in [("setuid", lambda: os.setuid(0)), ("setgid", lambda: os.setgid(0)),
                ("setresuid", lambda: os.setresuid(0, 0, 0)), ("setgroups", lambda: os.setgroups([0]))]:
    try:
        f()
        print("SUCCEEDED", what)
    except OSError as e:
        print("denied", what, type(e).__name__)
`
	a.run(t, attack{name: "privileges", code: code, check: func(t *testing.T, res *Result) {
		wantStatus(t, res, StatusOK)
		wantStdout(t, res, "CapPrm 0000000000000000\n", "CapEff 0000000000000000\n", "CapAmb 0000000000000000\n",
			"NoNewPrivs 1\n", "Seccomp 2\n")
		wantNotInOutput(t, res, "SUCCEEDED", "uid (0,")
	}})
}

// testSyscalls: the dangerous system calls, made directly through ctypes,
// fail with EPERM and change nothing.
func (a *adversary) testSyscalls(t *testing.T) {
	tests := []struct {
		name  string
		setup string // Python run before the call
		call  string // arguments of libc.syscall
	}{
		{"unshare CLONE_NEWUSER", "", "L(272), L(0x10000000)"},
		{"unshare CLONE_NEWNS", "", "L(272), L(0x00020000)"},
		{"unshare CLONE_NEWNET", "", "L(272), L(0x40000000)"},
		{"clone CLONE_NEWUSER", "", "L(56), L(0x10000000 | 17), L(0), L(0), L(0), L(0)"},
		{"setns", `fd = os.open("/proc/self/ns/mnt", os.O_RDONLY)`, "L(308), L(fd), L(0)"},
		{"mount", "", `L(165), b"tmpfs", b"/tmp", b"tmpfs", L(0), None`},
		{"umount2", "", `L(166), b"/tmp", L(2)`},
		{"pivot_root", "", `L(155), b"/tmp", b"/tmp"`},
		{"chroot", "", `L(161), b"/tmp"`},
		{"ptrace PTRACE_TRACEME", "", "L(101), L(0), L(0), L(0), L(0)"},
		{"process_vm_readv", iovSetup, "L(310), L(os.getpid()), ctypes.byref(li), L(1), ctypes.byref(ri), L(1), L(0)"},
		{"process_vm_writev", iovSetup, "L(311), L(os.getpid()), ctypes.byref(li), L(1), ctypes.byref(ri), L(1), L(0)"},
		// BPF_MAP_CREATE of an array map (bpf(2)).
		{"bpf", `struct.pack_into("<IIII", buf, 0, 2, 4, 4, 1)`, "L(321), L(0), buf, L(128)"},
		// A software task-clock counter on ourselves, excluding the kernel:
		// allowed without privileges up to perf_event_paranoid=2.
		{"perf_event_open", `struct.pack_into("<IIQ", buf, 0, 1, 128, 1); struct.pack_into("<Q", buf, 40, 0x60)`, "L(298), buf, L(0), L(-1), L(-1), L(0)"},
		// O_CLOEXEC | UFFD_USER_MODE_ONLY: allowed to unprivileged users.
		{"userfaultfd", "", "L(323), L(0x80000 | 1)"},
		{"io_uring_setup", "", "L(425), L(4), buf"},
		// KEYCTL_GET_KEYRING_ID of KEY_SPEC_SESSION_KEYRING, creating it.
		{"keyctl", "", "L(250), L(0), L(-3), L(1)"},
		{"add_key", "", `L(248), b"user", b"codeexec", b"x", L(1), L(-3)`},
		{"request_key", "", `L(249), b"user", b"codeexec", None, L(0)`},
		{"kcmp", "", "L(312), L(os.getpid()), L(os.getpid()), L(0), L(0), L(1)"},
		{"pidfd_getfd", "pfd = os.pidfd_open(os.getpid())", "L(438), L(pfd), L(0), L(0)"},
		{"name_to_handle_at", `struct.pack_into("<I", buf, 0, 128); mnt = ctypes.c_int()`, `L(303), L(-100), b"/usr", buf, ctypes.byref(mnt), L(0)`},
		{"open_by_handle_at", "", "L(304), L(-100), buf, L(0)"},
		{"kexec_load", "", "L(246), L(0), L(0), None, L(0)"},
		{"init_module", "", `L(175), buf, L(16), b""`},
		{"mknod char device", "", `L(133), b"/tmp/mem", L(0o20666), L(0x0101)`},
		// ioctl(0, 1<<32|TIOCSTI): the kernel uses only the low 32 bits.
		{"ioctl TIOCSTI high bits", "", "L(16), L(0), L((1 << 32) | 0x5412), buf"},
		{"personality ADDR_NO_RANDOMIZE", "", "L(135), L(0x0040000)"},
		{"socket AF_NETLINK", "", "L(41), L(16), L(3), L(0)"},
		{"socket AF_PACKET", "", "L(41), L(17), L(3), L(0)"},
		{"socket AF_VSOCK", "", "L(41), L(40), L(1), L(0)"},
		{"socket AF_ALG", "", "L(41), L(38), L(5), L(0)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code := syscallPrelude + tt.setup + "\nctypes.set_errno(0)\nr = libc.syscall(" + tt.call + ")\n" + syscallEpilogue
			a.run(t, attack{name: tt.name, code: code, check: func(t *testing.T, res *Result) {
				wantStatus(t, res, StatusOK)
				wantStdout(t, res, "RESULT -1 EPERM\n", "UNCHANGED\n")
			}})
		})
	}
}

const syscallPrelude = `import ctypes, errno, os, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
buf = ctypes.create_string_buffer(4096)
def state():
    ns = {n: os.readlink("/proc/self/ns/" + n) for n in ("user", "mnt", "net", "pid", "uts", "ipc", "cgroup")}
    return ns, sorted(os.listdir("/")), open("/proc/self/mountinfo").read(), os.getresuid(), [l for l in open("/proc/self/status").read().splitlines() if l.startswith("Cap")]
before = state()
`

const syscallEpilogue = `err = ctypes.get_errno()
if r == 0 and os.getpid() != 1:
    os._exit(0)  # a clone that succeeded: the copy leaves at once
print("RESULT", r, errno.errorcode.get(err, err))
print("UNCHANGED" if state() == before else "CHANGED")
`

const iovSetup = `class Iov(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
src = ctypes.create_string_buffer(b"secret", 16)
dst = ctypes.create_string_buffer(16)
li, ri = Iov(ctypes.addressof(dst), 16), Iov(ctypes.addressof(src), 16)`

// i386Prelude maps a page below 4 GiB (MAP_32BIT) where i386(nr, a, b, c)
// assembles `push rbx; mov eax, nr; mov ebx, a; mov ecx, b; mov edx, c;
// int 0x80; pop rbx; ret` and calls it; cstr places a string there too.
const i386Prelude = `import ctypes, mmap, os, signal, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
page = libc.mmap(None, 4096, mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC,
                 mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x40, -1, 0)
assert page and page < 1 << 32, page
def cstr(s):
    ctypes.memmove(page + 2048, s + b"\0", len(s) + 1)
    return page + 2048
def i386(nr, a=0, b=0, c=0):
    u = lambda v: struct.pack("<I", v & 0xffffffff)
    code = b"\x53\xb8" + u(nr) + b"\xbb" + u(a) + b"\xb9" + u(b) + b"\xba" + u(c) + b"\xcd\x80\x5b\xc3"
    ctypes.memmove(page, code, len(code))
    return ctypes.CFUNCTYPE(ctypes.c_int)(page)()
`

// testForeignABIs: a system call through the i386 ABI (int 0x80) or with an
// x32 number kills the process before it takes effect.
func (a *adversary) testForeignABIs(t *testing.T) {
	const wrote = "FOREIGN-ABI-WRITE-WENT-THROUGH"
	killedBy := func(signals ...string) func(t *testing.T, res *Result) {
		return func(t *testing.T, res *Result) {
			wantStatus(t, res, StatusKilled)
			if res.Error == nil || !slices.ContainsFunc(signals, func(s string) bool { return strings.Contains(res.Error.Value, s) }) {
				t.Errorf("error = %+v, want it to name one of %q", res.Error, signals)
			}
			wantStdout(t, res, "before\n")
			wantNotInOutput(t, res, "SURVIVED", wrote)
			wantNoFiles(t, res)
		}
	}
	// This hypervisor answers int 0x80 with SIGSEGV before seccomp sees
	// it; on other machines the filter kills with SIGSYS. Either way the
	// call must not happen, which the write and creat cases prove.
	i386 := []struct{ name, call string }{
		{"getpid", "i386(20)"},
		{"write", `i386(4, 1, cstr(b"` + wrote + `\n"), ` + strconv.Itoa(len(wrote)+1) + `)`},
		{"creat in work dir", `i386(8, cstr(b"/mnt/data/i386-created"), 0o644)`},
		{"unshare CLONE_NEWUSER", "i386(310, 0x10000000)"},
		{"chroot", `i386(61, cstr(b"/tmp"))`},
		{"mount", `i386(21, cstr(b"none"), cstr(b"/tmp"), cstr(b"tmpfs"))`},
	}
	for _, tt := range i386 {
		t.Run("i386 "+tt.name, func(t *testing.T) {
			code := i386Prelude + "print('before', flush=True)\nr = " + tt.call + "\nprint('SURVIVED', r)\n"
			a.run(t, attack{code: code, check: killedBy("SIGSYS", "SIGSEGV")})
		})
	}
	// The same from a forked process, so that the sandbox itself can look
	// afterwards: the call left nothing behind and changed nothing.
	t.Run("i386 in a forked process", func(t *testing.T) {
		code := i386Prelude + `ns = os.readlink("/proc/self/ns/user")
pid = os.fork()
if pid == 0:
    i386(8, cstr(b"/mnt/data/i386-created"), 0o644)
    i386(39, cstr(b"/tmp/i386-dir"), 0o755)
    i386(310, 0x10000000)
    os._exit(0)
_, st = os.waitpid(pid, 0)
print("child", "killed by " + signal.Signals(os.WTERMSIG(st)).name if os.WIFSIGNALED(st) else "EXITED %d" % os.WEXITSTATUS(st))
print("files", os.listdir("/mnt/data"), os.path.exists("/tmp/i386-dir"), os.readlink("/proc/self/ns/user") == ns)
`
		a.run(t, attack{code: code, check: func(t *testing.T, res *Result) {
			wantStatus(t, res, StatusOK)
			if !strings.Contains(res.Stdout, "child killed by SIGSYS\n") && !strings.Contains(res.Stdout, "child killed by SIGSEGV\n") {
				t.Errorf("stdout = %q, want the child killed by SIGSYS or SIGSEGV", res.Stdout)
			}
			wantStdout(t, res, "files [] False True\n")
			wantNoFiles(t, res)
		}})
	})
	x32 := []struct{ name, call string }{
		{"getpid", "L(39 | X32)"},
		{"write", `L(1 | X32), L(1), ctypes.c_char_p(b"` + wrote + `\n"), L(` + strconv.Itoa(len(wrote)+1) + `)`},
		{"unshare CLONE_NEWUSER", "L(272 | X32), L(0x10000000)"},
		{"creat in work dir", `L(85 | X32), ctypes.c_char_p(b"/mnt/data/x32-created"), L(0o644)`},
	}
	for _, tt := range x32 {
		t.Run("x32 "+tt.name, func(t *testing.T) {
			code := `import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L, X32 = ctypes.c_long, 0x40000000
print("before", flush=True)
r = libc.syscall(` + tt.call + `)
print("SURVIVED", r, ctypes.get_errno())
`
			a.run(t, attack{code: code, check: killedBy("SIGSYS")})
		})
	}
}

// testNetwork: the sandbox has only a loopback interface, down; no route,
// no resolver; nothing on the host's loopback is reachable. The tests aim
// only at loopback, never at an address off this machine.
func (a *adversary) testNetwork(t *testing.T) {
	t.Run("interfaces", func(t *testing.T) {
		code := `import fcntl, os, socket, struct
# /sys is not mounted in the sandbox, and if_nameindex needs netlink,
# which seccomp denies: either may be absent, but never show more than lo.
print("sysnet", sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else "absent")
try:
    print("ifnames", sorted(n for _, n in socket.if_nameindex()))
except OSError as e:
    print("ifnames denied", type(e).__name__)
print("procnet", sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").read().splitlines()[2:]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, struct.pack("16sH", b"lo", 0))[:18])[1]  # SIOCGIFFLAGS
print("lo up", bool(flags & 1))
try:
    fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))  # SIOCSIFFLAGS
    print("RAISED lo")
except OSError as e:
    print("raise lo denied", type(e).__name__)
`
		a.run(t, attack{code: code, check: func(t *testing.T, res *Result) {
			wantStatus(t, res, StatusOK)
			wantStdout(t, res, "procnet ['lo']\n", "lo up False\n", "raise lo denied")
			if !strings.Contains(res.Stdout, "sysnet ['lo']\n") && !strings.Contains(res.Stdout, "sysnet absent\n") {
				t.Errorf("/sys/class/net shows more than lo")
			}
			if !strings.Contains(res.Stdout, "ifnames ['lo']\n") && !strings.Contains(res.Stdout, "ifnames denied") {
				t.Errorf("if_nameindex shows more than lo")
			}
			wantNotInOutput(t, res, "RAISED")
		}})
	})
	t.Run("no route", func(t *testing.T) {
		// A new network namespace has only the kernel's reject routes on lo
		// for IPv6 (RTF_REJECT, 0x0200); nothing may route anywhere.
		code := `rows = open("/proc/net/route").read().splitlines()[1:]
print("ipv4 routes", rows)
rows = [r.split() for r in open("/proc/net/ipv6_route").read().splitlines()]
print("ipv6 routes", [r for r in rows if not int(r[8], 16) & 0x0200])
`
		a.run(t, attack{code: code, check: func(t *testing.T, res *Result) {
			wantStatus(t, res, StatusOK)
			wantStdout(t, res, "ipv4 routes []\n", "ipv6 routes []\n")
		}})
	})
	t.Run("no resolver", func(t *testing.T) {
		// With an empty resolv.conf glibc asks 127.0.0.1:53, which is
		// unreachable with lo down: no packet leaves.
		code := `import socket, time
print("resolv.conf", repr(open("/etc/resolv.conf").read()))
start = time.monotonic()
try:
    print("RESOLVED", socket.getaddrinfo("example.com", 80))
except socket.gaierror as e:
    print("no resolver:", e)
print("took %.1f s" % (time.monotonic() - start))
print("localhost", socket.getaddrinfo("localhost", 80, socket.AF_INET)[0][4])
`
		a.run(t, attack{code: code, maxWall: 15 * time.Second, check: func(t *testing.T, res *Result) {
			wantStatus(t, res, StatusOK)
			wantStdout(t, res, "resolv.conf ''\n", "no resolver:", "localhost ('127.0.0.1', 80)")
			wantNotInOutput(t, res, "RESOLVED")
		}})
	})
	t.Run("host loopback", func(t *testing.T) {
		var accepted atomic.Int32
		listen := func(network, addr string) (port int) {
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Logf("listen %s %s: %v (skipping that address)", network, addr, err)
				return 0
			}
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepted.Add(1)
					c.Close()
				}
			}()
			t.Cleanup(func() { ln.Close(); wg.Wait() })
			if tcp, ok := ln.Addr().(*net.TCPAddr); ok {
				return tcp.Port
			}
			return 0
		}
		p4 := listen("tcp4", "127.0.0.1:0")
		p6 := listen("tcp6", "[::1]:0")
		abstract := "codeexec-test-" + newNonce()[:12]
		listen("unix", "@"+abstract)
		udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer udp.Close()
		pu := udp.LocalAddr().(*net.UDPAddr).Port
		code := fmt.Sprintf(`import errno, socket
def attempt(fam, typ, addr, data=None):
    s = socket.socket(fam, typ)
    s.settimeout(2)
    try:
        if data is None:
            s.connect(addr)
            return "CONNECTED"
        s.sendto(data, addr)
        return "sent"
    except OSError as e:
        return "failed " + errno.errorcode.get(e.errno, str(e.errno))
    finally:
        s.close()
print("tcp4", attempt(socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", %[1]d)))
print("tcp localhost", attempt(socket.AF_INET, socket.SOCK_STREAM, ("localhost", %[1]d)))
if %[2]d:
    print("tcp6", attempt(socket.AF_INET6, socket.SOCK_STREAM, ("::1", %[2]d)))
print("udp4", attempt(socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", %[3]d), b"x"))
print("abstract unix", attempt(socket.AF_UNIX, socket.SOCK_STREAM, "\0%[4]s"))
`, p4, p6, pu, abstract)
		a.run(t, attack{code: code, check: func(t *testing.T, res *Result) {
			wantStatus(t, res, StatusOK)
			wantStdout(t, res, "tcp4 failed", "tcp localhost failed", "abstract unix failed")
			wantNotInOutput(t, res, "CONNECTED")
			if n := accepted.Load(); n != 0 {
				t.Errorf("host listeners accepted %d connections from the sandbox", n)
			}
			udp.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, from, err := udp.ReadFrom(make([]byte, 16)); err == nil {
				t.Errorf("host UDP socket received %d bytes from %v", n, from)
			}
		}})
	})
}

// testResources: bombs and spins end with their own status and leave
// nothing behind.
func (a *adversary) testResources(t *testing.T) {
	mem := Limits{MemoryBytes: 256 << 20, Timeout: 20 * time.Second}
	tests := []attack{
		{
			name: "fork bomb",
			code: `import os
while True:
    try:
        os.fork()
    except OSError:
        pass
`,
			limits: Limits{Timeout: 2 * time.Second},
			check: func(t *testing.T, res *Result) {
				wantStatus(t, res, StatusTimeout, StatusKilled, StatusError)
			},
		},
		{
			name: "thread bomb",
			code: `import threading, time
n = 0
while True:
    threading.Thread(target=time.sleep, args=(100,), daemon=True).start()
    n += 1
`,
			limits: Limits{Timeout: 30 * time.Second},
			check: func(t *testing.T, res *Result) {
				// The pids cgroup (64 tasks) stops it: RuntimeError.
				wantError(t, res, StatusError, "RuntimeError", "can't start new thread")
			},
		},
		{
			name:   "memory bomb bytes",
			code:   "x = bytearray(2 << 30)\nprint('SURVIVED', len(x))",
			limits: mem,
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusMemoryLimit, "memory limit of 256 MiB")
				wantNotInOutput(t, res, "SURVIVED")
			},
		},
		{
			name:   "memory bomb numpy",
			code:   "import numpy as np\nx = np.ones(2**29)\nprint('SURVIVED', x.sum())",
			limits: mem,
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusMemoryLimit, "memory limit of 256 MiB")
				wantNotInOutput(t, res, "SURVIVED")
			},
		},
		{
			name:   "memory bomb small objects",
			code:   "x = []\nwhile True:\n    x.append(' ' * 100_000)\n",
			limits: mem,
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusMemoryLimit, "memory limit of 256 MiB")
			},
		},
		{
			name:   "memory bomb in a subprocess",
			code:   "import subprocess\nr = subprocess.run(['python3', '-c', 'x = bytearray(2 << 30)'])\nprint('SUBPROCESS', r.returncode)",
			limits: mem,
			check: func(t *testing.T, res *Result) {
				// The OOM killer takes the largest process of the cgroup,
				// the subprocess; the cell then carries on. Either way the
				// status says the limit was hit.
				wantError(t, res, StatusMemoryLimit, "memory limit of 256 MiB")
			},
		},
		{
			name:   "cpu spin",
			code:   "while True:\n    pass\n",
			limits: Limits{Timeout: 2 * time.Second},
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusTimeout, "timed out after 2 s")
			},
		},
		{
			name:   "sleep forever",
			code:   "import time\ntime.sleep(10**6)\n",
			limits: Limits{Timeout: time.Second},
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusTimeout, "timed out after 1 s")
			},
		},
		{
			name: "ignore SIGTERM and SIGINT",
			code: `import signal
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(s, signal.SIG_IGN)
while True:
    pass
`,
			limits: Limits{Timeout: time.Second},
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusTimeout, "timed out after 1 s")
			},
		},
		{
			name: "double-forked daemon",
			code: `import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for fd in (0, 1, 2):
            os.close(fd)
        time.sleep(30)  # far longer than the leak check waits
        open("/mnt/data/daemon-was-here", "w").write("x")
        os._exit(0)
    os._exit(0)
os.wait()
print("parent done")
`,
			check: func(t *testing.T, res *Result) {
				wantStatus(t, res, StatusOK)
				wantStdout(t, res, "parent done\n")
				// noChildLeft then checks from the host that the daemon is
				// gone well before it would wake.
			},
		},
		{
			name: "background spinner",
			code: `import subprocess
subprocess.Popen(["python3", "-c", "while True: pass"], start_new_session=True)
subprocess.Popen(["sleep", "1000"])
print("started")
`,
			check: func(t *testing.T, res *Result) {
				wantStatus(t, res, StatusOK)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { a.run(t, tt) })
	}
}

// testSessionLimits: in a session a timeout interrupts; code that ignores
// the interrupt loses its session, and nothing of it is left.
func (a *adversary) testSessionLimits(t *testing.T) {
	t.Run("interruptible spin", func(t *testing.T) {
		s := a.newSession(t)
		sessionExec(t, s, Request{Code: "x = 41"})
		res := sessionExec(t, s, Request{Code: "while True:\n    pass", Limits: Limits{Timeout: time.Second}})
		wantError(t, res, StatusTimeout, "timed out after 1 s", "interrupted and the session continues")
		if res.SessionEnded {
			t.Errorf("SessionEnded = true after an interruptible timeout")
		}
		res = sessionExec(t, s, Request{Code: "x + 1"})
		if res.Status != StatusOK || res.Result["text/plain"] != "42" {
			t.Errorf("session after the interrupt: status %s, result %v, want 42", res.Status, res.Result)
		}
	})
	t.Run("ignore SIGINT and SIGTERM", func(t *testing.T) {
		s := a.newSession(t)
		code := uidPreamble + `import signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
while True:
    pass
`
		start := time.Now()
		res := sessionExec(t, s, Request{Code: code, Limits: Limits{Timeout: time.Second}})
		if took := time.Since(start); took > time.Second+interruptGrace+5*time.Second {
			t.Errorf("Execute took %v", took)
		}
		wantError(t, res, StatusTimeout, "timed out after 1 s", "did not stop when interrupted")
		if !res.SessionEnded {
			t.Errorf("SessionEnded = false, want true")
		}
		if _, err := s.Execute(context.Background(), Request{Code: "print(1)"}); !errors.Is(err, ErrSessionEnded) {
			t.Errorf("Execute after the session ended: err = %v, want ErrSessionEnded", err)
		}
		select {
		case <-s.Done():
		case <-time.After(time.Second):
			t.Errorf("Done not closed after the session ended")
		}
		a.noChildLeft(t, res)
		a.healthy(t)
	})
	t.Run("catch KeyboardInterrupt forever", func(t *testing.T) {
		s := a.newSession(t)
		code := uidPreamble + `import time
while True:
    try:
        time.sleep(100)
    except KeyboardInterrupt:
        print("caught", flush=True)
`
		res := sessionExec(t, s, Request{Code: code, Limits: Limits{Timeout: time.Second}})
		wantError(t, res, StatusTimeout, "did not stop when interrupted")
		if !res.SessionEnded {
			t.Errorf("SessionEnded = false, want true")
		}
		a.noChildLeft(t, res)
		a.healthy(t)
	})
}

// testOutput: floods stop at the output limit with output_limit, the
// stream truncated to exactly the limit.
func (a *adversary) testOutput(t *testing.T) {
	const limit = 100_000
	lim := Limits{OutputBytes: limit}
	stdoutCut := func(t *testing.T, res *Result) {
		wantError(t, res, StatusOutputLimit, "stdout exceeded the output limit of 100000 bytes")
		if !res.Truncated.Stdout || len(res.Stdout) != limit {
			t.Errorf("truncated.stdout = %v, len(stdout) = %d; want true, %d", res.Truncated.Stdout, len(res.Stdout), limit)
		}
	}
	tests := []attack{
		{name: "stdout flood", code: "while True:\n    print('x' * 1000)\n", limits: lim, check: stdoutCut},
		{name: "stderr flood", code: "import sys\nwhile True:\n    sys.stderr.write('e' * 1000)\n", limits: lim, check: func(t *testing.T, res *Result) {
			wantError(t, res, StatusOutputLimit, "stderr exceeded the output limit of 100000 bytes")
			if !res.Truncated.Stderr || len(res.Stderr) != limit {
				t.Errorf("truncated.stderr = %v, len(stderr) = %d; want true, %d", res.Truncated.Stderr, len(res.Stderr), limit)
			}
		}},
		{name: "one huge line", code: "import sys\nsys.stdout.write('y' * (64 << 20))\n", limits: lim, check: stdoutCut},
		{name: "raw fd flood", code: "import os\nwhile True:\n    os.write(1, b'\\x00\\xff' * 50000)\n", limits: lim, check: stdoutCut},
		{name: "flood from a subprocess", code: "import subprocess\nsubprocess.run(['yes'])\n", limits: lim, check: stdoutCut},
		{
			name: "display flood",
			code: "while True:\n    display('z' * 200_000)\n",
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusOutputLimit, "display")
				size := 0
				for _, d := range res.Displays {
					for _, v := range d {
						if s, ok := v.(string); ok {
							size += len(s)
						}
					}
				}
				if size > int(maxFrameBytes) {
					t.Errorf("displays hold %d bytes, over the bound of %d", size, maxFrameBytes)
				}
			},
		},
		{
			name: "close stdout and stderr",
			code: "import os, sys\nos.close(1)\nos.close(2)\nsys.stdout = open(os.devnull, 'w')\n",
			check: func(t *testing.T, res *Result) {
				wantStatus(t, res, StatusOK)
			},
			maxWall: 15 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { a.run(t, tt) })
	}
}

// testFileLimits: inode, file-size and tmpfs-size limits give clear errors.
func (a *adversary) testFileLimits(t *testing.T) {
	enospc := func(t *testing.T, res *Result) {
		wantError(t, res, StatusError, "OSError", "No space left on device")
	}
	manyFiles := func(dir string) string {
		return fmt.Sprintf("for i in range(20000):\n    open('%s/f%%d' %% i, 'w').close()\n", dir)
	}
	fill := func(dir string) string {
		return fmt.Sprintf("with open('%s/fill', 'wb') as f:\n    while True:\n        f.write(b'x' * (1 << 20))\n", dir)
	}
	tests := []attack{
		{name: "thousands of files in work dir", code: manyFiles("/mnt/data"), check: func(t *testing.T, res *Result) {
			enospc(t, res)
			if len(res.Files) == 0 || len(res.Files) > maxListedFiles {
				t.Errorf("%d files listed, want 1..%d", len(res.Files), maxListedFiles)
			}
		}},
		{name: "thousands of files in /tmp", code: manyFiles("/tmp"), check: enospc},
		{name: "thousands of directories", code: "import os\nfor i in range(20000):\n    os.mkdir('/mnt/data/d%d' % i)\n", check: enospc},
		{name: "deep directories", code: "import os\nos.chdir('/mnt/data')\nfor i in range(1000):\n    os.mkdir('d')\n    os.chdir('d')\nopen('deep.txt', 'w').write('x')\n",
			check: func(t *testing.T, res *Result) {
				wantStatus(t, res, StatusOK)
			}},
		{
			name:   "file over the size limit",
			code:   "with open('/mnt/data/big', 'wb') as f:\n    f.write(b'x' * (2 << 20))\n",
			limits: Limits{FileBytes: 1 << 20},
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusError, "OSError", "File too large")
				for _, f := range res.Files {
					if f.Bytes > 1<<20 {
						t.Errorf("file %s has %d bytes, over the 1 MiB limit", f.Path, f.Bytes)
					}
				}
			},
		},
		{
			name:   "file over the size limit from a subprocess",
			code:   "import subprocess\nr = subprocess.run('head -c 2000000 /dev/zero > /mnt/data/big', shell=True)\nprint('exit', r.returncode)\n",
			limits: Limits{FileBytes: 1 << 20},
			check: func(t *testing.T, res *Result) {
				wantStatus(t, res, StatusOK)
				wantStdout(t, res, "exit 153\n") // the shell reports its child killed by SIGXFSZ (128+25)
			},
		},
		{name: "fill /tmp", code: fill("/tmp"), check: enospc},
		{name: "fill /dev/shm", code: fill("/dev/shm"), check: enospc},
		{
			name:   "fill work dir over the memory limit",
			code:   "for i in range(1000):\n    with open('/mnt/data/fill%d' % i, 'wb') as f:\n        f.write(b'x' * (8 << 20))\n",
			limits: Limits{MemoryBytes: 128 << 20},
			check: func(t *testing.T, res *Result) {
				// tmpfs pages count against the memory cgroup.
				wantStatus(t, res, StatusMemoryLimit, StatusError)
				if res.Status == StatusError {
					wantError(t, res, StatusError, "No space left on device")
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { a.run(t, tt) })
	}
}

// recordingSink is a FileSink that keeps what it is given.
type recordingSink struct {
	mu    sync.Mutex
	files map[string][]byte
}

func (s *recordingSink) Put(ctx context.Context, p string, size int64, r io.Reader) (string, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files == nil {
		s.files = map[string][]byte{}
	}
	s.files[p] = data
	return "file_" + strconv.Itoa(len(s.files)), nil
}

// testLinks: symlinks, FIFOs, sockets and hard links in /mnt/data never
// lead the host outside the work dir or block it.
func (a *adversary) testLinks(t *testing.T) {
	// A world-writable host directory, like the host's /tmp: the sandbox
	// cannot see it, but a symlink can name it, and the host writes files
	// for the child with the child's uid.
	hostDir, err := os.MkdirTemp("", "codeexec-adversarial-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(hostDir) })
	if err := os.Chmod(hostDir, 0o1777); err != nil {
		t.Fatal(err)
	}
	hostFile := filepath.Join(hostDir, "host.txt")
	if err := os.WriteFile(hostFile, []byte("host data"), 0o644); err != nil {
		t.Fatal(err)
	}
	plant := `import os, socket
os.chdir("/mnt/data")
os.symlink("/etc/passwd", "link")
os.symlink("` + hostFile + `", "hostlink")
os.symlink("` + hostDir + `", "hostdir")
os.symlink("/proc/self/root", "rootlink")
os.symlink("/", "dirlink")
os.symlink("..", "up")
os.symlink("/proc/1/fd/1", "fdlink")
os.mkfifo("fifo")
socket.socket(socket.AF_UNIX).bind("sock")
try:
    os.link("/etc/passwd", "hard")
    print("HARD LINKED /etc/passwd")
except OSError as e:
    print("hard link denied", type(e).__name__)
os.mkdir("sub")
os.symlink("/etc", "sub/etc")
open("real.txt", "w").write("hello")
os.link("real.txt", "real-hard.txt")
print("planted")
`
	regular := []string{"real-hard.txt", "real.txt"}
	hostUntouched := func(t *testing.T) {
		t.Helper()
		if data, err := os.ReadFile(hostFile); err != nil || string(data) != "host data" {
			t.Errorf("host file %s = %q, %v; want it untouched", hostFile, data, err)
		}
		entries, _ := os.ReadDir(hostDir)
		if len(entries) != 1 {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("host dir %s holds %q, want only host.txt", hostDir, names)
		}
	}
	t.Run("single use", func(t *testing.T) {
		sink := &recordingSink{}
		a.run(t, attack{code: plant, sink: sink, maxWall: 15 * time.Second, check: func(t *testing.T, res *Result) {
			wantStatus(t, res, StatusOK)
			wantStdout(t, res, "planted\n", "hard link denied")
			var got []string
			for _, f := range res.Files {
				got = append(got, f.Path)
			}
			if !slices.Equal(got, regular) {
				t.Errorf("files = %q, want %q", got, regular)
			}
			for p, data := range sink.files {
				if string(data) != "hello" {
					t.Errorf("sink got %s = %q, want %q", p, data, "hello")
				}
			}
			hostUntouched(t)
		}})
	})
	t.Run("session", func(t *testing.T) {
		s := a.newSession(t)
		res := sessionExec(t, s, Request{Code: plant})
		wantStdout(t, res, "planted\n")
		files, err := s.Files()
		if err != nil {
			t.Fatalf("Files: %v", err)
		}
		var got []string
		for _, f := range files {
			got = append(got, f.Path)
		}
		if !slices.Equal(got, regular) {
			t.Errorf("Files() = %q, want %q", got, regular)
		}
		for _, p := range []string{"link", "hostlink", "hostdir/host.txt", "rootlink/etc/passwd", "dirlink/etc/passwd",
			"up/etc/passwd", "fdlink", "fifo", "sock", "sub/etc/passwd", "sub"} {
			done := make(chan error, 1)
			go func() {
				f, _, err := s.Open(p)
				if f != nil {
					f.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err == nil {
					t.Errorf("Open(%q) succeeded, want an error", p)
				}
			case <-time.After(2 * time.Second):
				t.Fatalf("Open(%q) blocked", p)
			}
		}
		if f, _, err := s.Open("real-hard.txt"); err != nil {
			t.Errorf("Open(real-hard.txt): %v", err)
		} else {
			f.Close()
		}
		for _, p := range []string{"hostlink", "link", "fifo", "sock", "hostdir/new.txt", "hostdir/newdir/new.txt",
			"dirlink/tmp/new.txt", "rootlink/tmp/new.txt", "sub/etc/new.txt", "up/new.txt"} {
			done := make(chan error, 1)
			go func() { done <- s.WriteFile(context.Background(), DataFile(p, []byte("PWNED"))) }()
			select {
			case err := <-done:
				if err == nil {
					t.Errorf("WriteFile(%q) succeeded, want an error", p)
				}
			case <-time.After(2 * time.Second):
				t.Fatalf("WriteFile(%q) blocked", p)
			}
		}
		// Input files of a request go through the same path; the bad
		// request is refused and the session carries on.
		for _, p := range []string{"hostdir/in/put.txt", "hostdir/put.txt", "hostlink"} {
			_, err = s.Execute(context.Background(), Request{Code: "print(1)", Files: []InputFile{DataFile(p, []byte("PWNED"))}})
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Errorf("Execute with input file %q below a planted symlink: err = %v, want an *InputError", p, err)
			}
		}
		hostUntouched(t)
		res = sessionExec(t, s, Request{Code: `print("PWNED" in open("/etc/passwd").read(), open("/mnt/data/real.txt").read())`})
		wantStatus(t, res, StatusOK)
		wantStdout(t, res, "False hello\n")
	})
}

// testProtocol: forged or broken frames from the sandbox end the execution
// as killed, and the executor carries on.
func (a *adversary) testProtocol(t *testing.T) {
	tests := []attack{
		{
			name: "huge frame header",
			code: "import runner, struct\nrunner._sock.sendall(struct.pack('>I', 0xffffffff))\nimport time\ntime.sleep(10)\n",
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusKilled, "protocol")
			},
		},
		{
			name: "garbage frame",
			code: "import runner, struct\nrunner._sock.sendall(struct.pack('>I', 5) + b'{oops')\nimport time\ntime.sleep(10)\n",
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusKilled, "protocol")
			},
		},
		{
			name: "forged status",
			code: "import runner\nrunner.send({'type': 'done', 'status': 'memory_limit', 'result': None, 'error': None})\nimport time\ntime.sleep(10)\n",
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusKilled, "protocol")
			},
		},
		{
			name: "exit",
			code: "import os\nos._exit(3)\n",
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusKilled, "exited with code 3")
			},
		},
		{
			name: "segfault",
			code: "import ctypes\nctypes.string_at(0)\n",
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusKilled, "SIGSEGV")
			},
		},
		{
			name: "abort",
			code: "import os\nos.abort()\n",
			check: func(t *testing.T, res *Result) {
				wantStatus(t, res, StatusKilled)
			},
		},
		{
			// The runner sends its frames with json.dumps: poisoning it
			// garbles the frames, which is reported, not trusted.
			name: "poison the runner",
			code: "import json\njson.dumps = lambda *a, **k: 'poisoned'\n",
			check: func(t *testing.T, res *Result) {
				wantError(t, res, StatusKilled, "protocol")
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { a.run(t, tt) })
	}
}

// testIsolation: nothing one single-use execution leaves is visible to the
// next.
func (a *adversary) testIsolation(t *testing.T) {
	leave := `import builtins, json, os, subprocess
for d in ("/tmp", "/mnt/data", "/dev/shm"):
    open(d + "/leftover", "w").write("secret")
LEFTOVER = 42
builtins.LEFTOVER_BUILTIN = 43
json.JSONDecoder = None
os.environ["LEFTOVER_ENV"] = "1"
subprocess.Popen(["sleep", "100"])
subprocess.Popen(["sleep", "100"], start_new_session=True)
print("left")
`
	look := `import builtins, json, os
print("files", [d for d in ("/tmp", "/mnt/data", "/dev/shm") if os.path.exists(d + "/leftover")])
print("global", "LEFTOVER" in globals(), hasattr(builtins, "LEFTOVER_BUILTIN"))
print("json", json.JSONDecoder is not None)
print("env", "LEFTOVER_ENV" in os.environ)
print("pids", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
`
	a.run(t, attack{code: leave, check: func(t *testing.T, res *Result) {
		wantStatus(t, res, StatusOK)
		wantStdout(t, res, "left\n")
		// Several times: the next execution may get any warm child.
		for i := 0; i < 3; i++ {
			res := a.exec(t, Request{Code: look}, 0)
			wantStatus(t, res, StatusOK)
			wantStdout(t, res, "files []\n", "global False False\n", "json True\n", "env False\n", "pids [1]\n")
		}
	}})
}

// testEnvironment: no variable of the host's environment reaches a sandbox.
func (a *adversary) testEnvironment(t *testing.T) {
	code := `import os, subprocess
print(dict(os.environ))
for f in ("/proc/self/environ", "/proc/1/environ"):
    try:
        print(open(f, "rb").read())
    except PermissionError:
        print(f, "denied")  # the child is not dumpable after setresuid
print(subprocess.run(["env"], capture_output=True).stdout)
print("keys", sorted(os.environ))
`
	a.run(t, attack{code: code, check: func(t *testing.T, res *Result) {
		wantStatus(t, res, StatusOK)
		wantStdout(t, res, "keys [")
		wantNotInOutput(t, res, hostSecretValue, hostSecretEnv)
	}})
	// Nor is it in the zygote, which every child copies.
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", a.e.pool().cmd.Process.Pid))
	if err != nil {
		t.Fatalf("read the zygote's environment: %v", err)
	}
	if bytes.Contains(env, []byte(hostSecretValue)) {
		t.Errorf("the zygote's environment holds the host's secret: %q", env)
	}
}
