package sandbox

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupRoot is where hosts mount their cgroup hierarchies: the unified
// (v2) hierarchy itself, or a tmpfs holding one directory per v1 hierarchy.
const cgroupRoot = "/sys/fs/cgroup"

// cgroupControllers are the controllers a sandbox needs.
var cgroupControllers = []string{"memory", "pids", "cpu"}

const (
	// cgroupCPUPeriodUs is the CFS bandwidth period: CPUMillis is turned into a
	// quota per 100 ms, the kernel's default period.
	cgroupCPUPeriodUs = 100_000
	// cgroupKillTimeout bounds how long Kill waits for a cgroup to empty.
	cgroupKillTimeout = 2 * time.Second
	// cgroupRmdirTimeout bounds how long rmdir retries while the kernel still
	// reports a cgroup busy (its last tasks are still exiting).
	cgroupRmdirTimeout = time.Second
	// cgroupPoll is how often Kill and rmdir look again.
	cgroupPoll = time.Millisecond
)

// cgroupLayout says where the memory, pids and cpu hierarchies are mounted.
// On v2 all three are the same directory.
type cgroupLayout struct {
	version           int
	memory, pids, cpu string
}

// roots lists each hierarchy once.
func (l cgroupLayout) roots() []string {
	if l.version == 2 {
		return []string{l.memory}
	}
	return []string{l.memory, l.pids, l.cpu}
}

// NewCgroups detects the host's cgroup layout and creates the parent cgroup
// parent, a relative path such as "codeexec/pool-123", in every hierarchy
// that is needed, creating missing ancestors like mkdir -p.
//
// It uses cgroup v2 when /sys/fs/cgroup is a cgroup2 mount whose
// cgroup.controllers lists memory, pids and cpu; it then enables those
// controllers in cgroup.subtree_control of the root and of every cgroup down
// to parent, so that parent's children get them. Otherwise it uses the v1
// hierarchies /sys/fs/cgroup/{memory,pids,cpu}; a cgroup2 mount without those
// controllers (such as /sys/fs/cgroup/unified on hybrid hosts) is ignored.
// If neither is usable the error wraps ErrUnsupported.
//
// On v1 it turns memory.use_hierarchy on in parent (where it is not on
// already, as it always is since Linux 5.11) before any child exists, so
// that the memory of parent's descendants is charged to parent too and
// Cgroups.SetLimits caps them together; pids and cpu are hierarchical
// anyway.
//
// An existing parent is reused. The result's New may be called from several
// goroutines at once; Close must not race with New.
func NewCgroups(parent string) (Cgroups, error) {
	l, err := detectCgroups(cgroupRoot)
	if err != nil {
		return nil, err
	}
	return newCgroups(l, parent)
}

// detectCgroups finds the memory, pids and cpu controllers under root.
func detectCgroups(root string) (cgroupLayout, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return cgroupLayout{}, fmt.Errorf("detect cgroups: %w", &os.PathError{Op: "statfs", Path: root, Err: err})
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		b, err := cgroupRead(filepath.Join(root, "cgroup.controllers"))
		if err != nil {
			return cgroupLayout{}, fmt.Errorf("detect cgroups: %w", err)
		}
		have := strings.Fields(string(b))
		for _, c := range cgroupControllers {
			if !slices.Contains(have, c) {
				return cgroupLayout{}, fmt.Errorf("detect cgroups: cgroup v2 at %s has controllers %q, want memory, pids and cpu: %w", root, have, ErrUnsupported)
			}
		}
		return cgroupLayout{version: 2, memory: root, pids: root, cpu: root}, nil
	}
	l := cgroupLayout{
		version: 1,
		memory:  filepath.Join(root, "memory"),
		pids:    filepath.Join(root, "pids"),
		cpu:     filepath.Join(root, "cpu"),
	}
	for _, dir := range l.roots() {
		if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.CGROUP_SUPER_MAGIC {
			return cgroupLayout{}, fmt.Errorf("detect cgroups: %s is neither cgroup v2 with memory, pids and cpu nor holds a cgroup v1 hierarchy at %s: %w", root, dir, ErrUnsupported)
		}
	}
	return l, nil
}

