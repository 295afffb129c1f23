// The seccomp filter of sandboxed children.
//
// Why hand-built: the policy below is ours and the program is assembled with
// golang.org/x/net/bpf, the Go team's classic-BPF assembler (typed
// instructions that print as assembler text; its interpreter also lets the
// tests run the filter). No policy library does the job properly:
// github.com/elastic/go-seccomp-bpf v1.6.0, the pure-Go one, on a foreign
// architecture jumps to the policy's default action instead of killing (so
// `int $0x80` gets EPERM under a default of EPERM, and bypasses the filter
// under a default of "allow"), answers x32 syscall numbers with ENOSYS
// instead of killing, and compares arguments on all 64 bits only, so
// ioctl(fd, 1<<32|TIOCSTI) passes a TIOCSTI rule while the kernel still sees
// TIOCSTI. github.com/seccomp/libseccomp-golang gets all of this right but
// needs cgo and the C libseccomp; gVisor's pkg/seccomp is right too but comes
// only with the whole of gVisor. The program here is a linear list of
// comparisons, about 100 lines of Go; see SeccompFilter for its shape.

package sandbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Return values of the filter, see seccomp(2) "Filter return values". Error
// returns carry the errno in SECCOMP_RET_DATA.
const (
	retAllow       = unix.SECCOMP_RET_ALLOW
	retKillProcess = unix.SECCOMP_RET_KILL_PROCESS
	retEPERM       = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	retENOSYS      = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
)

// Offsets into struct seccomp_data (seccomp(2)): int nr; u32 arch;
// u64 instruction_pointer; u64 args[6]. The filter only ever runs on
// x86_64, which is little-endian, so the low 32 bits of args[i] are at
// seccompArgs+8*i.
const (
	seccompNr   = 0
	seccompArch = 4
	seccompArgs = 16
)

// x32SyscallBit is __X32_SYSCALL_BIT from asm/unistd.h: x32 syscalls arrive
// with arch AUDIT_ARCH_X86_64 and this bit set in nr (syscall(2), x32 ABI).
const x32SyscallBit = 0x40000000

// Argument values that the argument rules compare, for x86_64.
const (
	// low32 compares the whole low 32 bits of an argument.
	low32 = 0xffffffff
	// cloneNewFlags are the CLONE_NEW* flags of clone(2) and namespaces(7).
	cloneNewFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC |
		unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWTIME
	// tiocsti pushes a byte into a terminal's input queue; tioclinux's
	// TIOCL_SETSEL/PASTESEL do the same on a virtual console (ioctl_tty(2),
	// ioctl_console(2)). Values from asm-generic/ioctls.h, used by x86_64.
	tiocsti   = 0x5412
	tioclinux = 0x541c
)

