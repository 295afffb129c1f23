package executor

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestSharedKernelLimitsStandalone runs testSharedKernelLimits on an
// executor of its own, with a uid range of its own.
func TestSharedKernelLimitsStandalone(t *testing.T) {
	e := newCheckedExecutor(t, Config{PoolSize: 2, HostUID: 1_700_000_000})
	(&adversary{e: e}).testSharedKernelLimits(t)
}

// testSharedKernelLimits: objects that the kernel counts per user, where a
// sandbox uid's count is also host root's (the sandbox's user namespace is
// root's, and ucounts are hierarchical), or that come from one global pool,
// cannot be used up from a sandbox. Each attack runs in a session so that
// what it made stays alive while the test, host root, checks that it can
// still make each of them.
func (a *adversary) testSharedKernelLimits(t *testing.T) {
	tests := []struct {
		name string
		code string
		// want are lines the attack must print, "KEY made why".
		want []string
		// maxMade bounds the count made for a key where some are allowed.
		maxMade map[string]int
	}{
		{
			// Host root has 128 (fs.inotify.max_user_instances).
			name: "inotify instances",
			code: `repeat("INOTIFY", 200, lambda i: call(L(294), L(os.O_CLOEXEC)))`,
			want: []string{"INOTIFY 0 EPERM"},
		},
		{
			// One context of all of fs.aio-max-nr (65536), then many small.
			name: "AIO contexts",
			code: `def aio(nr):
    ctx = ctypes.c_ulong(0)
    return ctx, call(L(206), L(nr), ctypes.byref(ctx))[1]
repeat("AIO_BIG", 1, lambda i: aio(65536))
repeat("AIO", 2048, lambda i: aio(64))
`,
			want: []string{"AIO_BIG 0 EPERM", "AIO 0 EPERM"},
		},
		{
			// kill(2) of a blocked real-time signal queues one each time,
			// up to RLIMIT_SIGPENDING, then drops it; rt_sigqueueinfo(2)
			// fails with EAGAIN at the limit. Host root has about 96,000
			// (RLIMIT_SIGPENDING, from the machine's memory).
			name: "queued signals",
			code: `signal.signal(signal.SIGRTMIN, lambda *a: None)  # another thread may take one
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
for _ in range(1000):
    os.kill(os.getpid(), signal.SIGRTMIN)
print("KILL SigQ", sigq())
info = siginfo(signal.SIGRTMIN)
repeat("SIGQUEUEINFO", 200000, lambda i: call(L(129), L(os.getpid()), L(signal.SIGRTMIN), info))
repeat("TGSIGQUEUEINFO", 200000, lambda i: call(L(297), L(os.getpid()), L(threading.get_native_id()), L(signal.SIGRTMIN), info))
print("SigQ", sigq())
`,
			want:    []string{"SIGQUEUEINFO 0 EPERM", "TGSIGQUEUEINFO 0 EPERM"},
			maxMade: map[string]int{"SigQ": 64},
		},
		{
			// Each POSIX timer reserves a queued signal (timer_create(2)).
			name:    "POSIX timers",
			code:    `repeat("TIMERS", 200000, lambda i: call(L(222), L(time.CLOCK_MONOTONIC), None, ctypes.byref(ctypes.c_int())))`,
			want:    []string{"TIMERS 64 EAGAIN"},
			maxMade: map[string]int{"TIMERS": 64},
		},
		{
			// RLIMIT_MSGQUEUE, 800 KiB for host root, is about nine queues
			// of the default size.
			name: "POSIX message queues",
			code: `repeat("MQUEUE", 300, lambda i: call(L(240), b"codeexec-%d" % i, L(os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC), L(0o600), None))`,
			want: []string{"MQUEUE 0 EPERM"},
		},
		{
			// Locked memory (SHM_LOCK, mlock) is charged up to host root's
			// RLIMIT_MEMLOCK too: one sandbox could take it from the others.
			name: "locked memory",
			code: `def shm_lock(i):
    shmid, err = call(L(29), L(0), L(8 << 20), L(0o1000 | 0o600))  # shmget(IPC_PRIVATE, 8 MiB, IPC_CREAT)
    if err:
        return None, err
    return call(L(31), L(shmid), L(11), None)  # shmctl(SHM_LOCK)
repeat("SHM_LOCK", 4, shm_lock)
buf = ctypes.create_string_buffer(1 << 20)
repeat("MLOCK", 1, lambda i: call(L(149), L(ctypes.addressof(buf)), L(1 << 20)))
`,
			want: []string{"SHM_LOCK 0 EPERM", "MLOCK 0 EPERM"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := a.newSession(t)
			res := sessionExec(t, s, Request{Code: uidPreamble + kernelLimitsPrelude + tt.code})
			wantStatus(t, res, StatusOK)
			for _, w := range tt.want {
				if !strings.Contains(res.Stdout, w+"\n") {
					t.Errorf("stdout = %s\nwant a line %q", clip(res.Stdout), w)
				}
			}
			for key, max := range tt.maxMade {
				if n := madeCount(t, res, key); n > max {
					t.Errorf("%s = %d, want at most %d", key, n, max)
				}
			}
			// While the sandbox holds what it made, host root still can.
			hostRootCan(t)
			s.Close()
			a.noChildLeft(t, res)
			a.healthy(t)
		})
	}
	// Each child has its own uid and RLIMIT_SIGPENDING, so sandboxes at
	// once hold at most 64 queued signals each.
	t.Run("several sandboxes", func(t *testing.T) {
		const n = 2
		before := rootSigQ(t)
		code := uidPreamble + kernelLimitsPrelude + `signal.signal(signal.SIGRTMIN, lambda *a: None)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
for _ in range(1000):
    os.kill(os.getpid(), signal.SIGRTMIN)
repeat("TIMERS", 1000, lambda i: call(L(222), L(time.CLOCK_MONOTONIC), None, ctypes.byref(ctypes.c_int())))
print("SigQ", sigq())
`
		sessions := make([]*Session, n)
		results := make([]*Result, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			sessions[i] = a.newSession(t)
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				results[i], errs[i] = sessions[i].Execute(ctx, Request{Code: code})
			})
		}
		wg.Wait()
		for i, res := range results {
			if errs[i] != nil {
				t.Fatalf("Session.Execute: %v", errs[i])
			}
			logResult(t, res, 0)
			wantStatus(t, res, StatusOK)
			wantStdout(t, res, "TIMERS 0 EAGAIN\n")
			if got := madeCount(t, res, "SigQ"); got > 64 {
				t.Errorf("SigQ = %d, want at most 64", got)
			}
		}
		// Host root's own count includes the sandboxes' (other root
		// processes may hold some too, so this is only logged).
		t.Logf("host root's queued signals: %d before, %d with %d sandboxes holding theirs", before, rootSigQ(t), n)
		hostRootCan(t)
		for i, s := range sessions {
			s.Close()
			a.noChildLeft(t, results[i])
		}
		a.healthy(t)
	})
}