// cgroups implements Cgroups.
type cgroups struct {
	l      cgroupLayout
	parent string
	// created lists the directories NewCgroups made, parents before
	// children, so that Close can remove the ancestors it added.
	created []string
}

// newCgroups is NewCgroups with a given layout; tests point it at a
// temporary directory.
func newCgroups(l cgroupLayout, parent string) (*cgroups, error) {
	if parent == "" || filepath.IsAbs(parent) || filepath.Clean(parent) != parent ||
		parent == "." || parent == ".." || strings.HasPrefix(parent, "../") {
		return nil, fmt.Errorf("create cgroup %q: not a clean relative path", parent)
	}
	cs := &cgroups{l: l, parent: parent}
	for _, root := range l.roots() {
		dir := root
		for _, elem := range strings.Split(parent, "/") {
			dir = filepath.Join(dir, elem)
			err := os.Mkdir(dir, 0o755)
			if err == nil {
				cs.created = append(cs.created, dir)
			} else if !errors.Is(err, fs.ErrExist) {
				cs.removeCreated()
				return nil, fmt.Errorf("create cgroup %s: %w", parent, err)
			}
		}
	}
	if l.version == 1 {
		if err := cgroupUseHierarchy(filepath.Join(l.memory, parent)); err != nil {
			cs.removeCreated()
			return nil, fmt.Errorf("count memory of cgroup %s hierarchically: %w", parent, err)
		}
	}
	if l.version == 2 {
		// A controller can be enabled in a cgroup's subtree_control only
		// if it is enabled in its parent's, so go top down (cgroups(7),
		// "Enabling and disabling controllers").
		dir := l.memory
		dirs := []string{dir}
		for _, elem := range strings.Split(parent, "/") {
			dir = filepath.Join(dir, elem)
			dirs = append(dirs, dir)
		}
		for _, dir := range dirs {
			if err := cgroupEnable(dir); err != nil {
				cs.removeCreated()
				return nil, fmt.Errorf("enable controllers for cgroup %s: %w", parent, err)
			}
		}
	}
	return cs, nil
}

