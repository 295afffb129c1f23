//go:build linux

package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"codeexec/internal/executor"
)

func init() {
	register("bench", command{summary: "measure warm execution against bare python3 and print medians", run: benchCmd})
}

const groupbyCode = `import numpy as np, pandas as pd
df = pd.DataFrame({"k": np.arange(10_000) % 10, "v": np.arange(10_000.0)})
print(df.groupby("k")["v"].mean().sum())`

const plotCode = `import matplotlib.pyplot as plt
plt.plot(range(100), [x * x for x in range(100)])
plt.show()`

func benchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	b := &localBench{ctx: ctx, stdout: stdout, stderr: stderr}
	fs.IntVar(&b.n, "n", 200, "executions per warm case (the plot and baselines use fewer)")
	fs.DurationVar(&b.dur, "throughput-time", 5*time.Second, "how long to measure sustained throughput")
	fs.IntVar(&b.conc, "concurrency", 4, "concurrent callers for the throughput measurement")
	fs.IntVar(&b.cfg.PoolSize, "pool", 4, "warm children in the pool")
	fs.BoolVar(&b.cfg.DataWarmup, "data-warmup", true, "children waiting in the pool also warm up pandas (as codeexec serve does by default)")
	fs.BoolVar(&b.cfg.PlotWarmup, "plot-warmup", false, "with -data-warmup, that warm-up also renders a small matplotlib figure (as codeexec serve --plot-warmup)")
	fs.StringVar(&b.python, "python", "/usr/bin/python3", "interpreter for the bare baselines")
	serverURL := fs.String("server", "", "benchmark a running server at this URL over HTTP instead")
	apiKey := fs.String("api-key", os.Getenv("CODEEXEC_API_KEY"), "API key for --server (default $CODEEXEC_API_KEY)")
	clients := fs.Int("clients", 8, "concurrent HTTP clients for --server")
	hostile := hostileFlags(fs)
	b.libs = libFlags(fs)
	sessions := fs.Int("sessions", 0, "with --server: also create this many idle sessions and measure their memory (the server needs --key-sessions at least as high)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: codeexec bench [flags]\n\nMeasures, in one run (or against a server with --server URL), warm executions against bare python3 subprocesses,\nsustained throughput, the memory of a warm child, and what this host charges for a copy-on-write page fault and a fork.\nPrints medians, p99 and ratios.\n\nWith --hostile-frames it measures instead the peak RSS growth of this process, running an executor, while 8 sessions\nflood it with hostile frames (huge displays, JSON that multiplies when decoded, frames without end or after it).\n\nFlags:")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if hostile.on {
		return hostile.run(ctx, b.cfg, stdout, stderr)
	}
	if *serverURL != "" {
		hb := &httpBench{url: strings.TrimRight(*serverURL, "/"), key: *apiKey, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
		if err := hb.run(ctx, stdout, b.n, *clients, b.dur, *sessions); err != nil {
			fmt.Fprintf(stderr, "codeexec bench: %v\n", err)
			return 1
		}
		return 0
	}
	return b.run()
}

// localBench measures an executor of this process: latency against bare
// python3, sustained throughput, what the host charges for the faults and
// forks behind it, and the memory of a warm child.
type localBench struct {
	ctx            context.Context
	stdout, stderr io.Writer
	cfg            executor.Config // of the executor measured
	n              int             // executions per warm case
	dur            time.Duration   // of the throughput measurement
	conc           int             // its concurrent callers
	python         string          // of the bare baselines
	libs           *libBench       // the library measurements that follow
	e              *executor.Executor
}

func (b *localBench) run() int {
	fmt.Fprintln(b.stdout, "starting executor (the zygote preloads its libraries)...")
	start := time.Now()
	e, err := executor.New(b.ctx, b.cfg)
	if err != nil {
		fmt.Fprintf(b.stderr, "codeexec bench: %v\n", err)
		return 1
	}
	defer e.Close()
	b.e = e
	fmt.Fprintf(b.stdout, "executor ready in %s\n\n", time.Since(start).Round(time.Millisecond))
	waitWarm(e, b.cfg.PoolSize)
	if b.libs.only {
		return exitCode(b.libs.run(b.ctx, e, b.cfg.DataWarmup, b.stdout, b.stderr))
	}
	if !b.latency() {
		return 1
	}
	b.throughput()
	b.hostCost()
	if !b.childMemory() {
		return 1
	}
	return exitCode(b.libs.run(b.ctx, e, b.cfg.DataWarmup, b.stdout, b.stderr))
}

