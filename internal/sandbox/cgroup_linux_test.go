package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"codeexec/internal/testenv"
)

// cgroupHelperEnv makes the test binary act as a victim program instead of
// running tests; see TestCgroupHelperProcess.
const cgroupHelperEnv = "CODEEXEC_CGROUP_TEST_HELPER"

// TestCgroupHelperProcess is not a test: re-executed with cgroupHelperEnv set, the
// test binary becomes a victim program. Each victim first waits for a byte
// on stdin, so that the test can move it into a cgroup before it misbehaves.
func TestCgroupHelperProcess(t *testing.T) {
	mode := os.Getenv(cgroupHelperEnv)
	if mode == "" {
		return
	}
	if _, err := os.Stdin.Read(make([]byte, 1)); err != nil {
		os.Exit(2)
	}
	switch mode {
	case "memhog":
		// Touch every page of 256 MiB so that it is really charged.
		b := make([]byte, 256<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		runtime.KeepAlive(b)
		os.Exit(0)
	}
	os.Exit(3)
}

// newTestCgroups returns Cgroups under a parent unique to t, closed (and
// checked to close) when t ends. Creating cgroups needs root: without it the
// test is skipped, unless CI is set (testenv).
func newTestCgroups(t testing.TB) *cgroups {
	t.Helper()
	testenv.Root(t, "creating cgroups under /sys/fs/cgroup")
	l, err := detectCgroups(cgroupRoot)
	if errors.Is(err, ErrUnsupported) {
		testenv.Missing(t, fmt.Sprintf("the cgroup controllers the sandbox uses: %v", err))
	}
	if err != nil {
		t.Fatal(err)
	}
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	cs, err := newCgroups(l, fmt.Sprintf("codeexec-test/%d-%s", os.Getpid(), name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := cs.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return cs
}

// newTestCgroup creates the child name of cs, removed when t ends.
func newTestCgroup(t testing.TB, cs *cgroups, name string) *cgroup {
	t.Helper()
	c, err := cs.New(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Remove(); err != nil {
			t.Errorf("Remove() = %v", err)
		}
	})
	return c.(*cgroup)
}

// startInCgroup starts cmd, whose program must wait for a line on stdin
// before it does anything, moves it into c and then lets it go. The process
// is killed and reaped when t ends.
func startInCgroup(t *testing.T, c *cgroup, cmd *exec.Cmd) {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if err := c.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdin, "\n"); err != nil {
		t.Fatal(err)
	}
}

// cgroupTestKilled reports whether err, from exec.Cmd.Wait, says SIGKILL.
func cgroupTestKilled(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func cgroupTestRead(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// cgroupTestLimits reads c's limits back from the kernel's files, in the form
// {"memory": "33554432" or "max", "pids": ..., "cpu": quota in µs or "max"}.
// It also checks the companion files: memsw or swap.max, and the period.
func cgroupTestLimits(t *testing.T, c *cgroup) map[string]string {
	t.Helper()
	got := map[string]string{"pids": cgroupTestRead(t, c.file(c.l.pids, "pids.max"))}
	if c.l.version == 2 {
		got["memory"] = cgroupTestRead(t, c.file(c.l.memory, "memory.max"))
		if _, err := os.Stat(c.file(c.l.memory, "memory.swap.max")); err == nil {
			wantSwap := "0"
			if got["memory"] == "max" {
				wantSwap = "max"
			}
			if swap := cgroupTestRead(t, c.file(c.l.memory, "memory.swap.max")); swap != wantSwap {
				t.Errorf("memory.swap.max = %q, want %q", swap, wantSwap)
			}
		}
		quota, period, _ := strings.Cut(cgroupTestRead(t, c.file(c.l.cpu, "cpu.max")), " ")
		got["cpu"] = quota
		if period != "100000" {
			t.Errorf("cpu.max period = %q, want 100000", period)
		}
		return got
	}
	mem := cgroupTestRead(t, c.file(c.l.memory, "memory.limit_in_bytes"))
	if n, _ := strconv.ParseInt(mem, 10, 64); n >= 1<<62 {
		mem = "max" // "unlimited" reads back as the largest page multiple
	}
	got["memory"] = mem
	if memsw, err := os.ReadFile(c.file(c.l.memory, "memory.memsw.limit_in_bytes")); err == nil {
		if n, _ := strconv.ParseInt(strings.TrimSpace(string(memsw)), 10, 64); n >= 1<<62 {
			memsw = []byte("max")
		}
		if s := strings.TrimSpace(string(memsw)); s != mem {
			t.Errorf("memory.memsw.limit_in_bytes = %q, want %q like memory.limit_in_bytes", s, mem)
		}
	}
	got["cpu"] = cgroupTestRead(t, c.file(c.l.cpu, "cpu.cfs_quota_us"))
	if got["cpu"] == "-1" {
		got["cpu"] = "max"
	}
	if p := cgroupTestRead(t, c.file(c.l.cpu, "cpu.cfs_period_us")); p != "100000" {
		t.Errorf("cpu.cfs_period_us = %q, want 100000", p)
	}
	return got
}

// TestCgroupSetLimits sets limits in sequence, lowering and raising them
// (v1 needs memsw and limit written in the right order for both), and reads
// them back from the kernel.
func TestCgroupSetLimits(t *testing.T) {
	c := newTestCgroup(t, newTestCgroups(t), "c")
	steps := []struct {
		name   string
		limits Limits
		want   map[string]string
	}{
		{"set", Limits{MemoryBytes: 64 << 20, Pids: 16, CPUMillis: 500}, map[string]string{"memory": "67108864", "pids": "16", "cpu": "50000"}},
		{"lower", Limits{MemoryBytes: 32 << 20, Pids: 8, CPUMillis: 250}, map[string]string{"memory": "33554432", "pids": "8", "cpu": "25000"}},
		{"raise", Limits{MemoryBytes: 128 << 20, Pids: 32, CPUMillis: 2000}, map[string]string{"memory": "134217728", "pids": "32", "cpu": "200000"}},
		{"unset", Limits{}, map[string]string{"memory": "max", "pids": "max", "cpu": "max"}},
		{"set again", Limits{MemoryBytes: 32 << 20}, map[string]string{"memory": "33554432", "pids": "max", "cpu": "max"}},
	}
	for _, s := range steps {
		if err := c.SetLimits(s.limits); err != nil {
			t.Fatalf("%s: SetLimits(%+v) = %v", s.name, s.limits, err)
		}
		if diff := cmp.Diff(s.want, cgroupTestLimits(t, c)); diff != "" {
			t.Errorf("%s: SetLimits(%+v): limits read back (-want +got):\n%s", s.name, s.limits, diff)
		}
	}
	if err := c.SetLimits(Limits{Pids: -1}); err == nil {
		t.Errorf("SetLimits(Pids: -1) = nil, want an error")
	}
}

// TestCgroupSetIdle turns cpu.idle on and off and reads it back.
func TestCgroupSetIdle(t *testing.T) {
	c := newTestCgroup(t, newTestCgroups(t), "c")
	if _, err := os.Stat(c.file(c.l.cpu, "cpu.idle")); err != nil {
		testenv.Missing(t, fmt.Sprintf("cpu.idle, which Linux 5.15 added: %v", err))
	}
	for _, idle := range []bool{true, false, true} {
		if err := c.SetIdle(idle); err != nil {
			t.Fatalf("SetIdle(%v) = %v", idle, err)
		}
		want := "0"
		if idle {
			want = "1"
		}
		if got := cgroupTestRead(t, c.file(c.l.cpu, "cpu.idle")); got != want {
			t.Errorf("after SetIdle(%v): cpu.idle = %q, want %q", idle, got, want)
		}
	}
}

// TestCgroupAddKill puts several processes in a cgroup, checks Procs lists
// them, and that Kill leaves none.
func TestCgroupAddKill(t *testing.T) {
	c := newTestCgroup(t, newTestCgroups(t), "c")
	var cmds []*exec.Cmd
	var want []int
	for range 3 {
		cmd := exec.Command("/bin/sh", "-c", "read x; exec sleep 30")
		startInCgroup(t, c, cmd)
		cmds = append(cmds, cmd)
		want = append(want, cmd.Process.Pid)
	}
	slices.Sort(want)
	got, err := c.Procs()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Procs() after Add (-want +got):\n%s", diff)
	}
	if err := c.Kill(); err != nil {
		t.Fatalf("Kill() = %v", err)
	}
	if got, err := c.Procs(); err != nil || len(got) != 0 {
		t.Errorf("Procs() after Kill = %v, %v; want none", got, err)
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); !cgroupTestKilled(err) {
			t.Errorf("pid %d: Wait() = %v, want killed by SIGKILL", cmd.Process.Pid, err)
		}
	}
}

// TestCgroupMemoryLimit runs a program that touches 256 MiB in a cgroup
// limited to 32 MiB: the kernel must OOM-kill it and OOMKills must say so.
func TestCgroupMemoryLimit(t *testing.T) {
	c := newTestCgroup(t, newTestCgroups(t), "c")
	if err := c.SetLimits(Limits{MemoryBytes: 32 << 20}); err != nil {
		t.Fatal(err)
	}
	if n, err := c.OOMKills(); err != nil || n != 0 {
		t.Fatalf("OOMKills() before = %d, %v; want 0, nil", n, err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCgroupHelperProcess$")
	cmd.Env = append(os.Environ(), cgroupHelperEnv+"=memhog")
	startInCgroup(t, c, cmd)
	if err := cmd.Wait(); !cgroupTestKilled(err) {
		t.Errorf("memory hog: Wait() = %v, want killed by SIGKILL", err)
	}
	if n, err := c.OOMKills(); err != nil || n < 1 {
		t.Errorf("OOMKills() = %d, %v; want >= 1", n, err)
	}
}

// TestCgroupMemoryUsage checks that MemoryUsage sees memory a process of
// the cgroup touches.
func TestCgroupMemoryUsage(t *testing.T) {
	c := newTestCgroup(t, newTestCgroups(t), "c")
	before, err := c.MemoryUsage()
	if err != nil || before != 0 {
		t.Fatalf("MemoryUsage() of an empty cgroup = %d, %v; want 0, nil", before, err)
	}
	// It waits for the line startInCgroup writes once it is in c.
	cmd := exec.Command(testenv.Python(t), "-c", "import sys\nsys.stdin.readline()\nb = bytearray(64 << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\nprint('ok', flush=True)\nsys.stdin.readline()")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	startInCgroup(t, c, cmd)
	if _, err := io.ReadFull(out, make([]byte, 3)); err != nil {
		t.Fatalf("read from the process: %v", err)
	}
	got, err := c.MemoryUsage()
	if err != nil || got < 64<<20 {
		t.Errorf("MemoryUsage() with 64 MiB touched = %d, %v; want at least %d", got, err, 64<<20)
	}
}

// TestCgroupPidsLimit runs a loop that tries to fork 64 sleeps in a cgroup
// allowing 8 tasks, and checks that no more than 8 ever got in. The shell
// is pid 1 of its own pid namespace, like a sandboxed child, so that the
// kernel reaps the orphaned sleeps when it dies.
func TestCgroupPidsLimit(t *testing.T) {
	c := newTestCgroup(t, newTestCgroups(t), "c")
	const limit = 8
	if err := c.SetLimits(Limits{Pids: limit}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", `read x
(i=0; while [ $i -lt 64 ]; do sleep 30 & i=$((i+1)); done)
echo done
read y`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	startInCgroup(t, c, cmd)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if line != "done\n" {
		t.Fatalf("fork loop printed %q, %v; want done", line, err)
	}
	pids, err := c.Procs()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d processes in the cgroup after the fork loop", len(pids))
	if len(pids) < 2 || len(pids) > limit {
		t.Errorf("Procs() after a fork loop of 64 = %d pids, want 2 to %d", len(pids), limit)
	}
	if err := c.Kill(); err != nil {
		t.Fatalf("Kill() = %v", err)
	}
	if err := cmd.Wait(); !cgroupTestKilled(err) {
		t.Errorf("Wait() = %v, want killed by SIGKILL", err)
	}
	if got, err := c.Procs(); err != nil || len(got) != 0 {
		t.Errorf("Procs() after Kill = %v, %v; want none", got, err)
	}
}

// cgroupTestPeak reads a high-water mark the kernel keeps, if it has the
// file: name is tried in the order given (v1 and v2 spell them differently).
func cgroupTestPeak(t *testing.T, dir string, names ...string) (int64, bool) {
	t.Helper()
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return n, true
	}
	return 0, false
}

// TestCgroupsParentMemoryLimit caps the parent at 64 MiB and runs a program
// that touches 256 MiB in a child that has no memory limit of its own: the
// parent's limit must stop it, the kernel OOM-killing it, and the
// parent's usage never exceeds its limit.
func TestCgroupsParentMemoryLimit(t *testing.T) {
	cs := newTestCgroups(t)
	const limit = 64 << 20
	if err := cs.SetLimits(Limits{MemoryBytes: limit, Pids: 32}); err != nil {
		t.Fatalf("Cgroups.SetLimits = %v", err)
	}
	parent := &cgroup{l: cs.l, path: cs.parent}
	if diff := cmp.Diff(map[string]string{"memory": "67108864", "pids": "32", "cpu": "max"}, cgroupTestLimits(t, parent)); diff != "" {
		t.Errorf("parent's limits read back (-want +got):\n%s", diff)
	}
	c := newTestCgroup(t, cs, "c")
	if got := cgroupTestLimits(t, c)["memory"]; got != "max" {
		t.Fatalf("child's own memory limit = %s, want max", got)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCgroupHelperProcess$")
	cmd.Env = append(os.Environ(), cgroupHelperEnv+"=memhog")
	startInCgroup(t, c, cmd)
	if err := cmd.Wait(); !cgroupTestKilled(err) {
		t.Errorf("memory hog in a child without a limit: Wait() = %v, want killed by SIGKILL", err)
	}
	// v1 counts an OOM kill in the victim's cgroup only, v2 in its
	// ancestors too.
	if n, err := c.OOMKills(); err != nil || n < 1 {
		t.Errorf("child's OOMKills() = %d, %v; want >= 1", n, err)
	}
	if cs.l.version == 2 {
		if n, err := parent.OOMKills(); err != nil || n < 1 {
			t.Errorf("parent's OOMKills() = %d, %v; want >= 1", n, err)
		}
	}
	dir := filepath.Join(cs.l.memory, cs.parent)
	if peak, ok := cgroupTestPeak(t, dir, "memory.max_usage_in_bytes", "memory.peak"); ok {
		t.Logf("parent's peak memory: %d MiB", peak>>20)
		if peak > limit {
			t.Errorf("parent's peak memory = %d, want <= %d", peak, limit)
		}
	}
}

// TestCgroupsParentPidsLimit caps the parent at 8 tasks and runs a loop
// forking 64 sleeps in each of two children that have no pids limit of
// their own: together they must never hold more than 8. Each shell is pid 1
// of its own pid namespace, so that the kernel reaps its orphans.
func TestCgroupsParentPidsLimit(t *testing.T) {
	cs := newTestCgroups(t)
	const limit = 8
	if err := cs.SetLimits(Limits{Pids: limit}); err != nil {
		t.Fatalf("Cgroups.SetLimits = %v", err)
	}
	// Both shells are moved in before either forks: moving a process
	// into a cgroup is not bound by pids.max, forking is.
	var children []*cgroup
	var outs []*bufio.Reader
	var gos []io.Writer
	for _, name := range []string{"a", "b"} {
		c := newTestCgroup(t, cs, name)
		cmd := exec.Command("/bin/sh", "-c", `read x
(i=0; while [ $i -lt 64 ]; do sleep 30 & i=$((i+1)); done)
echo done
read y`)
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
		cmd.Stderr = io.Discard // "Cannot fork"
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		if err := c.Add(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		children = append(children, c)
		outs = append(outs, bufio.NewReader(stdout))
		gos = append(gos, stdin)
	}
	for _, w := range gos {
		if _, err := io.WriteString(w, "\n"); err != nil {
			t.Fatal(err)
		}
	}
	for i, out := range outs {
		// A shell that could not even fork its loop exits: EOF.
		if line, err := out.ReadString('\n'); line != "done\n" && err != io.EOF {
			t.Fatalf("fork loop %d printed %q, %v; want done or EOF", i, line, err)
		}
	}
	total := 0
	for _, c := range children {
		pids, err := c.Procs()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d processes after the fork loop", c.Path(), len(pids))
		total += len(pids)
	}
	if total > limit {
		t.Errorf("processes in both children after two fork loops of 64 = %d, want <= %d", total, limit)
	}
	if peak, ok := cgroupTestPeak(t, filepath.Join(cs.l.pids, cs.parent), "pids.peak"); ok {
		t.Logf("parent's pids.peak = %d", peak)
		if peak > limit {
			t.Errorf("parent's pids.peak = %d, want <= %d", peak, limit)
		}
	}
}

// TestCgroupV1UseHierarchy checks, on a fake v1 hierarchy, that NewCgroups
// turns memory.use_hierarchy on in the parent where it is off (before
// Linux 5.11) and leaves it alone where it is on.
func TestCgroupV1UseHierarchy(t *testing.T) {
	tests := []struct{ name, before, want string }{
		{"off", "0\n", "1"},
		{"on", "1\n", "1\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			l := cgroupLayout{version: 1, memory: filepath.Join(root, "memory"), pids: filepath.Join(root, "pids"), cpu: filepath.Join(root, "cpu")}
			for _, dir := range l.roots() {
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			file := filepath.Join(l.memory, "codeexec", "p", "memory.use_hierarchy")
			if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(file, []byte(tt.before), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := newCgroups(l, "codeexec/p"); err != nil {
				t.Fatal(err)
			}
			if got, _ := os.ReadFile(file); string(got) != tt.want {
				t.Errorf("memory.use_hierarchy %q after newCgroups = %q, want %q", tt.before, got, tt.want)
			}
		})
	}
}

// TestHostCeilings derives the default ceilings from fake /proc contents.
func TestHostCeilings(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		name                     string
		meminfo, threads, pidMax string
		want                     Limits
		wantErr                  bool
	}{
		{
			name:    "24 GiB: a fifth kept",
			meminfo: "MemTotal:       25165824 kB\nMemFree:        23148956 kB\n",
			threads: "192724\n", pidMax: "32768\n",
			want: Limits{MemoryBytes: 24*gib - 24*gib/5, Pids: 16384},
		},
		{
			name:    "4 GiB: 1 GiB kept",
			meminfo: "MemFree: 1 kB\nMemTotal: 4194304 kB\n",
			threads: "30000", pidMax: "4194304",
			want: Limits{MemoryBytes: 3 * gib, Pids: 15000},
		},
		{
			name:    "1.5 GiB: half kept",
			meminfo: "MemTotal: 1572864 kB\n",
			threads: "4096", pidMax: "4096",
			want: Limits{MemoryBytes: 768 << 20, Pids: 2048},
		},
		{name: "no MemTotal", meminfo: "MemFree: 1 kB\n", threads: "1", pidMax: "1", wantErr: true},
		{name: "MemTotal without kB", meminfo: "MemTotal: 100\n", threads: "1", pidMax: "1", wantErr: true},
		{name: "bad threads-max", meminfo: "MemTotal: 100 kB\n", threads: "lots", pidMax: "1", wantErr: true},
		{name: "zero pid_max", meminfo: "MemTotal: 100 kB\n", threads: "1", pidMax: "0", wantErr: true},
		{name: "no pid_max", meminfo: "MemTotal: 100 kB\n", threads: "1", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proc := t.TempDir()
			if err := os.MkdirAll(filepath.Join(proc, "sys", "kernel"), 0o755); err != nil {
				t.Fatal(err)
			}
			for name, content := range map[string]string{"meminfo": tt.meminfo, "sys/kernel/threads-max": tt.threads, "sys/kernel/pid_max": tt.pidMax} {
				if content == "" {
					continue
				}
				if err := os.WriteFile(filepath.Join(proc, name), []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := hostCeilings(proc)
			if (err != nil) != tt.wantErr {
				t.Fatalf("hostCeilings() = %+v, %v; want error %v", got, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("hostCeilings() (-want +got):\n%s", diff)
			}
		})
	}
	got, err := HostCeilings()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("this machine: HostCeilings() = %d MiB, %d pids", got.MemoryBytes>>20, got.Pids)
	if got.MemoryBytes <= 0 || got.Pids <= 0 {
		t.Errorf("HostCeilings() = %+v, want positive limits", got)
	}
}

// deadPid returns the pid of a process that has run and been reaped.
func deadPid(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("/bin/true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// zombie starts a process that exits at once and is not reaped until t
// ends, and returns its pid and start time.
func zombie(t *testing.T) (int, string) {
	t.Helper()
	cmd := exec.Command("/bin/true")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		state, start, err := procStat("/proc", cmd.Process.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if state == 'Z' {
			return cmd.Process.Pid, start
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still in state %c after 10s", cmd.Process.Pid, state)
		}
	}
}

// sweepTestNames are the children of a sweep's base in TestSweepCgroups
// and TestSweepCgroupsV2Files: those of servers that are gone, which the
// sweep must remove, and the others, which it must leave.
func sweepTestNames(t *testing.T) (stale, kept []string) {
	t.Helper()
	dead := deadPid(t)
	zpid, zstart := zombie(t)
	self, err := CgroupInstance()
	if err != nil {
		t.Fatal(err)
	}
	stale = []string{
		fmt.Sprintf("%d-12345-0", dead),      // the server is gone
		fmt.Sprintf("%d-654321", dead),       // the same, named as before start times
		fmt.Sprintf("%d-1-0", os.Getpid()),   // the pid is another process's now
		fmt.Sprintf("%d-%s-3", zpid, zstart), // exited, not reaped
	}
	kept = []string{
		self,                                   // this live server
		fmt.Sprintf("%d-99", os.Getpid()),      // an old-style name whose pid runs
		"not-a-server", "1-x-0", "-1-2", "123", // not names of servers
	}
	return stale, kept
}

// TestSweepCgroups builds, in the real hierarchies, the trees that servers
// that are gone would leave, one of them still holding an orphaned
// process, beside a live server's tree holding a process and directories
// of other names; the sweep must kill the orphan and remove exactly the
// stale trees, children first.
func TestSweepCgroups(t *testing.T) {
	cs := newTestCgroups(t)
	stale, kept := sweepTestNames(t)
	var orphan *exec.Cmd
	for i, name := range stale {
		sub, err := newCgroups(cs.l, cs.parent+"/"+name)
		if err != nil {
			t.Fatal(err)
		}
		for _, child := range []string{"zygote", "c1"} {
			c, err := sub.New(child)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Remove(); sub.Close() }) // in case the sweep fails
			if i == 0 && child == "c1" {
				orphan = exec.Command("/bin/sh", "-c", "read x; exec sleep 30")
				startInCgroup(t, c.(*cgroup), orphan)
			}
		}
	}
	var live *exec.Cmd
	for i, name := range kept {
		sub, err := newCgroups(cs.l, cs.parent+"/"+name)
		if err != nil {
			t.Fatal(err)
		}
		c, err := sub.New("c")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := c.Remove(); err != nil {
				t.Error(err)
			}
			if err := sub.Close(); err != nil {
				t.Error(err)
			}
		})
		if i == 0 {
			live = exec.Command("/bin/sh", "-c", "read x; exec sleep 30")
			startInCgroup(t, c.(*cgroup), live)
		}
	}

	swept, err := sweepCgroups(cs.l, cs.parent, "/proc")
	if err != nil {
		t.Fatalf("sweepCgroups() = %v", err)
	}
	var want []SweptCgroup
	for i, name := range stale {
		w := SweptCgroup{Path: cs.parent + "/" + name}
		if i == 0 {
			w.Procs = 1 // the orphan
		}
		want = append(want, w)
	}
	less := func(a, b SweptCgroup) int { return strings.Compare(a.Path, b.Path) }
	slices.SortFunc(want, less)
	if diff := cmp.Diff(want, swept); diff != "" {
		t.Errorf("sweepCgroups() swept (-want +got):\n%s", diff)
	}
	if err := orphan.Wait(); !cgroupTestKilled(err) {
		t.Errorf("orphan in a stale cgroup: Wait() = %v, want killed by SIGKILL", err)
	}
	for _, root := range cs.l.roots() {
		for _, name := range stale {
			if _, err := os.Stat(filepath.Join(root, cs.parent, name)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("after the sweep: stat %s: %v, want not exist", filepath.Join(root, cs.parent, name), err)
			}
		}
		for _, name := range kept {
			if _, err := os.Stat(filepath.Join(root, cs.parent, name, "c")); err != nil {
				t.Errorf("after the sweep: %v, want the cgroup kept", err)
			}
		}
	}
	if err := live.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("live server's process after the sweep: %v, want it running", err)
	}
}

// TestSweepCgroupsV2Files runs the sweep on a fake v2 hierarchy: on v2 one
// directory tree serves every controller.
func TestSweepCgroupsV2Files(t *testing.T) {
	root := t.TempDir()
	l := cgroupLayout{version: 2, memory: root, pids: root, cpu: root}
	stale, kept := sweepTestNames(t)
	for _, name := range stale {
		for _, child := range []string{"zygote", "c1", "c2/deeper"} {
			if err := os.MkdirAll(filepath.Join(root, "codeexec", name, child), 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, name := range kept {
		if err := os.MkdirAll(filepath.Join(root, "codeexec", name, "c"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Not a directory: never a cgroup.
	if err := os.WriteFile(filepath.Join(root, "codeexec", "cgroup.procs"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	swept, err := sweepCgroups(l, "codeexec", "/proc")
	if err != nil {
		t.Fatalf("sweepCgroups() = %v", err)
	}
	var got, want []string
	for _, s := range swept {
		got = append(got, s.Path)
	}
	for _, name := range stale {
		want = append(want, "codeexec/"+name)
	}
	slices.Sort(want)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sweepCgroups() swept (-want +got):\n%s", diff)
	}
	entries, err := os.ReadDir(filepath.Join(root, "codeexec"))
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	wantLeft := append(slices.Clone(kept), "cgroup.procs")
	slices.Sort(wantLeft)
	if diff := cmp.Diff(wantLeft, left); diff != "" {
		t.Errorf("left under codeexec after the sweep (-want +got):\n%s", diff)
	}
	if _, err := sweepCgroups(l, "missing", "/proc"); err != nil {
		t.Errorf("sweepCgroups() of a missing base = %v, want nil", err)
	}
	for _, base := range []string{"", "/codeexec", "../x", "a/"} {
		if _, err := sweepCgroups(l, base, "/proc"); err == nil {
			t.Errorf("sweepCgroups(%q) = nil error, want one", base)
		}
	}
}

// TestProcStat reads the state and start time from proc(5) stat lines,
// including command names that hold spaces and parentheses.
func TestProcStat(t *testing.T) {
	rest := " 0 1 1 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 %s 1000 100"
	tests := []struct {
		name, stat string
		state      byte
		start      string
		wantErr    bool
	}{
		{"plain", "42 (codeexec) S" + fmt.Sprintf(rest, "777"), 'S', "777", false},
		{"spaces and parens", "42 (a) b (c) Z" + fmt.Sprintf(rest, "12345"), 'Z', "12345", false},
		{"truncated", "42 (codeexec) S 0 1", 0, "", true},
		{"no command", "42 codeexec S", 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			proc := t.TempDir()
			if err := os.Mkdir(filepath.Join(proc, "42"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(proc, "42", "stat"), []byte(tt.stat+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			state, start, err := procStat(proc, 42)
			if (err != nil) != tt.wantErr || state != tt.state || start != tt.start {
				t.Errorf("procStat(%q) = %q, %q, %v; want %q, %q, error %v", tt.stat, state, start, err, tt.state, tt.start, tt.wantErr)
			}
		})
	}
	name, err := CgroupInstance()
	if err != nil {
		t.Fatal(err)
	}
	next, _ := CgroupInstance()
	if name == next || !strings.HasPrefix(name, strconv.Itoa(os.Getpid())+"-") {
		t.Errorf("CgroupInstance() = %q, then %q; want distinct names starting with this pid", name, next)
	}
	if cgroupOwnerGone("/proc", name) {
		t.Errorf("cgroupOwnerGone(%q) = true for this process, want false", name)
	}
}

// TestCgroupCPULimit runs a busy loop limited to a tenth of a core and
// waits for the kernel to report throttling in cpu.stat.
func TestCgroupCPULimit(t *testing.T) {
	c := newTestCgroup(t, newTestCgroups(t), "c")
	if err := c.SetLimits(Limits{CPUMillis: 100}); err != nil {
		t.Fatal(err)
	}
	startInCgroup(t, c, exec.Command("/bin/sh", "-c", "read x; while :; do :; done"))
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		stat := cgroupTestRead(t, c.file(c.l.cpu, "cpu.stat"))
		var throttled int
		for line := range strings.Lines(stat) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "nr_throttled "); ok {
				throttled, _ = strconv.Atoi(v)
			}
		}
		if throttled > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("busy loop at CPUMillis 100: cpu.stat shows no throttling after 5s:\n%s", stat)
		}
	}
}

// TestCgroupRemove checks that Remove kills what is inside, leaves no
// directory in any hierarchy, and can be called again.
func TestCgroupRemove(t *testing.T) {
	cs := newTestCgroups(t)
	c := newTestCgroup(t, cs, "c")
	cmd := exec.Command("/bin/sh", "-c", "read x; exec sleep 30")
	startInCgroup(t, c, cmd)
	for range 2 {
		if err := c.Remove(); err != nil {
			t.Fatalf("Remove() = %v", err)
		}
	}
	if err := cmd.Wait(); !cgroupTestKilled(err) {
		t.Errorf("Wait() = %v, want killed by SIGKILL", err)
	}
	for _, root := range cs.l.roots() {
		if _, err := os.Stat(filepath.Join(root, c.Path())); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after Remove: stat %s: %v, want not exist", filepath.Join(root, c.Path()), err)
		}
	}
	if got, err := c.Procs(); err != nil || len(got) != 0 {
		t.Errorf("Procs() of a removed cgroup = %v, %v; want none", got, err)
	}
}

// TestCgroupsClose checks that Close refuses to remove a parent with a
// child left, and once the child is gone removes the parent and the
// ancestors NewCgroups created.
func TestCgroupsClose(t *testing.T) {
	cs := newTestCgroups(t)
	c, err := cs.New("c")
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Close(); err == nil {
		t.Errorf("Close() with a child left = nil, want an error")
	}
	if err := c.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := cs.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	for _, root := range cs.l.roots() {
		dir := filepath.Join(root, cs.parent)
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after Close: stat %s: %v, want not exist", dir, err)
		}
	}
	for _, dir := range cs.created {
		if _, err := os.Stat(dir); err == nil {
			// Another test's parent may share the ancestor; then it stays.
			if entries, _ := filepath.Glob(filepath.Join(dir, "*", "cgroup.procs")); len(entries) == 0 {
				t.Errorf("after Close: created ancestor %s still there and empty", dir)
			}
		}
	}
}

// TestCgroupBadNames checks that names that are not one path element, and
// parents that are not clean relative paths, are refused before anything
// is created.
func TestCgroupBadNames(t *testing.T) {
	root := t.TempDir()
	l := cgroupLayout{version: 2, memory: root, pids: root, cpu: root}
	for _, parent := range []string{"", ".", "..", "../x", "/abs", "a//b", "a/", "a/../b"} {
		if _, err := newCgroups(l, parent); err == nil {
			t.Errorf("newCgroups(%q) = nil error, want one", parent)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("memory pids cpu"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "p"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "p", "cgroup.subtree_control"), []byte("memory pids cpu"), 0o644); err != nil {
		t.Fatal(err)
	}
	cs, err := newCgroups(l, "p")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"", ".", "..", "a/b", "/"} {
		if _, err := cs.New(name); err == nil {
			t.Errorf("New(%q) = nil error, want one", name)
		}
	}
	entries, _ := os.ReadDir(filepath.Join(root, "p"))
	if len(entries) != 1 {
		t.Errorf("after bad names, %s holds %d entries, want only cgroup.subtree_control", filepath.Join(root, "p"), len(entries))
	}
}

// TestCgroupV2Files drives the v2 code against a fake hierarchy in a
// temporary directory (this machine has no v2 memory controller), with
// the interface files the kernel would create made by hand.
func TestCgroupV2Files(t *testing.T) {
	root := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		name = filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	write("cgroup.controllers", "cpuset cpu io memory pids\n")
	write("cgroup.subtree_control", "cpu io\n")
	write("codeexec/cgroup.subtree_control", "")
	write("codeexec/pool/cgroup.subtree_control", "memory pids cpu\n")
	for _, f := range []string{"memory.max", "memory.swap.max", "pids.max", "cpu.max"} {
		write("codeexec/pool/"+f, "")
	}
	full := []string{"memory.max", "memory.swap.max", "pids.max", "cpu.max", "cgroup.procs", "memory.events", "cgroup.kill"}
	for _, f := range full {
		write("codeexec/pool/full/"+f, "")
	}
	// A kernel without swap accounting and before cgroup.kill (5.14).
	for _, f := range []string{"memory.max", "pids.max", "cpu.max", "cgroup.procs"} {
		write("codeexec/pool/old/"+f, "")
	}

	l := cgroupLayout{version: 2, memory: root, pids: root, cpu: root}
	cs, err := newCgroups(l, "codeexec/pool")
	if err != nil {
		t.Fatal(err)
	}
	if cs.Version() != 2 {
		t.Errorf("Version() = %d, want 2", cs.Version())
	}
	gotSubtree := map[string]string{
		"root":     read("cgroup.subtree_control"),
		"codeexec": read("codeexec/cgroup.subtree_control"),
		"pool":     read("codeexec/pool/cgroup.subtree_control"),
	}
	wantSubtree := map[string]string{
		"root":     "+memory +pids", // cpu was there
		"codeexec": "+memory +pids +cpu",
		"pool":     "memory pids cpu\n", // untouched: nothing missing
	}
	if diff := cmp.Diff(wantSubtree, gotSubtree); diff != "" {
		t.Errorf("cgroup.subtree_control after newCgroups (-want +got):\n%s", diff)
	}

	if err := cs.SetLimits(Limits{MemoryBytes: 19 << 30, Pids: 16384}); err != nil {
		t.Fatalf("Cgroups.SetLimits = %v", err)
	}
	gotParent := map[string]string{}
	for _, f := range []string{"memory.max", "memory.swap.max", "pids.max", "cpu.max"} {
		gotParent[f] = read("codeexec/pool/" + f)
	}
	wantParent := map[string]string{"memory.max": "20401094656", "memory.swap.max": "0", "pids.max": "16384", "cpu.max": "max 100000"}
	if diff := cmp.Diff(wantParent, gotParent); diff != "" {
		t.Errorf("parent's files after Cgroups.SetLimits (-want +got):\n%s", diff)
	}

	tests := []struct {
		name   string
		child  string
		limits Limits
		want   map[string]string
	}{
		{
			name:   "all",
			child:  "full",
			limits: Limits{MemoryBytes: 32 << 20, Pids: 16, CPUMillis: 500},
			want:   map[string]string{"memory.max": "33554432", "memory.swap.max": "0", "pids.max": "16", "cpu.max": "50000 100000"},
		},
		{
			name:   "unset",
			child:  "full",
			limits: Limits{},
			want:   map[string]string{"memory.max": "max", "memory.swap.max": "max", "pids.max": "max", "cpu.max": "max 100000"},
		},
		{
			name:   "two cores",
			child:  "full",
			limits: Limits{CPUMillis: 2000},
			want:   map[string]string{"memory.max": "max", "memory.swap.max": "max", "pids.max": "max", "cpu.max": "200000 100000"},
		},
		{
			name:   "no swap.max",
			child:  "old",
			limits: Limits{MemoryBytes: 1 << 30, Pids: 100, CPUMillis: 1000},
			want:   map[string]string{"memory.max": "1073741824", "pids.max": "100", "cpu.max": "100000 100000"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := cs.New(tt.child)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.SetLimits(tt.limits); err != nil {
				t.Fatalf("SetLimits(%+v) = %v", tt.limits, err)
			}
			got := map[string]string{}
			for name := range tt.want {
				got[name] = read(filepath.Join(c.Path(), name))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("SetLimits(%+v): files (-want +got):\n%s", tt.limits, diff)
			}
		})
	}

	c, err := cs.New("full")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Add(1234); err != nil {
		t.Fatal(err)
	}
	if got := read("codeexec/pool/full/cgroup.procs"); got != "1234" {
		t.Errorf("cgroup.procs after Add(1234) = %q, want 1234", got)
	}
	write("codeexec/pool/full/cgroup.procs", "1234\n99\n")
	if got, err := c.Procs(); err != nil || !slices.Equal(got, []int{99, 1234}) {
		t.Errorf("Procs() = %v, %v; want [99 1234]", got, err)
	}
	write("codeexec/pool/full/memory.events", "low 0\nhigh 0\nmax 7\noom 3\noom_kill 2\noom_group_kill 0\n")
	if n, err := c.OOMKills(); err != nil || n != 2 {
		t.Errorf("OOMKills() = %d, %v; want 2", n, err)
	}
	write("codeexec/pool/full/memory.current", "12345\n")
	if n, err := c.MemoryUsage(); err != nil || n != 12345 {
		t.Errorf("MemoryUsage() = %d, %v; want 12345", n, err)
	}
	write("codeexec/pool/full/cgroup.procs", "")
	if err := c.Kill(); err != nil {
		t.Errorf("Kill() = %v", err)
	}
	if got := read("codeexec/pool/full/cgroup.kill"); got != "1" {
		t.Errorf("cgroup.kill after Kill = %q, want 1", got)
	}
	old, err := cs.New("old")
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Kill(); err != nil {
		t.Errorf("Kill() without cgroup.kill = %v", err)
	}
	if _, err := old.OOMKills(); err == nil {
		t.Errorf("OOMKills() without memory.events = nil error, want one")
	}
}

// BenchmarkCgroupCreateLimitRemove measures what a pool pays per child for
// its cgroup: New, SetLimits and Remove of an empty cgroup.
func BenchmarkCgroupCreateLimitRemove(b *testing.B) {
	cs := newTestCgroups(b)
	l := Limits{MemoryBytes: 256 << 20, Pids: 64, CPUMillis: 1000}
	for i := 0; b.Loop(); i++ {
		c, err := cs.New("b" + strconv.Itoa(i))
		if err != nil {
			b.Fatal(err)
		}
		if err := c.SetLimits(l); err != nil {
			b.Fatal(err)
		}
		if err := c.Remove(); err != nil {
			b.Fatal(err)
		}
	}
}