// cgroupEnable enables the controllers of cgroupControllers that dir's
// cgroup.subtree_control lacks. It writes nothing if none is missing, so an
// unwritable but already configured ancestor (say, the root in a container)
// is no obstacle.
func cgroupEnable(dir string) error {
	file := filepath.Join(dir, "cgroup.subtree_control")
	b, err := cgroupRead(file)
	if err != nil {
		return err
	}
	have := strings.Fields(string(b))
	var add []string
	for _, c := range cgroupControllers {
		if !slices.Contains(have, c) {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	return cgroupWrite(file, strings.Join(add, " "))
}

// cgroupUseHierarchy writes 1 to dir's memory.use_hierarchy unless it reads
// 1 already. Before Linux 5.11 the kernel refuses the write once the cgroup
// has children (EBUSY) or when its parent has it on (EINVAL; the child then
// has it on too), so reading first keeps a reused parent usable
// (Documentation/admin-guide/cgroup-v1/memory.rst, "Hierarchical accounting
// and reclaim").
func cgroupUseHierarchy(dir string) error {
	file := filepath.Join(dir, "memory.use_hierarchy")
	b, err := cgroupRead(file)
	if err != nil {
		return err
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	return cgroupWrite(file, "1")
}

// removeCreated removes, best effort, the directories NewCgroups created.
func (cs *cgroups) removeCreated() {
	for _, dir := range slices.Backward(cs.created) {
		unix.Rmdir(dir)
	}
}

// Version is 1 or 2.
func (cs *cgroups) Version() int { return cs.l.version }

// SetLimits writes l to the parent cgroup itself, with the code of
// Cgroup.SetLimits. The kernel charges every descendant's memory and tasks
// to the parent as well, so l caps all the children together whatever
// their own limits: a child without a memory limit is OOM-killed when the
// parent's is reached, and a fork fails once the parent's pids.max tasks
// exist below it.
func (cs *cgroups) SetLimits(l Limits) error {
	return (&cgroup{l: cs.l, path: cs.parent}).SetLimits(l)
}

// MemoryUsage reads the parent's memory usage, as Cgroup.MemoryUsage.
func (cs *cgroups) MemoryUsage() (int64, error) {
	return (&cgroup{l: cs.l, path: cs.parent}).MemoryUsage()
}

// New creates the cgroup parent/name in every hierarchy. An existing cgroup
// of that name is reused.
func (cs *cgroups) New(name string) (Cgroup, error) {
	path := cs.parent + "/" + name
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return nil, fmt.Errorf("create cgroup %q: name must be one path element", path)
	}
	c := &cgroup{l: cs.l, path: path}
	for i, root := range cs.l.roots() {
		if err := os.Mkdir(filepath.Join(root, path), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			for _, root := range cs.l.roots()[:i] {
				unix.Rmdir(filepath.Join(root, path))
			}
			return nil, fmt.Errorf("create cgroup %s: %w", path, err)
		}
	}
	return c, nil
}

// Close removes the parent cgroup from every hierarchy, then whichever of
// the ancestors NewCgroups created are empty (another pool may still use
// them). It fails if a child cgroup is left. Closing twice is not an error.
func (cs *cgroups) Close() error {
	var errs []error
	for _, root := range cs.l.roots() {
		// No retry: a parent holds no processes, so EBUSY means a child
		// cgroup is left, which waiting does not fix.
		if err := cgroupRmdir(filepath.Join(root, cs.parent), 0); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove cgroup %s: %w", cs.parent, err)
	}
	cs.removeCreated()
	return nil
}

// cgroup implements Cgroup.
type cgroup struct {
	l    cgroupLayout
	path string
}

// Path is the cgroup's path relative to each hierarchy's root.
func (c *cgroup) Path() string { return c.path }

// file is the path of the interface file name in hierarchy root.
func (c *cgroup) file(root, name string) string { return filepath.Join(root, c.path, name) }

// SetLimits writes l: on v1 memory.limit_in_bytes, memory.memsw.limit_in_bytes
// (where swap accounting exists), pids.max, cpu.cfs_period_us and
// cpu.cfs_quota_us; on v2 memory.max, memory.swap.max (0 while a memory limit
// is set, where the file exists), pids.max and cpu.max. A zero field removes
// our limit ("max"). The kernel refuses a CPU quota below 1 ms per period,
// that is CPUMillis from 1 to 9, and lowering memory below what the cgroup
// uses when it cannot reclaim the difference.
func (c *cgroup) SetLimits(l Limits) error {
	if l.MemoryBytes < 0 || l.Pids < 0 || l.CPUMillis < 0 {
		return fmt.Errorf("set limits of cgroup %s: negative limit in %+v", c.path, l)
	}
	if err := c.setMemory(l.MemoryBytes); err != nil {
		return fmt.Errorf("set memory limit of cgroup %s: %w", c.path, err)
	}
	if err := cgroupWrite(c.file(c.l.pids, "pids.max"), cgroupMax(l.Pids)); err != nil {
		return fmt.Errorf("set pids limit of cgroup %s: %w", c.path, err)
	}
	if err := c.setCPU(l.CPUMillis); err != nil {
		return fmt.Errorf("set cpu limit of cgroup %s: %w", c.path, err)
	}
	return nil
}

func (c *cgroup) setMemory(n int64) error {
	if c.l.version == 2 {
		if err := cgroupWrite(c.file(c.l.memory, "memory.max"), cgroupMax(n)); err != nil {
			return err
		}
		swap := "0"
		if n == 0 {
			swap = "max"
		}
		if err := cgroupWrite(c.file(c.l.memory, "memory.swap.max"), swap); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return nil
	}
	// v1 refuses (EINVAL) any write that would leave limit_in_bytes above
	// memsw.limit_in_bytes, so raise memsw first and lower it last.
	limit := c.file(c.l.memory, "memory.limit_in_bytes")
	memsw := c.file(c.l.memory, "memory.memsw.limit_in_bytes")
	val, want := "-1", int64(math.MaxInt64)
	if n > 0 {
		val, want = strconv.FormatInt(n, 10), n
	}
	cur, err := cgroupReadInt(limit)
	if err != nil {
		return err
	}
	files := []string{limit, memsw}
	if want > cur {
		files = []string{memsw, limit}
	}
	for _, f := range files {
		if err := cgroupWrite(f, val); err != nil {
			if f == memsw && errors.Is(err, fs.ErrNotExist) {
				continue // no swap accounting (swapaccount=0)
			}
			return err
		}
	}
	return nil
}

func (c *cgroup) setCPU(millis int64) error {
	quota := millis * cgroupCPUPeriodUs / 1000
	if c.l.version == 2 {
		v := "max"
		if millis > 0 {
			v = strconv.FormatInt(quota, 10)
		}
		return cgroupWrite(c.file(c.l.cpu, "cpu.max"), fmt.Sprintf("%s %d", v, cgroupCPUPeriodUs))
	}
	if err := cgroupWrite(c.file(c.l.cpu, "cpu.cfs_period_us"), strconv.Itoa(cgroupCPUPeriodUs)); err != nil {
		return err
	}
	v := "-1"
	if millis > 0 {
		v = strconv.FormatInt(quota, 10)
	}
	return cgroupWrite(c.file(c.l.cpu, "cpu.cfs_quota_us"), v)
}

// SetIdle writes cpu.idle (the same file on v1 and v2).
func (c *cgroup) SetIdle(idle bool) error {
	v := "0"
	if idle {
		v = "1"
	}
	err := cgroupWrite(c.file(c.l.cpu, "cpu.idle"), v)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("set cpu.idle of cgroup %s: %w", c.path, err)
	}
	return nil
}

// Add writes pid to cgroup.procs, on v1 in the memory, pids and cpu
// hierarchies in that order. If it fails half way on v1 the process is left
// in some of the hierarchies (always including memory, which Procs, Kill and
// Remove rely on); Remove still cleans up.
func (c *cgroup) Add(pid int) error {
	for _, root := range c.l.roots() {
		if err := cgroupWrite(c.file(root, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return fmt.Errorf("add pid %d to cgroup %s: %w", pid, c.path, err)
		}
	}
	return nil
}

// MemoryUsage reads memory.usage_in_bytes (v1) or memory.current (v2).
func (c *cgroup) MemoryUsage() (int64, error) {
	name := "memory.usage_in_bytes"
	if c.l.version == 2 {
		name = "memory.current"
	}
	n, err := cgroupReadInt(c.file(c.l.memory, name))
	if err != nil {
		return 0, fmt.Errorf("read memory usage of cgroup %s: %w", c.path, err)
	}
	return n, nil
}

// OOMKills reads the oom_kill count of memory.oom_control (v1) or
// memory.events (v2, which counts the cgroup's descendants too).
func (c *cgroup) OOMKills() (int, error) {
	name := "memory.oom_control"
	if c.l.version == 2 {
		name = "memory.events"
	}
	b, err := cgroupRead(c.file(c.l.memory, name))
	if err != nil {
		return 0, fmt.Errorf("read oom kills of cgroup %s: %w", c.path, err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "oom_kill "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				return 0, fmt.Errorf("read oom kills of cgroup %s: %w", c.path, err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("read oom kills of cgroup %s: no oom_kill line in %s", c.path, name)
}

// Procs lists the pids in cgroup.procs, sorted. On v1 it reads the memory
// hierarchy only: Add writes that one first and stops at the first failure,
// and children inherit all hierarchies, so a process that is in the cgroup
// anywhere is in it there. A cgroup that does not exist (any more) has none.
func (c *cgroup) Procs() ([]int, error) {
	b, err := cgroupRead(c.file(c.l.memory, "cgroup.procs"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list processes of cgroup %s: %w", c.path, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("list processes of cgroup %s: %w", c.path, err)
		}
		pids = append(pids, pid)
	}
	slices.Sort(pids) // v2 does not sort
	return pids, nil
}

// Kill kills every process in the cgroup and waits until cgroup.procs is
// empty, for at most 2 s. On v2 it writes cgroup.kill where the kernel has it
// (5.14+), which also catches processes forking meanwhile. Otherwise it sends
// SIGKILL to each listed pid and looks again until none is left; a fork loop
// cannot outrun that for long because pids.max bounds it. A pid read from
// cgroup.procs could in principle exit and be reused before the signal
// lands; pid reuse needs the whole pid space to wrap, which the bounded
// loop makes negligible.
func (c *cgroup) Kill() error {
	signal := true
	if c.l.version == 2 {
		err := cgroupWrite(c.file(c.l.memory, "cgroup.kill"), "1")
		switch {
		case err == nil:
			signal = false
		case errors.Is(err, fs.ErrNotExist):
			// Before Linux 5.14, or the cgroup is gone (then Procs is empty).
		default:
			return fmt.Errorf("kill processes of cgroup %s: %w", c.path, err)
		}
	}
	deadline := time.Now().Add(cgroupKillTimeout)
	for {
		pids, err := c.Procs()
		if err != nil {
			return fmt.Errorf("kill processes of cgroup %s: %w", c.path, err)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kill processes of cgroup %s: %d still there after %v", c.path, len(pids), cgroupKillTimeout)
		}
		if signal {
			for _, pid := range pids {
				unix.Kill(pid, unix.SIGKILL) // ESRCH: exited meanwhile.
			}
		}
		time.Sleep(cgroupPoll)
	}
}

// Remove kills what is left in the cgroup, then removes it from every
// hierarchy, retrying for up to a second while the kernel says it is busy.
// Removing a removed cgroup is not an error.
func (c *cgroup) Remove() error {
	if err := c.Kill(); err != nil {
		return fmt.Errorf("remove cgroup %s: %w", c.path, err)
	}
	var errs []error
	for _, root := range c.l.roots() {
		if err := cgroupRmdir(filepath.Join(root, c.path), cgroupRmdirTimeout); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("remove cgroup %s: %w", c.path, err)
	}
	return nil
}

// cgroupRmdir removes the cgroup directory dir. A missing dir is fine; EBUSY
// (tasks still exiting, or child cgroups) is retried for timeout.
func cgroupRmdir(dir string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Rmdir(dir)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			return &os.PathError{Op: "rmdir", Path: dir, Err: err}
		}
		time.Sleep(cgroupPoll)
	}
}

// cgroupWrite writes s to the existing file name in one write, as cgroupfs
// wants. It uses raw system calls because os.OpenFile registers kernfs files
// (they support poll) with the runtime's netpoller, which doubles the cost.
func cgroupWrite(name, s string) error {
	fd, err := unix.Open(name, unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0)
	if err != nil {
		return &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	for {
		n, err := unix.Write(fd, []byte(s))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "write", Path: name, Err: err}
		}
		if n != len(s) {
			return &os.PathError{Op: "write", Path: name, Err: io.ErrShortWrite}
		}
		return nil
	}
}

// cgroupRead is os.ReadFile with raw system calls; see cgroupWrite.
func cgroupRead(name string) ([]byte, error) {
	fd, err := unix.Open(name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	var b []byte
	buf := make([]byte, 4096)
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, &os.PathError{Op: "read", Path: name, Err: err}
		case n == 0:
			return b, nil
		}
		b = append(b, buf[:n]...)
	}
}

func cgroupReadInt(name string) (int64, error) {
	b, err := cgroupRead(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", name, err)
	}
	return n, nil
}

// cgroupMax formats a limit for a v2-style file such as pids.max: "max" for 0.
func cgroupMax(n int64) string {
	if n == 0 {
		return "max"
	}
	return strconv.FormatInt(n, 10)
}

// HostCeilings returns default limits for the parent cgroup of all
// sandboxes (Cgroups.SetLimits), derived from this machine so that no mix
// of sandboxes can exhaust it:
//
//   - MemoryBytes is MemTotal of /proc/meminfo less a reserve of a fifth of
//     it, at least 1 GiB and at most half. The floor covers the server
//     itself (request bodies, captured output and files of every admitted
//     execution, SQLite: a few hundred MiB under load) and a small host's
//     own daemons; on larger machines a fifth leaves the kernel its slab,
//     the page cache of everything else and room above its reclaim
//     watermarks. A 24 GiB machine gives about 19 GiB to sandboxes.
//   - Pids is half of the smaller of /proc/sys/kernel/threads-max and
//     /proc/sys/kernel/pid_max: every thread takes a pid, so the host
//     keeps at least the other half of both.
//
// CPUMillis is 0: CPU is shared by weight, not capped.
func HostCeilings() (Limits, error) { return hostCeilings("/proc") }

// hostCeilings is HostCeilings reading the proc file system mounted at
// proc; tests give it a fake one.
func hostCeilings(proc string) (Limits, error) {
	memTotal, err := procMemTotal(filepath.Join(proc, "meminfo"))
	if err != nil {
		return Limits{}, fmt.Errorf("host ceilings: %w", err)
	}
	var minTasks int64 = math.MaxInt64
	for _, name := range []string{"threads-max", "pid_max"} {
		n, err := procReadInt(filepath.Join(proc, "sys", "kernel", name))
		if err != nil {
			return Limits{}, fmt.Errorf("host ceilings: %w", err)
		}
		minTasks = min(minTasks, n)
	}
	reserve := min(max(1<<30, memTotal/5), memTotal/2)
	return Limits{MemoryBytes: memTotal - reserve, Pids: minTasks / 2}, nil
}

// procMemTotal reads the MemTotal line of a meminfo file, in bytes.
func procMemTotal(name string) (int64, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, ok := strings.CutSuffix(strings.TrimSpace(v), " kB")
			n, err := strconv.ParseInt(kb, 10, 64)
			if !ok || err != nil || n <= 0 || n > math.MaxInt64>>10 {
				return 0, fmt.Errorf("read %s: bad MemTotal %q", name, strings.TrimSpace(v))
			}
			return n << 10, nil
		}
	}
	return 0, fmt.Errorf("read %s: no MemTotal line", name)
}

