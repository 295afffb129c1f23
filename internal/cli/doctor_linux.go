package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"codeexec/internal/executor"
	"codeexec/internal/sandbox"

	"golang.org/x/sys/unix"
)

// platformChecks runs the checks of the kernel features a sandbox needs.
func platformChecks(ctx context.Context, report func(finding)) {
	report(checkUserNamespaceLimit())
	report(checkNamespaces(ctx))
	report(checkSeccomp())
	for _, f := range checkCgroups() {
		report(f)
	}
}

// checkUserNamespaceLimit reads user.max_user_namespaces, which caps user
// namespaces per user, root included (user_namespaces(7)). The Debian and
// Ubuntu knobs for unprivileged users (kernel.unprivileged_userns_clone,
// kernel.apparmor_restrict_unprivileged_userns) do not apply to root, which
// codeexec runs as.
func checkUserNamespaceLimit() finding {
	const (
		what = "user namespaces enabled"
		path = "/proc/sys/user/max_user_namespaces"
		fix  = "sysctl -w user.max_user_namespaces=15000 (and set it in /etc/sysctl.d/ to keep it)"
	)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return fail(what, path+" does not exist: the kernel was built without user namespaces (CONFIG_USER_NS)",
			"use a kernel with CONFIG_USER_NS=y (every Debian and Ubuntu kernel has it)")
	}
	if err != nil {
		return fail(what, err.Error(), "run codeexec doctor as root")
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return fail(what, fmt.Sprintf("parse %s: %v", path, err), fix)
	}
	if n <= 0 {
		return fail(what, fmt.Sprintf("%s is %d", path, n), fix)
	}
	return ok(fmt.Sprintf("%s (max_user_namespaces=%d)", what, n))
}

// checkNamespaces starts true(1) in the namespaces of the outer sandbox with
// a uid map, as sandbox.Start does. If that fails it tries each namespace
// on its own to name the one the host refuses.
func checkNamespaces(ctx context.Context) finding {
	what := "create user, pid, mount, net, ipc, uts and cgroup namespaces"
	err := startInNamespaces(ctx, sandbox.CloneFlags)
	if err == nil {
		return ok(what)
	}
	why := err.Error()
	for _, ns := range sandbox.Namespaces[1:] {
		if err := startInNamespaces(ctx, unix.CLONE_NEWUSER|ns.Flag); err != nil {
			why = fmt.Sprintf("a new %s namespace: %v", ns.Name, err)
			break
		}
	}
	fix := "run as root on the host, or in a container allowed to create namespaces (unconfined seccomp and AppArmor profiles)"
	if errors.Is(err, syscall.ENOSPC) {
		fix = "raise the namespace limits in /proc/sys/user/ (e.g. sysctl -w user.max_user_namespaces=15000)"
	}
	return fail(what, why, fix)
}

// startInNamespaces runs true(1) in fresh namespaces cloneflags, which must
// include CLONE_NEWUSER. As root, the namespace's ids map to the
// executor's default host range, as a sandbox's do; otherwise only the
// caller's own ids are mapped.
func startInNamespaces(ctx context.Context, cloneflags uintptr) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	uid, gid, size := os.Getuid(), os.Getgid(), 1
	if uid == 0 {
		uid, gid, size = executor.DefaultHostUID, executor.DefaultHostUID, executor.IDRange
	}
	path := "/usr/bin/true"
	if _, err := os.Stat(path); err != nil {
		path = "/bin/true"
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path)
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:                 cloneflags,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: size}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: size}},
		GidMappingsEnableSetgroups: false,
		Credential:                 &syscall.Credential{Uid: 0, Gid: 0},
		Pdeathsig:                  syscall.SIGKILL,
	}
	if err := cmd.Run(); err != nil {
		if s := strings.TrimSpace(stderr.String()); s != "" {
			return fmt.Errorf("%w: %s", err, s)
		}
		return err
	}
	return nil
}

