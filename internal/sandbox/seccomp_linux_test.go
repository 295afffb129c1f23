//go:build amd64

package sandbox

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"codeexec/internal/testenv"
)

// The tests run each attack in a victim: this test binary re-executed with
// victimEnv naming the attack (see TestSeccompHelperProcess). The victim
// installs the filter, attacks, and prints "ok" or the errno it got, unless
// the kernel kills it.
const victimEnv = "CODEEXEC_SECCOMP_VICTIM"

// int80 makes an i386 syscall with `int $0x80` (int80_linux_amd64_test.s).
func int80(trap, a1 uintptr) (r1 uintptr)

// seccompAttacks are what a victim does under the filter and what it must
// get: "ok", an errno name, or "SIGSYS" if it must be killed.
var seccompAttacks = []struct {
	name   string
	attack func() error
	want   string
}{
	// Escaping the namespaces. Where the filter failed, the arguments make
	// the kernel fail the call harmlessly (EINVAL, ENOENT, ESRCH, ...).
	{"unshare(CLONE_NEWUSER)", func() error { return unix.Unshare(unix.CLONE_NEWUSER) }, "EPERM"},
	{"clone(CLONE_NEWUSER)", cloneNew(unix.CLONE_NEWUSER), "EPERM"},
	{"clone(CLONE_NEWNS)", cloneNew(unix.CLONE_NEWNS), "EPERM"},
	{"clone(CLONE_NEWPID)", cloneNew(unix.CLONE_NEWPID), "EPERM"},
	{"clone(CLONE_NEWNET)", cloneNew(unix.CLONE_NEWNET), "EPERM"},
	{"clone(CLONE_NEWCGROUP)", cloneNew(unix.CLONE_NEWCGROUP), "EPERM"},
	{"clone(CLONE_NEWIPC)", cloneNew(unix.CLONE_NEWIPC), "EPERM"},
	{"clone(CLONE_NEWUTS)", cloneNew(unix.CLONE_NEWUTS), "EPERM"},
	{"clone(CLONE_NEWTIME)", cloneNew(unix.CLONE_NEWTIME), "EPERM"},
	{"clone3", rawSyscall(unix.SYS_CLONE3, 0, 0), "ENOSYS"},
	{"setns", setnsUser, "EPERM"},
	{"mount", func() error { return unix.Mount("none", "/nonexistent/codeexec", "tmpfs", 0, "") }, "EPERM"},
	{"chroot", func() error { return unix.Chroot("/nonexistent/codeexec") }, "EPERM"},
	// Other processes and kernel attack surface.
	{"ptrace(PTRACE_ATTACH)", rawSyscall(unix.SYS_PTRACE, unix.PTRACE_ATTACH, 1<<30), "EPERM"},
	{"process_vm_readv", processVMReadv, "EPERM"},
	{"bpf", rawSyscall(unix.SYS_BPF, unix.BPF_PROG_LOAD, 0, 0), "EPERM"},
	{"perf_event_open", rawSyscall(unix.SYS_PERF_EVENT_OPEN, 0, 0, ^uintptr(0), ^uintptr(0), 0), "EPERM"},
	{"userfaultfd", rawSyscall(unix.SYS_USERFAULTFD, unix.O_CLOEXEC), "EPERM"},
	{"io_uring_setup", rawSyscall(unix.SYS_IO_URING_SETUP, 1, 0), "EPERM"},
	{"keyctl", rawSyscall(unix.SYS_KEYCTL, unix.KEYCTL_GET_KEYRING_ID, negative(unix.KEY_SPEC_SESSION_KEYRING), 0), "EPERM"},
	// Limits shared with host root (see seccompDenied). Where the filter
	// failed, each call succeeds, or fails with ENOENT for a queue that
	// does not exist, and what it made dies with the victim.
	{"inotify_init", ignoreFD(unix.InotifyInit), "EPERM"},
	{"inotify_init1", ignoreFD(func() (int, error) { return unix.InotifyInit1(unix.IN_CLOEXEC) }), "EPERM"},
	{"io_setup", ioSetup, "EPERM"},
	{"mq_open", mqOpen, "EPERM"},
	{"rt_sigqueueinfo", sigqueueSelf(false), "EPERM"},
	{"rt_tgsigqueueinfo", sigqueueSelf(true), "EPERM"},
	{"every denied syscall", denySweep, "ok"},
	{"syscall on no list (sysfs)", rawSyscall(unix.SYS_SYSFS, 3), "EPERM"},
	{"unassigned syscall number", rawSyscall(1000), "EPERM"},
	// Other ABIs.
	{"x32 getpid", rawSyscall(x32SyscallBit | unix.SYS_GETPID), "SIGSYS"},
	// Sockets.
	{"socket(AF_NETLINK)", socket(unix.AF_NETLINK, unix.SOCK_RAW), "EPERM"},
	{"socket(AF_NETLINK) with high bits", socket(1<<32|unix.AF_NETLINK, unix.SOCK_RAW), "EPERM"},
	{"socket(AF_PACKET)", socket(unix.AF_PACKET, unix.SOCK_RAW), "EPERM"},
	{"socket(AF_VSOCK)", socket(unix.AF_VSOCK, unix.SOCK_STREAM), "EPERM"},
	{"socket(AF_ALG)", socket(unix.AF_ALG, unix.SOCK_SEQPACKET), "EPERM"},
	{"socketpair(AF_NETLINK)", socketpair(unix.AF_NETLINK), "EPERM"},
	{"socket(AF_UNIX)", socket(unix.AF_UNIX, unix.SOCK_STREAM), "ok"},
	{"socket(AF_INET)", socket(unix.AF_INET, unix.SOCK_STREAM), "ok"},
	{"socket(AF_INET) with high bits", socket(1<<32|unix.AF_INET, unix.SOCK_STREAM), "ok"},
	{"socket(AF_INET6)", socket(unix.AF_INET6, unix.SOCK_DGRAM), "ok"},
	{"socketpair(AF_UNIX)", socketpair(unix.AF_UNIX), "ok"},
	// ioctl, on /dev/null: where the filter failed the kernel says ENOTTY.
	{"ioctl(TIOCSTI)", ioctlDevNull(tiocsti), "EPERM"},
	{"ioctl(TIOCSTI) with high bits", ioctlDevNull(1<<32 | tiocsti), "EPERM"},
	{"ioctl(TIOCLINUX)", ioctlDevNull(tioclinux), "EPERM"},
	{"ioctl(FIONREAD) on a pipe", fionread, "ok"},
	// personality, mknod.
	{"personality(ADDR_NO_RANDOMIZE)", rawSyscall(unix.SYS_PERSONALITY, 0x0040000), "EPERM"},
	{"personality query", rawSyscall(unix.SYS_PERSONALITY, 0xffffffff), "ok"},
	{"mknodat FIFO", mknodatInTemp(unix.S_IFIFO), "ok"},
	{"mknodat character device", mknodatInTemp(unix.S_IFCHR), "EPERM"},
	// Ordinary work.
	{"getpid", func() error {
		if unix.Getpid() <= 0 {
			return errors.New("bad pid")
		}
		return nil
	}, "ok"},
	{"write and read a file", writeReadFile, "ok"},
	{"fork and exec /bin/true", func() error { return exec.Command("/bin/true").Run() }, "ok"},
	{"threads", threads, "ok"},
}

