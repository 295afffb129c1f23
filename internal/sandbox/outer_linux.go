package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// initArg0 is the argv[0] under which this binary, re-executed through
// /proc/self/exe, becomes the sandbox's init (runc init style). It is not a
// subcommand and appears in no help text.
const initArg0 = "codeexec-sandbox-init"

func init() {
	if len(os.Args) > 0 && os.Args[0] == initArg0 {
		// Never returns: either execs the program or exits non-zero.
		initMain()
	}
}

// Namespace is one of the namespaces a sandbox runs in.
type Namespace struct {
	Flag uintptr // its CLONE_NEW* flag of clone(2)
	Name string  // its name in namespaces(7), for messages
}

// Namespaces are the namespaces of every outer sandbox, user first: the
// others are made as its root.
var Namespaces = []Namespace{
	{unix.CLONE_NEWUSER, "user"},
	{unix.CLONE_NEWPID, "pid"},
	{unix.CLONE_NEWNS, "mount"},
	{unix.CLONE_NEWNET, "net"},
	{unix.CLONE_NEWIPC, "ipc"},
	{unix.CLONE_NEWUTS, "uts"},
	{unix.CLONE_NEWCGROUP, "cgroup"},
}

// CloneFlags are the flags of all of Namespaces.
var CloneFlags = func() uintptr {
	var f uintptr
	for _, ns := range Namespaces {
		f |= ns.Flag
	}
	return f
}()

// Config describes an outer sandbox: a process tree in fresh user, pid,
// mount, network, IPC, UTS and cgroup namespaces whose root is a read-only
// tmpfs holding read-only binds of the host's /usr and a few /etc files.
type Config struct {
	// Path and Args are the program to run inside, as for exec.Cmd. Path
	// must exist under /usr (nothing else of the host is visible).
	Path string
	Args []string
	// Env is the program's whole environment; nothing of the host's is
	// inherited.
	Env []string
	// Files are written into the read-only directory /run/codeexec inside
	// the sandbox before the program starts, by base name.
	Files map[string][]byte
	// ExtraFiles are passed to the program as fds 3, 4, ...
	ExtraFiles []*os.File
	// HostUID and HostGID are the first host ids of the range the
	// sandbox's ids 0..IDCount-1 map to. They must not belong to anyone on
	// the host.
	HostUID, HostGID int
	// IDCount is the size of the id range (e.g. 65536).
	IDCount int
	// Stderr receives the program's standard error (nil discards it).
	Stderr *os.File

	// extraBinds are host paths bound read-only after roBinds; tests use
	// them to bring in a directory of their own.
	extraBinds []string
}

// initConfig is what the parent sends the init over a pipe.
type initConfig struct {
	Path  string            `json:"path"`
	Args  []string          `json:"args"`
	Env   []string          `json:"env"`
	Files map[string][]byte `json:"files"`
	// NExtra is the number of fds after the config pipe to hand on.
	NExtra int `json:"n_extra"`
	// Binds are the host paths to bind read-only (roBinds, then
	// Config.extraBinds).
	Binds []string `json:"binds"`
}

// Start starts the outer sandbox described by c. The caller owns the
// returned process and must Wait for it. The sandbox gets SIGKILL when the
// server dies (Pdeathsig), and with it every process inside.
//
// Pdeathsig fires when the thread that forked the child exits, not the
// process (prctl(2), golang/go#27505), and Go ends a thread whenever a
// goroutine exits locked to it, as ours do on purpose when they cannot
// restore a thread's namespace or file-system ids. So Start forks from a
// goroutine of its own, locked to its thread, which runs nothing else and
// stays blocked until the sandbox has exited; this costs one idle thread
// per live sandbox.
func Start(c Config) (*exec.Cmd, error) {
	type result struct {
		cmd *exec.Cmd
		err error
	}
	started := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		pidfd := -1
		cmd, err := start(c, &pidfd)
		started <- result{cmd, err}
		if err != nil {
			return
		}
		defer unix.Close(pidfd)
		// A pidfd becomes readable when its process exits (pidfd_open(2)),
		// whether or not it has been reaped yet.
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		for {
			if _, err := unix.Poll(fds, -1); err != unix.EINTR {
				return
			}
		}
	}()
	r := <-started
	return r.cmd, r.err
}