// latency prints the latency of warm executions and of bare python3
// subprocesses, and their ratios. It reports false if a case failed.
func (b *localBench) latency() bool {
	type row struct {
		name   string
		s      stats
		target string
	}
	var rows []row
	measure := func(name, target string, f func() (stats, error)) bool {
		s, err := f()
		if err != nil {
			fmt.Fprintf(b.stderr, "codeexec bench: %s: %v\n", name, err)
			return false
		}
		rows = append(rows, row{name, s, target})
		return true
	}
	n := b.n
	ok := measure("warm print(1)", "<= 2 ms", func() (stats, error) { return b.warm("print(1)", n) }) &&
		measure("warm pandas groupby 10k rows", "<= 15 ms", func() (stats, error) { return b.warm(groupbyCode, n/2) }) &&
		measure("warm matplotlib line plot", "", func() (stats, error) { return b.warm(plotCode, max(n/10, 5)) }) &&
		measure("bare python3 -c 'print(1)'", "", func() (stats, error) { return b.bare(max(n/10, 5), "-c", "print(1)") }) &&
		measure("bare python3 -c 'import numpy, pandas'", "", func() (stats, error) { return b.bare(5, "-c", "import numpy, pandas") })
	if !ok {
		return false
	}
	fmt.Fprintf(b.stdout, "%-42s %6s %10s %10s %10s  %s\n", "case", "runs", "median", "p99", "mean", "target")
	for _, r := range rows {
		fmt.Fprintf(b.stdout, "%-42s %6d %10s %10s %10s  %s\n", r.name, r.s.n, ms(r.s.median), ms(r.s.p99), ms(r.s.mean), r.target)
	}
	fmt.Fprintln(b.stdout)
	fmt.Fprintf(b.stdout, "ratio bare print(1) / warm print(1):             %6.1fx faster\n", ratio(rows[3].s.median, rows[0].s.median))
	fmt.Fprintf(b.stdout, "ratio bare import numpy,pandas / warm groupby:   %6.1fx faster\n", ratio(rows[4].s.median, rows[1].s.median))
	return true
}

// warm times runs executions of code, each given a warm child.
func (b *localBench) warm(code string, runs int) (stats, error) {
	var d []time.Duration
	for i := 0; i < runs && b.ctx.Err() == nil; i++ {
		// Latency is what a request sees when the pool has a warm
		// child (for pandas and plots, with --data-warmup, one that
		// has warmed up pandas too, as a server that is not
		// saturated has); how fast the pool refills is the
		// throughput below.
		if b.cfg.DataWarmup && code != "print(1)" {
			waitFor(func() bool { return b.e.WarmData() >= 1 })
		} else {
			waitWarm(b.e, 1)
		}
		t0 := time.Now()
		res, err := b.e.Execute(b.ctx, executor.Request{Code: code})
		if err != nil {
			return stats{}, err
		}
		if res.Status != executor.StatusOK {
			return stats{}, fmt.Errorf("status %s: %+v", res.Status, res.Error)
		}
		d = append(d, time.Since(t0))
	}
	return newStats(d), nil
}

// bare times runs python3 subprocesses with args.
func (b *localBench) bare(runs int, args ...string) (stats, error) {
	var d []time.Duration
	for i := 0; i < runs && b.ctx.Err() == nil; i++ {
		t0 := time.Now()
		if out, err := exec.CommandContext(b.ctx, b.python, args...).CombinedOutput(); err != nil {
			return stats{}, fmt.Errorf("%s %v: %v: %s", b.python, args, err, out)
		}
		d = append(d, time.Since(t0))
	}
	return newStats(d), nil
}