// seccompDenied are syscalls that return EPERM before anything else is
// looked at, so they stay denied even if one is later added to
// seccompAllowed by mistake. Everything not allowed is denied anyway; this
// list names the ones that matter, with the reason.
var seccompDenied = []string{
	// New namespaces and mounts would undo the sandbox: unshare(2), setns(2),
	// mount(2), umount(2), pivot_root(2), chroot(2), the new mount API
	// (open_tree(2), move_mount(2), fsopen(2), fsconfig(2), fsmount(2),
	// fspick(2), mount_setattr(2)).
	"unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig",
	"fsmount", "fspick", "move_mount", "open_tree", "open_tree_attr", "mount_setattr",
	// Reading or writing other processes: ptrace(2), process_vm_readv(2),
	// process_madvise(2), pidfd_getfd(2), kcmp(2).
	"ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd", "kcmp",
	// Large kernel attack surface that a Python program does not need: bpf(2),
	// perf_event_open(2), userfaultfd(2) (stalls kernel page faults, a common
	// exploit primitive), io_uring(7), the kernel keyring (keyctl(2),
	// add_key(2), request_key(2)).
	"bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
	"io_uring_register", "keyctl", "add_key", "request_key",
	// System administration: kexec_load(2), init_module(2), delete_module(2),
	// reboot(2), swapon(2), acct(2), syslog(2), quotactl(2),
	// lookup_dcookie(2), fanotify_init(2), vhangup(2), settimeofday(2),
	// clock_settime(2), sethostname(2), setdomainname(2), iopl(2), ioperm(2),
	// modify_ldt(2).
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot",
	"swapon", "swapoff", "acct", "syslog", "quotactl", "quotactl_fd", "lookup_dcookie",
	"fanotify_init", "vhangup", "settimeofday", "clock_settime", "sethostname",
	"setdomainname", "iopl", "ioperm", "modify_ldt",
	// File handles bypass path-based checks (the "shocker" container escape):
	// open_by_handle_at(2), name_to_handle_at(2).
	"open_by_handle_at", "name_to_handle_at",
	// Kernel objects whose limits the sandbox would share with the host.
	// The sandbox's outer user namespace is created by host root, so the
	// kernel charges a sandbox uid's inotify instances and watches
	// (inotify(7)), POSIX message queue bytes (mq_overview(7)) and queued
	// signals (rt_sigqueueinfo(2)) to root's ucounts too, up to root's own
	// limits (fs.inotify.max_user_instances, 128 by default;
	// RLIMIT_MSGQUEUE; RLIMIT_SIGPENDING); AIO contexts (io_setup(2)) take
	// from the global fs.aio-max-nr. A sandbox could use any of them up for
	// the host. A Python program does not need them; kill(2) and tgkill(2)
	// still queue signals, up to the child's low RLIMIT_SIGPENDING.
	"inotify_init", "inotify_init1", "inotify_add_watch", "inotify_rm_watch",
	"io_setup", "io_destroy", "io_submit", "io_getevents", "io_pgetevents", "io_cancel",
	"mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
	"rt_sigqueueinfo", "rt_tgsigqueueinfo",
}

// seccompArgRules decide a syscall by one argument. Every argument looked at
// is one the kernel truncates to 32 bits, so only the low 32 bits are
// compared, which is exactly what the kernel acts on: comparing all 64 would
// let ioctl(fd, 1<<32|TIOCSTI) past the TIOCSTI rule.
var seccompArgRules = []argRule{
	// clone(2) without CLONE_NEW* flags only: threads, fork and vfork. The
	// kernel uses only lower_32_bits(flags) (kernel/fork.c). On x86_64 the
	// flags are the first argument. CLONE_NEWTIME (0x80) lies in the exit
	// signal bits of clone(2), where only signals up to 64 are valid, so
	// denying it costs nothing.
	allowIf("clone", 0, cloneNewFlags, 0),
	// socket(2), socketpair(2): only address families a program needs to
	// talk to its own processes and, where the sandbox has one, the network.
	// AF_NETLINK, AF_PACKET, AF_VSOCK, AF_ALG and the rest are large and
	// rarely audited kernel code (address_families(7)).
	allowIf("socket", 0, low32, unix.AF_UNIX, unix.AF_INET, unix.AF_INET6),
	allowIf("socketpair", 0, low32, unix.AF_UNIX, unix.AF_INET, unix.AF_INET6),
	// ioctl(2) except TIOCSTI and TIOCLINUX, which can type commands into a
	// terminal the sandbox shares (CVE-2017-5226). The request is an
	// unsigned int (fs/ioctl.c).
	denyIf("ioctl", 1, low32, tiocsti, tioclinux),
	// personality(2): as in Docker's profile, only PER_LINUX, PER_LINUX32,
	// UNAME26, PER_LINUX32|UNAME26 and 0xffffffff (query). Flags such as
	// ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC weaken exploit mitigations.
	allowIf("personality", 0, low32, 0x0, 0x8, 0x20000, 0x20008, 0xffffffff),
	// mknod(2), mknodat(2): regular files, FIFOs (os.mkfifo) and sockets but
	// no device nodes. A file type of 0 means a regular file.
	allowIf("mknod", 1, unix.S_IFMT, 0, unix.S_IFREG, unix.S_IFIFO, unix.S_IFSOCK),
	allowIf("mknodat", 2, unix.S_IFMT, 0, unix.S_IFREG, unix.S_IFIFO, unix.S_IFSOCK),
}

