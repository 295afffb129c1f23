package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"codeexec/internal/ids"
	"codeexec/internal/python"
	"codeexec/internal/sandbox"
)

// interruptGrace is how long a session's code gets to stop after SIGINT
// before its process is killed.
const interruptGrace = 2 * time.Second

// Bounds of the waits inside an execution: none may take the run loop away
// from its deadline and its context.
const (
	// syncWait is how long a display waits for the sync marks the runner
	// writes to stdout and stderr before it (code that forges a display,
	// or closes or replaces its streams, never writes them).
	syncWait = time.Second
	// drainWait is how long the end marks may take after the done frame.
	drainWait = time.Second
	// killWait is how long a killed child's pipes and socket may take to
	// close: past it, run returns anyway (whatever holds them is dead).
	killWait = 2 * time.Second
)

// maxFrameBytes bounds the frames (displays and the done frame) one
// execution may send, counted from their headers before they are read.
// Past it the execution ends with output_limit. With python.MaxFrame it
// bounds what a sandbox can make the server hold: at most this much of
// decoded displays, plus one frame being read and decoded.
const maxFrameBytes = 16 << 20

// run executes req on c with resolved limits l. In a session (keep) a
// limit first interrupts the code and kills the process only if it does not
// stop within interruptGrace; otherwise the child is killed at once. The
// caller destroys a child that is not kept or whose process ended.
//
// Whatever the code writes, run returns by the deadline plus
// interruptGrace (sessions) plus killWait, and within killWait (plus
// interruptGrace in a session) of ctx ending.
func (c *child) run(ctx context.Context, req *Request, l Limits, keep bool) (res *Result, err error) {
	res = &Result{ID: ids.New("exec_"), Displays: []python.Bundle{}, Files: []File{}}
	oomBefore, before, err := c.prepare(ctx, req, l, keep)
	if err != nil {
		return nil, err
	}
	var env map[string]string
	if req.Network != nil {
		proxy, penv, err := c.startEgress(*req.Network, c.p.cfg.Egress)
		if err != nil {
			return nil, err
		}
		env = penv
		defer func() {
			proxy.Close() // waits for its requests: the log is final
			if res != nil {
				res.Network = proxy.Log()
			}
		}()
	}
	c.leaveIdle() // done when it became warm; this only makes sure
	nonce := newNonce()
	mark := []byte("\x00" + nonce + "\x00")
	c.mark.Store(&mark)
	c.budget.Store(maxFrameBytes)
	c.open.Store(true)
	defer c.open.Store(false)
	if err := python.WriteFrame(c.conn, python.Exec{Op: "exec", Code: req.Code, Language: req.Language, Nonce: nonce, MaxFileBytes: l.FileBytes, Env: env}); err != nil {
		return nil, fmt.Errorf("send code to sandbox: %w", err)
	}
	start := time.Now()
	deadline := time.NewTimer(l.Timeout)
	defer deadline.Stop()
	e := &execution{c: c, req: req, l: l, keep: keep, res: res, frames: c.frames, outs: c.outs}
	for !e.finished() {
		select {
		case f, ok := <-e.frames:
			e.frame(f, ok)
		case chunk, ok := <-e.held(0):
			e.chunk(0, chunk, ok)
		case chunk, ok := <-e.held(1):
			e.chunk(1, chunk, ok)
		case <-e.synced:
			e.syncLost()
		case <-deadline.C:
			e.halt(StatusTimeout, fmt.Sprintf("timed out after %s", seconds(l.Timeout)))
		case <-e.drain:
			e.ended = [2]bool{true, true}
		case <-e.grace:
			e.graceOver()
		case <-e.hard:
			e.abandon()
		case <-ctx.Done():
			e.halt(StatusKilled, "cancelled: "+context.Cause(ctx).Error())
			ctx = context.Background()
		}
		e.deliver()
	}
	res.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	e.finish(oomBefore)
	res.Files = c.collect(ctx, before, req.Sink)
	return res, nil
}

// prepare sets the child's limits for req and places its input files. It
// returns the cgroup's OOM kills and the state of /mnt/data before the
// code runs, for the result to compare against.
func (c *child) prepare(ctx context.Context, req *Request, l Limits, keep bool) (oomBefore int, before map[string]fileState, err error) {
	if err := c.setLimits(sandbox.Limits{MemoryBytes: l.MemoryBytes, Pids: l.Procs, CPUMillis: l.CPUMillis}); err != nil {
		if errors.Is(err, unix.EBUSY) { // memory(cgroup v1): below what it uses
			return 0, nil, &InputError{"memory_limit_mb", fmt.Sprintf("the session already uses more memory than %d MiB", l.MemoryBytes>>20)}
		}
		return 0, nil, err
	}
	// A single-use child has run nothing since it was warm: what it held
	// then is what it holds now. A session's state is read afresh.
	oomBefore, before = c.ooms, c.files
	if keep {
		oomBefore, _ = c.cg.OOMKills()
	}
	if err := c.place(ctx, req.Files, l); err != nil {
		return 0, nil, err
	}
	if keep || len(req.Files) > 0 {
		before = scanFiles(c.data)
	}
	return oomBefore, before, nil
}

