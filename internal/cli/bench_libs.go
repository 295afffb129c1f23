//go:build linux

package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"codeexec/internal/executor"
	"codeexec/internal/python"
)

// libProbeCode is a cell that times, in a fresh warm child, the first
// import of lib and then one typical call, and prints both in seconds.
func libProbeCode(lib python.Library) string {
	top, _, _ := strings.Cut(lib.Import, ".")
	return fmt.Sprintf(`import time as _t
_t0 = _t.perf_counter()
import %s
_t1 = _t.perf_counter()
import %s
%s
_t2 = _t.perf_counter()
print(_t1 - _t0, _t2 - _t1)`, lib.Import, strings.Join(append([]string{top}, "matplotlib.pyplot"), ", "), lib.Probe)
}

// libTiming is the medians of a library's first import and typical call.
type libTiming struct {
	lib          python.Library
	importT, use time.Duration
}

// measureLibs runs libProbeCode for each library runs times, each time in
// a fresh warm child (one that has warmed up pandas when dataWarm, as a
// request sees on a server that is not saturated).
func measureLibs(ctx context.Context, e *executor.Executor, runs int, dataWarm bool) ([]libTiming, error) {
	var out []libTiming
	for _, lib := range python.Libraries {
		var imp, use []time.Duration
		for i := 0; i < runs && ctx.Err() == nil; i++ {
			if dataWarm {
				waitFor(func() bool { return e.WarmData() >= 1 })
			} else {
				waitWarm(e, 1)
			}
			res, err := e.Execute(ctx, executor.Request{Code: libProbeCode(lib)})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", lib.Name, err)
			}
			if res.Status != executor.StatusOK {
				return nil, fmt.Errorf("%s: status %s: %+v %s", lib.Name, res.Status, res.Error, res.Stderr)
			}
			f := strings.Fields(res.Stdout)
			if len(f) != 2 {
				return nil, fmt.Errorf("%s: unexpected output %q", lib.Name, res.Stdout)
			}
			a, err1 := strconv.ParseFloat(f[0], 64)
			b, err2 := strconv.ParseFloat(f[1], 64)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("%s: unexpected output %q", lib.Name, res.Stdout)
			}
			imp = append(imp, time.Duration(a*float64(time.Second)))
			use = append(use, time.Duration(b*float64(time.Second)))
		}
		out = append(out, libTiming{lib, median(imp), median(use)})
	}
	return out, nil
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2]
}

// benchLibs prints the zygote's memory and, for each library of
// python.Libraries, its first import and one typical call in a fresh warm
// child, against the 100 ms target.
func benchLibs(ctx context.Context, e *executor.Executor, runs int, dataWarm bool, stdout, stderr io.Writer) bool {
	if rss, priv, err := e.ZygoteMemory(); err != nil {
		fmt.Fprintf(stderr, "codeexec bench: zygote memory: %v\n", err)
		return false
	} else {
		fmt.Fprintf(stdout, "\nzygote: RSS %.1f MiB, Private_Dirty %.1f MiB (preloads %s)\n",
			float64(rss)/(1<<20), float64(priv)/(1<<20), strings.Join(python.Preloads(), ", "))
	}
	ts, err := measureLibs(ctx, e, runs, dataWarm)
	if err != nil {
		fmt.Fprintf(stderr, "codeexec bench: libraries: %v\n", err)
		return false
	}
	fmt.Fprintf(stdout, "\nfirst import in a fresh warm child, medians of %d runs  target import <= 100 ms\n", runs)
	fmt.Fprintf(stdout, "%-16s %-26s %8s %12s %10s  %s\n", "library", "import", "preload", "import", "call", "")
	for _, t := range ts {
		flag := ""
		if t.importT > 100*time.Millisecond {
			flag = "over target"
		}
		fmt.Fprintf(stdout, "%-16s %-26s %8v %12s %10s  %s\n", t.lib.Name, t.lib.Import, t.lib.Preload, ms(t.importT), ms(t.use), flag)
	}
	return true
}

// libBench holds the flags of the library measurements.
type libBench struct {
	runs int
	only bool
}

func libFlags(fs interface {
	IntVar(*int, string, int, string)
	BoolVar(*bool, string, bool, string)
}) *libBench {
	b := &libBench{}
	fs.IntVar(&b.runs, "lib-runs", 5, "fresh warm children per library for the first-import measurement (0: skip it)")
	fs.BoolVar(&b.only, "libs-only", false, "measure only the zygote's memory, a warm child's memory and the libraries' first imports")
	return b
}

// run measures the libraries; with only, a warm child's memory first.
func (b *libBench) run(ctx context.Context, e *executor.Executor, dataWarm bool, stdout, stderr io.Writer) bool {
	if b.only {
		for _, data := range []bool{false, dataWarm} {
			mctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			priv, pss, err := e.ChildMemory(mctx, data)
			cancel()
			if err != nil {
				fmt.Fprintf(stderr, "codeexec bench: child memory: %v\n", err)
				return false
			}
			fmt.Fprintf(stdout, "warm child after print(1) (pandas warmed up: %v): Private_Dirty %5.2f MiB, PSS %.1f MiB\n",
				data, float64(priv)/(1<<20), float64(pss)/(1<<20))
			if !dataWarm {
				break
			}
		}
	}
	if b.runs <= 0 {
		return true
	}
	return benchLibs(ctx, e, b.runs, dataWarm, stdout, stderr)
}

func exitCode(ok bool) int {
	if ok {
		return 0
	}
	return 1
}
