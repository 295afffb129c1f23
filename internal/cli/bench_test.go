//go:build linux

package cli

import (
	"context"
	"maps"
	"testing"
	"time"

	"codeexec/internal/testenv"
)

func TestParseCPUBusy(t *testing.T) {
	// user nice system idle iowait irq softirq steal guest guest_nice
	got, err := parseCPUBusy("cpu  100 5 50 900 30 2 3 10 7 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n")
	if err != nil {
		t.Fatal(err)
	}
	if want := 170 * time.Second / 100; got != want {
		t.Errorf("busy = %v, want %v (idle and iowait left out, guest inside user)", got, want)
	}
	for _, bad := range []string{"", "intr 1 2 3", "cpu 1 2 3", "cpu 1 2 x 4 5 6 7 8"} {
		if _, err := parseCPUBusy(bad); err == nil {
			t.Errorf("parseCPUBusy(%q) = nil error", bad)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for u, want := range map[string]bool{
		"http://127.0.0.1:8080": true, "http://localhost:8080/": true, "http://[::1]:8080": true,
		"http://127.9.9.9": true, "http://example.com": false, "http://10.0.0.1:80": false, "::": false,
	} {
		if got := isLoopback(u); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", u, got, want)
		}
	}
}

func TestParseHostCost(t *testing.T) {
	c, err := parseHostCost("32768 0.65536 0.032\n")
	if err != nil {
		t.Fatal(err)
	}
	if c.cowFault != 20*time.Microsecond || c.forkExit != 32*time.Millisecond {
		t.Errorf("parseHostCost = %+v, want 20us per fault and 32ms", c)
	}
	for _, bad := range []string{"", "1 2", "0 1 1", "x 1 1", "10 -1 1", "Traceback ...\n"} {
		if _, err := parseHostCost(bad); err == nil {
			t.Errorf("parseHostCost(%q) gave no error", bad)
		}
	}
}

// TestMeasureHostCost runs the script for real: Python is there on CI.
func TestMeasureHostCost(t *testing.T) {
	c, err := measureHostCost(context.Background(), testenv.Python(t), 1)
	if err != nil {
		t.Fatal(err)
	}
	if c.cowFault <= 0 || c.forkExit <= 0 {
		t.Errorf("measureHostCost = %+v", c)
	}
	t.Logf("copy-on-write fault %v, fork and exit %v", c.cowFault, c.forkExit)
}

func TestParseFrameCounts(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stdout string
		want   map[int]frameCount
	}{
		{"none", "", map[int]frameCount{}},
		{"one", "hostile-frames 0 3 300\n", map[int]frameCount{0: {3, 300}}},
		{"adds up per shape", "keys 5\nhostile-frames 2 1 10\nother\nhostile-frames 2 2 20\nhostile-frames 5 1 7\n",
			map[int]frameCount{2: {3, 30}, 5: {1, 7}}},
		{"cut short by a kill", "hostile-frames 1 1 10\nhostile-frames 1 2", map[int]frameCount{1: {1, 10}}},
		{"bad numbers", "hostile-frames x 1 1\nhostile-frames 0 1 -1\nhostile-frames 0 1 2 3\nhostile-frames 0 1\n", map[int]frameCount{}},
	} {
		if got := parseFrameCounts(tc.stdout); !maps.Equal(got, tc.want) {
			t.Errorf("%s: parseFrameCounts(%q) = %v, want %v", tc.name, tc.stdout, got, tc.want)
		}
	}
}

func TestParseVm(t *testing.T) {
	status := "Name:\tcodeexec\nVmPeak:\t 2000 kB\nVmHWM:\t  1500 kB\nVmRSS:\t  1024 kB\nThreads:\t8\n"
	for _, tc := range []struct {
		name, status, field string
		want                int64
		ok                  bool
	}{
		{"rss", status, "VmRSS", 1 << 20, true},
		{"hwm", status, "VmHWM", 1500 << 10, true},
		{"missing", status, "VmSwap", 0, false},
		{"prefix only", "VmRSSx:\t1 kB\n", "VmRSS", 0, false},
		{"no unit", "VmRSS:\t1\n", "VmRSS", 0, false},
		{"not a number", "VmRSS:\tx kB\n", "VmRSS", 0, false},
	} {
		got, err := parseVm(tc.status, tc.field)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%s: parseVm(%q) = %d, %v, want %d (ok %v)", tc.name, tc.field, got, err, tc.want, tc.ok)
		}
	}
}

func TestFormatCounts(t *testing.T) {
	got := formatCounts(map[string]int{"timeout": 2, "ok": 5, "killed": 2})
	if want := "ok 5, killed 2, timeout 2"; got != want {
		t.Errorf("formatCounts = %q, want %q", got, want)
	}
}
