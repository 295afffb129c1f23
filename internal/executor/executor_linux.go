package executor

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"codeexec/internal/sandbox"
)

// Executor runs code in warm sandboxes. Its methods are safe for concurrent
// use.
type Executor struct {
	cfg  Config
	cgs  sandbox.Cgroups
	pool *pool

	wg       sync.WaitGroup // background destroys and sessions' timers
	mu       sync.Mutex
	closed   bool
	sessions map[*Session]struct{}
}

// New starts an executor: a zygote that preloads the libraries (about a
// second) and a pool of warm children filled in the background.
func New(ctx context.Context, cfg Config) (*Executor, error) {
	cfg.setDefaults()
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("the executor needs root to create namespaces with a uid range and cgroups (run 'codeexec doctor'): %w", sandbox.ErrUnsupported)
	}
	cgs, err := sandbox.NewCgroups(fmt.Sprintf("%s/%d-%d", cfg.CgroupParent, os.Getpid(), time.Now().UnixNano()%1e6))
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	p, err := startPool(ctx, cfg, cgs)
	if err != nil {
		cgs.Close()
		return nil, err
	}
	return &Executor{cfg: cfg, cgs: cgs, pool: p, sessions: map[*Session]struct{}{}}, nil
}

// Config returns the executor's configuration with defaults filled in.
func (e *Executor) Config() Config { return e.cfg }

// Warm reports how many children are ready to take code.
func (e *Executor) Warm() int { return len(e.pool.warm) }

// check validates a request and resolves its limits.
func (e *Executor) check(req *Request) (Limits, error) {
	if err := CheckCode(req.Code, e.cfg.MaxCodeBytes); err != nil {
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
	c, err := e.pool.get(ctx)
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
	e.pool.close()
	e.wg.Wait()
	return e.cgs.Close()
}
