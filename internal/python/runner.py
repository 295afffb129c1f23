"""codeexec runner: executes code like a notebook cell inside a warm child.

Frames on the child's socket are a 4-byte big-endian length and a JSON
object. Go sends {"op": "exec", "code": ..., "nonce": ..., "max_file_bytes": N};
the runner answers with any number of {"type": "display", "bundle": {...}}
and one {"type": "done", "status": "ok"|"error", "result": bundle|null,
"error": {...}|null}. Before "done" it writes the nonce, framed by NULs, to
stdout and stderr so Go knows both pipes are drained up to this execution.
Before an exec Go may send {"op": "put", "files": [{"path", "bytes"}, ...]}
followed by the files' bytes; the runner writes them and answers
{"type": "put", "status": ..., "error": ...}.
A new child first sends {"type": "ready"}; Go moves it into its cgroup
and sends {"op": "warm"}; the child isolates itself, warms up and answers
{"type": "warmed"}.
"""

import ast
import base64
import builtins
import errno
import io
import json
import linecache
import os
import re
import resource
import signal
import stat
import struct
import sys
import traceback

_sock = None
_cell = 0
_running = False  # True while user code runs: only then does SIGINT interrupt

MAX_TEXT = 256 << 10  # longest text/plain or text/html a bundle carries


def warm():
    """Runs the paths a first cell uses (in the zygote, and again in each
    child before its first request)."""
    global _cell
    bundle(1.5)
    g = {"__name__": "__main__"}
    _run("x = 1\nstr(x)\nx + 1", g)
    _user_traceback(ValueError("warm"), set())
    json.dumps({"type": "done", "status": "ok", "result": bundle(2), "error": None})
    import matplotlib.pyplot as plt
    plt.get_fignums()
    _cell = 0


def warm_data(plots=False):
    """A second warm-up, which Go asks of a child that joins a pool where
    another child already waits (so on CPU no request wants): the first
    pandas calls of a cell write many pages the child shares with the
    zygote, since CPython writes a reference count into every object it
    touches. Paid here, a fresh child's first groupby is several times
    faster, and the pages it copied stay private to the child. Only the
    commonest calls are warmed (building a DataFrame, groupby, read_csv,
    repr): each further one costs memory in every warm child. With plots,
    it also draws and renders a small figure, so that a first plot is
    faster too, for more memory. docs/performance.md has the figures.
    Nothing of it is left in the user's globals, and no figure stays
    open."""
    import numpy as np
    import pandas as pd
    df = pd.DataFrame({"k": np.arange(1000) % 10, "v": np.arange(1000.0)})
    df.groupby("k")["v"].mean().sum()
    repr(pd.read_csv(io.StringIO("a,b\n1,2.5\n3,4.5\n")))
    repr(df)
    if plots:
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.plot([1, 2, 3], [1, 4, 9])
        ax.set_title("warm")
        _figure_png(fig)
        plt.close("all")


def bind(sock):
    """Makes sock the socket frames go to and come from."""
    global _sock
    _sock = sock


def send(obj):
    data = json.dumps(obj, default=str).encode()
    # A frame is sent whole or not at all: a SIGINT (Go interrupting a
    # session's code) that raised KeyboardInterrupt in the middle of
    # sendall would leave half a frame, and the session would be killed
    # for breaking the protocol. Blocked, it is taken once the frame is out.
    old = signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
    try:
        _sock.sendall(struct.pack(">I", len(data)) + data)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def recv():
    head = _recv_exact(4)
    if head is None:
        return None
    return json.loads(_recv_exact(struct.unpack(">I", head)[0]))


def _recv_exact(n):
    buf = bytearray()
    while len(buf) < n:
        chunk = _sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _clip(s):
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + "\n... [truncated]"


def _figure_png(fig):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


_REPRS = (("_repr_html_", "text/html"), ("_repr_markdown_", "text/markdown"),
          ("_repr_svg_", "image/svg+xml"), ("_repr_png_", "image/png"),
          ("_repr_jpeg_", "image/jpeg"), ("_repr_latex_", "text/latex"),
          ("_repr_json_", "application/json"))