func TestSeccomp(t *testing.T) {
	for _, tc := range seccompAttacks {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := runVictim(t, tc.name); got != tc.want {
				t.Errorf("%s under the filter = %q, want %q", tc.name, got, tc.want)
			}
		})
	}
}

// TestSeccompI386 makes an i386 syscall with `int $0x80`, which must kill.
func TestSeccompI386(t *testing.T) {
	if probe := runVictim(t, int80Probe); probe != "ok" {
		// Some hypervisors (these Firecracker/PVM machines) offer no i386
		// entry at all: int $0x80 faults even without a filter. The
		// attack must still die without effect; TestSeccompFilterVM
		// proves the architecture check itself.
		t.Logf("i386 getpid with int $0x80 without the filter = %s: no i386 ABI here", probe)
		if got := runVictim(t, int80Victim); got != "SIGSYS" && got != probe {
			t.Errorf("%s under the filter = %q, want SIGSYS or %q", int80Victim, got, probe)
		}
		return
	}
	if got := runVictim(t, int80Victim); got != "SIGSYS" {
		t.Errorf("%s under the filter = %q, want %q", int80Victim, got, "SIGSYS")
	}
}

// TestSeccompPython runs the Python libraries the sandbox serves under the
// filter, installed by a victim that then execs python3.
func TestSeccompPython(t *testing.T) {
	testenv.Python(t, "numpy", "pandas", "matplotlib", "scipy", "sympy", "requests")
	got := runVictim(t, pythonVictim, "MPLCONFIGDIR="+t.TempDir())
	if got != "ok" {
		t.Errorf("python3 under the filter printed %q, want %q", got, "ok")
	}
}

