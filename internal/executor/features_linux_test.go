package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNotebookSemantics(t *testing.T) {
	e := newTestExecutor(t, Config{})
	tests := []struct {
		name       string
		code       string
		wantStatus Status
		check      func(t *testing.T, r *Result)
	}{
		{"last expression html", "import pandas as pd\npd.DataFrame({'a': [1, 2]})", StatusOK, func(t *testing.T, r *Result) {
			if _, ok := r.Result["text/html"]; !ok {
				t.Errorf("DataFrame result lacks text/html: %v", r.Result)
			}
		}},
		{"no result for None", "x = 1\nNone", StatusOK, func(t *testing.T, r *Result) {
			if r.Result != nil {
				t.Errorf("result = %v, want none", r.Result)
			}
		}},
		{"display calls in order", "display('a')\ndisplay(2)", StatusOK, func(t *testing.T, r *Result) {
			var got []string
			for _, d := range r.Displays {
				got = append(got, d["text/plain"].(string))
			}
			if diff := cmp.Diff([]string{"'a'", "2"}, got); diff != "" {
				t.Errorf("displays (-want +got):\n%s", diff)
			}
		}},
		{"figures shown and left open", "import matplotlib.pyplot as plt\nplt.plot([1,2])\nplt.show()\nplt.figure()\nplt.bar(['a'], [1])", StatusOK, func(t *testing.T, r *Result) {
			if len(r.Displays) != 2 {
				t.Errorf("got %d displays, want 2 (one shown, one left open)", len(r.Displays))
			}
		}},
		{"stdout and stderr apart", "import sys\nprint('out')\nprint('err', file=sys.stderr)", StatusOK, func(t *testing.T, r *Result) {
			if r.Stdout != "out\n" || r.Stderr != "err\n" {
				t.Errorf("stdout %q stderr %q", r.Stdout, r.Stderr)
			}
		}},
		{"subprocess output captured", "import subprocess\nsubprocess.run(['echo', 'from child'])", StatusOK, func(t *testing.T, r *Result) {
			if !strings.Contains(r.Stdout, "from child") {
				t.Errorf("stdout %q lacks the subprocess's output", r.Stdout)
			}
		}},
		{"traceback shows user lines only", "def f():\n    return 1/0\nf()", StatusError, func(t *testing.T, r *Result) {
			if r.Error.Name != "ZeroDivisionError" || r.Error.Value != "division by zero" {
				t.Errorf("error = %+v", r.Error)
			}
			if !strings.Contains(r.Error.Traceback, "return 1/0") || strings.Contains(r.Error.Traceback, "runner.py") {
				t.Errorf("traceback = %q", r.Error.Traceback)
			}
		}},
		{"syntax error", "def (:", StatusError, func(t *testing.T, r *Result) {
			if r.Error.Name != "SyntaxError" {
				t.Errorf("error = %+v", r.Error)
			}
		}},
		{"sys.exit(0) is ok", "import sys\nprint('bye')\nsys.exit(0)", StatusOK, nil},
		{"sys.exit(3) is an error", "import sys\nsys.exit(3)", StatusError, nil},
		{"os._exit ends without a result", "import os\nos._exit(7)", StatusKilled, func(t *testing.T, r *Result) {
			if !strings.Contains(r.Error.Value, "code 7") {
				t.Errorf("error = %+v", r.Error)
			}
		}},
		{"closed stdout still finishes", "import os\nos.close(1)\n1", StatusOK, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := e.Execute(context.Background(), Request{Code: tt.code, Limits: Limits{Timeout: 10 * time.Second}})
			if err != nil {
				t.Fatalf("Execute: %v", err)
			}
			if r.Status != tt.wantStatus {
				t.Fatalf("status = %s, want %s; error %+v; stderr %q", r.Status, tt.wantStatus, r.Error, r.Stderr)
			}
			if tt.check != nil {
				tt.check(t, r)
			}
		})
	}
}

func TestStreamingEvents(t *testing.T) {
	e := newTestExecutor(t, Config{})
	var mu sync.Mutex
	var kinds []string
	var first time.Time
	r, err := e.Execute(context.Background(), Request{
		Code: "import time, sys\nprint('a', flush=True)\ntime.sleep(0.5)\ndisplay(1)\nprint('b', file=sys.stderr)",
		OnEvent: func(ev Event) {
			mu.Lock()
			defer mu.Unlock()
			if len(kinds) == 0 {
				first = time.Now()
			}
			kinds = append(kinds, ev.Kind)
		},
	})
	end := time.Now()
	if err != nil || r.Status != StatusOK {
		t.Fatalf("Execute = %+v, %v", r, err)
	}
	if diff := cmp.Diff([]string{"stdout", "display", "stderr"}, kinds); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	// The first line arrives while the code still sleeps (0.5 s), not at
	// the end. (Measured back from the end: how long Execute waited for a
	// warm sandbox before the code started does not count.)
	if before := end.Sub(first); before < 250*time.Millisecond {
		t.Errorf("stdout arrived only %v before the end, want it while the code still slept", before)
	}
}