def bundle(obj):
    """Returns obj's MIME bundle, as a notebook would display it."""
    out = {}
    try:
        from matplotlib.figure import Figure
        if isinstance(obj, Figure):
            out["image/png"] = _figure_png(obj)
    except Exception:
        pass
    for meth, mime in _REPRS:
        if mime in out:
            continue
        try:
            f = getattr(obj, meth, None)
            if not callable(f) or isinstance(obj, type):
                continue
            v = f()
        except Exception:
            continue
        if isinstance(v, tuple):
            v = v[0]
        if v is None:
            continue
        if isinstance(v, bytes):
            v = base64.b64encode(v).decode()
        elif mime == "application/json":
            pass
        else:
            v = _clip(str(v))
        out[mime] = v
    try:
        out["text/plain"] = _clip(repr(obj))
    except Exception as e:
        out["text/plain"] = "<unprintable %s: %r>" % (type(obj).__name__, e)
    return out


_nonce = ""  # of the running execution


def _flush_streams():
    # Output printed before a display must be delivered before it: flush
    # both streams and put a sync mark in each pipe, which Go waits for
    # before it passes the display on.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    if _nonce:
        for fd in (1, 2):
            try:
                os.write(fd, b"\x00" + _nonce.encode() + b"d\x00")
            except OSError:
                pass


def display(*objs, **kwargs):
    """Shows each object as a display of the running cell, like IPython's."""
    for obj in objs:
        _flush_streams()
        if kwargs.get("raw") and isinstance(obj, dict):
            send({"type": "display", "bundle": obj})
        else:
            send({"type": "display", "bundle": bundle(obj)})


def show_figures(*args, **kwargs):
    """Replaces plt.show: every open figure becomes a display, then closes."""
    import matplotlib.pyplot as plt
    for num in plt.get_fignums():
        _flush_streams()
        fig = plt.figure(num)
        send({"type": "display", "bundle": {"image/png": _figure_png(fig), "text/plain": repr(fig)}})
    plt.close("all")


def _user_traceback(e, filenames):
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename in filenames]
    text = ""
    if frames:
        text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
    return text + "".join(traceback.format_exception_only(type(e), e))


# Where pip installs at run time: this child's own /tmp (a session's is its
# own for the session's life), on sys.path once something is installed.
PIP_TARGET = "/tmp/.codeexec/site-packages"
_PIP_LINE = re.compile(r"^([ \t]*)[%!]?pip3?[ \t]+((?:install|uninstall|list|show|freeze|download|check)\b.*)$")
_network = False  # the running execution has the egress proxy


class PipError(Exception):
    pass


def _pip_lines(code):
    """Rewrites each line of a cell that is a pip command (pip ..., %pip
    ..., !pip ...) as a call of pip(); the lines stay where they were, so
    tracebacks still point at the user's lines."""
    out = []
    for line in code.split("\n"):
        m = _PIP_LINE.match(line)
        out.append("%s__codeexec_pip__(%r)" % (m.group(1), m.group(2)) if m else line)
    return "\n".join(out)


def pip(args):
    """Runs pip with the arguments of a cell's pip line. pip install puts
    packages into PIP_TARGET, which this call adds to sys.path, so that
    the next line (or cell) imports them. It needs the network: without
    it, it fails at once."""
    import importlib
    import shlex
    import subprocess
    argv = shlex.split(args)
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               PIP_PROGRESS_BAR="off", PIP_NO_CACHE_DIR="1", PYTHONPATH=PIP_TARGET)
    if argv[:1] == ["install"]:
        if not _network:
            raise PipError("pip install needs network access, and this execution has none: run it with "
                           "network access that allows the package index (network.allow, within the "
                           "server's --egress-allow)")
        os.makedirs(PIP_TARGET, exist_ok=True)
        argv = ["install", "--target", PIP_TARGET, "--no-warn-script-location"] + argv[1:]
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    code = subprocess.call([sys.executable or "/usr/bin/python3", "-m", "pip"] + argv,
                           stdin=subprocess.DEVNULL, env=env)
    if code != 0:
        raise PipError("pip %s exited with status %d (its output is above)" % (argv[0] if argv else "", code))
    if argv[:1] == ["install"]:
        if PIP_TARGET not in sys.path:
            sys.path.append(PIP_TARGET)
        sys.path_importer_cache.pop(PIP_TARGET, None)
        importlib.invalidate_caches()