// TestSeccompProgramPython checks that SeccompProgram's bytes work as
// sock_fprog.filter: python3 installs them itself with ctypes, as the
// sandbox's children do, and then tries a few syscalls.
func TestSeccompProgramPython(t *testing.T) {
	testenv.Python(t)
	prog, err := SeccompProgram()
	if err != nil {
		t.Fatalf("SeccompProgram() error: %v", err)
	}
	path := filepath.Join(t.TempDir(), "seccomp.bpf")
	if err := os.WriteFile(path, prog, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), "/usr/bin/python3", "-c", ctypesScript, path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python3 installing the filter: %v\n%s", err, stderrOf(err))
	}
	var got map[string]string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("python3 printed %q: %v", out, err)
	}
	want := map[string]string{
		"getpid":                 "ok",
		"socket(AF_INET)":        "ok",
		"socket(AF_NETLINK)":     "EPERM",
		"unshare(CLONE_NEWUSER)": "EPERM",
		"clone3":                 "ENOSYS",
		"ioctl(TIOCSTI)":         "EPERM",
		"mknod(S_IFIFO)":         "ok",
		"mknod(S_IFCHR)":         "EPERM",
		"inotify_init1":          "EPERM",
		"io_setup":               "EPERM",
		"mq_open":                "EPERM",
		"rt_sigqueueinfo":        "EPERM",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("python3 under its own filter (-want +got):\n%s", diff)
	}
}

// TestSeccompProgram checks that SeccompProgram is SeccompFilter as an
// array of struct sock_filter.
func TestSeccompProgram(t *testing.T) {
	filter, err := SeccompFilter()
	if err != nil {
		t.Fatalf("SeccompFilter() error: %v", err)
	}
	prog, err := SeccompProgram()
	if err != nil {
		t.Fatalf("SeccompProgram() error: %v", err)
	}
	if len(prog) != 8*len(filter) {
		t.Fatalf("len(SeccompProgram()) = %d, want 8*%d", len(prog), len(filter))
	}
	var decoded []unix.SockFilter
	for b := prog; len(b) > 0; b = b[8:] {
		decoded = append(decoded, unix.SockFilter{
			Code: binary.NativeEndian.Uint16(b[0:]), Jt: b[2], Jf: b[3], K: binary.NativeEndian.Uint32(b[4:]),
		})
	}
	if diff := cmp.Diff(filter, decoded); diff != "" {
		t.Errorf("SeccompProgram() decoded differs from SeccompFilter() (-want +got):\n%s", diff)
	}
}

