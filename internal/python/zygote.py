"""codeexec zygote: preloads the libraries once, then forks isolated children.

It runs as root of the outer sandbox's user namespace (pid 1 of its pid
namespace) and never runs user code. Go talks to it over fd 3, a
SOCK_SEQPACKET socket, one JSON object per message:

  Go -> zygote   {"op": "spawn", "id": N, "uid": U}
                 {"op": "prefault", "ranges": [[address, bytes], ...]}
  zygote -> Go   {"op": "ready"}                       once, after preloading
                 {"op": "spawned", "id": N, "pid": P}  + SCM_RIGHTS [sock, stdout, stderr]
                 {"op": "exited", "id": N, "code": C, "signal": S}

A child isolates itself (namespaces, mounts, uid, rlimits, no_new_privs,
seccomp) before it reads anything from its socket; see child_main.
"""

import os

# Record the at-fork hooks libraries register as they are imported, before
# any is: children are forked with fork(2) itself (see raw_fork) and run
# the hooks they need from this list (see after_fork).
AT_FORK_CHILD = []
_register_at_fork = os.register_at_fork


def _recording_register_at_fork(**hooks):
    if hooks.get("after_in_child") is not None:
        AT_FORK_CHILD.append(hooks["after_in_child"])
    _register_at_fork(**hooks)


os.register_at_fork = _recording_register_at_fork

import array  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, "/run/codeexec")

CONFIG = json.load(open("/run/codeexec/config.json"))

libc = ctypes.CDLL(None, use_errno=True)
# prctl is variadic: without argtypes ctypes would pass 32-bit ints where the
# kernel reads unsigned longs.
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
# fork(2) without os.fork's after-fork work in the child: that work (lock
# re-initialisation, at-fork hooks such as threading's and random's) writes
# pages shared with the zygote, each a copy-on-write fault, which a virtual
# machine makes expensive. The zygote is single-threaded and holds no lock
# when it forks, so there is nothing to re-initialise; after_fork runs the
# hooks that do more than that. Through PyDLL the call keeps the GIL, so
# the child owns it.
raw_fork = ctypes.PyDLL(None, use_errno=True).fork
raw_fork.restype = ctypes.c_int
raw_fork.argtypes = []

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 2, 4, 8, 0x4000, 0x40000
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
PR_SET_DUMPABLE = 4
MADV_POPULATE_WRITE = 23  # Linux 5.14

# The pages a child writes while it sets itself up and warms up, as
# (address, bytes) ranges: Go learns them from the first child of the pool
# and passes them on. A child that copies them in one madvise per range
# instead of one page fault each spawns in far less CPU (see prefault).
PREFAULT = []


def check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, "%s: %s" % (what, os.strerror(e)))


def mount(src, target, fstype, flags, data):
    check(libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None,
                     ctypes.c_ulong(flags), data.encode() if data else None), "mount " + target)


def preload():
    """Imports and warms the libraries so that no child pays for it."""
    import io
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy
    import pandas
    import scipy
    import scipy.optimize
    import scipy.stats
    import sympy
    try:
        import requests  # noqa: F401
    except ImportError:
        pass
    import runner
    # Warm the lazy paths a first request would otherwise pay for.
    df = pandas.DataFrame({"k": numpy.arange(100) % 3, "v": numpy.arange(100.0)})
    df.groupby("k")["v"].agg(["mean", "sum"])
    df._repr_html_()
    repr(df)
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    ax.bar(["a", "b"], [1, 2])
    ax.set_title("warm")
    fig.savefig(io.BytesIO(), format="png")
    plt.close("all")
    scipy.stats.ttest_ind([1, 2, 3], [2, 3, 4])
    sympy.solve(sympy.Symbol("x") ** 2 - 1)
    sympy.latex(sympy.Symbol("x") ** 2)
    # The other libraries Go asks for (python.Libraries): one missing is
    # only imported on demand, and fails there (the doctor reports it).
    import importlib
    for name in CONFIG.get("preload") or []:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    runner.warm()


