//go:build linux

package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"codeexec/internal/executor"
	"codeexec/internal/python"
)

// hostileFrames is the --hostile-frames mode of bench: sessions whose code
// floods the server with frames, to measure what the server's own memory
// grows by while it reads, decodes and buffers them.
type hostileFrames struct {
	on       bool
	dur      time.Duration
	capBytes int64
}

// hostileFlags registers the mode's flags on fs.
func hostileFlags(fs *flag.FlagSet) *hostileFrames {
	h := &hostileFrames{}
	fs.BoolVar(&h.on, "hostile-frames", false, "instead: measure the server's RSS growth while 8 sessions flood it with hostile frames")
	fs.DurationVar(&h.dur, "hostile-time", 20*time.Second, "with --hostile-frames, how long the sessions push frames")
	fs.Func("hostile-cap-mib", "with --hostile-frames, abort the run once RSS has grown by this many MiB (default 4096)", func(s string) error {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("want a positive number of MiB, got %q", s)
		}
		h.capBytes = n << 20
		return nil
	})
	h.capBytes = 4 << 30
	return h
}

const (
	hostileSessions = 8
	hostileTimeout  = 5 * time.Second      // per execution, so that limits fire
	hostileTarget   = 256 << 20            // peak RSS growth, issue 10
	hostileGap      = time.Second          // idle after the late shape, while its thread pushes
	rssEvery        = 5 * time.Millisecond // how often RSS is sampled
	mib             = float64(1 << 20)
	gib             = float64(1 << 30)
	hostileLate     = "late frames after done" // the shape followed by hostileGap
)

// hostilePrelude starts every hostile execution (SHAPE its index in
// hostileShapes). Counts are reported as "hostile-frames SHAPE FRAMES
// BYTES" lines, each what was pushed since the last line, after every large frame and every 0.1 s, so that what a killed
// execution pushed is still (nearly all) counted. Frames go
// straight to the socket (runner.send would spend its time in
// json.dumps); sync writes the display sync marks runner.display writes,
// without which the server waits up to a second per stream per display.
const hostilePrelude = `import os, struct, sys, threading, time
import runner

for _t in threading.enumerate():
    if _t.name == "hostile-late":
        _t.join()

MAX = MAXFRAME
_n = [SHAPE, 0, 0]  # shape, frames, bytes

def report(n=None):
    n = n or _n
    if n[1]:
        print("hostile-frames %d %d %d" % tuple(n), flush=True)
    n[1] = n[2] = 0

def sync(k):
    sys.stdout.flush()
    sys.stderr.flush()
    m = (b"\0" + runner._nonce.encode() + b"d\0") * k
    os.write(1, m)
    os.write(2, m)

_last = [time.monotonic()]

def push(body, k=1, marks=True, n=None):
    n = n or _n
    if marks:
        sync(k)
    runner._sock.sendall(body)
    n[1] += k
    n[2] += len(body)
    if len(body) > 1 << 20 or time.monotonic() - _last[0] > 0.1:
        _last[0] = time.monotonic()
        report(n)

def frame(payload):
    return struct.pack(">I", len(payload)) + payload

def flood(body, k=1):
    try:
        while True:
            push(body, k)
    finally:
        report()
`

// hostileShapes are the floods, each code run after hostilePrelude. All
// but the late one push until a limit interrupts them.
var hostileShapes = []struct{ name, code string }{
	{"huge text/plain", `flood(frame(b'{"type":"display","bundle":{"text/plain":"' + b"x" * (MAX - 64) + b'"}}'))`},
	{"[{},{},...] bundle", `flood(frame(b'{"type":"display","bundle":{"application/json":[' + b"{}," * ((MAX - 64) // 3) + b'{}]}}'))`},
	{"tiny keys bundle", `buf = bytearray(b'{"type":"display","bundle":{')
i = 0
while len(buf) < MAX - (1 << 20):
    buf += b",".join([b'"%x":0' % j for j in range(i, i + 50000)]) + b","
    i += 50000
buf[-1:] = b"}}"
body = frame(bytes(buf))
del buf
print("keys", i)
flood(body)`},
	{"small displays", `flood(frame(b'{"type":"display","bundle":{"text/plain":"x"}}') * 1000, 1000)`},
	// Raw frames whose bytes sit in a field the server ignores (so no
	// display budget counts them), no sync marks, no "done": the code
	// ignores the interrupt and is killed after the grace period.
	{"done-less raw stream", `body = frame(b'{"type":"display","bundle":{},"pad":"' + b"x" * (MAX - 64) + b'"}')
while True:
    try:
        push(body, marks=False)
    except KeyboardInterrupt:
        pass`},
	// A thread pushes frames once the execution is done, while no
	// execution reads them; the next execution first waits for it.
	{hostileLate, `def late(n=[SHAPE, 0, 0]):
    time.sleep(0.3)
    body = frame(b'{"type":"display","bundle":{"text/plain":"' + b"y" * (MAX - 64) + b'"}}')
    for _ in range(20):
        push(body, marks=False, n=n)
threading.Thread(target=late, name="hostile-late", daemon=True).start()`},
}