// TestSeccompSyscallNumbers checks the syscall table against the kernel
// headers (Debian's linux-libc-dev).
func TestSeccompSyscallNumbers(t *testing.T) {
	const header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
	testenv.File(t, header, "linux-libc-dev")
	f, err := os.Open(header)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := make(map[string]uint32)
	for s := bufio.NewScanner(f); s.Scan(); {
		var name string
		var nr uint32
		if n, _ := fmt.Sscanf(s.Text(), "#define __NR_%s %d", &name, &nr); n == 2 {
			want[name] = nr
		}
	}
	var unknown []string
	for name, nr := range x86_64Syscalls {
		w, ok := want[name]
		switch {
		case !ok:
			unknown = append(unknown, name)
		case nr != w:
			t.Errorf("x86_64Syscalls[%q] = %d, want %d", name, nr, w)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
		t.Logf("not checked, from a kernel newer than %s: %s", header, strings.Join(unknown, " "))
	}
}

// TestSeccompFilterVM runs the filter on made-up syscalls in x/net/bpf's
// interpreter. It covers what the victims of TestSeccomp cannot attack where
// the kernel lacks the i386 ABI, and checks a few decisions besides.
func TestSeccompFilterVM(t *testing.T) {
	filter, err := SeccompFilter()
	if err != nil {
		t.Fatalf("SeccompFilter() error: %v", err)
	}
	insts := make([]bpf.Instruction, len(filter))
	for i, f := range filter {
		insts[i] = bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K}.Disassemble()
	}
	vm, err := bpf.NewVM(insts)
	if err != nil {
		t.Fatalf("bpf.NewVM(SeccompFilter()) error: %v", err)
	}
	tests := []struct {
		name string
		arch uint32
		nr   uint32
		args []uint64
		want uint32
	}{
		{"i386 getpid", unix.AUDIT_ARCH_I386, 20, nil, retKillProcess},
		{"i386 read", unix.AUDIT_ARCH_I386, 3, nil, retKillProcess},
		{"aarch64 getpid", unix.AUDIT_ARCH_AARCH64, 172, nil, retKillProcess},
		{"x32 getpid", unix.AUDIT_ARCH_X86_64, x32SyscallBit | 39, nil, retKillProcess},
		{"syscall -1", unix.AUDIT_ARCH_X86_64, 0xffffffff, nil, retKillProcess},
		{"getpid", unix.AUDIT_ARCH_X86_64, 39, nil, retAllow},
		{"clone3", unix.AUDIT_ARCH_X86_64, 435, nil, retENOSYS},
		{"clone thread", unix.AUDIT_ARCH_X86_64, 56, []uint64{0x3d0f00}, retAllow},
		{"clone CLONE_NEWUSER", unix.AUDIT_ARCH_X86_64, 56, []uint64{unix.CLONE_NEWUSER | 0x11}, retEPERM},
		{"ioctl TIOCSTI high bits", unix.AUDIT_ARCH_X86_64, 16, []uint64{0, 0xffffffff00000000 | tiocsti}, retEPERM},
		{"ioctl TCGETS", unix.AUDIT_ARCH_X86_64, 16, []uint64{0, 0x5401}, retAllow},
		{"socket AF_INET6", unix.AUDIT_ARCH_X86_64, 41, []uint64{unix.AF_INET6}, retAllow},
		{"socket AF_NETLINK", unix.AUDIT_ARCH_X86_64, 41, []uint64{unix.AF_NETLINK}, retEPERM},
		{"inotify_init1", unix.AUDIT_ARCH_X86_64, 294, nil, retEPERM},
		{"io_setup", unix.AUDIT_ARCH_X86_64, 206, nil, retEPERM},
		{"mq_open", unix.AUDIT_ARCH_X86_64, 240, nil, retEPERM},
		{"rt_sigqueueinfo", unix.AUDIT_ARCH_X86_64, 129, nil, retEPERM},
		{"kill", unix.AUDIT_ARCH_X86_64, 62, nil, retAllow},
		{"rt_sigtimedwait", unix.AUDIT_ARCH_X86_64, 128, nil, retAllow},
		{"unassigned", unix.AUDIT_ARCH_X86_64, 1000, nil, retEPERM},
	}
	for _, tc := range tests {
		// struct seccomp_data in 32-bit words, big-endian because the
		// interpreter loads words big-endian; the kernel loads them native.
		data := make([]byte, 64)
		binary.BigEndian.PutUint32(data[seccompNr:], tc.nr)
		binary.BigEndian.PutUint32(data[seccompArch:], tc.arch)
		for i, a := range tc.args {
			binary.BigEndian.PutUint32(data[seccompArgs+8*i:], uint32(a))
			binary.BigEndian.PutUint32(data[seccompArgs+8*i+4:], uint32(a>>32))
		}
		got, err := vm.Run(data)
		if err != nil {
			t.Fatalf("%s: Run error: %v", tc.name, err)
		}
		if uint32(got) != tc.want {
			t.Errorf("filter(%s) = %#x, want %#x", tc.name, got, tc.want)
		}
	}
}

