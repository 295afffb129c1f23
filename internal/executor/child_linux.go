package executor

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"codeexec/internal/python"
	"codeexec/internal/sandbox"
)

// child is one warm sandbox: a forked Python process, pid 1 of its own pid
// namespace, in its own cgroup. Go holds its socket, the read ends of its
// stdout and stderr, a pidfd and a handle on its /mnt/data.
type child struct {
	p       *pool
	id, uid int
	spawned chan []int // the zygote's fds for this child, once

	exitOnce sync.Once
	exited   chan struct{} // closed when the zygote reaped it
	exitCode int
	exitSig  int

	pid      int // host pid
	pidfd    int
	conn     *net.UnixConn
	r        *bufio.Reader
	stdout   *os.File
	stderr   *os.File
	cg       sandbox.Cgroup
	limits   sandbox.Limits       // what cg holds now
	idle     bool                 // cg is cpu.idle: the child is still in the pool
	dataWarm bool                 // it has run runner.warm_data too
	ooms     int                  // the cgroup's OOM kills when the child was warm
	files    map[string]fileState // /mnt/data when the child was warm
	data     *os.File             // O_PATH handle of /mnt/data inside the child

	frames chan frame     // from the socket; closed at EOF
	outs   [2]chan []byte // stdout, stderr chunks; nil chunk = end mark; closed at EOF
	mark   atomic.Pointer[[]byte]
	wg     sync.WaitGroup
	killed atomic.Bool

	// open is set while an execution may send frames, from before its
	// code is sent until its done frame; budget is how many bytes of
	// frames it may still send. See readFrames.
	open   atomic.Bool
	budget atomic.Int64
	// fault is the protocol violation the child was killed for, if any.
	fault atomic.Pointer[error]
}

// frame is what readFrames passes on: an event, a protocol violation
// (after which nothing follows), or the size of a frame it skipped because
// the execution's budget was spent.
type frame struct {
	ev   *python.Event
	err  error
	over int
}

func (c *child) markExited(code, sig int) {
	c.exitOnce.Do(func() {
		c.exitCode, c.exitSig = code, sig
		close(c.exited)
	})
}

// childOOMScoreAdj makes a sandbox the OOM killer's first choice, before
// the server or anything else on the host.
const childOOMScoreAdj = "500"

// spawn asks the zygote for a child and prepares it: cgroup, pidfd, file
// handle, reader goroutines. The child is warm when it returns.
func (p *pool) spawn(ctx context.Context) (_ *child, err error) {
	c, err := p.newChild()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.destroy()
		}
	}()
	if err := c.handshake(ctx); err != nil {
		return nil, err
	}
	if err := c.confine(); err != nil {
		return nil, err
	}
	if err := c.warmUp(); err != nil {
		return nil, err
	}
	if err := c.openData(); err != nil {
		return nil, err
	}
	c.startReaders()
	return c, nil
}

