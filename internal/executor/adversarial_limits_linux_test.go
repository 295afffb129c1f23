package executor

// Attacks on the limits of an execution from inside: wall time and
// cancellation that code tries to switch off with forged frames, marks and
// broken streams, and frames meant to make the server hold memory.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"codeexec/internal/python"
)

// forgedDisplay sends a display frame without the sync marks the runner
// writes before a real one.
const forgedDisplay = "import runner\nrunner.send({'type': 'display', 'bundle': {'text/plain': 'forged'}})\n"

// trickle prints a byte every 0.3 s forever.
const trickle = "import sys, time\nwhile True:\n    sys.stdout.write('.')\n    sys.stdout.flush()\n    time.sleep(0.3)\n"

// testWallTime: whatever frames, marks and bytes the code writes, an
// execution ends by its deadline plus a small bounded grace with status
// timeout and a true duration, and a client that hangs up gets its answer
// at once.
func (a *adversary) testWallTime(t *testing.T) {
	const timeout = 3 * time.Second
	lim := Limits{Timeout: timeout}
	// Single use: the child is killed at the deadline; its pipes close
	// when it dies, at the latest killWait later.
	maxWall := timeout + killWait + 3*time.Second
	timedOut := func(t *testing.T, res *Result) {
		t.Helper()
		wantError(t, res, StatusTimeout, "timed out after 3 s")
		if d := time.Duration(res.DurationMS * float64(time.Millisecond)); d < timeout || d > maxWall {
			t.Errorf("duration_ms = %v, want between %v and %v", res.DurationMS, timeout, maxWall)
		}
	}
	marks := "import os, runner\nm = b'\\x00' + runner._nonce.encode() + b'd\\x00'\n"
	tests := []attack{
		{name: "forged display then a trickle", code: forgedDisplay + trickle},
		{name: "forged displays in a loop with a trickle",
			code: "import runner, sys, time\nwhile True:\n    runner.send({'type': 'display', 'bundle': {'text/plain': 'f'}})\n    sys.stdout.write('.')\n    sys.stdout.flush()\n    time.sleep(0.1)\n"},
		{name: "sync marks without displays", code: marks + "for i in range(50):\n    os.write(1, m)\n    os.write(2, m)\n" + trickle},
		{name: "marks in the wrong order",
			code: marks + "os.write(1, m * 3)\nrunner.send({'type': 'display', 'bundle': {'text/plain': 'a'}})\nrunner.send({'type': 'display', 'bundle': {'text/plain': 'b'}})\nos.write(2, b'late' + m)\n" + trickle},
		{name: "half a mark", code: marks + "os.write(1, m[:-1])\n" + forgedDisplay + trickle},
		{name: "closed stdout and stderr with a forged display",
			code: "import os\nos.close(1)\nos.close(2)\n" + forgedDisplay + "import time\ntime.sleep(600)\n"},
		{name: "stdout replaced, the pipe held by a trickling subprocess",
			code: "import os, subprocess\nkeep = os.dup(1)\nnull = os.open('/dev/null', os.O_WRONLY)\nos.dup2(null, 1)\nos.dup2(null, 2)\n" +
				"subprocess.Popen(['/bin/sh', '-c', 'while :; do printf .; sleep 0.3; done'], stdout=keep, stderr=keep, pass_fds=(keep,))\n" +
				forgedDisplay + "import time\ntime.sleep(600)\n"},
	}
	for _, tt := range tests {
		tt.limits, tt.maxWall, tt.check = lim, maxWall, timedOut
		t.Run(tt.name, func(t *testing.T) { a.run(t, tt) })
	}

	t.Run("session that ignores SIGINT", func(t *testing.T) {
		s := a.newSession(t)
		start := time.Now()
		res := sessionExec(t, s, Request{Code: "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n" + forgedDisplay + trickle, Limits: lim})
		took := time.Since(start)
		wantError(t, res, StatusTimeout, "timed out after 3 s", "killed")
		if bound := timeout + interruptGrace + killWait + 3*time.Second; took > bound {
			t.Errorf("Session.Execute took %v, want at most %v", took, bound)
		}
		if !res.SessionEnded {
			t.Errorf("session_ended = false, want true")
		}
	})

	t.Run("client hangs up", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Second, cancel)
		start := time.Now()
		res, err := a.e.Execute(ctx, Request{Code: uidPreamble + forgedDisplay + trickle, Limits: Limits{Timeout: time.Minute}})
		took := time.Since(start)
		if err != nil {
			t.Fatalf("Execute: %v", err)
		}
		logResult(t, res, took)
		wantError(t, res, StatusKilled, "cancelled")
		if bound := time.Second + killWait + 2*time.Second; took > bound {
			t.Errorf("Execute returned %v after it started, %v after the client hung up; want at most %v", took, took-time.Second, bound)
		}
		a.noChildLeft(t, res)
	})
}

