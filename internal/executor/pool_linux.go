package executor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"codeexec/internal/egress"
	"codeexec/internal/python"
	"codeexec/internal/sandbox"
)

// Config configures an Executor. The zero value of each field means its
// documented default.
type Config struct {
	// PoolSize is how many warm children wait for requests (default 4).
	PoolSize int
	// DataWarmup has a child that joins a pool where others already wait
	// also warm up pandas (runner.warm_data): a first groupby in it is
	// several times faster, for the private memory the pages it copied
	// take (docs/performance.md). Under load, when the pool is empty,
	// children join without it.
	DataWarmup bool
	// PlotWarmup has that warm-up also draw and render a small figure: a
	// first plot is faster, for more private memory per child. It needs
	// DataWarmup.
	PlotWarmup bool
	// Python is the interpreter (default /usr/bin/python3; it must be
	// under /usr, the only host tree the sandbox sees).
	Python string
	// HostUID is the first host uid (and gid) of the IDRange ids the
	// sandbox maps (default DefaultHostUID). No host user may own them.
	HostUID int
	// Defaults and Max bound the per-request limits (defaults
	// DefaultLimits and MaxLimits).
	Defaults, Max Limits
	// WorkdirBytes is the size of each sandbox's /mnt/data (default
	// 256 MiB); TmpBytes of its /tmp and /dev/shm (default 64 MiB).
	WorkdirBytes, TmpBytes int64
	// MaxFiles is the most files (inodes) each of those may hold (default
	// 10,000); OpenFiles the most open files of a process (default 1024).
	MaxFiles, OpenFiles int64
	// ZygoteMemoryBytes caps the zygote's memory (default 4 GiB). Kernel
	// memory a child allocates at fork (its page tables) stays charged to
	// the zygote's cgroup while the child lives, so this bounds the number
	// of live sandboxes too.
	ZygoteMemoryBytes int64
	// TotalMemoryBytes and TotalPids cap the memory (with swap) and the
	// tasks of the zygote and every sandbox together, in the executor's
	// own cgroup, so that no mix of sessions can exhaust the host or starve
	// the server. Zero is derived from the machine by New
	// (sandbox.HostCeilings: MemTotal less a fifth, at least 1 GiB; half
	// of the smaller of threads-max and pid_max); setDefaults leaves it,
	// because reading /proc can fail and setDefaults cannot.
	TotalMemoryBytes, TotalPids int64
	// MaxCodeBytes is the largest program accepted (default 1 MiB).
	MaxCodeBytes int
	// CgroupParent is the cgroup path all sandboxes live under (default
	// "codeexec"); each executor adds a unique element to it.
	CgroupParent string
	// Logger receives the executor's logs (default: discard).
	Logger *slog.Logger
	// PipIndexURL, when set, is the package index (a private mirror) the
	// sandbox's pip uses, PIP_INDEX_URL; an http:// one is also its
	// PIP_TRUSTED_HOST. pip reaches it only through the egress proxy, so
	// an execution's network policy must allow its host.
	PipIndexURL string
	// Egress are the options of the egress proxies (resolver, dialer,
	// address filter); tests narrow them to loopback.
	Egress egress.Options
}