// newChild reserves an id and a uid for a child the zygote is to spawn and
// registers it among the live ones, unless the pool is at its capacity.
func (p *pool) newChild() (*child, error) {
	if err := p.checkCapacity(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	uid, ok := p.allocUID()
	if !ok {
		return nil, fmt.Errorf("%w: every sandbox uid is in use", ErrCapacity)
	}
	p.nextID++
	id := p.nextID
	c := &child{p: p, id: id, uid: uid,
		spawned: make(chan []int, 1), exited: make(chan struct{}), pidfd: -1}
	p.live[id] = c
	return c, nil
}

// handshake asks the zygote to fork the child, takes the child's socket
// and pipes, and reads its ready frame, its pid and a pidfd of it.
func (c *child) handshake(ctx context.Context) error {
	p := c.p
	if err := p.sendControl(python.Control{Op: "spawn", ID: c.id, UID: c.uid}); err != nil {
		return fmt.Errorf("ask zygote to spawn: %w", err)
	}
	var fds []int
	select {
	case fds = <-c.spawned:
	case <-p.dead:
		return ErrUnavailable
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return errors.New("zygote did not spawn within 10 s")
	}
	for _, fd := range fds {
		unix.SetNonblock(fd, true)
	}
	sock := os.NewFile(uintptr(fds[0]), "child-socket")
	c.stdout = os.NewFile(uintptr(fds[1]), "child-stdout")
	c.stderr = os.NewFile(uintptr(fds[2]), "child-stderr")
	fc, err := net.FileConn(sock)
	sock.Close()
	if err != nil {
		return fmt.Errorf("child socket: %w", err)
	}
	c.conn = fc.(*net.UnixConn)
	if err := c.readReady(); err != nil {
		return err
	}
	if c.pidfd, err = unix.PidfdOpen(c.pid, 0); err != nil {
		return fmt.Errorf("pidfd_open %d: %w", c.pid, err)
	}
	return nil
}

// confine makes the child the OOM killer's first choice and moves it into
// a cgroup of its own with the default limits, at idle CPU priority.
func (c *child) confine() (err error) {
	p := c.p
	// It inherited the zygote's -1000 (see startZygote). It waits for our
	// "warm", so the pid is still it.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/oom_score_adj", c.pid), []byte(childOOMScoreAdj), 0); err != nil {
		return fmt.Errorf("set oom_score_adj of child %d: %w", c.pid, err)
	}
	if c.cg, err = p.cgs.New(p.cgroupName("c", c.id)); err != nil {
		return err
	}
	d := p.cfg.Defaults
	if err := c.setLimits(sandbox.Limits{MemoryBytes: d.MemoryBytes, Pids: d.Procs, CPUMillis: d.CPUMillis}); err != nil {
		return err
	}
	// While it warms up, the child runs only on CPU time no running
	// execution wants (it is a normal cgroup again once warm).
	if err := c.cg.SetIdle(true); err != nil {
		return err
	}
	c.idle = true
	return c.cg.Add(c.pid)
}

// warmUp has the child, now in its own cgroup, run its warm-up and, when
// the pool can spare the time, the pandas one too.
func (c *child) warmUp() error {
	p := c.p
	// Only now, charged to its own cgroup, does the child warm up.
	// Until the zygote knows which pages warm-up writes, a child is asked
	// to report them (see learnPrefault).
	probe := !p.prefaulted.Load()
	if err := python.WriteFrame(c.conn, map[string]any{"op": "warm", "probe": probe}); err != nil {
		return fmt.Errorf("warm child: %w", err)
	}
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	ev, err := python.ReadSetup(c.r, "warmed")
	if err != nil {
		return fmt.Errorf("warm child: %w (%s; its stderr: %q)", err, c.exitReport(), c.drainStderr())
	}
	if probe && len(ev.Pages) > 0 && !p.prefaulted.Load() {
		p.learnPrefault(ev.Pages)
	}
	// A second warm-up only when a request would not wait for it: another
	// child is ready. Under load the pool is empty and children skip it.
	// If it ever fails, the pool stops asking (the child is thrown away,
	// and its successors must not fail the same way forever).
	if p.cfg.DataWarmup && !p.noDataWarmup.Load() && p.available() > 0 {
		if err := python.WriteFrame(c.conn, map[string]any{"op": "warm_data", "plots": p.cfg.PlotWarmup}); err != nil {
			return fmt.Errorf("warm child: %w", err)
		}
		c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := python.ReadSetup(c.r, "warmed_data"); err != nil {
			p.noDataWarmup.Store(true)
			return fmt.Errorf("warm up pandas in child (no longer asked of children): %w (%s; its stderr: %q)", err, c.exitReport(), c.drainStderr())
		}
		c.dataWarm = true
	}
	c.conn.SetReadDeadline(time.Time{})
	// Warm, the child sleeps in read until a request comes: its priority
	// no longer matters, and clearing it now keeps the cgroup write off
	// the request path.
	c.leaveIdle()
	return nil
}

