package executor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Session is a sandbox kept alive across executions, so that variables,
// imports and files persist. One execution runs at a time; others wait.
type Session struct {
	e    *Executor
	c    *child
	idle time.Duration

	turn   chan struct{} // holds one token: the right to use c
	done   chan struct{} // closed when the session ends
	once   sync.Once
	timer  *time.Timer
	mu     sync.Mutex
	reason error
}

// NewSession starts a session that ends after idle without executions (0
// means never; the caller then must Close it).
func (e *Executor) NewSession(ctx context.Context, idle time.Duration) (*Session, error) {
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	c, err := e.pool().get(ctx)
	if err != nil {
		return nil, err
	}
	s := &Session{e: e, c: c, idle: idle, turn: make(chan struct{}, 1), done: make(chan struct{})}
	s.turn <- struct{}{}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		c.destroy()
		return nil, ErrClosed
	}
	e.sessions[s] = struct{}{}
	e.wg.Add(1)
	e.mu.Unlock()
	if idle > 0 {
		s.timer = time.AfterFunc(idle, func() { s.end(ErrSessionEnded) })
	}
	// A process that ends between executions (killed for a frame sent
	// outside one, say) ends the session at once, not at its next use.
	go func() {
		defer e.wg.Done()
		select {
		case <-c.exited:
			s.end(c.endErr())
		case <-s.done:
		}
	}()
	return s, nil
}

// Done is closed when the session has ended (Close, idle timeout, or its
// process died).
func (s *Session) Done() <-chan struct{} { return s.done }

// Err says why the session ended, nil while it lives. It wraps
// ErrSessionEnded, and also ErrProcessEnded when the session's process
// ended by itself or was killed (python.ErrProtocol too when it was killed
// for breaking the protocol).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// Execute runs req in the session. It returns ErrSessionEnded once the
// session is over.
func (s *Session) Execute(ctx context.Context, req Request) (*Result, error) {
	l, err := s.e.check(&req)
	if err != nil {
		return nil, err
	}
	select {
	case <-s.turn:
	case <-s.done:
		return nil, s.Err()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { s.turn <- struct{}{} }()
	select {
	case <-s.done:
		return nil, s.Err()
	default:
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	res, err := s.c.run(ctx, &req, l, true)
	var inErr *InputError
	switch {
	case errors.As(err, &inErr):
		// An input file that cannot be placed (say, below a symlink the
		// code planted) is refused before any code runs: the request was
		// bad, the session is intact.
		if s.timer != nil {
			s.timer.Reset(s.idle)
		}
	case err != nil || res.SessionEnded || !s.c.alive():
		if res != nil {
			res.SessionEnded = true
		}
		s.end(s.c.endErr())
	case s.timer != nil:
		s.timer.Reset(s.idle)
	}
	return res, err
}

// Files lists the regular files in the session's /mnt/data with sizes.
func (s *Session) Files() ([]File, error) {
	select {
	case <-s.done:
		return nil, ErrSessionEnded
	default:
	}
	files := s.c.collect(context.Background(), nil, nil)
	select {
	case <-s.done: // its directory may have been closed under the scan
		return nil, s.Err()
	default:
	}
	return files, nil
}

// Open opens a file of the session's /mnt/data for reading.
func (s *Session) Open(path string) (*os.File, int64, error) {
	if err := CheckPath(path); err != nil {
		return nil, 0, err
	}
	return openRegular(s.c.data, path)
}

// WriteFile places a file in the session's /mnt/data, waiting while ctx
// allows for a running execution to end: the session's process writes it
// (see child.place). A file that cannot be placed is an *InputError.
func (s *Session) WriteFile(ctx context.Context, f InputFile) error {
	if err := CheckPath(f.Path); err != nil {
		return err
	}
	select {
	case <-s.turn:
	case <-s.done:
		return s.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { s.turn <- struct{}{} }()
	select {
	case <-s.done:
		return s.Err()
	default:
	}
	l, err := Limits{}.resolve(s.e.cfg.Defaults, s.e.cfg.Max)
	if err != nil {
		return err
	}
	l.MemoryBytes = s.c.limits.MemoryBytes // what its cgroup holds now
	err = s.c.place(ctx, []InputFile{f}, l)
	if !s.c.alive() {
		s.end(s.c.endErr())
	}
	return err
}

// Close ends the session and frees its sandbox. It is safe to call more
// than once.
func (s *Session) Close() { s.end(ErrSessionEnded) }

func (s *Session) end(reason error) {
	s.once.Do(func() {
		s.mu.Lock()
		s.reason = reason
		s.mu.Unlock()
		close(s.done)
		if s.timer != nil {
			s.timer.Stop()
		}
		s.c.kill()
		s.e.mu.Lock()
		delete(s.e.sessions, s)
		s.e.mu.Unlock()
		// Wait for a running execution to notice, then free everything.
		s.e.wg.Add(1)
		go func() {
			defer s.e.wg.Done()
			<-s.turn
			s.c.destroy()
		}()
	})
}

// ChildMemory measures a warm child, one that warmed up pandas too if
// dataWarm, after it ran print(1) (and, like a session, lives on): its
// private dirty memory and its proportional set size (PSS), in bytes, from
// /proc/PID/smaps_rollup (proc(5)). It waits for such a child while ctx
// allows.
func (e *Executor) ChildMemory(ctx context.Context, dataWarm bool) (privateDirty, pss int64, err error) {
	p := e.pool()
	c, err := p.getKind(ctx, dataWarm)
	if err != nil {
		return 0, 0, err
	}
	defer c.destroy()
	req := Request{Code: "print(1)"}
	l, err := e.check(&req)
	if err != nil {
		return 0, 0, err
	}
	if res, err := c.run(ctx, &req, l, true); err != nil || res.Status != StatusOK {
		return 0, 0, fmt.Errorf("print(1): %v %v", err, res)
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", c.pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "Private_Dirty:":
			privateDirty = kb << 10
		case "Pss:":
			pss = kb << 10
		}
	}
	return privateDirty, pss, nil
}