// throughput prints the sustained rate of single-use executions by
// b.conc callers, and the CPU one costs.
func (b *localBench) throughput() {
	var count, failed atomic.Int64
	tctx, cancel := context.WithTimeout(b.ctx, b.dur)
	var wg sync.WaitGroup
	busy0, _ := cpuBusy()
	t0 := time.Now()
	for i := 0; i < b.conc; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for tctx.Err() == nil {
				res, err := b.e.Execute(tctx, executor.Request{Code: "print(1)"})
				switch {
				case tctx.Err() != nil:
				case err != nil || res.Status != executor.StatusOK:
					failed.Add(1)
				default:
					count.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	cancel()
	elapsed := time.Since(t0)
	busy1, cpuErr := cpuBusy()
	fmt.Fprintf(b.stdout, "\nsustained single-use print(1), %d concurrent callers: %.0f executions/s (%d in %s, %d failed)  target >= 250/s\n",
		b.conc, float64(count.Load())/elapsed.Seconds(), count.Load(), elapsed.Round(time.Millisecond), failed.Load())
	// What bounds that rate: the CPU one execution costs, forking and
	// warming its sandbox and tearing it down included, over the whole
	// machine (so other load on it counts too).
	if n := count.Load(); cpuErr == nil && n > 0 && busy1 > busy0 {
		per := (busy1 - busy0) / time.Duration(n)
		fmt.Fprintf(b.stdout, "CPU per single-use execution: %s (whole machine, /proc/stat); %d CPUs give at most %.0f/s at that cost\n",
			ms(per), runtime.NumCPU(), float64(runtime.NumCPU())*float64(time.Second)/float64(per))
	}
}

// hostCost prints what this host charges for the page faults and the
// fork behind the cost of an execution, so that the rate can be compared
// across machines.
func (b *localBench) hostCost() {
	if hc, err := measureHostCost(b.ctx, b.python, 3); err != nil {
		fmt.Fprintf(b.stderr, "codeexec bench: host cost: %v\n", err)
	} else {
		fmt.Fprintf(b.stdout, "host: a copy-on-write page fault costs %.1f us; fork and exit of a process that wrote 128 MiB %s (copies excluded)\n",
			float64(hc.cowFault)/float64(time.Microsecond), ms(hc.forkExit))
	}
}

// childMemory prints the memory of a warm child, and of one that warmed
// up pandas too: after the throughput run the pool refills with both. It
// reports false if it could not be measured.
func (b *localBench) childMemory() bool {
	kinds := []bool{false}
	if b.cfg.DataWarmup {
		kinds = append(kinds, true)
	}
	for _, data := range kinds {
		name := "warm child after print(1):"
		if data {
			name = "same, pandas warmed up (--data-warmup):"
			if b.cfg.PlotWarmup {
				name = "same, pandas and a plot warmed up:"
			}
		}
		mctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
		priv, pss, err := b.e.ChildMemory(mctx, data)
		cancel()
		if err != nil {
			fmt.Fprintf(b.stderr, "codeexec bench: %s %v\n", name, err)
			return false
		}
		fmt.Fprintf(b.stdout, "%-40s Private_Dirty %5.2f MiB, PSS %.1f MiB  target <= 5 MiB private\n",
			name, float64(priv)/(1<<20), float64(pss)/(1<<20))
	}
	return true
}

// cpuBusy is the CPU time all CPUs have spent not idle since boot, from
// the first line of /proc/stat.
func cpuBusy() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	return parseCPUBusy(string(data))
}

// parseCPUBusy reads "cpu user nice system idle iowait irq softirq steal
// ..." (in USER_HZ ticks, proc(5)) and returns user+nice+system+irq+
// softirq+steal. Guest time is already part of user time.
func parseCPUBusy(stat string) (time.Duration, error) {
	line, _, _ := strings.Cut(stat, "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("unexpected /proc/stat line %q", line)
	}
	var busy int64
	for i, v := range f[1:9] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat field %d: %w", i+1, err)
		}
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	const userHZ = 100 // USER_HZ, sysconf(_SC_CLK_TCK): 100 on every architecture Go runs Linux on
	return time.Duration(busy) * time.Second / userHZ, nil
}

// waitWarm waits up to 5 s until the pool holds n warm children.
func waitWarm(e *executor.Executor, n int) {
	waitFor(func() bool { return e.Warm() >= n })
}

// waitFor waits up to 5 s until ok.
func waitFor(ok func() bool) {
	for i := 0; i < 1000 && !ok(); i++ {
		time.Sleep(5 * time.Millisecond)
	}
}

type stats struct {
	n                 int
	median, p99, mean time.Duration
}

func newStats(d []time.Duration) stats {
	if len(d) == 0 {
		return stats{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	p99 := d[min(len(d)-1, (len(d)*99)/100)]
	return stats{n: len(d), median: d[len(d)/2], p99: p99, mean: sum / time.Duration(len(d))}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