// openData opens the warm child's /mnt/data, checks that its pid is still
// it, and records what run compares a single-use child against.
func (c *child) openData() error {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/root/mnt/data", c.pid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open work dir of child %d: %w", c.pid, err)
	}
	c.data = os.NewFile(uintptr(fd), "child-data")
	// The pid could in theory have been reused between reading it and
	// opening the pidfd; the child is blocked reading its socket, so it is
	// alive now, and a live pidfd proves the pid is still it.
	if err := unix.PidfdSendSignal(c.pidfd, 0, nil, 0); err != nil {
		return fmt.Errorf("child %d vanished: %w", c.pid, err)
	}
	// What run compares against in a single-use child, read now rather
	// than on the request path. (A count that cannot be read is 0, as
	// run treats it too.)
	c.ooms, _ = c.cg.OOMKills()
	c.files = scanFiles(c.data)
	return nil
}

// startReaders starts the goroutines that read the child's socket and
// pipes for run.
func (c *child) startReaders() {
	c.frames = make(chan frame, 16)
	c.outs = [2]chan []byte{make(chan []byte, 4), make(chan []byte, 4)}
	empty := []byte{0}
	c.mark.Store(&empty)
	c.wg.Add(3)
	go c.readFrames()
	go c.readPipe(c.stdout, c.outs[0])
	go c.readPipe(c.stderr, c.outs[1])
}

// setLimits writes l to the child's cgroup unless it holds them already
// (the common case: a request with the default limits on a child set up
// with them saves the cgroup writes on the request path).
func (c *child) setLimits(l sandbox.Limits) error {
	if l == c.limits {
		return nil
	}
	if err := c.cg.SetLimits(l); err != nil {
		return err
	}
	c.limits = l
	return nil
}

// leaveIdle clears cpu.idle on the child's cgroup: from now on it competes
// for CPU like any execution. It is priority only, not a limit, so a
// failure is logged and the child goes on.
func (c *child) leaveIdle() {
	if !c.idle {
		return
	}
	if err := c.cg.SetIdle(false); err != nil {
		c.p.log.Warn("clear cpu.idle of a sandbox's cgroup", "err", err, "sandbox_id", c.id)
		return
	}
	c.idle = false
}

// readReady reads the child's first frame and, from the kernel's
// SCM_CREDENTIALS on it, the child's pid in our namespace (unix(7)).
func (c *child) readReady() error {
	raw, err := c.conn.SyscallConn()
	if err != nil {
		return err
	}
	raw.Control(func(fd uintptr) {
		err = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	})
	if err != nil {
		return fmt.Errorf("SO_PASSCRED: %w", err)
	}
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 512)
	oob := make([]byte, unix.CmsgSpace(unix.SizeofUcred))
	n, oobn, _, _, err := c.conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return fmt.Errorf("child set-up: %w (%s; its stderr: %q)", err, c.exitReport(), c.drainStderr())
	}
	scms, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(scms) != 1 {
		return fmt.Errorf("%w: no credentials on ready", python.ErrProtocol)
	}
	cred, err := unix.ParseUnixCredentials(&scms[0])
	if err != nil || cred.Pid <= 0 {
		return fmt.Errorf("%w: bad credentials on ready", python.ErrProtocol)
	}
	c.pid = int(cred.Pid)
	c.conn.SetReadDeadline(time.Time{})
	c.r = bufio.NewReaderSize(io.MultiReader(bytes.NewReader(buf[:n]), c.conn), 64<<10)
	if _, err := python.ReadSetup(c.r, "ready"); err != nil {
		return fmt.Errorf("child set-up: %w (its stderr: %q)", err, c.drainStderr())
	}
	return nil
}

// exitReport says how a child that failed its set-up ended.
func (c *child) exitReport() string {
	select {
	case <-c.exited:
		if c.exitSig != 0 {
			return "killed by " + unix.SignalName(unix.Signal(c.exitSig))
		}
		return fmt.Sprintf("exit code %d", c.exitCode)
	case <-time.After(time.Second):
		return "still running"
	}
}

// drainStderr returns what a failed child printed, for the log.
func (c *child) drainStderr() string {
	c.stderr.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	b := make([]byte, 4096)
	n, _ := io.ReadFull(c.stderr, b)
	return string(b[:n])
}