// start starts the sandbox from the calling thread, storing a pidfd of it
// in *pidfd.
func start(c Config, pidfd *int) (*exec.Cmd, error) {
	if c.IDCount < 1 || c.HostUID < 1 || c.HostGID < 1 {
		return nil, fmt.Errorf("sandbox: invalid id range uid=%d gid=%d count=%d", c.HostUID, c.HostGID, c.IDCount)
	}
	cfg, err := json.Marshal(initConfig{Path: c.Path, Args: c.Args, Env: c.Env, Files: c.Files, NExtra: len(c.ExtraFiles),
		Binds: append(slices.Clip(roBinds), c.extraBinds...)})
	if err != nil {
		return nil, fmt.Errorf("encode sandbox config: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	// The pipe buffer may be smaller than the config: write from a
	// goroutine that ends when the child has read it all or died.
	go func() {
		w.Write(cfg)
		w.Close()
	}()
	cmd := &exec.Cmd{
		Path:       "/proc/self/exe",
		Args:       []string{initArg0},
		Env:        []string{},
		Stderr:     c.Stderr,
		ExtraFiles: append([]*os.File{r}, c.ExtraFiles...),
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags:  CloneFlags,
			UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: c.HostUID, Size: c.IDCount}},
			GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: c.HostGID, Size: c.IDCount}},
			// Set the ids the init runs as inside: root of the new user
			// namespace, which it needs to mount (DESIGN.md), with no
			// supplementary groups. Without setgroups(2) the sandbox
			// would keep the server's: shown as 65534 inside, they still
			// grant their host group's access to host files.
			Credential: &syscall.Credential{Uid: 0, Gid: 0, Groups: []uint32{}},
			// Go calls setgroups only if the namespace allows it
			// (user_namespaces(7), "/proc/[pid]/setgroups"). "deny"
			// exists so that an unprivileged creator cannot drop a
			// group that file permissions deny access to; here host root
			// writes the maps, and after setgroups(0) there is no host
			// group left to drop. What "allow" leaves is that root of the
			// namespace (the init, the zygote) may take gids of the
			// sandbox's own range, which own nothing on the host; the
			// children run as an unprivileged uid without CAP_SETGID and
			// cannot call setgroups, nor create a user namespace
			// (seccomp), where an unprivileged map needs "deny" anyway.
			GidMappingsEnableSetgroups: true,
			Pdeathsig:                  syscall.SIGKILL,
			PidFD:                      pidfd,
		},
	}
	err = cmd.Start()
	r.Close()
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("start sandbox: %w", err)
	}
	return cmd, nil
}

// initMain runs as pid 1 of the new namespaces: it builds the root file
// system, pivots into it, and execs the configured program.
func initMain() {
	// Stay on this thread from the first set-up call to execve(2): some
	// of the state we set is per thread, not per process. no_new_privs is
	// a flag of the calling thread (prctl(2)) and execve keeps the
	// calling thread's, so a goroutine that moved between the prctl and
	// the exec would run the program without it; setns(2) and unshare(2)
	// too act on the calling thread only. Go keeps the main goroutine
	// locked while package init functions run, but that is an accident of
	// where initMain is called from, not something to rely on.
	runtime.LockOSThread()
	if err := setupAndExec(); err != nil {
		fmt.Fprintf(os.Stderr, "codeexec sandbox init: %v\n", err)
		os.Exit(125)
	}
}

const newRoot = "/tmp" // any existing directory: we mount a tmpfs over it in our own mount namespace