func (c *Config) setDefaults() {
	setDef := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	if c.PoolSize == 0 {
		c.PoolSize = 4
	}
	if c.Python == "" {
		c.Python = "/usr/bin/python3"
	}
	if c.HostUID == 0 {
		c.HostUID = DefaultHostUID
	}
	if c.Defaults == (Limits{}) {
		c.Defaults = DefaultLimits
	}
	if c.Max == (Limits{}) {
		c.Max = MaxLimits
	}
	setDef(&c.WorkdirBytes, 256<<20)
	setDef(&c.TmpBytes, 64<<20)
	setDef(&c.MaxFiles, 10_000)
	setDef(&c.OpenFiles, 1024)
	setDef(&c.ZygoteMemoryBytes, 4<<30)
	if c.MaxCodeBytes == 0 {
		c.MaxCodeBytes = MaxCodeBytes
	}
	if c.CgroupParent == "" {
		c.CgroupParent = "codeexec"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// DefaultHostUID is the first host uid (and gid) of the sandbox's ids
// when Config.HostUID is not set.
const DefaultHostUID = 1_500_000_000

// IDRange is the number of ids mapped into the sandbox; children get uids
// above childUIDBase up to maxChildUID (65534 and 65535 are left alone:
// nobody, and the kernel's overflow id for unmapped ones).
const (
	IDRange      = 65536
	childUIDBase = 1000
	maxChildUID  = IDRange - 3
)

// pool is one zygote and its warm children.
type pool struct {
	gen  int // generation: 0 for the first zygote, +1 for each restart
	cfg  Config
	log  *slog.Logger
	cmd  *exec.Cmd
	ctrl int // SOCK_SEQPACKET to the zygote
	cgs  sandbox.Cgroups
	zcg  sandbox.Cgroup

	// Warm children wait in warm, or in data once they have warmed up
	// pandas too; slots holds a token for each child in either or being
	// spawned for them, so the pool never holds more than PoolSize.
	warm, data chan *child
	slots      chan struct{}
	dead       chan struct{} // closed when the zygote is gone
	wg         sync.WaitGroup
	stop       context.CancelFunc

	sendMu sync.Mutex
	// prefaulted is set once a child has told us which pages warm-up
	// writes and the zygote has them (see learnPrefault).
	prefaulted atomic.Bool
	// noDataWarmup is set if a child failed runner.warm_data.
	noDataWarmup atomic.Bool
	// full is set while the pool refuses to spawn (see checkCapacity).
	full atomic.Bool

	mu     sync.Mutex
	nextID int
	live   map[int]*child // children spawned and not yet reaped
	// uids are the uids of live children (see allocUID); lastUID is the
	// one given last.
	uids    map[int]bool
	lastUID int
}

// allocUID gives a uid no live child of the pool has, the next free one
// after the last given, so a uid is reused as late as possible and never
// while a process of its previous child may live (destroy frees it only
// once the child's cgroup is empty and removed). It reports false when
// every uid is taken. p.mu must be held.
func (p *pool) allocUID() (int, bool) {
	n := maxChildUID - childUIDBase
	if len(p.uids) >= n {
		return 0, false
	}
	uid := p.lastUID
	for {
		if uid++; uid > maxChildUID || uid <= childUIDBase {
			uid = childUIDBase + 1
		}
		if !p.uids[uid] {
			break
		}
	}
	p.uids[uid], p.lastUID = true, uid
	return uid, true
}

// startPool starts a zygote and fills the warm pool in the background. It
// returns once the zygote has preloaded its libraries.
func startPool(ctx context.Context, cfg Config, cgs sandbox.Cgroups, gen int) (_ *pool, err error) {
	files, env, err := zygoteFiles(cfg)
	if err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	theirs := os.NewFile(uintptr(fds[1]), "zygote-control")
	defer theirs.Close()
	p := &pool{
		gen: gen, cfg: cfg, log: cfg.Logger, ctrl: fds[0], cgs: cgs,
		warm: make(chan *child, cfg.PoolSize), data: make(chan *child, cfg.PoolSize),
		slots: make(chan struct{}, cfg.PoolSize), dead: make(chan struct{}),
		live: map[int]*child{}, uids: map[int]bool{},
	}
	defer func() {
		if err != nil {
			p.close()
		}
	}()
	if err := p.startZygote(files, env, theirs); err != nil {
		return nil, err
	}
	if err := p.awaitReady(ctx); err != nil {
		return nil, err
	}
	// From now on the zygote only forks children for the pool: that work
	// must never take a core from code a request is waiting for.
	if err := p.zcg.SetIdle(true); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	p.wg.Add(1)
	go p.readControl()
	// A child sets itself up in its own process after a short fork in the
	// zygote, so several spawns in flight use every core.
	for range refillers(cfg.PoolSize) {
		p.wg.Add(1)
		go p.refill(rctx)
	}
	return p, nil
}

// zygoteFiles returns the files the zygote finds in /run/codeexec (its
// code, its configuration, the children's seccomp filter) and the
// environment of the zygote and its children.
func zygoteFiles(cfg Config) (map[string][]byte, map[string]string, error) {
	prog, err := sandbox.SeccompProgram()
	if err != nil {
		return nil, nil, fmt.Errorf("build seccomp filter: %w", err)
	}
	// The whole environment of the zygote and its children: nothing of the
	// host's, so no secret of the server can leak into a sandbox.
	sandboxEnv := map[string]string{
		"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
		"MPLCONFIGDIR": "/tmp/matplotlib", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
		"NUMEXPR_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
		"TMPDIR": "/tmp", "XDG_CACHE_HOME": "/tmp/.cache",
	}
	if err := pipEnv(cfg.PipIndexURL, sandboxEnv); err != nil {
		return nil, nil, err
	}
	zc, err := json.Marshal(python.ZygoteConfig{
		Env:      sandboxEnv,
		TmpBytes: cfg.TmpBytes, WorkdirBytes: cfg.WorkdirBytes, MaxFiles: cfg.MaxFiles,
		MaxFileBytes: cfg.Max.FileBytes, MaxOpenFiles: cfg.OpenFiles, MaxProcs: cfg.Max.Procs,
		Preload: python.Preloads(),
	})
	if err != nil {
		return nil, nil, err
	}
	files := python.Files()
	files["config.json"] = zc
	files["seccomp.bpf"] = prog
	return files, sandboxEnv, nil
}

// startZygote starts the zygote in the outer sandbox, in its own cgroup,
// with the other end of the control socket (theirs) as its fd 3.
func (p *pool) startZygote(files map[string][]byte, sandboxEnv map[string]string, theirs *os.File) (err error) {
	cfg := p.cfg
	if p.zcg, err = p.cgs.New(p.cgroupName("zygote", 0)); err != nil {
		return err
	}
	if err := p.zcg.SetLimits(sandbox.Limits{MemoryBytes: cfg.ZygoteMemoryBytes, Pids: 64}); err != nil {
		return err
	}
	// The zygote keeps CPython's own allocator: routing the heap through
	// glibc malloc on transparent huge pages made fork's page-table copy
	// cheaper but every later allocation slower, and did not lower the CPU
	// a spawn costs (measured in docs/performance.md).
	var env []string
	for k, v := range sandboxEnv {
		env = append(env, k+"="+v)
	}
	// The zygote's stderr goes to ours: it only ever prints set-up failures.
	p.cmd, err = sandbox.Start(sandbox.Config{
		Path: cfg.Python, Args: []string{"python3", "-s", "-B", "/run/codeexec/zygote.py"},
		Env: env, Files: files, ExtraFiles: []*os.File{theirs},
		HostUID: cfg.HostUID, HostGID: cfg.HostUID, IDCount: IDRange, Stderr: os.Stderr,
	})
	if err != nil {
		return err
	}
	go func() {
		p.cmd.Wait()
		close(p.dead)
	}()
	if err := p.zcg.Add(p.cmd.Process.Pid); err != nil {
		return err
	}
	// Should the sandboxes together reach their ceiling, the OOM killer
	// must pick a sandbox, never the zygote that all of them hang on.
	// Each child is set to childOOMScoreAdj as soon as it exists (see
	// confine); written by us with CAP_SYS_RESOURCE, that is also the
	// lowest value the child may set itself (proc(5), oom_score_adj).
	// Lowering a score needs CAP_SYS_RESOURCE, which some hosts withhold
	// even from root: then the children's high score alone steers it.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", p.cmd.Process.Pid), []byte("-1000"), 0); err != nil {
		p.log.Warn("cannot protect the zygote from the OOM killer (no CAP_SYS_RESOURCE?); sandboxes are still its first choice", "err", err)
	}
	return nil
}

// awaitReady waits for {"op":"ready"}: the zygote has imported everything.
func (p *pool) awaitReady(ctx context.Context) error {
	ready := make(chan error, 1)
	go func() {
		var msg python.Control
		_, err := p.recvControl(&msg)
		if err == nil && msg.Op != "ready" {
			err = fmt.Errorf("zygote said %q before ready", msg.Op)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			return fmt.Errorf("start zygote: %w", err)
		}
		return nil
	case <-p.dead:
		return fmt.Errorf("start zygote: exited (%v); its error is on stderr", p.cmd.ProcessState)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recvControl reads one message from the zygote, with any fds it carries.
func (p *pool) recvControl(msg *python.Control) ([]int, error) {
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(3*4))
	n, oobn, _, _, err := unix.Recvmsg(p.ctrl, buf, oob, unix.MSG_CMSG_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("read zygote control: %w", err)
	}
	if n == 0 {
		return nil, errors.New("zygote closed its control socket")
	}
	var fds []int
	if oobn > 0 {
		scms, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err == nil {
			for _, scm := range scms {
				if rights, err := unix.ParseUnixRights(&scm); err == nil {
					fds = append(fds, rights...)
				}
			}
		}
	}
	if err := json.Unmarshal(buf[:n], msg); err != nil {
		closeFDs(fds)
		return nil, fmt.Errorf("zygote message: %w", err)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// readControl dispatches the zygote's messages until the socket closes.
func (p *pool) readControl() {
	defer p.wg.Done()
	for {
		var msg python.Control
		fds, err := p.recvControl(&msg)
		if err != nil {
			p.mu.Lock()
			for _, c := range p.live {
				c.markExited(-1, 0)
			}
			p.live = map[int]*child{}
			p.mu.Unlock()
			return
		}
		p.mu.Lock()
		c := p.live[msg.ID]
		if msg.Op == "exited" {
			delete(p.live, msg.ID)
		}
		p.mu.Unlock()
		switch {
		case c == nil:
			closeFDs(fds)
		case msg.Op == "spawned" && len(fds) == 3:
			c.spawned <- fds
		case msg.Op == "exited":
			closeFDs(fds)
			c.markExited(msg.Code, msg.Signal)
		default:
			closeFDs(fds)
			p.log.Warn("unexpected zygote message", "op", msg.Op, "fds", len(fds))
		}
	}
}

// maxPrefault bounds what a child may ask its successors to copy at once:
// the ranges must fit one control message, and the bytes stay well above
// the private memory of a warm child at rest (docs/performance.md).
const (
	maxPrefaultRanges = 1500
	maxPrefaultBytes  = 64 << 20
)

// learnPrefault passes to the zygote the pages a probe child wrote while
// it set itself up and warmed up, so later children copy them in a few
// system calls instead of a page fault each. The probe has run no user
// code, but its word is checked anyway: it can only make other children
// copy more of their own memory, and that is bounded.
func (p *pool) learnPrefault(pages []python.PageRange) {
	var ranges []python.PageRange
	var total uint64
	for _, r := range pages {
		if r[1] == 0 || r[0]%4096 != 0 || r[1]%4096 != 0 || r[0]+r[1] < r[0] {
			continue
		}
		if n := len(ranges); n > 0 && ranges[n-1][0] <= r[0] && r[0] <= ranges[n-1][0]+ranges[n-1][1] {
			// Touching or overlapping: one call. (Bridging a gap would
			// cost a page copy and 4 KiB per child to save one cheap
			// system call.)
			ranges[n-1][1] = max(ranges[n-1][0]+ranges[n-1][1], r[0]+r[1]) - ranges[n-1][0]
			continue
		}
		ranges = append(ranges, r)
	}
	if len(ranges) > maxPrefaultRanges {
		sort.Slice(ranges, func(i, j int) bool { return ranges[i][1] > ranges[j][1] })
		ranges = ranges[:maxPrefaultRanges]
	}
	kept := ranges[:0]
	for _, r := range ranges {
		if total+r[1] <= maxPrefaultBytes {
			kept = append(kept, r)
			total += r[1]
		}
	}
	ranges = kept
	if err := p.sendControl(python.Control{Op: "prefault", Ranges: ranges}); err != nil {
		p.log.Warn("send prefault ranges to zygote", "err", err)
		return
	}
	p.prefaulted.Store(true)
	p.log.Debug("children will copy at once the pages warm-up writes", "ranges", len(ranges), "bytes", total)
}

func (p *pool) sendControl(msg python.Control) error {
	data, _ := json.Marshal(msg)
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	return unix.Sendmsg(p.ctrl, data, nil, nil, 0)
}

// cgroupName names a cgroup of this pool: generations after the first get
// a prefix, so a restarted pool never reuses a cgroup the old one is still
// removing.
func (p *pool) cgroupName(kind string, id int) string {
	name := kind
	if id > 0 {
		name = fmt.Sprintf("%s%d", kind, id)
	}
	if p.gen > 0 {
		name = fmt.Sprintf("g%d-%s", p.gen, name)
	}
	return name
}

// zygoteHeadroom is what the zygote's cgroup must have free before a
// spawn. Each live child leaves memory charged there (page tables, and the
// pages it wrote before it joined its own cgroup; docs/performance.md has
// the measured amount and the number of live children that fit), and the
// zygote is the only process of that cgroup: if it filled, the OOM killer
// would kill the zygote, and with it every sandbox. The pool refuses new
// children before that instead.
func zygoteHeadroom(limit int64) int64 { return max(32<<20, limit/16) }

// checkCapacity refuses a new child, with ErrCapacity, when the zygote's
// cgroup is near its limit or all sandboxes together are within one
// sandbox's default memory of theirs: the service refuses new sandboxes
// before the kernel would have to kill any. A usage that cannot be read
// does not refuse (the limits still hold in the kernel).
func (p *pool) checkCapacity() error {
	full := false
	if used, err := p.zcg.MemoryUsage(); err == nil && used > p.cfg.ZygoteMemoryBytes-zygoteHeadroom(p.cfg.ZygoteMemoryBytes) {
		full = true
	}
	if total := p.cfg.TotalMemoryBytes; total > 0 {
		if used, err := p.cgs.MemoryUsage(); err == nil && used > total-p.cfg.Defaults.MemoryBytes {
			full = true
		}
	}
	p.full.Store(full)
	if full {
		return ErrCapacity
	}
	return nil
}

// refillers is how many children may be spawning at once.
func refillers(poolSize int) int {
	return max(1, min(poolSize, runtime.NumCPU()+1, 4))
}

// available is how many warm children wait for a request.
func (p *pool) available() int { return len(p.warm) + len(p.data) }

// refill keeps the pool full until ctx ends.
func (p *pool) refill(ctx context.Context) {
	defer p.wg.Done()
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		select {
		case p.slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		c, err := p.spawn(ctx)
		if err != nil {
			<-p.slots
			if ctx.Err() != nil {
				return // the pool is closing: the zygote's death is expected
			}
			if errors.Is(err, ErrCapacity) {
				// Not a failure: wait for sandboxes to end.
				select {
				case <-ctx.Done():
				case <-time.After(200 * time.Millisecond):
				}
				continue
			}
			select {
			case <-p.dead:
				p.log.Error("zygote exited; no more sandboxes", "state", p.cmd.ProcessState)
				return
			default:
			}
			if ctx.Err() == nil {
				p.log.Error("spawn sandbox", "err", err)
			}
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		if c.dataWarm {
			p.data <- c // never blocks: the slot bounds both channels
		} else {
			p.warm <- c
		}
	}
}

// get takes a warm child, one that has warmed up pandas if there is one,
// waiting for one while ctx allows.
//
// With no child waiting and the pool at its capacity, it returns
// ErrCapacity at once rather than wait for sandboxes to end.
func (p *pool) get(ctx context.Context) (*child, error) {
	for {
		var c *child
		select {
		case c = <-p.data:
		default:
			if p.full.Load() && p.available() == 0 {
				return nil, ErrCapacity
			}
			recheck := time.NewTimer(100 * time.Millisecond)
			select {
			case c = <-p.data:
			case c = <-p.warm:
			case <-recheck.C:
				continue
			case <-p.dead:
				recheck.Stop()
				return nil, ErrUnavailable
			case <-ctx.Done():
				recheck.Stop()
				return nil, ctx.Err()
			}
			recheck.Stop()
		}
		<-p.slots // its place in the pool is free: a refiller spawns the next
		if c.alive() {
			return c, nil
		}
		c.destroy()
	}
}

// getKind takes a warm child that has warmed up pandas or one that has
// not, waiting for one while ctx allows.
func (p *pool) getKind(ctx context.Context, dataWarm bool) (*child, error) {
	ch := p.warm
	if dataWarm {
		ch = p.data
	}
	select {
	case c := <-ch:
		<-p.slots
		if !c.alive() {
			c.destroy()
			return nil, errors.New("the warm child died")
		}
		return c, nil
	case <-p.dead:
		return nil, ErrUnavailable
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// close kills the zygote and everything it spawned and removes the
// cgroups. It waits for every goroutine of the pool.
func (p *pool) close() {
	if p.stop != nil {
		p.stop()
	}
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Kill()
		<-p.dead
	}
	unix.Shutdown(p.ctrl, unix.SHUT_RDWR)
	p.wg.Wait()
	unix.Close(p.ctrl)
	for {
		select {
		case c := <-p.warm:
			c.destroy()
			continue
		case c := <-p.data:
			c.destroy()
			continue
		default:
		}
		break
	}
	if p.zcg != nil {
		if err := p.zcg.Remove(); err != nil {
			p.log.Error("remove zygote cgroup", "err", err)
		}
	}
}