def _run(code, g):
    """Runs code in globals g; returns (result bundle or None)."""
    global _cell
    _cell += 1
    name = "<cell %d>" % _cell
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    try:
        tree = ast.parse(code, filename=name, mode="exec")
    except SyntaxError as e:
        # Not Python: perhaps it has pip lines, which Python code never
        # has (valid Python is never rewritten).
        rewritten = _pip_lines(code)
        if rewritten == code:
            raise
        try:
            tree = ast.parse(rewritten, filename=name, mode="exec")
        except SyntaxError:
            raise e from None
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    exec(compile(tree, name, "exec"), g)
    if last is None:
        return None
    value = eval(compile(last, name, "eval"), g)
    if value is None:
        return None
    g["_"] = value
    return bundle(value)


_filenames = set()


def _run_bash(code):
    """Runs code with /bin/bash -c in this child's sandbox (its limits, its
    /mnt/data and environment, its working directory), writing to the
    same stdout and stderr; returns the exit status, 128 + N when signal N
    ended bash. Bash gets a process group of its own: whatever is left of
    it when it exits (background jobs), or when it is interrupted, is
    killed and reaped (this child is pid 1 of its namespace: orphans are
    its own)."""
    import subprocess
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    p = subprocess.Popen(["/bin/bash", "-c", code], stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        # Wait without reaping: the group's id stays bash's until the
        # group is killed.
        os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
        p.wait()
        # The group's other members are now this child's (their parents
        # are dead or dying): wait for each, so that none is left a zombie.
        while True:
            try:
                os.waitpid(-p.pid, 0)
            except ChildProcessError:
                break
    return p.returncode if p.returncode >= 0 else 128 - p.returncode


def execute(msg, g):
    """Runs an exec request's code; returns (result, error, exit code)."""
    code = msg["code"]
    result, error, exit_code = None, None, None
    try:
        env = msg.get("env")
        if isinstance(env, dict):
            os.environ.update({str(k): str(v) for k, v in env.items()})
        global _network
        _network = isinstance(env, dict) and "HTTPS_PROXY" in env
        lim = msg.get("max_file_bytes")
        if lim:
            # Only the soft limit: a later execution of a session may ask
            # for more, up to the hard limit the zygote set (the maximum).
            hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
            resource.setrlimit(resource.RLIMIT_FSIZE, (min(lim, hard), hard))
        _filenames.add("<cell %d>" % (_cell + 1))
        global _running
        _running = True
        try:
            if msg.get("language") == "bash":
                exit_code = _run_bash(code)
                if exit_code != 0:
                    what = "exit code %d" % exit_code
                    if exit_code > 128:
                        what = "killed by signal %d (exit code %d)" % (exit_code - 128, exit_code)
                    error = {"name": "ExitCode", "value": "bash: " + what, "traceback": ""}
            else:
                result = _run(code, g)
        finally:
            _running = False
    except SystemExit as e:
        if e.code not in (None, 0):
            error = {"name": "SystemExit", "value": str(e.code), "traceback": "SystemExit: %s\n" % (e.code,)}
    except BaseException as e:
        error = {"name": type(e).__name__, "value": _clip(str(e)), "traceback": _clip(_user_traceback(e, _filenames))}
    try:
        import matplotlib.pyplot as plt
        if plt.get_fignums():
            show_figures()
    except BaseException as e:
        if error is None:
            error = {"name": type(e).__name__, "value": str(e), "traceback": _user_traceback(e, _filenames)}
    return result, error, exit_code


def put_files(files):
    """Writes the files whose bytes Go streams on the socket after a put
    frame: for each {"path", "bytes"} in order, exactly that many bytes.
    The child writes them itself so that their pages are charged to its
    own cgroup. A file that cannot be placed has its bytes read and dropped
    (the stream stays in step); the first failure is in the reply."""
    error = None
    buf = memoryview(bytearray(1 << 20))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # a session may have lowered it
    try:
        for f in files:
            path, left = str(f["path"]), int(f["bytes"])
            fd, err = -1, None
            try:
                fd = _create(path)
            except OSError as e:
                err = e
            while left > 0:
                k = _sock.recv_into(buf[:min(left, len(buf))])
                if k == 0:
                    os._exit(0)  # Go is gone
                left -= k
                done = 0
                while err is None and done < k:
                    try:
                        done += os.write(fd, buf[done:k])
                    except OSError as e:
                        err = e
            if fd >= 0:
                os.close(fd)
            if err is not None and error is None:
                error = {"name": type(err).__name__, "value": "%s: %s" % (path, err.strerror or err)}
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    return {"type": "put", "status": "error" if error else "ok", "error": error}


def _create(path):
    """Creates /mnt/data/path and its directories, following no symlink
    (each element is opened by name in its parent, O_NOFOLLOW), and
    returns a descriptor open for writing on the regular file."""
    parts = path.split("/")
    d = os.open("/mnt/data", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in parts[:-1]:
            try:
                os.mkdir(name, 0o755, dir_fd=d)
            except FileExistsError:
                pass
            nd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=d)
            os.close(d)
            d = nd
        # O_NONBLOCK: a FIFO planted there fails (ENXIO) instead of blocking.
        fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     0o644, dir_fd=d)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(errno.EINVAL, "not a regular file")
        return fd
    finally:
        os.close(d)