func setupAndExec() error {
	f := os.NewFile(3, "config")
	var cfg initConfig
	if err := json.NewDecoder(f).Decode(&cfg); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	f.Close()
	// Keep fds 4.. as the program's 3.. by moving them down.
	for i := 0; i < cfg.NExtra; i++ {
		if err := unix.Dup3(4+i, 3+i, 0); err != nil {
			return fmt.Errorf("dup fd %d: %w", 4+i, err)
		}
	}
	unix.Close(3 + cfg.NExtra)

	// Nothing we mount may propagate back to the host (mount_namespaces(7)).
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if err := unix.Mount("tmpfs", newRoot, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=16m"); err != nil {
		return fmt.Errorf("mount root tmpfs: %w", err)
	}
	if err := buildRoot(newRoot, cfg.Binds, cfg.Files); err != nil {
		return err
	}
	if err := pivot(newRoot); err != nil {
		return err
	}
	// Read-only root; /tmp, /dev/shm and /mnt/data stay writable tmpfs.
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return fmt.Errorf("remount root read-only: %w", err)
	}
	if err := unix.Sethostname([]byte("sandbox")); err != nil {
		return fmt.Errorf("sethostname: %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("setrlimit core: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	return unix.Exec(cfg.Path, cfg.Args, cfg.Env)
}

// roBinds are host paths bound read-only into the sandbox when they exist.
// Everything else of the host stays invisible.
var roBinds = []string{
	"/usr",
	"/etc/alternatives", // Debian's BLAS/LAPACK are reached through it
	"/etc/ld.so.cache",
	"/etc/ld.so.conf",
	"/etc/ld.so.conf.d",
	"/etc/matplotlibrc",
	"/etc/fonts",
	// HTTPS needs the CA certificates (OpenSSL reaches them through
	// /usr/lib/ssl's links) and its configuration, not /etc/ssl/private.
	"/etc/ssl/certs",
	"/etc/ssl/openssl.cnf",
	"/etc/ca-certificates",
	"/etc/mime.types",
	"/etc/python3",
	"/etc/python3.11",
	"/etc/python3.12",
	"/etc/python3.13",
	"/var/cache/fontconfig", // fontconfig's pre-built cache
}

// buildRoot builds the sandbox's root file system in root, a fresh tmpfs
// that pivot makes the root: the directory skeleton, the host's read-only
// parts, the generated /etc, the program's files in /run/codeexec, then
// /dev, /proc and /tmp.
func buildRoot(root string, binds []string, files map[string][]byte) error {
	if err := makeSkeleton(root); err != nil {
		return err
	}
	if err := linkMergedUsr(root); err != nil {
		return err
	}
	if err := bindHost(root, binds); err != nil {
		return err
	}
	if err := writeEtc(root); err != nil {
		return err
	}
	if err := writeRunFiles(root, files); err != nil {
		return err
	}
	if err := mountDev(filepath.Join(root, "dev")); err != nil {
		return err
	}
	// A fresh proc for our pid namespace (proc(5)); hidepid is left to the
	// children, which mount their own.
	if err := unix.Mount("proc", filepath.Join(root, "proc"), "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	if err := unix.Mount("tmpfs", filepath.Join(root, "tmp"), "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777,size=64m"); err != nil {
		return fmt.Errorf("mount /tmp: %w", err)
	}
	return nil
}

// makeSkeleton creates the directories of the root that hold mounts or
// files; .old is where pivot puts the host's root.
func makeSkeleton(root string) error {
	for _, dir := range []string{"etc", "proc", "dev", "tmp", "run/codeexec", "mnt/data", ".old"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			return err
		}
	}
	return os.Chmod(filepath.Join(root, "tmp"), 0o1777)
}

// linkMergedUsr makes /bin, /lib, ... in root what they are on the host.
func linkMergedUsr(root string) error {
	// Debian merged /usr: /bin, /lib, ... are symlinks into it. Mirror the
	// host's links; a non-merged host gets them as binds below.
	for _, name := range []string{"bin", "sbin", "lib", "lib32", "lib64", "libx32"} {
		if target, err := os.Readlink("/" + name); err == nil {
			if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
				return err
			}
		} else if _, err := os.Stat("/" + name); err == nil {
			if err := bindRO("/"+name, filepath.Join(root, name)); err != nil {
				return err
			}
		}
	}
	return nil
}

