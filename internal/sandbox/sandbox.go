// Package sandbox provides the Linux isolation codeexec runs untrusted code in:
// namespaces, mounts, seccomp, cgroups and rlimits. It knows nothing of Python
// or HTTP; the executor package is its only user.
//
// Everything but this file's types is Linux-only (*_linux.go), as is every
// package that uses it: codeexec runs only on Linux (see cmd/codeexec).
package sandbox

import "errors"

// ErrUnsupported is returned on systems without the kernel features a sandbox
// needs (Linux user, pid, mount and network namespaces, seccomp, cgroups).
var ErrUnsupported = errors.New("sandbox: not supported on this system")

// Limits are the resource limits of one cgroup. A zero field means "no limit
// set by us" (the parent's limit still applies).
type Limits struct {
	// MemoryBytes caps resident memory plus swap (v1 memsw, v2 swap.max=0).
	MemoryBytes int64
	// Pids caps the number of tasks (processes and threads).
	Pids int64
	// CPUMillis is the CPU bandwidth in thousandths of a core: 1000 is one core.
	CPUMillis int64
}

// Cgroup is one control group that processes can be placed in. Its methods
// are safe for use by one goroutine at a time.
type Cgroup interface {
	// Path is the cgroup's path relative to the hierarchy root, e.g.
	// "codeexec/pool0/c42". It is for logs and tests.
	Path() string
	// SetLimits writes l. It may be called again to change the limits of a
	// cgroup that already holds processes.
	SetLimits(l Limits) error
	// SetIdle makes the cgroup's processes run only on CPU time no sibling
	// cgroup wants (cpu.idle, Linux 5.15: SCHED_IDLE for the whole group,
	// among its siblings; the parent still competes as before), or undoes
	// it. Where the kernel lacks cpu.idle it does nothing: it is
	// a scheduling hint, not a limit.
	SetIdle(idle bool) error
	// Add moves the process with host pid pid (all of its threads) into the
	// cgroup.
	Add(pid int) error
	// MemoryUsage reports the memory charged to the cgroup now, its
	// descendants included (v1 memory.usage_in_bytes, v2 memory.current):
	// resident and kernel memory and page cache.
	MemoryUsage() (int64, error)
	// OOMKills reports how many processes of the cgroup the kernel's OOM
	// killer has killed since the cgroup was created.
	OOMKills() (int, error)
	// Procs lists the host pids in the cgroup.
	Procs() ([]int, error)
	// Kill sends SIGKILL to every process in the cgroup and waits, up to a
	// short bound, until none is left.
	Kill() error
	// Remove kills what is left and removes the cgroup from every hierarchy.
	// It is safe to call more than once.
	Remove() error
}

// Cgroups creates cgroups under one parent. Use NewCgroups to detect the host's
// cgroup layout (v1 or v2) once at start-up.
type Cgroups interface {
	// Version is 1 or 2.
	Version() int
	// SetLimits writes l to the parent cgroup itself: ceilings on all its
	// children together, whatever their own limits (see HostCeilings for
	// defaults). A zero field removes that ceiling.
	SetLimits(l Limits) error
	// MemoryUsage reports the memory charged to the parent cgroup, all its
	// children included.
	MemoryUsage() (int64, error)
	// New creates a child cgroup named name (one path element, no '/')
	// below the parent.
	New(name string) (Cgroup, error)
	// Close removes the parent cgroup; every child must already be removed.
	Close() error
}

// SweptCgroup is a cgroup tree that SweepCgroups removed.
type SweptCgroup struct {
	// Path is the tree's root relative to each hierarchy's root, e.g.
	// "codeexec/1234-5678-0".
	Path string
	// Procs is how many processes SweepCgroups found in the tree and
	// killed. It should be 0: a sandbox dies with its server (Pdeathsig).
	Procs int
}