// TestSeccompHelperProcess is the victim, not a test: it does nothing
// unless victimEnv is set.
func TestSeccompHelperProcess(t *testing.T) {
	name, ok := os.LookupEnv(victimEnv)
	if !ok {
		return
	}
	os.Exit(victim(name))
}

func victim(name string) int {
	attack := findAttack(name)
	if attack == nil {
		fmt.Fprintf(os.Stderr, "no attack %q\n", name)
		return 2
	}
	// A kill by SIGSYS would otherwise dump core into the package directory.
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if name != int80Probe {
		if err := InstallSeccomp(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	}
	err := attack()
	var errno unix.Errno
	switch {
	case err == nil:
		fmt.Println("ok")
	case errors.As(err, &errno):
		fmt.Println(unix.ErrnoName(errno))
	default:
		fmt.Println(err)
	}
	return 0
}

// runVictim runs the victim for the attack name with env added to its
// environment and returns what it printed, or the name of the signal that
// killed it.
func runVictim(t *testing.T, name string, env ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestSeccompHelperProcess$")
	cmd.Env = append(append(os.Environ(), env...), victimEnv+"="+name)
	// No controlling terminal, so that a filter that failed to stop TIOCSTI
	// or vhangup has nothing to act on.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		if ws := exit.Sys().(syscall.WaitStatus); ws.Signaled() {
			if name := unix.SignalName(ws.Signal()); name != "" {
				return name
			}
			return fmt.Sprintf("signal %d", ws.Signal()) // real-time signals have no name
		}
	}
	if err != nil {
		t.Fatalf("victim %q: %v\nstdout:\n%s\nstderr:\n%s", name, err, out, stderrOf(err))
	}
	return strings.TrimSpace(string(out))
}

func stderrOf(err error) []byte {
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.Stderr
	}
	return nil
}

const pythonVictim = "python3 with numpy, pandas, matplotlib, scipy, sympy, requests"

// pythonScript does a little real work with each library and with processes,
// threads, sockets and signals.
const pythonScript = `
import http.server, io, multiprocessing, os, signal, socket, subprocess, threading
import numpy as np
import pandas as pd
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import scipy.stats
import sympy
import requests

a = np.arange(12.0).reshape(3, 4)
assert (a @ a.T).trace() == 506.0
df = pd.DataFrame({"k": list("abab"), "v": [1, 2, 3, 4]})
assert df.groupby("k")["v"].sum().to_dict() == {"a": 4, "b": 6}
fig, ax = plt.subplots()
ax.plot([1, 3, 2])
png = io.BytesIO()
fig.savefig(png, format="png")
assert png.getvalue().startswith(b"\x89PNG")
assert abs(scipy.stats.norm.cdf(0) - 0.5) < 1e-12
x = sympy.Symbol("x")
assert sympy.integrate(x**2, (x, 0, 3)) == 9
subprocess.run(["uname", "-p"], check=True, capture_output=True)
got = []
t = threading.Thread(target=got.append, args=(1,))
t.start()
t.join()
assert got == [1]
with multiprocessing.get_context("fork").Pool(2) as pool:
    assert pool.map(abs, [-1, -2]) == [1, 2]
s1, s2 = socket.socketpair()
s1.sendall(b"x")
assert s2.recv(1) == b"x"
with socket.socket(socket.AF_INET) as s:
    s.bind(("127.0.0.1", 0))
try:
    socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)
except PermissionError:
    pass
else:
    raise AssertionError("AF_NETLINK socket allowed")
class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"hello")
    def log_message(self, *args):
        pass
with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello) as srv:
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    assert requests.get("http://127.0.0.1:%d/" % srv.server_port, timeout=10).text == "hello"
    srv.shutdown()
# Signals still work: a handler, and a blocked real-time signal queued by
# tgkill (to this thread: OpenBLAS's threads do not block it).
got = []
signal.signal(signal.SIGUSR1, lambda *a: got.append(1))
signal.raise_signal(signal.SIGUSR1)
assert got == [1]
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
signal.pthread_kill(threading.get_ident(), signal.SIGRTMIN)
assert signal.sigtimedwait([signal.SIGRTMIN], 5).si_signo == signal.SIGRTMIN
print("ok")
`

