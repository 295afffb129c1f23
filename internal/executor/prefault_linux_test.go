package executor

import (
	"encoding/json"
	"io"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"codeexec/internal/python"
)

// TestLearnPrefault checks what the zygote is told to copy: ranges that
// are not page-aligned, empty or wrap around are dropped, touching or
// overlapping ranges are merged (but not ranges with a gap), and the total is capped in count and bytes so a
// probe cannot make children copy without bound.
func TestLearnPrefault(t *testing.T) {
	const pg = 4096
	huge := uint64(maxPrefaultBytes)
	tests := []struct {
		name string
		in   []python.PageRange
		want []python.PageRange
	}{
		{"merge touching, keep gaps", []python.PageRange{{pg, pg}, {2 * pg, pg}, {4 * pg, pg}, {10 * pg, 2 * pg}},
			[]python.PageRange{{pg, 2 * pg}, {4 * pg, pg}, {10 * pg, 2 * pg}}},
		{"drop malformed", []python.PageRange{{pg + 1, pg}, {pg, 0}, {2 * pg, pg + 7}, {^uint64(0) &^ (pg - 1), 2 * pg}, {8 * pg, pg}},
			[]python.PageRange{{8 * pg, pg}}},
		{"merge overlapping", []python.PageRange{{0, 10 * pg}, {pg, pg}, {9 * pg, 3 * pg}},
			[]python.PageRange{{0, 12 * pg}}},
		{"cap bytes", []python.PageRange{{0, huge - 2*pg}, {huge, 3 * pg}, {4 * huge, pg}},
			[]python.PageRange{{0, huge - 2*pg}, {4 * huge, pg}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := sentPrefault(t, tt.in); !cmp.Equal(got, tt.want) {
				t.Errorf("sent (-want +got):\n%s", cmp.Diff(tt.want, got))
			}
		})
	}
	t.Run("cap count", func(t *testing.T) {
		var in []python.PageRange
		for i := range 3 * maxPrefaultRanges {
			in = append(in, python.PageRange{uint64(4*i) * pg, pg})
		}
		if got := sentPrefault(t, in); len(got) != maxPrefaultRanges {
			t.Errorf("sent %d ranges, want the cap of %d", len(got), maxPrefaultRanges)
		}
	})
}

// sentPrefault runs learnPrefault on a pool whose zygote is a socket and
// returns the ranges the zygote would have received.
func sentPrefault(t *testing.T, in []python.PageRange) []python.PageRange {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	p := &pool{ctrl: fds[0], log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	p.learnPrefault(in)
	if !p.prefaulted.Load() {
		t.Fatal("prefaulted not set")
	}
	buf := make([]byte, 65536)
	n, err := unix.Read(fds[1], buf)
	if err != nil {
		t.Fatal(err)
	}
	if n >= 65536 {
		t.Fatalf("message of %d bytes does not fit the zygote's buffer", n)
	}
	var msg python.Control
	if err := json.Unmarshal(buf[:n], &msg); err != nil || msg.Op != "prefault" {
		t.Fatalf("message %q: %v", buf[:n], err)
	}
	return msg.Ranges
}