// procReadInt reads a file holding one positive integer.
func procReadInt(name string) (int64, error) {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("read %s: want a positive integer, have %q", name, strings.TrimSpace(string(b)))
	}
	return n, nil
}

// cgroupInstances counts the names CgroupInstance gave.
var cgroupInstances atomic.Int64

// selfStart is this process's start time, read once.
var selfStart = sync.OnceValues(func() (string, error) {
	_, start, err := procStat("/proc", os.Getpid())
	return start, err
})

// CgroupInstance returns a name for a new parent cgroup of this process:
// "<pid>-<start>-<n>", where start is the process's start time (field 22
// of /proc/<pid>/stat, in clock ticks since boot) and n counts the calls,
// so that several executors in one process get different parents. Pid and
// start time together name one process of this boot even once the pid is
// reused, which is what lets SweepCgroups tell a dead server's cgroup from
// a live one's.
func CgroupInstance() (string, error) {
	start, err := selfStart()
	if err != nil {
		return "", fmt.Errorf("name cgroup: %w", err)
	}
	return fmt.Sprintf("%d-%s-%d", os.Getpid(), start, cgroupInstances.Add(1)-1), nil
}

// SweepCgroups removes the cgroups that servers which are gone left under
// base, a relative path such as "codeexec", in every hierarchy: after a
// kill -9 or a crash nothing else ever removes them. A child of base is
// swept if its name is that of CgroupInstance and no process with that pid
// and start time runs (or it is a zombie), or if it is "<pid>-<n>", the
// name of servers before CgroupInstance, and its pid is not running; any
// other name is left alone, and so is everything of live servers. What is
// left in a swept tree is killed first, then its cgroups are removed,
// children before parents.
//
// It returns the trees it removed, and an error joining those of the trees
// it could not remove (their processes would not die, say); the other trees
// are still swept. Liveness is checked in this process's pid namespace, so
// servers in different pid namespaces must not share base in one cgroup
// hierarchy. Concurrent sweeps of the same base are safe.
func SweepCgroups(base string) ([]SweptCgroup, error) {
	l, err := detectCgroups(cgroupRoot)
	if err != nil {
		return nil, err
	}
	return sweepCgroups(l, base, "/proc")
}

