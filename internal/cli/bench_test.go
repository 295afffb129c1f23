package cli

import (
	"testing"
	"time"
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