// shapeStats is what the executions of one shape did.
type shapeStats struct {
	execs, frames, bytes int64
	statuses             map[string]int
}

func (h *hostileFrames) run(ctx context.Context, cfg executor.Config, stdout, stderr io.Writer) int {
	cfg.PoolSize = max(cfg.PoolSize, hostileSessions)
	fmt.Fprintf(stdout, "starting executor (pool of %d)...\n", cfg.PoolSize)
	e, err := executor.New(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "codeexec bench: %v\n", err)
		return 1
	}
	defer e.Close()
	waitWarm(e, cfg.PoolSize)

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu    sync.Mutex
		live  = map[*executor.Session]bool{}
		stats = make([]shapeStats, len(hostileShapes))
		cut   int // executions the end of the run (or the cap) interrupted
		opens int
	)
	open := func() (*executor.Session, error) {
		s, err := e.NewSession(rctx, 0)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		live[s] = true
		opens++
		mu.Unlock()
		return s, nil
	}
	closeSession := func(s *executor.Session) {
		mu.Lock()
		delete(live, s)
		mu.Unlock()
		s.Close()
	}
	first := make([]*executor.Session, hostileSessions)
	for i := range first {
		if first[i], err = open(); err != nil {
			fmt.Fprintf(stderr, "codeexec bench: open session: %v\n", err)
			return 1
		}
	}
	waitWarm(e, cfg.PoolSize)
	runtime.GC()
	base, err := readVm("VmRSS")
	if err != nil {
		fmt.Fprintf(stderr, "codeexec bench: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "%d sessions open; server RSS %.1f MiB. Flooding for %s (executions time out after %s, frames up to %d MiB)...\n",
		hostileSessions, float64(base)/mib, h.dur, hostileTimeout, python.MaxFrame>>20)

	// The sampler owns peak, and runs until every execution has returned:
	// the server's memory after the end of the run counts too. On passing
	// the cap it cancels the run and ends every session, which stops their
	// frames at the socket.
	var peak atomic.Int64
	var aborted atomic.Int64 // run time at the abort, 0 if none
	peak.Store(base)
	t0 := time.Now()
	stop, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(rssEvery)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			rss, err := readVm("VmRSS")
			if err != nil {
				continue
			}
			if rss > peak.Load() {
				peak.Store(rss)
			}
			if rss-base > h.capBytes && aborted.Load() == 0 {
				aborted.Store(int64(time.Since(t0)))
				cancel()
				mu.Lock()
				for s := range live {
					s.Close()
				}
				mu.Unlock()
			}
		}
	}()

	deadline := time.AfterFunc(h.dur, cancel)
	defer deadline.Stop()
	var wg sync.WaitGroup
	for w := range hostileSessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := first[w]
			defer func() {
				if s != nil {
					closeSession(s)
				}
			}()
			for k := w; rctx.Err() == nil; k++ {
				if s == nil {
					var err error
					if s, err = open(); err != nil {
						return // the run is over (or the pool broke)
					}
				}
				i := k % len(hostileShapes)
				sh := hostileShapes[i]
				code := strings.NewReplacer("MAXFRAME", strconv.Itoa(python.MaxFrame), "SHAPE", strconv.Itoa(i)).Replace(hostilePrelude + sh.code)
				res, err := s.Execute(rctx, executor.Request{Code: code, Limits: executor.Limits{Timeout: hostileTimeout}})
				status := ""
				switch {
				case err != nil:
					status = "error: " + err.Error()
				default:
					status = string(res.Status)
					if res.SessionEnded {
						status += "+session_ended"
					}
				}
				mu.Lock()
				if res != nil {
					// The late shape's frames are printed during later executions.
					for j, c := range parseFrameCounts(res.Stdout) {
						if j >= 0 && j < len(stats) {
							stats[j].frames += c.frames
							stats[j].bytes += c.bytes
						}
					}
				}
				st := &stats[i]
				if rctx.Err() != nil {
					cut++
				} else {
					st.execs++
					if st.statuses == nil {
						st.statuses = map[string]int{}
					}
					st.statuses[status]++
				}
				mu.Unlock()
				if err != nil || res.SessionEnded {
					closeSession(s)
					s = nil
				}
				if sh.name == hostileLate {
					select {
					case <-time.After(hostileGap):
					case <-rctx.Done():
					}
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(t0)
	cancel()
	close(stop)
	<-sampled
	hwm, _ := readVm("VmHWM")

	growth := peak.Load() - base
	fmt.Fprintf(stdout, "\n%-22s %6s %9s %11s  %s\n", "shape", "execs", "frames", "MiB pushed", "how executions ended")
	var frames, bytes int64
	for i, sh := range hostileShapes {
		st := stats[i]
		frames, bytes = frames+st.frames, bytes+st.bytes
		fmt.Fprintf(stdout, "%-22s %6d %9d %11.0f  %s\n", sh.name, st.execs, st.frames, float64(st.bytes)/mib, formatCounts(st.statuses))
	}
	fmt.Fprintf(stdout, "%-22s %6d %9d %11.0f  (%d sessions opened, %d executions cut by the end of the run)\n",
		"all", sumExecs(stats), frames, float64(bytes)/mib, opens, cut)
	fmt.Fprintf(stdout, "\nserver RSS under hostile frames, %d sessions, %s (until the last execution returned): baseline %.1f MiB, peak %.1f MiB (VmHWM %.1f MiB), growth %.1f MiB = %.2fx the target  target < 256 MiB growth\n",
		hostileSessions, elapsed.Round(time.Millisecond), float64(base)/mib, float64(peak.Load())/mib, float64(hwm)/mib, float64(growth)/mib, float64(growth)/hostileTarget)
	if at := aborted.Load(); at != 0 {
		fmt.Fprintf(stdout, "aborted at cap: RSS grew past %.1f GiB after %s; every session was ended then (the peak includes frames already read)\n",
			float64(h.capBytes)/gib, time.Duration(at).Round(time.Millisecond))
	}
	return 0
}

func sumExecs(stats []shapeStats) int64 {
	var n int64
	for _, st := range stats {
		n += st.execs
	}
	return n
}

// formatCounts prints counts as "a 3, b 1", most frequent first.
func formatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// frameCount is what the code of one shape pushed.
type frameCount struct{ frames, bytes int64 }

// parseFrameCounts adds up, per shape, the "hostile-frames SHAPE FRAMES
// BYTES" lines of a hostile execution's stdout; other lines (and a line
// cut short by a kill) are ignored.
func parseFrameCounts(stdout string) map[int]frameCount {
	counts := map[int]frameCount{}
	for _, line := range strings.Split(stdout, "\n") {
		f := strings.Fields(line)
		if len(f) != 4 || f[0] != "hostile-frames" {
			continue
		}
		shape, err0 := strconv.Atoi(f[1])
		n, err1 := strconv.ParseInt(f[2], 10, 64)
		b, err2 := strconv.ParseInt(f[3], 10, 64)
		if err0 != nil || err1 != nil || err2 != nil || n < 0 || b < 0 {
			continue
		}
		c := counts[shape]
		counts[shape] = frameCount{c.frames + n, c.bytes + b}
	}
	return counts
}

// readVm reads a field such as VmRSS or VmHWM of /proc/self/status, in
// bytes.
func readVm(field string) (int64, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read memory: %w", err)
	}
	return parseVm(string(data), field)
}

// parseVm finds "field:  N kB" in the text of /proc/PID/status (proc(5)).
func parseVm(status, field string) (int64, error) {
	for _, line := range strings.Split(status, "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 {
			break
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("no %s line in /proc/self/status", field)
}