// kernelLimitsPrelude defines what the attacks use: call makes a raw
// syscall and returns its result and the errno's name (None on success);
// repeat makes up to n objects with make(i), keeps them in held for the
// session's life and prints "KEY made why"; sigq is the "queued/limit" of
// /proc/self/status for our uid; siginfo is a siginfo_t for SI_QUEUE.
const kernelLimitsPrelude = `import ctypes, errno, os, signal, struct, threading, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
held = []
def call(*args):
    ctypes.set_errno(0)
    r = libc.syscall(*args)
    if r >= 0:
        return r, None
    e = ctypes.get_errno()
    return r, errno.errorcode.get(e, str(e))
def repeat(key, n, make):
    made, why = 0, "none"
    for i in range(n):
        obj, err = make(i)
        if err:
            why = err
            break
        held.append(obj)
        made += 1
    print(key, made, why, flush=True)
def sigq():
    return next(l.split()[1] for l in open("/proc/self/status") if l.startswith("SigQ:"))
def siginfo(sig):
    # si_signo, si_errno, si_code = SI_QUEUE, padding, si_pid, si_uid
    return ctypes.create_string_buffer(struct.pack("<iiiiiI", sig, 0, -1, 0, os.getpid(), os.getuid()), 128)
`

// madeCount returns the number on the attack's line "KEY n ..." or
// "KEY n/limit".
func madeCount(t *testing.T, res *Result, key string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(key) + ` (\d+)\b`).FindStringSubmatch(res.Stdout)
	if m == nil {
		t.Errorf("stdout = %s\nwant a line %q", clip(res.Stdout), key+" N")
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// hostRootCan checks that host root (the test process, or a helper
// process of root where a signal must be blocked) can still make an
// inotify instance, an AIO context, a POSIX message queue, a queued
// real-time signal and a POSIX timer.
func hostRootCan(t *testing.T) {
	t.Helper()
	if fd, err := unix.InotifyInit1(unix.IN_CLOEXEC); err != nil {
		t.Errorf("host root: inotify_init1: %v", err)
	} else {
		unix.Close(fd)
	}
	if err := ioSetupDestroy(); err != nil {
		t.Errorf("host root: %v", err)
	}
	if err := mqOpenUnlink(); err != nil {
		t.Errorf("host root: %v", err)
	}
	out, err := exec.CommandContext(t.Context(), "/usr/bin/python3", "-c", hostSignalsScript).CombinedOutput()
	if err != nil || string(out) != "sigqueue ok\ntimer_create ok\n" {
		t.Errorf("host root: a helper queueing a signal and making a timer printed %q (%v), want both ok", out, err)
	}
}

// ioSetupDestroy makes an AIO context of one event and destroys it
// (io_setup(2), io_destroy(2)).
func ioSetupDestroy() error {
	var ctx uint64 // aio_context_t, which must be 0 on entry
	if _, _, errno := unix.Syscall(unix.SYS_IO_SETUP, 1, uintptr(unsafe.Pointer(&ctx)), 0); errno != 0 {
		return fmt.Errorf("io_setup(1): %w", errno)
	}
	if _, _, errno := unix.Syscall(unix.SYS_IO_DESTROY, uintptr(ctx), 0, 0); errno != 0 {
		return fmt.Errorf("io_destroy: %w", errno)
	}
	return nil
}

// mqOpenUnlink makes a POSIX message queue of the default size in the
// host's IPC namespace and removes it at once (mq_open(3): the raw syscall
// takes the name without its leading slash).
func mqOpenUnlink() error {
	name, err := unix.BytePtrFromString("codeexec-test-" + newNonce())
	if err != nil {
		return err
	}
	defer runtime.KeepAlive(name)
	fd, _, errno := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(name)),
		unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600, 0, 0, 0)
	if errno != 0 {
		return fmt.Errorf("mq_open: %w", errno)
	}
	unix.Close(int(fd))
	if _, _, errno := unix.Syscall(unix.SYS_MQ_UNLINK, uintptr(unsafe.Pointer(name)), 0, 0); errno != 0 {
		return fmt.Errorf("mq_unlink: %w", errno)
	}
	return nil
}