// Costs of a frame against an execution's budget of frame bytes.
const (
	// frameOverhead is added to each frame's length: what the server
	// keeps of a decoded display beyond its bytes (the map, the event).
	// Without it, a flood of tiny displays would cost the server tens of
	// times the bytes the budget counts.
	frameOverhead = 1024
	// doneReserve is how far past its budget an execution's frames are
	// still read, so that the done frame of code stopped for sending too
	// much still arrives; displays among them are dropped.
	doneReserve = 1 << 20
)

// frameBufs recycles the buffers frames are read into: decoding copies
// what it keeps, so a buffer is free again at once.
var frameBufs = sync.Pool{New: func() any { return new([]byte) }}

// readFrames passes the frames of the child's executions to run. It reads
// a frame only while an execution is open (c.open) and only as many bytes
// as the execution may still send (c.budget): a frame's cost is counted
// from its header, before it is read, and a frame over the budget (and
// its doneReserve) is skipped unread (run then ends the execution with
// output_limit). A frame outside an execution (user code in a session can
// send one from a thread after its cell ended) is a protocol violation:
// the child is killed. So what the server holds of a child's frames is
// bounded by the budget of its open execution, never by what it sends.
func (c *child) readFrames() {
	defer c.wg.Done()
	defer close(c.frames)
	fail := func(err error) {
		if !c.killed.Load() {
			c.fault.Store(&err)
			c.kill()
			c.frames <- frame{err: err}
		}
	}
	for {
		n, err := python.ReadHeader(c.r)
		switch {
		case errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed):
			return
		case err != nil:
			fail(err)
			return
		case !c.open.Load():
			fail(fmt.Errorf("%w: a frame arrived outside an execution", python.ErrProtocol))
			return
		}
		// Only this goroutine spends the budget; run sets it while no
		// execution is open.
		left := c.budget.Load() - int64(n) - frameOverhead
		if left < -doneReserve {
			if _, err := io.CopyN(io.Discard, c.r, int64(n)); err != nil {
				fail(fmt.Errorf("%w: short frame: %v", python.ErrProtocol, err))
				return
			}
			c.frames <- frame{over: n}
			continue
		}
		c.budget.Store(left)
		buf := frameBufs.Get().(*[]byte)
		if cap(*buf) < n {
			*buf = make([]byte, n)
		}
		data := (*buf)[:n]
		_, err = io.ReadFull(c.r, data)
		var ev *python.Event
		if err != nil {
			err = fmt.Errorf("%w: short frame: %v", python.ErrProtocol, err)
		} else {
			ev, err = python.DecodeEvent(data)
		}
		frameBufs.Put(buf)
		if err != nil {
			fail(err)
			return
		}
		switch {
		case ev.Type == "done" || ev.Type == "put":
			c.open.Store(false) // before the next header: the exchange is over
		case left < 0:
			c.frames <- frame{over: n} // a display read only for what may follow it
			continue
		}
		c.frames <- frame{ev: ev}
	}
}

// Chunks on a child's output channels: data, or one of two marks.
var (
	endChunk  []byte            // nil: the end mark of the current execution
	syncChunk = make([]byte, 0) // empty: a display's sync mark
)