// seccompAllowed are the syscalls allowed whatever their arguments: the
// unconditional part of Docker's default profile
// (github.com/moby/profiles/seccomp, default_linux.go) that exists on
// x86_64, plus arch_prctl(2), which Docker allows on amd64 too. Left out
// compared with Docker: name_to_handle_at, mknod and mknodat, inotify, AIO,
// POSIX message queues, rt_sigqueueinfo and rt_tgsigqueueinfo (see above)
// and the unimplemented epoll_ctl_old and epoll_wait_old. Where Docker allows
// more elsewhere in its profile (ptrace and process_vm_* on Linux >= 4.8,
// every socket family but AF_ALG and AF_VSOCK, every ioctl, modify_ldt on
// amd64), this filter allows less, as described above. Like Docker, it
// denies mbind and set_mempolicy: OpenBLAS tries mbind(MPOL_PREFERRED) on
// its buffers and carries on when it fails.
var seccompAllowed = []string{
	"accept", "accept4", "access", "adjtimex", "alarm", "arch_prctl", "bind", "brk",
	"cachestat", "capget", "capset", "chdir", "chmod", "chown", "clock_adjtime",
	"clock_getres", "clock_gettime", "clock_nanosleep", "close", "close_range", "connect",
	"copy_file_range", "creat", "dup", "dup2", "dup3", "epoll_create", "epoll_create1",
	"epoll_ctl", "epoll_pwait", "epoll_pwait2", "epoll_wait", "eventfd", "eventfd2",
	"execve", "execveat", "exit", "exit_group", "faccessat", "faccessat2", "fadvise64",
	"fallocate", "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown",
	"fchownat", "fcntl", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork",
	"fremovexattr", "fsetxattr", "fstat", "fstatfs", "fsync", "ftruncate", "futex",
	"futex_requeue", "futex_wait", "futex_waitv", "futex_wake", "futimesat",
	"get_robust_list", "get_thread_area", "getcpu", "getcwd", "getdents", "getdents64",
	"getegid", "geteuid", "getgid", "getgroups", "getitimer", "getpeername", "getpgid",
	"getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresuid",
	"getrlimit", "getrusage", "getsid", "getsockname", "getsockopt", "gettid",
	"gettimeofday", "getuid", "getxattr", "getxattrat", "ioprio_get", "ioprio_set", "kill",
	"landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown",
	"lgetxattr", "link", "linkat", "listen", "listmount", "listxattr", "listxattrat",
	"llistxattr", "lremovexattr", "lseek", "lsetxattr", "lstat", "madvise",
	"map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir",
	"mkdirat", "mlock", "mlock2", "mlockall", "mmap", "mprotect", "mremap", "mseal",
	"msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
	"nanosleep", "newfstatat", "open", "openat", "openat2", "pause", "pidfd_open",
	"pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free", "pkey_mprotect",
	"poll", "ppoll", "prctl", "pread64", "preadv", "preadv2", "prlimit64",
	"process_mrelease", "pselect6", "pwrite64", "pwritev", "pwritev2", "read", "readahead",
	"readlink", "readlinkat", "readv", "recvfrom", "recvmmsg", "recvmsg",
	"remap_file_pages", "removexattr", "removexattrat", "rename", "renameat", "renameat2",
	"restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
	"rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait", "sched_get_priority_max",
	"sched_get_priority_min", "sched_getaffinity", "sched_getattr", "sched_getparam",
	"sched_getscheduler", "sched_rr_get_interval", "sched_setaffinity", "sched_setattr",
	"sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select", "semctl",
	"semget", "semop", "semtimedop", "sendfile", "sendmmsg", "sendmsg", "sendto",
	"set_robust_list", "set_thread_area", "set_tid_address", "setfsgid", "setfsuid",
	"setgid", "setgroups", "setitimer", "setpgid", "setpriority", "setregid", "setresgid",
	"setresuid", "setreuid", "setrlimit", "setsid", "setsockopt", "setuid", "setxattr",
	"setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack",
	"signalfd", "signalfd4", "splice", "stat", "statfs", "statmount", "statx", "symlink",
	"symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo", "tee", "tgkill", "time",
	"timer_create", "timer_delete", "timer_getoverrun", "timer_gettime", "timer_settime",
	"timerfd_create", "timerfd_gettime", "timerfd_settime", "times", "tkill", "truncate",
	"umask", "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat", "utimes",
	"vfork", "vmsplice", "wait4", "waitid", "write", "writev",
}