// execution is the state of run's loop: what the child has sent so far,
// why the code was stopped, and the timers that bound the end. Its
// methods run on run's goroutine only.
//
// Displays arrive on the socket, output on the pipes. Output printed
// before a display is delivered before it: the runner writes a sync
// mark to each stream before it sends the display, and a display is
// passed on once every stream has reached its mark (or ended, or
// syncWait passed). A stream that is past the mark of a display not
// yet passed on is held, so output printed after a display cannot
// overtake it. None of it blocks: the loop always waits on the
// deadline, the context and the socket too.
type execution struct {
	c    *child
	req  *Request
	l    Limits
	keep bool
	res  *Result

	frames    chan frame     // c.frames, nil once closed or given up
	outs      [2]chan []byte // c.outs, each nil once closed
	out       [2]strings.Builder
	ended     [2]bool // end mark or EOF seen
	done      *python.Event
	gone      bool   // the socket closed: the process is dead
	syncs     [2]int // sync marks seen per stream
	pending   []python.Bundle
	delivered int // displays passed on
	stop      Status
	stopValue string

	// Set once the child is killed or the run must end soon; a nil
	// channel never fires.
	grace, drain, hard, synced <-chan time.Time
}

// finished reports whether the run may end: the code is done or its
// process dead, both streams ended and every display passed on.
func (e *execution) finished() bool {
	return (e.done != nil || e.gone) && e.ended[0] && e.ended[1] && len(e.pending) == 0
}

// kill kills the child and gives its pipes and socket killWait to close.
func (e *execution) kill() {
	e.c.kill()
	if e.hard == nil {
		e.hard = time.After(killWait)
	}
}

// halt stops the code for the first reason given: in a session it
// interrupts it while its process lives, otherwise it kills the child.
func (e *execution) halt(s Status, value string) {
	if e.stop != "" {
		return
	}
	e.stop, e.stopValue = s, value
	if e.keep && !e.gone {
		e.c.signal(unix.SIGINT)
		e.grace = time.After(interruptGrace)
	} else {
		e.kill()
	}
}

// frame handles one frame from the socket, or its end (!ok).
func (e *execution) frame(f frame, ok bool) {
	switch {
	case !ok:
		e.gone, e.frames = true, nil
		e.kill() // whatever is left of its namespace
	case f.err != nil:
		e.halt(StatusKilled, "the sandbox broke the protocol: "+f.err.Error())
		e.kill()
	case f.over > 0:
		e.halt(StatusOutputLimit, fmt.Sprintf("displays exceeded the limit of %d MiB", maxFrameBytes>>20))
	case f.ev.Type == "display":
		e.pending = append(e.pending, f.ev.Bundle)
	case f.ev.Type == "done":
		e.done = f.ev
		// The end marks follow at once unless the code broke
		// its own stdout or stderr (closed or replaced fd 1).
		e.drain = time.After(drainWait)
	}
}

// reached reports whether stream i has reached the sync mark of the next
// display to pass on.
func (e *execution) reached(i int) bool { return e.syncs[i] > e.delivered || e.ended[i] }

// held is the channel to read stream i from: nil while the stream is past
// the mark of a display not yet passed on (or of one still to come).
func (e *execution) held(i int) chan []byte {
	if e.syncs[i] > e.delivered && (len(e.pending) > 0 || (e.done == nil && !e.gone)) {
		return nil
	}
	return e.outs[i]
}

// deliver passes on the displays whose marks every stream has reached,
// and gives the rest syncWait.
func (e *execution) deliver() {
	for len(e.pending) > 0 && e.reached(0) && e.reached(1) {
		b := e.pending[0]
		e.pending, e.delivered, e.synced = e.pending[1:], e.delivered+1, nil
		e.res.Displays = append(e.res.Displays, b)
		if e.req.OnEvent != nil {
			e.req.OnEvent(Event{Kind: "display", Bundle: b})
		}
	}
	if len(e.pending) > 0 && e.synced == nil {
		e.synced = time.After(syncWait)
	}
}

// syncLost follows syncWait without the marks of a display: the code
// broke its streams, so the marks count as reached.
func (e *execution) syncLost() {
	e.synced = nil
	for i := range e.syncs {
		e.syncs[i] = max(e.syncs[i], e.delivered+1)
	}
}