// readPipe forwards a stream's bytes, splitting out the marks of the
// current execution: "\x00<nonce>\x00" ends it (sent as endChunk), and
// "\x00<nonce>d\x00" precedes each display (sent as syncChunk).
func (c *child) readPipe(f *os.File, out chan<- []byte) {
	defer c.wg.Done()
	defer close(out)
	buf := make([]byte, 64<<10)
	var pend []byte
	for {
		n, err := f.Read(buf)
		pend = append(pend, buf[:n]...)
		end := *c.mark.Load()
		sync := append(end[:len(end)-1:len(end)-1], 'd', 0)
		for {
			i := bytes.Index(pend, end[:len(end)-1]) // the shared prefix
			if i < 0 || i+len(end) > len(pend) {
				break
			}
			var mark []byte
			switch {
			case bytes.HasPrefix(pend[i:], end):
				mark = end
			case len(pend)-i >= len(sync) && bytes.HasPrefix(pend[i:], sync):
				mark = sync
			case pend[i+len(end)-1] == 'd' && len(pend)-i < len(sync):
				i = -1 // a sync mark cut short: wait for its last byte
			}
			if i < 0 {
				break
			}
			if mark == nil { // the prefix, but neither mark: plain data
				out <- bytes.Clone(pend[:i+1])
				pend = pend[i+1:]
				continue
			}
			if i > 0 {
				out <- bytes.Clone(pend[:i])
			}
			if len(mark) == len(sync) { // the nonce itself may end in 'd'
				out <- syncChunk
			} else {
				out <- endChunk
			}
			pend = pend[i+len(mark):]
		}
		// Hold back only a tail that could be the start of a mark, so
		// ordinary output streams at once.
		keep := 0
		for k := min(len(sync)-1, len(pend)); k > 0; k-- {
			tail := pend[len(pend)-k:]
			if bytes.HasPrefix(end, tail) || bytes.HasPrefix(sync, tail) {
				keep = k
				break
			}
		}
		if len(pend) > keep {
			out <- bytes.Clone(pend[:len(pend)-keep])
			pend = append([]byte(nil), pend[len(pend)-keep:]...)
		}
		if err != nil {
			if len(pend) > 0 {
				out <- pend
			}
			return
		}
	}
}

// endErr says why a session ends with its child's process: the protocol
// violation it was killed for, or that the process ended.
func (c *child) endErr() error {
	if f := c.fault.Load(); f != nil {
		return fmt.Errorf("%w: %w: its process was killed: %w", ErrSessionEnded, ErrProcessEnded, *f)
	}
	return fmt.Errorf("%w: %w", ErrSessionEnded, ErrProcessEnded)
}

func (c *child) alive() bool {
	select {
	case <-c.exited:
		return false
	default:
	}
	return c.pidfd >= 0 && unix.PidfdSendSignal(c.pidfd, 0, nil, 0) == nil
}

// signal sends sig to the child (pid 1 of its namespace: only SIGKILL and
// signals it handles arrive, pid_namespaces(7)).
func (c *child) signal(sig unix.Signal) {
	if c.pidfd >= 0 {
		unix.PidfdSendSignal(c.pidfd, sig, nil, 0)
	}
}

// kill ends the child and everything in its pid namespace.
func (c *child) kill() {
	c.killed.Store(true)
	c.signal(unix.SIGKILL)
}

// destroy kills the child, waits for its goroutines and frees everything.
// It is safe to call on a partly built child.
func (c *child) destroy() {
	keepUID := false
	c.kill()
	if c.conn != nil {
		c.conn.Close()
	}
	if c.stdout != nil {
		c.stdout.Close()
	}
	if c.stderr != nil {
		c.stderr.Close()
	}
	go func() {
		// Drain so that readers blocked on a full channel can finish.
		for _, ch := range append([]chan []byte{}, c.outs[:]...) {
			if ch != nil {
				for range ch {
				}
			}
		}
	}()
	if c.frames != nil {
		go func() {
			for range c.frames {
			}
		}()
	}
	c.wg.Wait()
	if c.cg != nil {
		// A killed process stays in its cgroup as a zombie until the
		// zygote reaps it (cgroup v1 and v2 keep zombies attached), so
		// wait for the zygote's word before removing the cgroup; on a
		// loaded machine that can take longer than the cgroup's own kill
		// loop waits.
		select {
		case <-c.exited:
		case <-c.p.dead:
		case <-time.After(10 * time.Second):
		}
		if err := c.cg.Remove(); err != nil {
			c.p.log.Error("remove child cgroup", "err", err, "sandbox_id", c.id)
			keepUID = true // a process of it may live on
		}
	}
	if c.data != nil {
		c.data.Close()
	}
	if c.pidfd >= 0 {
		unix.Close(c.pidfd)
		c.pidfd = -1
	}
	c.p.mu.Lock()
	delete(c.p.live, c.id)
	if !keepUID {
		delete(c.p.uids, c.uid)
	}
	c.p.mu.Unlock()
}

// newNonce returns 32 random hexadecimal digits (128 bits) for the marks
// in an execution's output: fresh for each execution, so that output
// never holds them by chance. It names nothing, so it is not an id of
// package ids.
func newNonce() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