// checkSeccomp checks that the kernel supports seccomp filters with the
// actions codeexec's filter uses, and that the filter builds.
func checkSeccomp() finding {
	what := "seccomp filters"
	const (
		fix = "use a kernel with CONFIG_SECCOMP_FILTER=y (every Debian and Ubuntu kernel has it)"
	)
	mode, found, err := procStatusField("Seccomp")
	if err != nil {
		return fail(what, err.Error(), fix)
	}
	if !found {
		return fail(what, "/proc/self/status has no Seccomp line: the kernel was built without seccomp", fix)
	}
	// actions_avail exists since Linux 4.14 (seccomp(2)); the filter kills
	// with SECCOMP_RET_KILL_PROCESS, which is as old.
	b, err := os.ReadFile("/proc/sys/kernel/seccomp/actions_avail")
	if err != nil {
		return fail(what, fmt.Sprintf("%v: the kernel is older than 4.14", err), "use Linux 4.14 or newer")
	}
	avail := strings.Fields(string(b))
	for _, want := range []string{"kill_process", "errno", "allow"} {
		if !slices.Contains(avail, want) {
			return fail(what, fmt.Sprintf("the kernel lacks seccomp action %s (has %s)", want, strings.Join(avail, " ")), "use Linux 4.14 or newer")
		}
	}
	prog, err := sandbox.SeccompProgram()
	if err != nil {
		return fail(what, "build codeexec's filter: "+err.Error(), "report this as a bug in codeexec")
	}
	what = fmt.Sprintf("%s (codeexec's filter builds: %d instructions)", what, len(prog)/8)
	if mode != "0" {
		// A container runtime's filter stacks with ours; the stricter
		// answer wins (seccomp(2)).
		what += fmt.Sprintf("; this process already runs under a filter (Seccomp: %s), which also applies to sandboxes", mode)
	}
	return ok(what)
}

// procStatusField returns the value of the line "name:" of /proc/self/status.
func procStatusField(name string) (value string, found bool, err error) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == name {
			return strings.TrimSpace(v), true, nil
		}
	}
	return "", false, sc.Err()
}

// checkCgroups detects the cgroup layout as the executor does, then creates
// a cgroup, limits it and removes it again.
func checkCgroups() []finding {
	const what = "cgroups with memory, pids and cpu controllers"
	cgs, err := sandbox.NewCgroups(fmt.Sprintf("codeexec-doctor-%d", os.Getpid()))
	if err != nil {
		fix := "run as root with /sys/fs/cgroup writable (in a container: a private, writable cgroup namespace)"
		if errors.Is(err, sandbox.ErrUnsupported) {
			fix = "boot with cgroup v2 and the memory, pids and cpu controllers available at /sys/fs/cgroup (systemd.unified_cgroup_hierarchy=1), or mount the v1 memory, pids and cpu hierarchies under /sys/fs/cgroup"
		}
		return []finding{fail(what, err.Error(), fix)}
	}
	version := cgs.Version()
	cg, err := cgs.New("probe")
	if err == nil {
		err = cg.SetLimits(sandbox.Limits{MemoryBytes: 64 << 20, Pids: 16, CPUMillis: 500})
		if rerr := cg.Remove(); err == nil {
			err = rerr
		}
	}
	if cerr := cgs.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return []finding{fail(fmt.Sprintf("%s (cgroup v%d)", what, version), err.Error(),
			"run as root with /sys/fs/cgroup writable")}
	}
	out := []finding{ok(fmt.Sprintf("%s (cgroup v%d; created, limited and removed a test cgroup)", what, version))}
	if version == 1 && swapOn() {
		if _, err := os.Stat("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"); err != nil {
			out = append(out, warn("cgroup v1 swap accounting",
				"swap is on but memory.memsw.limit_in_bytes is missing, so a sandbox's memory limit does not cover swap",
				"boot with swapaccount=1 (kernel command line), or turn swap off"))
		}
	}
	return out
}

// swapOn reports whether any swap area is active: /proc/swaps has a header
// line and one line per area.
func swapOn() bool {
	b, err := os.ReadFile("/proc/swaps")
	return err == nil && len(strings.Split(strings.TrimSpace(string(b)), "\n")) > 1
}