// hostSignalsScript queues a blocked real-time signal to itself with
// rt_sigqueueinfo(2) and takes it back with sigtimedwait, then makes a
// POSIX timer; it prints "ok" or the errno of each.
const hostSignalsScript = `import ctypes, errno, os, signal, struct, time
libc = ctypes.CDLL(None, use_errno=True)
L = ctypes.c_long
def result(r):
    return "ok" if r == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
info = ctypes.create_string_buffer(struct.pack("<iiiiiI", signal.SIGRTMIN, 0, -1, 0, os.getpid(), os.getuid()), 128)
r = result(libc.syscall(L(129), L(os.getpid()), L(signal.SIGRTMIN), info))
if r == "ok" and signal.sigtimedwait([signal.SIGRTMIN], 5) is None:
    r = "not delivered"
print("sigqueue", r)
print("timer_create", result(libc.syscall(L(222), L(time.CLOCK_MONOTONIC), None, ctypes.byref(ctypes.c_int()))))
`

// rootSigQ returns the queued signals counted for host root, as the test
// process's /proc/self/status shows them (proc(5), SigQ).
func rootSigQ(t *testing.T) int {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if q, ok := strings.CutPrefix(line, "SigQ:"); ok {
			n, _, _ := strings.Cut(strings.TrimSpace(q), "/")
			v, _ := strconv.Atoi(n)
			return v
		}
	}
	t.Fatal("no SigQ in /proc/self/status")
	return 0
}