// An argRule decides the syscall name by argument arg (0 to 5): if its low 32
// bits ANDed with mask equal one of values, the result is match, otherwise
// it is otherwise.
type argRule struct {
	name             string
	arg              uint32
	mask             uint32
	values           []uint32
	match, otherwise uint32
}

func allowIf(name string, arg, mask uint32, values ...uint32) argRule {
	return argRule{name: name, arg: arg, mask: mask, values: values, match: retAllow, otherwise: retEPERM}
}

func denyIf(name string, arg, mask uint32, values ...uint32) argRule {
	return argRule{name: name, arg: arg, mask: mask, values: values, match: retEPERM, otherwise: retAllow}
}

// instructions returns the rule as a program fragment that always returns.
func (r argRule) instructions() []bpf.Instruction {
	p := []bpf.Instruction{
		bpf.LoadAbsolute{Off: seccompArgs + 8*r.arg, Size: 4},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: r.mask},
	}
	for i, v := range r.values {
		// Jump over the remaining comparisons and "return otherwise".
		p = append(p, bpf.JumpIf{Cond: bpf.JumpEqual, Val: v, SkipTrue: uint8(len(r.values) - i)})
	}
	return append(p, bpf.RetConstant{Val: r.otherwise}, bpf.RetConstant{Val: r.match})
}

// SeccompFilter returns the seccomp filter (seccomp(2), SECCOMP_SET_MODE_FILTER)
// that sandboxed children run under. It is an allowlist for x86_64 modelled
// on Docker's default profile, and it works like this, in order:
//
//   - A syscall made with any architecture but AUDIT_ARCH_X86_64, such as
//     the i386 ABI through `int $0x80`, kills the process
//     (SECCOMP_RET_KILL_PROCESS, so it dies of SIGSYS): the allowlist is of
//     x86_64 syscall numbers, which mean other syscalls on other ABIs.
//   - So does an x32 syscall (nr >= __X32_SYSCALL_BIT, including nr -1).
//   - The syscalls in seccompDenied return EPERM.
//   - clone3(2) returns ENOSYS: its flags are behind a pointer that seccomp
//     cannot read, and ENOSYS makes glibc (>= 2.34) fall back to clone(2).
//   - clone, socket, socketpair, ioctl, personality, mknod and mknodat are
//     decided by one argument, see seccompArgRules.
//   - The syscalls in seccompAllowed are allowed.
//   - Everything else returns EPERM, not a kill, so that Python raises a
//     plain PermissionError and the program can carry on.
//
// The program is a linear list of comparisons. That costs nothing for the
// syscalls allowed unconditionally: since Linux 5.11 the kernel works out
// when a filter's answer depends only on the syscall number and skips
// running it for those (seccomp_cache_prepare in kernel/seccomp.c).
//
// The filter is for x86_64 only; on other architectures SeccompFilter
// returns an error wrapping ErrUnsupported.
func SeccompFilter() ([]unix.SockFilter, error) {
	if runtime.GOARCH != "amd64" {
		return nil, fmt.Errorf("seccomp filter for %s: %w", runtime.GOARCH, ErrUnsupported)
	}
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: seccompArch, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.AUDIT_ARCH_X86_64, SkipTrue: 1},
		bpf.RetConstant{Val: retKillProcess},
		bpf.LoadAbsolute{Off: seccompNr, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpLessThan, Val: x32SyscallBit, SkipTrue: 1},
		bpf.RetConstant{Val: retKillProcess},
	}
	var errs []error
	seen := make(map[string]bool)
	// add appends "if nr == name { body }"; body must end in a return, as
	// the accumulator no longer holds nr after it.
	add := func(name string, body ...bpf.Instruction) {
		nr, ok := x86_64Syscalls[name]
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("unknown syscall %q", name))
		case seen[name]:
			errs = append(errs, fmt.Errorf("syscall %q listed twice", name))
		case len(body) > 255:
			errs = append(errs, fmt.Errorf("syscall %q: rule too long", name))
		default:
			seen[name] = true
			prog = append(prog, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: nr, SkipTrue: uint8(len(body))})
			prog = append(prog, body...)
		}
	}
	for _, name := range seccompDenied {
		add(name, bpf.RetConstant{Val: retEPERM})
	}
	add("clone3", bpf.RetConstant{Val: retENOSYS})
	for _, r := range seccompArgRules {
		add(r.name, r.instructions()...)
	}
	for _, name := range seccompAllowed {
		add(name, bpf.RetConstant{Val: retAllow})
	}
	prog = append(prog, bpf.RetConstant{Val: retEPERM})
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("build seccomp filter: %w", err)
	}
	if len(prog) > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("build seccomp filter: %d instructions, the kernel takes %d", len(prog), unix.BPF_MAXINSNS)
	}
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("assemble seccomp filter: %w", err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, ins := range raw {
		filter[i] = unix.SockFilter{Code: ins.Op, Jt: ins.Jt, Jf: ins.Jf, K: ins.K}
	}
	return filter, nil
}