// graceOver follows interruptGrace: the interrupted code did not stop, so
// the session's process is killed.
func (e *execution) graceOver() {
	e.grace = nil
	e.res.SessionEnded = true
	e.kill()
}

// abandon follows killWait after a kill with the pipes or the socket
// still open: the run ends regardless.
func (e *execution) abandon() {
	e.gone, e.ended, e.frames = true, [2]bool{true, true}, nil
	e.res.SessionEnded = e.keep
}

// chunk handles one chunk of stream i (0 stdout, 1 stderr), or its end
// (!ok).
func (e *execution) chunk(i int, chunk []byte, ok bool) {
	switch {
	case !ok:
		e.ended[i], e.outs[i] = true, nil
		return
	case chunk == nil: // endChunk
		e.ended[i] = true
		return
	case len(chunk) == 0: // syncChunk
		e.syncs[i]++
		return
	}
	res, b := e.res, &e.out[i]
	trunc := &res.Truncated.Stdout
	kind := "stdout"
	if i == 1 {
		trunc, kind = &res.Truncated.Stderr, "stderr"
	}
	if *trunc {
		return
	}
	if room := e.l.OutputBytes - int64(b.Len()); int64(len(chunk)) > room {
		chunk = chunk[:room]
		*trunc = true
		e.halt(StatusOutputLimit, fmt.Sprintf("%s exceeded the output limit of %d bytes", kind, e.l.OutputBytes))
	}
	b.Write(chunk)
	if e.req.OnEvent != nil && len(chunk) > 0 {
		e.req.OnEvent(Event{Kind: kind, Text: chunk})
	}
}

// finish ends what must not outlive the run and fills in the result's
// output and status. oomBefore is the cgroup's OOM kills before the code
// ran.
func (e *execution) finish(oomBefore int) {
	res := e.res
	res.Stdout, res.Stderr = e.out[0].String(), e.out[1].String()
	if e.gone {
		res.SessionEnded = e.keep
	} else if !e.keep {
		e.c.kill() // single use: nothing it started may touch the files we collect
	}
	oomAfter, _ := e.c.cg.OOMKills()
	e.status(oomAfter > oomBefore)
}

// status sets the result's status and error: the reason the code was
// stopped, else the memory limit (oom: the cgroup killed a process), else
// what the done frame said, else how the process died.
func (e *execution) status(oom bool) {
	res, done := e.res, e.done
	switch {
	case e.stop != "":
		res.Status, res.Error = e.stop, &python.Error{Name: errorName(e.stop), Value: e.stopValue}
		if e.stop == StatusTimeout && e.keep {
			if res.SessionEnded {
				res.Error.Value += "; the code did not stop when interrupted, so the session's process was killed"
			} else {
				res.Error.Value += "; the code was interrupted and the session continues"
			}
		}
	// A Python exception is known by its class name: MemoryError is the
	// memory limit seen from inside.
	case oom || (done != nil && done.Error != nil && done.Error.Name == "MemoryError"):
		res.Status = StatusMemoryLimit
		res.Error = &python.Error{Name: "MemoryError", Value: fmt.Sprintf("memory limit of %d MiB exceeded", e.l.MemoryBytes>>20)}
	case done != nil:
		res.Status, res.Result, res.Error = Status(done.Status), done.Result, done.Error
		res.ExitCode = done.ExitCode
	default:
		res.Status, res.Error = StatusKilled, e.c.death()
	}
}

// death explains an exit without a result, from what the zygote saw.
func (c *child) death() *python.Error {
	select {
	case <-c.exited:
	case <-time.After(time.Second):
		return &python.Error{Name: "Killed", Value: "the sandbox process ended without a result"}
	}
	switch {
	case c.exitSig == int(unix.SIGSYS):
		return &python.Error{Name: "Killed", Value: "killed by signal SIGSYS: a forbidden system call"}
	case c.exitSig != 0:
		return &python.Error{Name: "Killed", Value: fmt.Sprintf("killed by signal %s", unix.SignalName(unix.Signal(c.exitSig)))}
	default:
		return &python.Error{Name: "Killed", Value: fmt.Sprintf("the process exited with code %d", c.exitCode)}
	}
}

func errorName(s Status) string {
	switch s {
	case StatusTimeout:
		return "TimeoutError"
	case StatusOutputLimit:
		return "OutputLimitExceeded"
	}
	return "Killed"
}

// seconds formats d like "30 s" or "1.5 s".
func seconds(d time.Duration) string {
	return fmt.Sprintf("%g s", d.Seconds())
}