// ctypesScript installs the program in the file argv[1] the way the
// sandbox's Python children do, then reports what a few syscalls return.
// prctl is variadic, so its argument types must be set or ctypes passes
// the pointer as a 32-bit int.
const ctypesScript = `
import ctypes, errno, fcntl, json, os, shutil, socket, stat, struct, sys, tempfile, termios

data = open(sys.argv[1], "rb").read()
buf = ctypes.create_string_buffer(data, len(data))

class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

fprog = SockFprog(len(data) // 8, ctypes.addressof(buf))
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
    sys.exit("PR_SET_NO_NEW_PRIVS: " + os.strerror(ctypes.get_errno()))
if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
    sys.exit("PR_SET_SECCOMP: " + os.strerror(ctypes.get_errno()))

def result(f):
    try:
        f()
    except OSError as e:
        return errno.errorcode[e.errno]
    return "ok"

def syscall(*args):
    args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    if libc.syscall(*args) == -1:
        raise OSError(ctypes.get_errno(), "syscall")

tmp = tempfile.mkdtemp()
fifo, dev = os.path.join(tmp, "fifo").encode(), os.path.join(tmp, "dev").encode()

with open(os.devnull, "rb") as null:
    print(json.dumps({
        "getpid": "ok" if os.getpid() > 0 else "bad",
        "socket(AF_INET)": result(lambda: socket.socket().close()),
        "socket(AF_NETLINK)": result(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)),
        "unshare(CLONE_NEWUSER)": result(lambda: syscall(272, 0x10000000)),
        "clone3": result(lambda: syscall(435, 0, 0)),
        "ioctl(TIOCSTI)": result(lambda: fcntl.ioctl(null, termios.TIOCSTI, b"x")),
        "mknod(S_IFIFO)": result(lambda: syscall(133, fifo, stat.S_IFIFO | 0o600, 0)),
        "mknod(S_IFCHR)": result(lambda: syscall(133, dev, stat.S_IFCHR | 0o600, os.makedev(1, 3))),
        "inotify_init1": result(lambda: syscall(294, os.O_CLOEXEC)),
        "io_setup": result(lambda: syscall(206, 1, ctypes.byref(ctypes.c_ulong(0)))),
        # Without O_CREAT, of a queue that does not exist: ENOENT unfiltered.
        "mq_open": result(lambda: syscall(240, b"codeexec-seccomp-test-absent", os.O_RDONLY, 0, None)),
        # Signal 0 only checks: nothing is delivered unfiltered.
        "rt_sigqueueinfo": result(lambda: syscall(129, os.getpid(), 0, ctypes.create_string_buffer(struct.pack("<iiiiI", 0, 0, -1, os.getpid(), os.getuid()), 128))),
    }))
shutil.rmtree(tmp)
`