// testFrames: a sandbox cannot make the server hold much more than the
// frames it is allowed: a frame is counted before it is read, decoding does
// not multiply it, and a frame outside an execution ends the session.
func (a *adversary) testFrames(t *testing.T) {
	// A display whose JSON value multiplies when decoded into Go values.
	t.Run("nested empty objects", func(t *testing.T) {
		code := "import runner, struct\nhead = b'{\"type\":\"display\",\"bundle\":{\"application/json\":['\nn = (%d - len(head) - 3) // 3\n" +
			"body = head + b','.join([b'{}'] * n) + b']}}'\nrunner._sock.sendall(struct.pack('>I', len(body)) + body)\nprint('sent', len(body))\n"
		a.run(t, attack{name: "nested", code: fmt.Sprintf(code, python.MaxFrame), check: func(t *testing.T, res *Result) {
			wantStatus(t, res, StatusOK)
			if len(res.Displays) != 1 {
				t.Fatalf("%d displays, want 1", len(res.Displays))
			}
			raw, ok := res.Displays[0]["application/json"].(json.RawMessage)
			if !ok || len(raw) < python.MaxFrame/2 {
				t.Errorf("application/json = %T of %d bytes, want raw JSON of about %d", res.Displays[0]["application/json"], len(raw), python.MaxFrame)
			}
		}})
	})
	t.Run("frame over the limit", func(t *testing.T) {
		code := fmt.Sprintf("import runner, struct\nrunner._sock.sendall(struct.pack('>I', %d))\nimport time\ntime.sleep(10)\n", python.MaxFrame+1)
		a.run(t, attack{name: "over", code: code, check: func(t *testing.T, res *Result) {
			wantError(t, res, StatusKilled, "protocol", "over the limit")
		}})
	})
	t.Run("frames over the budget", func(t *testing.T) {
		// Each frame fits; together they pass the budget: the ones past
		// it are skipped unread, and the code is stopped.
		code := fmt.Sprintf("import runner\nfor i in range(10):\n    runner.send({'type': 'display', 'bundle': {'text/plain': 'x' * %d}})\nimport time\ntime.sleep(10)\n", python.MaxFrame-100)
		a.run(t, attack{name: "budget", code: code, check: func(t *testing.T, res *Result) {
			wantError(t, res, StatusOutputLimit, "displays exceeded the limit of 16 MiB")
			if got, max := len(res.Displays), maxFrameBytes/(python.MaxFrame-100); got > max {
				t.Errorf("%d displays kept, want at most %d", got, max)
			}
		}})
	})
	t.Run("frames over the budget in a session that ignores SIGINT", func(t *testing.T) {
		s := a.newSession(t)
		start := time.Now()
		res := sessionExec(t, s, Request{Code: fmt.Sprintf("import runner, signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    runner.send({'type': 'display', 'bundle': {'text/plain': 'x' * %d}})\n", python.MaxFrame/2)})
		wantError(t, res, StatusOutputLimit, "displays exceeded")
		if !res.SessionEnded {
			t.Errorf("session_ended = false, want true: the code ignored SIGINT")
		}
		if took, bound := time.Since(start), interruptGrace+killWait+10*time.Second; took > bound {
			t.Errorf("Session.Execute took %v, want at most %v", took, bound)
		}
	})
	t.Run("frame outside an execution", func(t *testing.T) {
		s := a.newSession(t)
		res := sessionExec(t, s, Request{Code: "import runner, threading, time\ndef later():\n    time.sleep(0.5)\n    runner.send({'type': 'display', 'bundle': {'text/plain': 'late'}})\nthreading.Thread(target=later, daemon=True).start()\n"})
		wantStatus(t, res, StatusOK)
		select {
		case <-s.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the session lives on 10 s after its process sent a frame outside an execution")
		}
		if err := s.Err(); !errors.Is(err, python.ErrProtocol) || !errors.Is(err, ErrSessionEnded) || !strings.Contains(err.Error(), "outside an execution") {
			t.Errorf("Session.Err() = %v, want a protocol violation outside an execution", err)
		}
		if _, err := s.Execute(context.Background(), Request{Code: "print(1)"}); !errors.Is(err, ErrSessionEnded) || !errors.Is(err, python.ErrProtocol) {
			t.Errorf("Session.Execute after the violation: %v, want %v wrapping %v", err, ErrSessionEnded, python.ErrProtocol)
		}
	})
	t.Run("process ends between executions", func(t *testing.T) {
		s := a.newSession(t)
		res := sessionExec(t, s, Request{Code: "import os, threading, time\nthreading.Thread(target=lambda: (time.sleep(0.5), os._exit(0)), daemon=True).start()\n"})
		wantStatus(t, res, StatusOK)
		select {
		case <-s.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("the session lives on 10 s after its process exited")
		}
		if err := s.Err(); !errors.Is(err, ErrProcessEnded) {
			t.Errorf("Session.Err() = %v, want %v", err, ErrProcessEnded)
		}
	})
}