// SeccompProgram returns the filter of SeccompFilter as the raw array of
// struct sock_filter that struct sock_fprog's filter field points to: 8
// bytes per instruction (u16 code, u8 jt, u8 jf, u32 k) in native byte
// order. Its length in instructions, for sock_fprog's len, is len/8.
// A process installs it with prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) and then
// prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog) (prctl(2)); threads
// created afterwards inherit it, existing ones do not.
func SeccompProgram() ([]byte, error) {
	filter, err := SeccompFilter()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 8*len(filter))
	for _, f := range filter {
		b = binary.NativeEndian.AppendUint16(b, f.Code)
		b = append(b, f.Jt, f.Jf)
		b = binary.NativeEndian.AppendUint32(b, f.K)
	}
	return b, nil
}

// InstallSeccomp sets no_new_privs and installs the filter of SeccompFilter
// on every thread of the calling process (SECCOMP_FILTER_FLAG_TSYNC, which
// also sets no_new_privs on them; seccomp(2)). The filter stays for the
// life of the process and across execve(2); it cannot be removed.
func InstallSeccomp() error {
	filter, err := SeccompFilter()
	if err != nil {
		return err
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	// no_new_privs is per thread: set it on the thread that calls seccomp.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	tid, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return fmt.Errorf("install seccomp filter: %w", errno)
	}
	if tid != 0 {
		return fmt.Errorf("install seccomp filter: thread %d cannot be synchronized", tid)
	}
	return nil
}