const (
	// int80Victim attempts unshare(CLONE_NEWUSER) through the i386 ABI.
	int80Victim = "i386 unshare via int 0x80"
	// int80Probe makes an i386 getpid without the filter.
	int80Probe = "i386 getpid without the filter"
)

func findAttack(name string) func() error {
	switch name {
	case int80Victim:
		return func() (err error) {
			// Under the filter this dies of SIGSYS; where the kernel has
			// no i386 ABI, int $0x80 faults before any syscall runs.
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			defer func() {
				if recover() != nil {
					err = errors.New("fault")
				}
			}()
			r := int80(310, unix.CLONE_NEWUSER) // __NR_unshare in arch/x86/entry/syscalls/syscall_32.tbl
			return fmt.Errorf("int 0x80 returned %d", int32(r))
		}
	case int80Probe:
		return func() (err error) {
			// Where the kernel has no i386 ABI, int $0x80 faults.
			defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
			defer func() {
				if recover() != nil {
					err = errors.New("fault")
				}
			}()
			if pid := int(int80(20, 0)); pid != unix.Getpid() { // __NR_getpid on i386
				return fmt.Errorf("i386 getpid = %d, want %d", pid, unix.Getpid())
			}
			return nil
		}
	case pythonVictim:
		return func() error {
			return syscall.Exec("/usr/bin/python3", []string{"python3", "-c", pythonScript}, os.Environ())
		}
	}
	for _, a := range seccompAttacks {
		if a.name == name {
			return a.attack
		}
	}
	return nil
}

func rawSyscall(trap uintptr, args ...uintptr) func() error {
	return func() error {
		var a [6]uintptr
		copy(a[:], args)
		_, _, errno := unix.Syscall6(trap, a[0], a[1], a[2], a[3], a[4], a[5])
		if errno != 0 {
			return errno
		}
		return nil
	}
}

// negative converts a negative int argument to its register value.
func negative(v int) uintptr { return uintptr(v) }

// cloneNew calls clone with flag and CLONE_SIGHAND but not CLONE_VM, which
// the kernel refuses with EINVAL before creating anything (copy_process in
// kernel/fork.c).
func cloneNew(flag uintptr) func() error {
	return rawSyscall(unix.SYS_CLONE, flag|unix.CLONE_SIGHAND, 0, 0, 0, 0)
}

func setnsUser() error {
	fd, err := unix.Open("/proc/self/ns/user", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /proc/self/ns/user: %v", err)
	}
	defer unix.Close(fd)
	return unix.Setns(fd, unix.CLONE_NEWUSER)
}

func processVMReadv() error {
	var b [1]byte
	_, err := unix.ProcessVMReadv(os.Getppid(), []unix.Iovec{{Base: &b[0], Len: 1}}, []unix.RemoteIovec{{Base: 0, Len: 1}}, 0)
	return err
}

// denySweep calls every syscall in seccompDenied with every argument -1, which
// the kernel refuses (EINVAL, EFAULT, EBADF, ...) where the filter failed.
func denySweep() error {
	var errs []error
	for _, name := range seccompDenied {
		const m = ^uintptr(0)
		_, _, errno := unix.Syscall6(uintptr(x86_64Syscalls[name]), m, m, m, m, m, m)
		if errno != unix.EPERM {
			errs = append(errs, fmt.Errorf("%s(-1, ...) = errno %d (%v), want EPERM", name, errno, errno))
		}
	}
	return errors.Join(errs...)
}

// ignoreFD adapts a call that makes a file descriptor: it is left open
// for the victim's exit to close.
func ignoreFD(f func() (int, error)) func() error {
	return func() error {
		_, err := f()
		return err
	}
}

