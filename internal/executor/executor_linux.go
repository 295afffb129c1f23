package executor

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"codeexec/internal/sandbox"
)

// Executor runs code in warm sandboxes. Its methods are safe for concurrent
// use.
type Executor struct {
	cfg  Config
	cgs  sandbox.Cgroups
	cur  atomic.Pointer[pool] // the live zygote; replaced if it dies
	stop chan struct{}        // closed by Close: ends supervise

	wg       sync.WaitGroup // background destroys and sessions' timers
	mu       sync.Mutex
	closed   bool
	sessions map[*Session]struct{}
}

// New starts an executor: a zygote that preloads the libraries (New
// returns once it has) and a pool of warm children filled in the background.
func New(ctx context.Context, cfg Config) (*Executor, error) {
	cfg.setDefaults()
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("the executor needs root to create namespaces with a uid range and cgroups (run 'codeexec doctor'): %w", sandbox.ErrUnsupported)
	}
	if cfg.TotalMemoryBytes == 0 || cfg.TotalPids == 0 {
		host, err := sandbox.HostCeilings()
		if err != nil {
			return nil, fmt.Errorf("derive the ceilings of all sandboxes (set TotalMemoryBytes and TotalPids): %w", err)
		}
		cfg.TotalMemoryBytes = cmp.Or(cfg.TotalMemoryBytes, host.MemoryBytes)
		cfg.TotalPids = cmp.Or(cfg.TotalPids, host.Pids)
	}
	// A server killed with SIGKILL leaves its cgroups behind, in every
	// hierarchy; the next one to start removes them. Failing to is no
	// reason not to serve.
	swept, err := sandbox.SweepCgroups(cfg.CgroupParent)
	for _, s := range swept {
		if s.Procs > 0 {
			cfg.Logger.Warn("killed processes left in the cgroup of a dead server", "cgroup", s.Path, "procs", s.Procs)
		}
		cfg.Logger.Info("removed the cgroup of a dead server", "cgroup", s.Path)
	}
	if err != nil {
		cfg.Logger.Warn("remove the cgroups of dead servers", "err", err)
	}
	name, err := sandbox.CgroupInstance()
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	cgs, err := sandbox.NewCgroups(cfg.CgroupParent + "/" + name)
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	if err := cgs.SetLimits(sandbox.Limits{MemoryBytes: cfg.TotalMemoryBytes, Pids: cfg.TotalPids}); err != nil {
		cgs.Close()
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	cfg.Logger.Info("ceilings of all sandboxes", "memory_bytes", cfg.TotalMemoryBytes, "pids", cfg.TotalPids)
	p, err := startPool(ctx, cfg, cgs, 0)
	if err != nil {
		cgs.Close()
		return nil, err
	}
	e := &Executor{cfg: cfg, cgs: cgs, stop: make(chan struct{}), sessions: map[*Session]struct{}{}}
	e.cur.Store(p)
	e.wg.Add(1)
	go e.supervise()
	return e, nil
}

// pool returns the live pool.
func (e *Executor) pool() *pool { return e.cur.Load() }

// supervise starts a new zygote when the current one dies (killed by the
// OOM killer, say), so that the service heals; the sandboxes of the dead
// one died with it. It ends when the executor closes.
func (e *Executor) supervise() {
	defer e.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		p := e.cur.Load()
		select {
		case <-e.stop:
			return
		case <-p.dead:
		}
		e.cfg.Logger.Error("zygote died; starting a new one", "generation", p.gen, "state", p.cmd.ProcessState)
		for {
			select {
			case <-e.stop:
				return
			case <-time.After(backoff):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			np, err := startPool(ctx, e.cfg, e.cgs, p.gen+1)
			cancel()
			if err == nil {
				e.cur.Store(np)
				backoff = 100 * time.Millisecond
				break
			}
			e.cfg.Logger.Error("restart zygote", "err", err)
			backoff = min(2*backoff, 30*time.Second)
		}
		p.close()
	}
}

// Config returns the executor's configuration with defaults filled in.
func (e *Executor) Config() Config { return e.cfg }

// Warm reports how many children are ready to take code.
func (e *Executor) Warm() int { return e.pool().available() }

// WarmData reports how many of those have warmed up pandas too (see
// Config.DataWarmup).
func (e *Executor) WarmData() int { return len(e.pool().data) }

// check validates a request and resolves its limits.
func (e *Executor) check(req *Request) (Limits, error) {
	if err := CheckCode(req.Code, e.cfg.MaxCodeBytes); err != nil {
		return Limits{}, err
	}
	if err := CheckLanguage(req.Language); err != nil {
		return Limits{}, err
	}
	for _, f := range req.Files {
		if err := CheckPath(f.Path); err != nil {
			return Limits{}, err
		}
	}
	return req.Limits.resolve(e.cfg.Defaults, e.cfg.Max)
}

// Execute runs req once in a fresh sandbox that is destroyed afterwards.
// Cancelling ctx kills the code at once; the Result then has status killed.
func (e *Executor) Execute(ctx context.Context, req Request) (*Result, error) {
	l, err := e.check(&req)
	if err != nil {
		return nil, err
	}
	if e.isClosed() {
		return nil, ErrClosed
	}
	c, err := e.pool().get(ctx)
	if err != nil {
		return nil, err
	}
	res, err := c.run(ctx, &req, l, false)
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		c.destroy()
	}()
	return res, err
}

func (e *Executor) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// Close ends every session, kills every sandbox and removes their cgroups.
func (e *Executor) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	var ss []*Session
	for s := range e.sessions {
		ss = append(ss, s)
	}
	e.mu.Unlock()
	for _, s := range ss {
		s.Close()
	}
	close(e.stop)
	e.wg.Wait() // supervise has stopped: cur is final
	e.pool().close()
	e.wg.Wait()
	return e.cgs.Close()
}