def child_main(sock, out_w, err_w, uid):
    """Runs in the forked child, pid 1 of its own pid namespace."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    import runner
    # Say "ready" at once: the kernel attaches our pid (SCM_CREDENTIALS),
    # Go moves us into our own cgroup and answers "warm". Only then do we
    # build namespaces and mounts and warm up, so that their memory (kernel
    # memory included) is charged to our cgroup, not the zygote's: cgroups
    # do not move charges with a process.
    runner.bind(sock)
    runner.send({"type": "ready"})
    msg = runner.recv()
    if not msg or msg.get("op") != "warm":
        os._exit(0)
    prefault()
    check(libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    mount("none", "/", None, MS_REC | MS_PRIVATE, None)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    mode = "mode=1777,nr_inodes=%d" % CONFIG["max_files"]
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "%s,size=%d" % (mode, CONFIG["tmp_bytes"]))
    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "%s,size=%d" % (mode, CONFIG["tmp_bytes"]))
    mount("tmpfs", "/mnt/data", "tmpfs", MS_NOSUID | MS_NODEV,
          "mode=0755,uid=%d,gid=%d,size=%d,nr_inodes=%d" % (uid, uid, CONFIG["workdir_bytes"], CONFIG["max_files"]))
    check(libc.sethostname(b"sandbox", 7), "sethostname")

    # Standard streams: stdin is empty, stdout and stderr are pipes Go reads.
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    keep = sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, 1 << 16)

    import resource
    # Queued signals (and POSIX timers, which reserve one each) and POSIX
    # message queue bytes are counted for our uid and for host root, who
    # made the user namespace, against root's own limits (getrlimit(2)):
    # 64 queued signals per child, and no message queues. Locked memory
    # (mlock, SHM_LOCK) is charged the same way, and no library the
    # sandbox offers locks memory: none.
    for name, value in (("RLIMIT_NOFILE", CONFIG["max_open_files"]), ("RLIMIT_NPROC", CONFIG["max_procs"]),
                        ("RLIMIT_CORE", 0), ("RLIMIT_FSIZE", CONFIG["max_file_bytes"]),
                        ("RLIMIT_SIGPENDING", 64), ("RLIMIT_MSGQUEUE", 0), ("RLIMIT_MEMLOCK", 0)):
        resource.setrlimit(getattr(resource, name), (value, value))

    # Once we are no longer root, /proc/self/pagemap is root's to open
    # (the process is not dumpable): a probe opens it now (see written_ranges).
    pagemap = os.open("/proc/self/pagemap", os.O_RDONLY | os.O_CLOEXEC) if msg.get("probe") else None

    # A unique unprivileged uid: drops every capability (capabilities(7)).
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    install_seccomp(SECCOMP)

    os.chdir("/mnt/data")
    os.environ.clear()
    os.environ.update(CONFIG["env"])
    os.environ["HOME"] = "/mnt/data"
    os.makedirs("/tmp/matplotlib", exist_ok=True)
    runner.serve(sock, (lambda: written_ranges(pagemap)) if pagemap is not None else None)


def prefault():
    """Copies, before they are touched, the pages set-up and warm-up write.

    Each of those pages is shared copy-on-write with the zygote. Written
    one by one, each costs a page fault, and on a virtual machine a fault
    (plus the TLB flush of the copy) is expensive; MADV_POPULATE_WRITE
    copies a whole range in one system call. Errors are ignored: a range
    the child does not have mapped, or a kernel before 5.14, only means
    the pages are copied on fault as before."""
    for addr, length in PREFAULT:
        libc.madvise(addr, length, MADV_POPULATE_WRITE)


def child_hooks():
    """Returns the at-fork hooks a new child runs (see after_fork).

    Left out, because the zygote has one thread and holds no lock when it
    forks: threading's (forgets other threads, renews locks, faulting in
    pages of each child) and logging's (renews handler locks, the same).
    random's reseeding is done by reseed, before each fork. Every
    other hook runs, in the order it was registered: matplotlib's, for
    one, empties its font cache, whose fonts hold file descriptors the
    child closes."""
    import logging
    import random
    import threading
    skip = {getattr(threading, "_after_fork", None),
            getattr(logging, "_after_at_fork_child_reinit_locks", None),
            random._inst.seed}
    return [hook for hook in AT_FORK_CHILD if hook not in skip]


CHILD_HOOKS = []


def after_fork():
    """Runs, in a new child, what os.fork would have run that matters."""
    for hook in CHILD_HOOKS:
        hook()


def reseed():
    """Reseeds random and numpy.random from the kernel. The zygote does it
    before each fork, so every child starts with generators of its own:
    without it all would draw the zygote's sequence (numpy.random has no
    at-fork hook, and children skip random's, see child_hooks). Done here
    it costs the zygote next to nothing; in the child it cost first
    touches of many of its pages."""
    import random
    import numpy
    random.seed()
    numpy.random.seed()


def written_ranges(fd):
    """Returns the ranges of private writable memory this process holds
    exclusively: after warm-up, the pages it has written since the fork.
    fd is /proc/self/pagemap, which it closes."""
    import array
    out = []
    with open("/proc/self/maps") as maps, open(fd, "rb", buffering=0) as pagemap:
        for line in maps:
            f = line.split()
            if f[1][0:2] != "rw" or f[1][3] != "p":
                continue
            lo, hi = (int(x, 16) for x in f[0].split("-"))
            pagemap.seek(lo // 4096 * 8)
            entries = array.array("Q", pagemap.read((hi - lo) // 4096 * 8))
            start = None
            for i, e in enumerate(entries):
                # bit 63: present; bit 56: mapped exclusively (pagemap(5))
                if e >> 63 and (e >> 56) & 1:
                    if start is None:
                        start = i
                elif start is not None:
                    out.append([lo + start * 4096, (i - start) * 4096])
                    start = None
            if start is not None:
                out.append([lo + start * 4096, (len(entries) - start) * 4096])
    return out


def install_seccomp(prog):
    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = SockFprog(len(prog) // 8, ctypes.cast(buf, ctypes.c_void_p))
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "seccomp")


def spawn(ctrl, msg, orig_pidns, children):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    # Go learns the child's pid from SCM_CREDENTIALS on its "ready" frame.
    # The kernel attaches credentials only if SO_PASSCRED is set when the
    # frame is sent (unix(7)); setting it here, before the child exists,
    # means a child that is ready before Go reads its socket still sends them.
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    # The child becomes pid 1 of a fresh pid namespace; setns restores ours
    # for later forks (pid_namespaces(7), setns(2)).
    reseed()
    check(libc.unshare(CLONE_NEWPID), "unshare pid")
    pid = raw_fork()
    if pid != 0 and libc.setns(orig_pidns, CLONE_NEWPID) != 0:
        os._exit(70)  # later forks would land in the wrong namespace
    if pid < 0:
        for f in (ours, theirs):
            f.close()
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        raise OSError(ctypes.get_errno(), "fork failed")
    if pid == 0:
        try:
            after_fork()
            ours.close()
            os.close(out_r)
            os.close(err_r)
            ctrl.close()
            child_main(theirs, out_w, err_w, msg["uid"])
        except BaseException as e:  # report set-up failures on stderr, never return into the zygote loop
            try:
                os.write(2, ("codeexec child set-up: %r\n" % (e,)).encode())
            finally:
                os._exit(71)
        os._exit(0)
    children[pid] = msg["id"]
    send(ctrl, {"op": "spawned", "id": msg["id"], "pid": pid}, [ours.fileno(), out_r, err_r])
    ours.close()
    for fd in (out_r, err_r, out_w, err_w):
        os.close(fd)
    theirs.close()


def send(ctrl, obj, fds=()):
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    ctrl.sendmsg([json.dumps(obj).encode()], anc)


def reap(ctrl, children):
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        cid = children.pop(pid, None)
        if cid is not None:
            send(ctrl, {"op": "exited", "id": cid,
                        "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else -1,
                        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0})


def main():
    global SECCOMP
    ctrl = socket.socket(fileno=3)
    SECCOMP = open("/run/codeexec/seccomp.bpf", "rb").read()
    preload()
    # Run the hooks children will run once here, so that what they reset
    # (matplotlib's font cache, for one) is already empty when a child
    # inherits it: a child then has nothing to free, which cost it first
    # touches of the font objects' pages.
    CHILD_HOOKS[:] = child_hooks()
    after_fork()
    gc.collect()
    gc.freeze()  # keep the preloaded heap shared copy-on-write across children

    orig_pidns = os.open("/proc/self/ns/pid", os.O_RDONLY)
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children = {}
    send(ctrl, {"op": "ready"})
    while True:
        ready, _, _ = select.select([ctrl, wake_r], [], [])
        if wake_r in ready:
            try:
                os.read(wake_r, 4096)
            except BlockingIOError:
                pass
            reap(ctrl, children)
        if ctrl in ready:
            data = ctrl.recv(65536)
            if not data:
                return  # Go closed the control socket: shut down
            msg = json.loads(data)
            if msg.get("op") == "spawn":
                spawn(ctrl, msg, orig_pidns, children)
            elif msg.get("op") == "prefault":
                PREFAULT[:] = [(int(a), int(n)) for a, n in msg["ranges"]]


if __name__ == "__main__":
    main()