// ioSetup makes an AIO context of one event (io_setup(2)).
func ioSetup() error {
	var ctx uint64 // aio_context_t, which must be 0 on entry
	_, _, errno := unix.Syscall(unix.SYS_IO_SETUP, 1, uintptr(unsafe.Pointer(&ctx)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// mqOpen opens a POSIX message queue that does not exist, without O_CREAT
// so that nothing is made where the filter failed (mq_open(3): the raw
// syscall takes the name without its leading slash).
func mqOpen() error {
	name, err := unix.BytePtrFromString("codeexec-seccomp-test-absent")
	if err != nil {
		return err
	}
	fd, _, errno := unix.Syscall6(unix.SYS_MQ_OPEN, uintptr(unsafe.Pointer(name)), unix.O_RDONLY|unix.O_CLOEXEC, 0, 0, 0, 0)
	runtime.KeepAlive(name)
	if errno != 0 {
		return errno
	}
	return unix.Close(int(fd))
}

// sigqueueSelf queues signal 0 to the victim itself with rt_sigqueueinfo(2),
// or to its thread with rt_tgsigqueueinfo: signal 0 only checks, so
// nothing is delivered where the filter failed.
func sigqueueSelf(thread bool) func() error {
	return func() error {
		// siginfo_t is 128 bytes: si_signo, si_errno, si_code, padding,
		// then si_pid and si_uid for SI_QUEUE (-1).
		var info [32]int32
		info[2], info[4], info[5] = -1, int32(unix.Getpid()), int32(unix.Getuid())
		var errno unix.Errno
		if thread {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			_, _, errno = unix.Syscall6(unix.SYS_RT_TGSIGQUEUEINFO, uintptr(unix.Getpid()), uintptr(unix.Gettid()), 0, uintptr(unsafe.Pointer(&info)), 0, 0)
		} else {
			_, _, errno = unix.Syscall(unix.SYS_RT_SIGQUEUEINFO, uintptr(unix.Getpid()), 0, uintptr(unsafe.Pointer(&info)))
		}
		if errno != 0 {
			return errno
		}
		return nil
	}
}

func socket(domain uintptr, typ uintptr) func() error {
	return func() error {
		fd, _, errno := unix.Syscall(unix.SYS_SOCKET, domain, typ|unix.SOCK_CLOEXEC, 0)
		if errno != 0 {
			return errno
		}
		return unix.Close(int(fd))
	}
}

func socketpair(domain int) func() error {
	return func() error {
		fds, err := unix.Socketpair(domain, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		unix.Close(fds[0])
		return unix.Close(fds[1])
	}
}

func ioctlDevNull(req uintptr) func() error {
	return func() error {
		fd, err := unix.Open("/dev/null", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/null: %v", err)
		}
		defer unix.Close(fd)
		return rawSyscall(unix.SYS_IOCTL, uintptr(fd), req, 0)()
	}
}

func fionread() error {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return fmt.Errorf("pipe2: %v", err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	const fionread = 0x541b // asm-generic/ioctls.h
	_, err := unix.IoctlGetInt(p[0], fionread)
	return err
}

// mknodatInTemp calls mknodat for a node of type typ (a S_IF* constant) in
// a new temporary directory. Python tests mknod, which takes a pointer.
func mknodatInTemp(typ uint32) func() error {
	return func() error {
		dir, err := os.MkdirTemp("", "seccomp")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		return unix.Mknodat(unix.AT_FDCWD, filepath.Join(dir, "node"), typ|0o600, int(unix.Mkdev(1, 3)))
	}
}

func writeReadFile() error {
	f, err := os.CreateTemp("", "seccomp")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString("hello"); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return err
	}
	if string(b) != "hello" {
		return fmt.Errorf("read %q, want %q", b, "hello")
	}
	return nil
}

// threads makes the Go runtime start new OS threads (clone with
// CLONE_THREAD) by locking goroutines to threads until n are held at once.
func threads() error {
	const n = 16
	tids := make(chan int)
	release := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			tids <- unix.Gettid()
			<-release
		})
	}
	seen := make(map[int]bool)
	for range n {
		seen[<-tids] = true
	}
	close(release)
	wg.Wait()
	if len(seen) != n {
		return fmt.Errorf("%d distinct threads, want %d", len(seen), n)
	}
	return nil
}