type memSink struct {
	mu    sync.Mutex
	files map[string]string
}

func (m *memSink) Put(ctx context.Context, path string, size int64, r io.Reader) (string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[path] = string(b)
	return "file-" + path, nil
}

func TestFilesInAndOut(t *testing.T) {
	e := newTestExecutor(t, Config{})
	sink := &memSink{files: map[string]string{}}
	r, err := e.Execute(context.Background(), Request{
		Code: `import pandas as pd
df = pd.read_csv("in/data.csv")
df["double"] = df["x"] * 2
df.to_csv("out.csv", index=False)
open("untouched.txt").read()`,
		Files: []InputFile{DataFile("in/data.csv", []byte("x\n1\n2\n")), DataFile("untouched.txt", []byte("same"))},
		Sink:  sink,
	})
	if err != nil || r.Status != StatusOK {
		t.Fatalf("Execute = %+v, %v", r, err)
	}
	want := []File{{ID: "file-out.csv", Path: "out.csv", Bytes: 17, MIMEType: "text/csv; charset=utf-8"}}
	if diff := cmp.Diff(want, r.Files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	if got := sink.files["out.csv"]; got != "x,double\n1,2\n2,4\n" {
		t.Errorf("out.csv = %q", got)
	}
}

func TestSessionKeepsState(t *testing.T) {
	e := newTestExecutor(t, Config{})
	ctx := context.Background()
	s, err := e.NewSession(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	steps := []struct{ code, want string }{
		{"import numpy as np\nx = 41\nopen('state.txt', 'w').write('kept')", ""},
		{"x += 1\nprint(x, open('state.txt').read())", "42 kept\n"},
		{"print(np.sum([x, 1]))", "43\n"},
	}
	for i, st := range steps {
		r, err := s.Execute(ctx, Request{Code: st.code})
		if err != nil || r.Status != StatusOK || r.Stdout != st.want {
			t.Fatalf("step %d: %+v, %v", i, r, err)
		}
	}
	files, err := s.Files()
	if err != nil || len(files) != 1 || files[0].Path != "state.txt" {
		t.Errorf("Files() = %+v, %v", files, err)
	}
	s.Close()
	if _, err := s.Execute(ctx, Request{Code: "print(x)"}); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("Execute after Close: err = %v, want ErrSessionEnded", err)
	}
	s2, err := e.NewSession(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	r, err := s2.Execute(ctx, Request{Code: "import os\nprint('x' in globals(), os.path.exists('state.txt'))"})
	if err != nil || r.Stdout != "False False\n" {
		t.Errorf("a new session sees the old one's state: %+v, %v", r, err)
	}
}

func TestSessionTimeoutInterrupts(t *testing.T) {
	e := newTestExecutor(t, Config{})
	ctx := context.Background()
	s, err := e.NewSession(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Execute(ctx, Request{Code: "y = 7"})
	r, err := s.Execute(ctx, Request{Code: "while True: pass", Limits: Limits{Timeout: time.Second}})
	if err != nil || r.Status != StatusTimeout || r.SessionEnded || !strings.Contains(r.Error.Value, "interrupted") {
		t.Fatalf("spin = %+v, %v; want timeout, interrupted, session alive", r, err)
	}
	r, err = s.Execute(ctx, Request{Code: "print(y)"})
	if err != nil || r.Stdout != "7\n" {
		t.Fatalf("after interrupt: %+v, %v", r, err)
	}
	r, err = s.Execute(ctx, Request{Code: "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True: pass", Limits: Limits{Timeout: time.Second}})
	if err != nil || r.Status != StatusTimeout || !r.SessionEnded || !strings.Contains(r.Error.Value, "killed") {
		t.Fatalf("ignoring SIGINT = %+v, %v; want timeout and the session killed", r, err)
	}
	if _, err := s.Execute(ctx, Request{Code: "print(y)"}); !errors.Is(err, ErrSessionEnded) {
		t.Errorf("after kill: err = %v, want ErrSessionEnded", err)
	}
}

func TestSessionIdleTimeout(t *testing.T) {
	e := newTestExecutor(t, Config{})
	s, err := e.NewSession(context.Background(), 300*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session did not end after its idle timeout")
	}
}

func TestLimitStatuses(t *testing.T) {
	e := newTestExecutor(t, Config{})
	tests := []struct {
		name   string
		code   string
		limits Limits
		status Status
		value  string
	}{
		{"timeout", "import time\ntime.sleep(60)", Limits{Timeout: time.Second}, StatusTimeout, "timed out after 1 s"},
		{"memory", "b = bytearray(400 << 20)\nb[::4096] = b'x' * len(b[::4096])", Limits{MemoryBytes: 128 << 20}, StatusMemoryLimit, "128 MiB"},
		{"output", "while True: print('x' * 1000)", Limits{OutputBytes: 10000}, StatusOutputLimit, "10000 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := e.Execute(context.Background(), Request{Code: tt.code, Limits: tt.limits})
			if err != nil {
				t.Fatal(err)
			}
			if r.Status != tt.status || r.Error == nil || !strings.Contains(r.Error.Value, tt.value) {
				t.Errorf("status %s error %+v; want %s naming %q", r.Status, r.Error, tt.status, tt.value)
			}
		})
	}
}

// A zygote that dies (the OOM killer, say) is replaced: the service heals.
func TestZygoteRestart(t *testing.T) {
	e := newTestExecutor(t, Config{PoolSize: 1})
	old := e.pool()
	old.cmd.Process.Kill()
	deadline := time.Now().Add(60 * time.Second)
	for e.pool() == old && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if e.pool() == old {
		t.Fatal("no new zygote within 60 s")
	}
	r, err := e.Execute(context.Background(), Request{Code: "print('healed')"})
	if err != nil || r.Stdout != "healed\n" {
		t.Fatalf("after restart: %+v, %v", r, err)
	}
}

// TestOwnRandomness checks that each sandbox draws its own random numbers:
// children are forked from one zygote, and without reseeding every one of
// them repeats the zygote's sequence from numpy.random (which has no
// at-fork hook) and, with a raw fork, from random too.
func TestOwnRandomness(t *testing.T) {
	e := newTestExecutor(t, Config{})
	code := "import random, numpy\nprint(random.random(), numpy.random.rand(), numpy.random.randint(1 << 30))"
	seen := map[string]int{}
	for i := 0; i < 4; i++ {
		r, err := e.Execute(context.Background(), Request{Code: code})
		if err != nil || r.Status != StatusOK {
			t.Fatalf("Execute: %v %+v", err, r)
		}
		for _, v := range strings.Fields(r.Stdout) {
			seen[v]++
		}
	}
	for v, n := range seen {
		if n > 1 {
			t.Errorf("%s came out of %d sandboxes: they share a random generator", v, n)
		}
	}
}

// TestPrefaultLearned checks that the pool learns from its first child
// which pages warm-up writes, and that children spawned with them run
// code as before.
func TestPrefaultLearned(t *testing.T) {
	e := newTestExecutor(t, Config{PoolSize: 2})
	deadline := time.Now().Add(30 * time.Second)
	for !e.pool().prefaulted.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !e.pool().prefaulted.Load() {
		t.Fatal("the pool never learned the pages warm-up writes")
	}
	for i := 0; i < 4; i++ { // drains children spawned before and after
		r, err := e.Execute(context.Background(), Request{Code: "import pandas as pd\nprint(pd.DataFrame({'a': [1, 2]}).a.sum())"})
		if err != nil || r.Status != StatusOK || r.Stdout != "3\n" {
			t.Fatalf("Execute: %v %+v", err, r)
		}
	}
}

// TestFontsAfterFork checks that a child starts with matplotlib's font
// cache empty, as os.fork's at-fork hooks would leave it: the cached fonts
// read their file lazily through a descriptor the child closes, and a
// child forked without running that hook failed on CI with "OSError:
// [Errno 9] Bad file descriptor" while drawing text. Then it draws text.
func TestFontsAfterFork(t *testing.T) {
	e := newTestExecutor(t, Config{})
	code := `from matplotlib.font_manager import _get_font
print(_get_font.cache_info().currsize)
import matplotlib.pyplot as plt
fig, ax = plt.subplots()
ax.bar(["Üb", "ßq", "ÆØÅ"], [1, 2, 3])
ax.set_title("Jackdaws love my big sphinx of quartz: 0123456789 ~!@#$%^&*() λμπ")
plt.show()`
	for i := 0; i < 2; i++ {
		r, err := e.Execute(context.Background(), Request{Code: code})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != StatusOK || r.Stderr != "" || len(r.Displays) != 1 {
			t.Fatalf("status %s, %d displays, error %+v, stderr %.300q", r.Status, len(r.Displays), r.Error, r.Stderr)
		}
		if r.Stdout != "0\n" {
			t.Errorf("a fresh child holds %s fonts from the zygote, want none", strings.TrimSpace(r.Stdout))
		}
	}
}

// TestOutputAfterDisplayWaits checks that what code prints after a
// display never overtakes it: a line printed after display(i) must reach
// the caller after that display, on both streams. (The stream's sync mark
// arrives before the display's frame; the output behind it must wait.)
func TestOutputAfterDisplayWaits(t *testing.T) {
	e := newTestExecutor(t, Config{})
	var mu sync.Mutex
	shown := -1
	var bad []string
	r, err := e.Execute(context.Background(), Request{
		Code: "import sys\nfor i in range(40):\n    display(i)\n    print('o%d' % i)\n    print('e%d' % i, file=sys.stderr)",
		OnEvent: func(ev Event) {
			mu.Lock()
			defer mu.Unlock()
			switch ev.Kind {
			case "display":
				shown++
			case "stdout", "stderr":
				for _, line := range strings.Fields(string(ev.Text)) {
					var i int
					if _, err := fmt.Sscanf(line[1:], "%d", &i); err == nil && i > shown {
						bad = append(bad, fmt.Sprintf("%s before display %d", line, i))
					}
				}
			}
		},
	})
	if err != nil || r.Status != StatusOK {
		t.Fatalf("Execute = %+v, %v", r, err)
	}
	if len(bad) > 0 {
		t.Errorf("output overtook its display: %v", bad)
	}
}

// TestDataWarmup checks that children joining a pool where another
// already waits warm up pandas, that a request gets one of them first,
// that they run code like any child and leave nothing in its globals, that
// the pool never holds more than PoolSize children, and that a child
// joining an empty pool does not make a request wait for the warm-up.
func TestDataWarmup(t *testing.T) {
	e := newTestExecutor(t, Config{PoolSize: 3, DataWarmup: true})
	p := e.pool()
	deadline := time.Now().Add(60 * time.Second)
	// The first child joins an empty pool (so do others spawned beside
	// it, if they are ready before it joins); later ones warm up.
	for !(e.Warm() == 3 && e.WarmData() >= 1) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if e.Warm() != 3 || e.WarmData() < 1 || e.WarmData() > 2 {
		t.Fatalf("warm %d, of which %d warmed up pandas; want 3, and 1 or 2", e.Warm(), e.WarmData())
	}
	time.Sleep(300 * time.Millisecond) // a refiller past its limit would spawn now
	p.mu.Lock()
	live := len(p.live)
	p.mu.Unlock()
	if live != 3 {
		t.Errorf("%d children alive in a full pool of 3", live)
	}

	res := runDataWarm(t, e, "import io, pandas as pd\n"+
		"print(sorted(k for k in globals() if not k.startswith('_')))\n"+
		"print(pd.read_csv(io.StringIO('a\\n1\\n2')).a.sum())")
	if want := "['display', 'io', 'pd']\n3\n"; res.Stdout != want {
		t.Errorf("stdout %q, want %q", res.Stdout, want)
	}

	// A pool of one never has another child waiting: no warm-up.
	one := newTestExecutor(t, Config{PoolSize: 1, DataWarmup: true})
	for one.Warm() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	if one.Warm() != 1 || one.WarmData() != 0 {
		t.Errorf("pool of one: warm %d, of which %d warmed up pandas; want 1 and 0", one.Warm(), one.WarmData())
	}
}

// TestPlotWarmup checks that a child that also warmed up matplotlib draws
// a figure like any child, with none left open by the warm-up.
func TestPlotWarmup(t *testing.T) {
	e := newTestExecutor(t, Config{PoolSize: 2, DataWarmup: true, PlotWarmup: true})
	deadline := time.Now().Add(60 * time.Second)
	for e.WarmData() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if e.WarmData() < 1 {
		t.Fatal("no child warmed up pandas and plots")
	}
	res := runDataWarm(t, e, "import matplotlib.pyplot as plt\nprint(plt.get_fignums())\nplt.bar(['a', 'b'], [1, 2])\nplt.show()")
	if res.Stdout != "[]\n" {
		t.Errorf("figures open before the code drew one: %q", res.Stdout)
	}
	if len(res.Displays) != 1 || !strings.HasPrefix(fmt.Sprint(res.Displays[0]["image/png"]), "iVBORw0KGgo") {
		t.Errorf("want one PNG display, got %d displays", len(res.Displays))
	}
}

// runDataWarm takes a warm child as a request would, checks it is one that
// ran the data warm-up (the caller made sure one is waiting), and runs
// code in it once.
func runDataWarm(t *testing.T, e *Executor, code string) *Result {
	t.Helper()
	ctx := context.Background()
	req := &Request{Code: code}
	l, err := e.check(req)
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.pool().get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.destroy()
	if !c.dataWarm {
		t.Error("a request got a child without the warm-up while another had it")
	}
	res, err := c.run(ctx, req, l, false)
	if err != nil || res.Status != StatusOK {
		t.Fatalf("run: %v %+v", err, res)
	}
	return res
}