// x86_64Syscalls maps the syscalls this file names to their numbers on
// x86_64 (arch/x86/entry/syscalls/syscall_64.tbl). The numbers are those of
// x86_64 whatever GOARCH the program is built for.
var x86_64Syscalls = map[string]uint32{
	"read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6,
	"poll": 7, "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12,
	"rt_sigaction": 13, "rt_sigprocmask": 14, "rt_sigreturn": 15, "ioctl": 16,
	"pread64": 17, "pwrite64": 18, "readv": 19, "writev": 20, "access": 21, "pipe": 22,
	"select": 23, "sched_yield": 24, "mremap": 25, "msync": 26, "mincore": 27,
	"madvise": 28, "shmget": 29, "shmat": 30, "shmctl": 31, "dup": 32, "dup2": 33,
	"pause": 34, "nanosleep": 35, "getitimer": 36, "alarm": 37, "setitimer": 38,
	"getpid": 39, "sendfile": 40, "socket": 41, "connect": 42, "accept": 43, "sendto": 44,
	"recvfrom": 45, "sendmsg": 46, "recvmsg": 47, "shutdown": 48, "bind": 49,
	"listen": 50, "getsockname": 51, "getpeername": 52, "socketpair": 53,
	"setsockopt": 54, "getsockopt": 55, "clone": 56, "fork": 57, "vfork": 58,
	"execve": 59, "exit": 60, "wait4": 61, "kill": 62, "uname": 63, "semget": 64,
	"semop": 65, "semctl": 66, "shmdt": 67, "msgget": 68, "msgsnd": 69, "msgrcv": 70,
	"msgctl": 71, "fcntl": 72, "flock": 73, "fsync": 74, "fdatasync": 75, "truncate": 76,
	"ftruncate": 77, "getdents": 78, "getcwd": 79, "chdir": 80, "fchdir": 81,
	"rename": 82, "mkdir": 83, "rmdir": 84, "creat": 85, "link": 86, "unlink": 87,
	"symlink": 88, "readlink": 89, "chmod": 90, "fchmod": 91, "chown": 92, "fchown": 93,
	"lchown": 94, "umask": 95, "gettimeofday": 96, "getrlimit": 97, "getrusage": 98,
	"sysinfo": 99, "times": 100, "ptrace": 101, "getuid": 102, "syslog": 103,
	"getgid": 104, "setuid": 105, "setgid": 106, "geteuid": 107, "getegid": 108,
	"setpgid": 109, "getppid": 110, "getpgrp": 111, "setsid": 112, "setreuid": 113,
	"setregid": 114, "getgroups": 115, "setgroups": 116, "setresuid": 117,
	"getresuid": 118, "setresgid": 119, "getresgid": 120, "getpgid": 121, "setfsuid": 122,
	"setfsgid": 123, "getsid": 124, "capget": 125, "capset": 126, "rt_sigpending": 127,
	"rt_sigtimedwait": 128, "rt_sigqueueinfo": 129, "rt_sigsuspend": 130,
	"sigaltstack": 131, "utime": 132, "mknod": 133, "personality": 135, "statfs": 137,
	"fstatfs": 138, "getpriority": 140, "setpriority": 141, "sched_setparam": 142,
	"sched_getparam": 143, "sched_setscheduler": 144, "sched_getscheduler": 145,
	"sched_get_priority_max": 146, "sched_get_priority_min": 147,
	"sched_rr_get_interval": 148, "mlock": 149, "munlock": 150, "mlockall": 151,
	"munlockall": 152, "vhangup": 153, "modify_ldt": 154, "pivot_root": 155, "prctl": 157,
	"arch_prctl": 158, "adjtimex": 159, "setrlimit": 160, "chroot": 161, "sync": 162,
	"acct": 163, "settimeofday": 164, "mount": 165, "umount2": 166, "swapon": 167,
	"swapoff": 168, "reboot": 169, "sethostname": 170, "setdomainname": 171, "iopl": 172,
	"ioperm": 173, "init_module": 175, "delete_module": 176, "quotactl": 179,
	"gettid": 186, "readahead": 187, "setxattr": 188, "lsetxattr": 189, "fsetxattr": 190,
	"getxattr": 191, "lgetxattr": 192, "fgetxattr": 193, "listxattr": 194,
	"llistxattr": 195, "flistxattr": 196, "removexattr": 197, "lremovexattr": 198,
	"fremovexattr": 199, "tkill": 200, "time": 201, "futex": 202,
	"sched_setaffinity": 203, "sched_getaffinity": 204, "set_thread_area": 205,
	"io_setup": 206, "io_destroy": 207, "io_getevents": 208, "io_submit": 209,
	"io_cancel": 210, "get_thread_area": 211, "lookup_dcookie": 212, "epoll_create": 213,
	"remap_file_pages": 216, "getdents64": 217, "set_tid_address": 218,
	"restart_syscall": 219, "semtimedop": 220, "fadvise64": 221, "timer_create": 222,
	"timer_settime": 223, "timer_gettime": 224, "timer_getoverrun": 225,
	"timer_delete": 226, "clock_settime": 227, "clock_gettime": 228, "clock_getres": 229,
	"clock_nanosleep": 230, "exit_group": 231, "epoll_wait": 232, "epoll_ctl": 233,
	"tgkill": 234, "utimes": 235, "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242,
	"mq_timedreceive": 243, "mq_notify": 244, "mq_getsetattr": 245, "kexec_load": 246,
	"waitid": 247, "add_key": 248, "request_key": 249, "keyctl": 250, "ioprio_set": 251,
	"ioprio_get": 252, "inotify_init": 253, "inotify_add_watch": 254,
	"inotify_rm_watch": 255, "openat": 257, "mkdirat": 258, "mknodat": 259,
	"fchownat": 260, "futimesat": 261, "newfstatat": 262, "unlinkat": 263,
	"renameat": 264, "linkat": 265, "symlinkat": 266, "readlinkat": 267, "fchmodat": 268,
	"faccessat": 269, "pselect6": 270, "ppoll": 271, "unshare": 272,
	"set_robust_list": 273, "get_robust_list": 274, "splice": 275, "tee": 276,
	"sync_file_range": 277, "vmsplice": 278, "utimensat": 280, "epoll_pwait": 281,
	"signalfd": 282, "timerfd_create": 283, "eventfd": 284, "fallocate": 285,
	"timerfd_settime": 286, "timerfd_gettime": 287, "accept4": 288, "signalfd4": 289,
	"eventfd2": 290, "epoll_create1": 291, "dup3": 292, "pipe2": 293,
	"inotify_init1": 294, "preadv": 295, "pwritev": 296, "rt_tgsigqueueinfo": 297,
	"perf_event_open": 298, "recvmmsg": 299, "fanotify_init": 300, "fanotify_mark": 301,
	"prlimit64": 302, "name_to_handle_at": 303, "open_by_handle_at": 304,
	"clock_adjtime": 305, "syncfs": 306, "sendmmsg": 307, "setns": 308, "getcpu": 309,
	"process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312, "finit_module": 313,
	"sched_setattr": 314, "sched_getattr": 315, "renameat2": 316, "seccomp": 317,
	"getrandom": 318, "memfd_create": 319, "kexec_file_load": 320, "bpf": 321,
	"execveat": 322, "userfaultfd": 323, "membarrier": 324, "mlock2": 325,
	"copy_file_range": 326, "preadv2": 327, "pwritev2": 328, "pkey_mprotect": 329,
	"pkey_alloc": 330, "pkey_free": 331, "statx": 332, "io_pgetevents": 333, "rseq": 334,
	"uretprobe": 335, "pidfd_send_signal": 424, "io_uring_setup": 425,
	"io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
	"fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_open": 434,
	"clone3": 435, "close_range": 436, "openat2": 437, "pidfd_getfd": 438,
	"faccessat2": 439, "process_madvise": 440, "epoll_pwait2": 441, "mount_setattr": 442,
	"quotactl_fd": 443, "landlock_create_ruleset": 444, "landlock_add_rule": 445,
	"landlock_restrict_self": 446, "memfd_secret": 447, "process_mrelease": 448,
	"futex_waitv": 449, "cachestat": 451, "fchmodat2": 452, "map_shadow_stack": 453,
	"futex_wake": 454, "futex_wait": 455, "futex_requeue": 456, "statmount": 457,
	"listmount": 458, "mseal": 462, "setxattrat": 463, "getxattrat": 464,
	"listxattrat": 465, "removexattrat": 466, "open_tree_attr": 467,
}