def _finish(nonce):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    mark = b"\x00" + nonce.encode() + b"\x00"
    for fd in (1, 2):
        os.write(fd, mark)


def _on_sigint(signum, frame):
    # Go interrupts a session's execution that ran out of time; outside
    # user code the runner must not be torn down by it.
    if _running:
        raise KeyboardInterrupt


def serve(sock, probe=None):
    """Runs in the child: answers exec requests until Go closes the socket.
    With probe, the "warmed" frame carries probe()'s result as "pages"."""
    bind(sock)
    sys.stdin = open(os.devnull)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), encoding="utf-8",
                                  errors="backslashreplace", line_buffering=True)
    builtins.display = display
    builtins.__codeexec_pip__ = pip
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        import matplotlib.pyplot as plt
        plt.show = show_figures
    except Exception:
        pass
    g = {"__name__": "__main__", "__builtins__": builtins, "display": display}
    # Touch, before any request, the pages the first cell would otherwise
    # copy on write, so that cost belongs to the pool refill: the warm-up
    # paths, then the request path itself with a cell that prints nothing.
    warm()
    global _cell
    execute({"code": "import sys\nsys.stdout.write('')\nsys.stdout.flush()\nsys.stderr.flush()\n[1]"},
            {"__name__": "__main__", "__builtins__": builtins})
    _cell = 0
    _filenames.clear()
    send({"type": "warmed", "pages": probe() if probe else None})
    while True:
        msg = recv()
        if msg is None:
            os._exit(0)
        if msg.get("op") == "warm_data":
            try:
                warm_data(bool(msg.get("plots")))
            except Exception:
                pass  # best effort: a request would only be slower
            send({"type": "warmed_data"})
            continue
        if msg.get("op") == "put":
            send(put_files(msg.get("files") or []))
            continue
        if msg.get("op") != "exec":
            continue
        global _nonce
        _nonce = msg.get("nonce", "")
        result, error, exit_code = execute(msg, g)
        try:
            _finish(msg["nonce"])
        except BaseException:
            pass
        done = {"type": "done", "status": "error" if error else "ok", "result": result, "error": error}
        if exit_code is not None:
            done["exit_code"] = exit_code
        send(done)