// sweepCgroups is SweepCgroups with a given layout and proc file system.
func sweepCgroups(l cgroupLayout, base, proc string) ([]SweptCgroup, error) {
	if base == "" || filepath.IsAbs(base) || filepath.Clean(base) != base || base == "." || base == ".." || strings.HasPrefix(base, "../") {
		return nil, fmt.Errorf("sweep cgroups under %q: not a clean relative path", base)
	}
	names := map[string]bool{}
	for _, root := range l.roots() {
		entries, err := os.ReadDir(filepath.Join(root, base))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("sweep cgroups under %s: %w", base, err)
		}
		for _, e := range entries {
			if e.IsDir() {
				names[e.Name()] = true
			}
		}
	}
	var swept []SweptCgroup
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(names)) {
		if !cgroupOwnerGone(proc, name) {
			continue
		}
		path := base + "/" + name
		procs, err := removeCgroupTree(l, path)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		swept = append(swept, SweptCgroup{Path: path, Procs: procs})
	}
	if err := errors.Join(errs...); err != nil {
		return swept, fmt.Errorf("sweep cgroups under %s: %w", base, err)
	}
	return swept, nil
}

// cgroupOwnerGone reports whether name, a child of the sweep's base, is the
// parent cgroup of a server that is no longer running. Where it cannot tell
// it says no.
func cgroupOwnerGone(proc, name string) bool {
	parts := strings.Split(name, "-")
	if len(parts) != 2 && len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	pid, err := strconv.Atoi(parts[0])
	if err != nil || pid <= 0 {
		return false
	}
	state, start, err := procStat(proc, pid)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true
	case err != nil:
		return false
	case state == 'Z' || state == 'X':
		return true // exited; only its parent has not reaped it yet
	case len(parts) == 3:
		return start != parts[1] // the pid is another process's now
	default:
		return false // "<pid>-<n>" and the pid runs: maybe that server
	}
}

