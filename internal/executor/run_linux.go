package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"

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
	res = &Result{ID: "exec_" + newNonce()[:24], Displays: []python.Bundle{}, Files: []File{}}
	if err := c.setLimits(sandbox.Limits{MemoryBytes: l.MemoryBytes, Pids: l.Procs, CPUMillis: l.CPUMillis}); err != nil {
		if errors.Is(err, unix.EBUSY) { // memory(cgroup v1): below what it uses
			return nil, &InputError{"memory_limit_mb", fmt.Sprintf("the session already uses more memory than %d MiB", l.MemoryBytes>>20)}
		}
		return nil, err
	}
	// A single-use child has run nothing since it was warm: what it held
	// then is what it holds now. A session's state is read afresh.
	oomBefore, before := c.ooms, c.files
	if keep {
		oomBefore, _ = c.cg.OOMKills()
	}
	if err := c.place(ctx, req.Files, l); err != nil {
		return nil, err
	}
	if keep || len(req.Files) > 0 {
		before = scanFiles(c.data)
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
	if err := python.WriteFrame(c.conn, python.Exec{Op: "exec", Code: req.Code, Nonce: nonce, MaxFileBytes: l.FileBytes, Env: env}); err != nil {
		return nil, fmt.Errorf("send code to sandbox: %w", err)
	}
	start := time.Now()
	var (
		deadline = time.NewTimer(l.Timeout)
		// Set once the child is killed or the run must end soon; a nil
		// channel never fires.
		grace, drain, hard, synced <-chan time.Time
	)
	defer deadline.Stop()

	var (
		out       [2]strings.Builder
		ended     [2]bool // end mark or EOF seen
		done      *python.Event
		gone      bool   // the socket closed: the process is dead
		syncs     [2]int // sync marks seen per stream
		pending   []python.Bundle
		delivered int // displays passed on
		stop      Status
		stopValue string
	)
	kill := func() {
		c.kill()
		if hard == nil {
			hard = time.After(killWait)
		}
	}
	halt := func(s Status, value string) {
		if stop != "" {
			return
		}
		stop, stopValue = s, value
		if keep && !gone {
			c.signal(unix.SIGINT)
			grace = time.After(interruptGrace)
		} else {
			kill()
		}
	}
	frames, outs := c.frames, c.outs
	// Displays arrive on the socket, output on the pipes. Output printed
	// before a display is delivered before it: the runner writes a sync
	// mark to each stream before it sends the display, and a display is
	// passed on once every stream has reached its mark (or ended, or
	// syncWait passed). A stream that is past the mark of a display not
	// yet passed on is held, so output printed after a display cannot
	// overtake it. None of it blocks: the loop always waits on the
	// deadline, the context and the socket too.
	reached := func(i int) bool { return syncs[i] > delivered || ended[i] }
	held := func(i int) chan []byte {
		if syncs[i] > delivered && (len(pending) > 0 || (done == nil && !gone)) {
			return nil
		}
		return outs[i]
	}
	deliver := func() {
		for len(pending) > 0 && reached(0) && reached(1) {
			b := pending[0]
			pending, delivered, synced = pending[1:], delivered+1, nil
			res.Displays = append(res.Displays, b)
			if req.OnEvent != nil {
				req.OnEvent(Event{Kind: "display", Bundle: b})
			}
		}
		if len(pending) > 0 && synced == nil {
			synced = time.After(syncWait)
		}
	}
	for !((done != nil || gone) && ended[0] && ended[1] && len(pending) == 0) {
		select {
		case f, ok := <-frames:
			switch {
			case !ok:
				gone, frames = true, nil
				kill() // whatever is left of its namespace
			case f.err != nil:
				halt(StatusKilled, "the sandbox broke the protocol: "+f.err.Error())
				kill()
			case f.over > 0:
				halt(StatusOutputLimit, fmt.Sprintf("displays exceeded the limit of %d MiB", maxFrameBytes>>20))
			case f.ev.Type == "display":
				pending = append(pending, f.ev.Bundle)
			case f.ev.Type == "done":
				done = f.ev
				// The end marks follow at once unless the code broke
				// its own stdout or stderr (closed or replaced fd 1).
				drain = time.After(drainWait)
			}
		case chunk, ok := <-held(0):
			c.output(res, req, 0, chunk, ok, &out[0], &ended[0], &outs[0], l, halt, &syncs[0])
		case chunk, ok := <-held(1):
			c.output(res, req, 1, chunk, ok, &out[1], &ended[1], &outs[1], l, halt, &syncs[1])
		case <-synced:
			// The code broke its streams: count the marks as reached.
			synced = nil
			for i := range syncs {
				syncs[i] = max(syncs[i], delivered+1)
			}
		case <-deadline.C:
			halt(StatusTimeout, fmt.Sprintf("timed out after %s", seconds(l.Timeout)))
		case <-drain:
			ended = [2]bool{true, true}
		case <-grace:
			grace = nil
			res.SessionEnded = true
			kill()
		case <-hard:
			// Killed killWait ago and still not closed: end regardless.
			gone, ended, frames = true, [2]bool{true, true}, nil
			res.SessionEnded = keep
		case <-ctx.Done():
			halt(StatusKilled, "cancelled: "+context.Cause(ctx).Error())
			ctx = context.Background()
		}
		deliver()
	}
	res.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	res.Stdout, res.Stderr = out[0].String(), out[1].String()
	if gone {
		res.SessionEnded = keep
	} else if !keep {
		c.kill() // single use: nothing it started may touch the files we collect
	}
	oomAfter, _ := c.cg.OOMKills()
	oom := oomAfter > oomBefore
	switch {
	case stop != "":
		res.Status, res.Error = stop, &python.Error{Name: errorName(stop), Value: stopValue}
		if stop == StatusTimeout && keep {
			if res.SessionEnded {
				res.Error.Value += "; the code did not stop when interrupted, so the session's process was killed"
			} else {
				res.Error.Value += "; the code was interrupted and the session continues"
			}
		}
	case oom || (done != nil && done.Error != nil && done.Error.Name == "MemoryError"):
		res.Status = StatusMemoryLimit
		res.Error = &python.Error{Name: "MemoryError", Value: fmt.Sprintf("memory limit of %d MiB exceeded", l.MemoryBytes>>20)}
	case done != nil:
		res.Status, res.Result, res.Error = Status(done.Status), done.Result, done.Error
	default:
		res.Status, res.Error = StatusKilled, c.death()
	}
	res.Files = c.collect(ctx, before, req.Sink)
	return res, nil
}

// output handles one chunk of stream i (0 stdout, 1 stderr).
func (c *child) output(res *Result, req *Request, i int, chunk []byte, ok bool, b *strings.Builder, ended *bool, ch *chan []byte, l Limits, halt func(Status, string), syncs *int) {
	switch {
	case !ok:
		*ended, *ch = true, nil
		return
	case chunk == nil: // endChunk
		*ended = true
		return
	case len(chunk) == 0: // syncChunk
		*syncs++
		return
	}
	trunc := &res.Truncated.Stdout
	kind := "stdout"
	if i == 1 {
		trunc, kind = &res.Truncated.Stderr, "stderr"
	}
	if *trunc {
		return
	}
	if room := l.OutputBytes - int64(b.Len()); int64(len(chunk)) > room {
		chunk = chunk[:room]
		*trunc = true
		halt(StatusOutputLimit, fmt.Sprintf("%s exceeded the output limit of %d bytes", kind, l.OutputBytes))
	}
	b.Write(chunk)
	if req.OnEvent != nil && len(chunk) > 0 {
		req.OnEvent(Event{Kind: kind, Text: chunk})
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