// bindHost binds each host path of binds that exists read-only at the same
// path under root.
func bindHost(root string, binds []string) error {
	for _, p := range binds {
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		if err := bindRO(p, filepath.Join(root, p)); err != nil {
			return err
		}
	}
	return nil
}

// writeEtc writes the sandbox's own /etc files, beside the binds of the
// host's: its users, its host names, and no name server.
func writeEtc(root string) error {
	if target, err := os.Readlink("/etc/localtime"); err == nil && strings.HasPrefix(target, "/usr/") {
		if err := os.Symlink(target, filepath.Join(root, "etc/localtime")); err != nil {
			return err
		}
	}
	generated := map[string]string{
		"etc/passwd":        "root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:1000:1000:sandbox:/mnt/data:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
		"etc/group":         "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n",
		"etc/hosts":         "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n",
		"etc/hostname":      "sandbox\n",
		"etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
		"etc/resolv.conf":   "",
	}
	for name, content := range generated {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// writeRunFiles writes files into root's /run/codeexec by base name.
func writeRunFiles(root string, files map[string][]byte) error {
	for name, content := range files {
		if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
			return fmt.Errorf("invalid sandbox file name %q", name)
		}
		if err := os.WriteFile(filepath.Join(root, "run/codeexec", name), content, 0o644); err != nil {
			return err
		}
	}
	return nil
}

var devices = []string{"null", "zero", "full", "random", "urandom"}

// mountDev mounts the sandbox's /dev at dev: the host's harmless devices,
// the usual symlinks, and the empty directories shm (each child mounts its
// own) and pts.
func mountDev(dev string) error {
	// /dev: mknod is not allowed in a user namespace; bind the host's
	// harmless devices onto empty files (DESIGN.md).
	if err := unix.Mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_NOEXEC, "mode=0755,size=64k"); err != nil {
		return fmt.Errorf("mount /dev: %w", err)
	}
	for _, d := range devices {
		p := filepath.Join(dev, d)
		if err := os.WriteFile(p, nil, 0o666); err != nil {
			return err
		}
		if err := unix.Mount("/dev/"+d, p, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind /dev/%s: %w", d, err)
		}
	}
	for name, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return err
		}
	}
	for _, d := range []string{"shm", "pts"} {
		if err := os.Mkdir(filepath.Join(dev, d), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// bindRO bind-mounts src and every mount below it onto dst read-only,
// nosuid and nodev, creating dst as a file or a directory like src.
func bindRO(src, dst string) error {
	st, err := os.Stat(src)
	if err != nil {
		return err
	}
	if st.IsDir() {
		err = os.MkdirAll(dst, 0o755)
	} else {
		if err = os.MkdirAll(filepath.Dir(dst), 0o755); err == nil {
			err = os.WriteFile(dst, nil, 0o644)
		}
	}
	if err != nil {
		return err
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("bind %s: %w", src, err)
	}
	// MS_REC brings the mounts below src along, and a read-only remount
	// (MS_REMOUNT|MS_BIND|MS_RDONLY) would change the top one only:
	// mount_setattr(2) with AT_RECURSIVE changes them all (Linux 5.12).
	// It only sets flags, so those the kernel locked on host mounts in our
	// user namespace (noexec, atime) are kept, as it requires.
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(unix.AT_FDCWD, dst, unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("make %s read-only: %w", src, err)
	}
	return nil
}

// pivot makes root the root of the mount namespace and detaches the old
// one (pivot_root(2)).
func pivot(root string) error {
	old := filepath.Join(root, ".old")
	if err := unix.PivotRoot(root, old); err != nil {
		return fmt.Errorf("pivot_root: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if err := unix.Unmount("/.old", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("detach old root: %w", err)
	}
	if err := os.Remove("/.old"); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove old root: %w", err)
	}
	return nil
}