// procStat reads the state (field 3) and start time (field 22) of pid from
// proc's <pid>/stat (proc(5)). The command name, field 2, is in
// parentheses and may itself hold spaces and parentheses, so the fields
// are counted from the last ')'.
func procStat(proc string, pid int) (state byte, start string, err error) {
	name := filepath.Join(proc, strconv.Itoa(pid), "stat")
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, "", err
	}
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, "", fmt.Errorf("read %s: no ')'", name)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return 0, "", fmt.Errorf("read %s: %d fields after the command name, want at least 20", name, len(f))
	}
	return f[0][0], f[19], nil
}

// removeCgroupTree kills every process in the cgroup path and its
// descendants, in every hierarchy, and removes them deepest first. It
// returns how many processes it found.
func removeCgroupTree(l cgroupLayout, path string) (int, error) {
	dirs := map[string]bool{}
	for _, root := range l.roots() {
		err := filepath.WalkDir(filepath.Join(root, path), func(p string, d fs.DirEntry, err error) error {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile, or not in this hierarchy
			}
			if err != nil {
				return err
			}
			if d.IsDir() {
				rel, err := filepath.Rel(root, p)
				if err != nil {
					return err
				}
				dirs[rel] = true
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("remove cgroup %s: %w", path, err)
		}
	}
	order := slices.Collect(maps.Keys(dirs))
	slices.SortFunc(order, func(a, b string) int {
		return cmp.Or(strings.Count(b, "/")-strings.Count(a, "/"), strings.Compare(a, b))
	})
	procs := 0
	for _, dir := range order {
		c := &cgroup{l: l, path: dir}
		if pids, err := c.Procs(); err == nil {
			procs += len(pids)
		}
		if err := c.Remove(); err != nil {
			return procs, err
		}
	}
	return procs, nil
}
