package executor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestCapacityRefusesBeforeTheZygoteDies opens sessions on a zygote with a
// small cgroup until the executor refuses one. Each live child leaves
// kernel memory charged to the zygote's cgroup, so without the refusal
// that cgroup fills and the OOM killer kills the zygote and every session.
// With it, the executor answers ErrCapacity first: the zygote lives, every
// session still runs code, and a session that ends makes room again.
func TestCapacityRefusesBeforeTheZygoteDies(t *testing.T) {
	e := newCheckedExecutor(t, Config{PoolSize: 2, HostUID: 1_710_000_000, ZygoteMemoryBytes: 256 << 20})
	var sessions []*Session
	defer func() {
		for _, s := range sessions {
			s.Close()
		}
	}()
	var refused error
	for len(sessions) < 300 && refused == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s, err := e.NewSession(ctx, 0)
		cancel()
		if err != nil {
			refused = err
			break
		}
		sessions = append(sessions, s)
	}
	t.Logf("%d sessions open when NewSession said: %v", len(sessions), refused)
	if !errors.Is(refused, ErrCapacity) {
		t.Fatalf("NewSession after %d sessions = %v, want %v", len(sessions), refused, ErrCapacity)
	}
	if gen := e.pool().gen; gen != 0 {
		t.Fatalf("the zygote was restarted %d times: it died", gen)
	}
	if oom, _ := e.pool().zcg.OOMKills(); oom != 0 {
		t.Errorf("the zygote's cgroup saw %d OOM kills", oom)
	}
	for i, s := range sessions {
		res, err := s.Execute(context.Background(), Request{Code: fmt.Sprintf("print(%d)", i)})
		if err != nil || res.Status != StatusOK || res.Stdout != fmt.Sprintf("%d\n", i) {
			t.Fatalf("session %d after the refusal: %v, %+v", i, err, res)
		}
	}
	// A single-use execution is refused too while the pool is empty.
	if _, err := e.Execute(context.Background(), Request{Code: "print(1)"}); err != nil && !errors.Is(err, ErrCapacity) {
		t.Errorf("Execute at capacity = %v, want a result or %v", err, ErrCapacity)
	}
	// Ending sessions makes room.
	for _, s := range sessions[:len(sessions)/2] {
		s.Close()
	}
	sessions = sessions[len(sessions)/2:]
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := e.NewSession(ctx, 0)
		cancel()
		if err == nil {
			sessions = append(sessions, s)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("NewSession 30 s after half the sessions ended: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestOOMScoreAdj: a child is the OOM killer's first choice and cannot
// change that; where the server has CAP_SYS_RESOURCE the zygote is never
// the choice.
func TestOOMScoreAdj(t *testing.T) {
	e := newTestExecutor(t, Config{PoolSize: 1, HostUID: 1_720_000_000})
	status, _ := os.ReadFile("/proc/self/status")
	var capEff uint64
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			capEff, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	sysResource := capEff&(1<<unix.CAP_SYS_RESOURCE) != 0
	z, err := os.ReadFile(fmt.Sprintf("/proc/%d/oom_score_adj", e.pool().cmd.Process.Pid))
	if want := map[bool]string{true: "-1000", false: "0"}[sysResource]; err != nil || strings.TrimSpace(string(z)) != want {
		t.Errorf("zygote's oom_score_adj = %q, %v; want %s (CAP_SYS_RESOURCE: %v)", z, err, want, sysResource)
	}
	res, err := e.Execute(context.Background(), Request{Code: `print(open("/proc/self/oom_score_adj").read().strip())
for v in ("-1000", "0"):
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(v)
        print(v, "allowed")
    except OSError as e:
        print(v, "refused", e.errno)`})
	if err != nil {
		t.Fatal(err)
	}
	// Not dumpable, the child does not own its /proc files: it cannot
	// write its score at all (EACCES), whatever the server's capabilities.
	if want := childOOMScoreAdj + "\n-1000 refused 13\n0 refused 13\n"; res.Stdout != want {
		t.Errorf("child's oom_score_adj: stdout %q (%v), want %q", res.Stdout, res.Error, want)
	}
}

// TestInputFilesChargedToSandbox: files placed into a sandbox are charged
// to the sandbox's cgroup (the child writes them), not to the server, and
// files that cannot fit its memory limit are refused before any is sent.
func TestInputFilesChargedToSandbox(t *testing.T) {
	e := newTestExecutor(t, Config{PoolSize: 1, HostUID: 1_730_000_000})
	s, err := e.NewSession(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	before, err := s.c.cg.MemoryUsage()
	if err != nil {
		t.Fatal(err)
	}
	const size = 96 << 20
	if err := s.WriteFile(context.Background(), DataFile("big/input.bin", make([]byte, size))); err != nil {
		t.Fatalf("WriteFile: %v", err)
	}
	after, err := s.c.cg.MemoryUsage()
	if err != nil {
		t.Fatal(err)
	}
	if after-before < size {
		t.Errorf("the sandbox's cgroup grew by %d bytes after a %d-byte file was placed, want at least that", after-before, size)
	}
	res, err := s.Execute(context.Background(), Request{Code: `import os; print(os.path.getsize("/mnt/data/big/input.bin"), os.stat("/mnt/data/big/input.bin").st_uid == os.getuid())`,
		Files: []InputFile{DataFile("small.txt", []byte("hi"))}})
	if err != nil || res.Stdout != fmt.Sprintf("%d True\n", size) {
		t.Fatalf("Execute: %v, %+v", err, res)
	}
	// Over the memory limit: refused before anything is sent.
	_, err = e.Execute(context.Background(), Request{Code: "print(1)", Limits: Limits{MemoryBytes: 64 << 20},
		Files: []InputFile{DataFile("huge.bin", make([]byte, 64<<20))}})
	var ie *InputError
	if !errors.As(err, &ie) || !strings.Contains(ie.Msg, "memory limit") {
		t.Errorf("Execute with files over the memory limit: %v, want an *InputError about the memory limit", err)
	}
	// A session asked for a memory limit below what it holds refuses the
	// request and carries on.
	_, err = s.Execute(context.Background(), Request{Code: "print(1)", Limits: Limits{MemoryBytes: 64 << 20}})
	if !errors.As(err, &ie) || ie.Param != "memory_limit_mb" {
		t.Errorf("Execute in a session holding 96 MiB with a 64 MiB limit: %v, want an *InputError on memory_limit_mb", err)
	}
	if res, err := s.Execute(context.Background(), Request{Code: "print(open('small.txt').read())"}); err != nil || res.Stdout != "hi\n" {
		t.Errorf("the session after a refused file: %v, %+v", err, res)
	}
}
