package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Files inside a sandbox are reached through an O_PATH handle on its
// /mnt/data, opened before any user code ran. Every lookup below it uses
// openat2(2) with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS|
// RESOLVE_NO_XDEV, so a symlink, a "..", a bind or a magic link planted by
// the code can never lead the host outside, and O_NONBLOCK with a regular
// file check means a FIFO can never block it.

const resolveFlags = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// Bounds on what a scan of /mnt/data looks at.
const (
	maxScanEntries = 10_000
	maxScanDepth   = 32
	maxListedFiles = 1000
)

func openBeneath(dir *os.File, p string, flags int, mode uint32) (*os.File, error) {
	fd, err := unix.Openat2(int(dir.Fd()), p, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Mode:    uint64(mode),
		Resolve: resolveFlags,
	})
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// writeFile creates p (and its directories) below dir as host uid uid,
// the child's own uid: the child's tmpfs belongs to the sandbox's user
// namespace, where the host's root has no id, so the kernel refuses to
// create files as root there (EOVERFLOW).
func writeFile(dir *os.File, p string, data []byte, uid int) error {
	if err := CheckPath(p); err != nil {
		return err
	}
	return asUser(uid, func() error { return writeFileAs(dir, p, data) })
}

func writeFileAs(dir *os.File, p string, data []byte) error {
	parts := strings.Split(p, "/")
	for i := 1; i < len(parts); i++ {
		// mkdirat(2) follows symlinks in every element but the last, so
		// mkdirat(dir, "a/b") with a symlink a -> /tmp planted by the code
		// would create /tmp/b on the host. Create each directory by its
		// single name in its parent, opened with the RESOLVE_* flags.
		d := strings.Join(parts[:i], "/")
		parent := "."
		if i > 1 {
			parent = strings.Join(parts[:i-1], "/")
		}
		pd, err := openBeneath(dir, parent, unix.O_PATH|unix.O_DIRECTORY, 0)
		if err != nil {
			return &InputError{"files", fmt.Sprintf("cannot create directory %q for an input file: %v", d, errors.Unwrap(err))}
		}
		err = unix.Mkdirat(int(pd.Fd()), parts[i-1], 0o755)
		pd.Close()
		if err != nil && err != unix.EEXIST {
			return &InputError{"files", fmt.Sprintf("cannot create directory %q for an input file: %v", d, err)}
		}
	}
	f, err := openBeneath(dir, p, unix.O_WRONLY|unix.O_CREAT|unix.O_TRUNC|unix.O_NONBLOCK, 0o644)
	if err != nil {
		return &InputError{"files", fmt.Sprintf("cannot place input file %q: %v", p, errors.Unwrap(err))}
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		return &InputError{"files", fmt.Sprintf("cannot place input file %q: not a regular file", p)}
	}
	if _, err := f.Write(data); err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return &InputError{"files", "input files exceed the size of the work directory"}
		}
		return fmt.Errorf("write input file %s: %w", p, err)
	}
	return nil
}

// fileState is what a scan remembers of a regular file.
type fileState struct {
	size  int64
	mtime unix.Timespec
	ctime unix.Timespec
	ino   uint64
}

// scanFiles lists the regular files below dir. It never follows a
// symlink and stops at the bounds above.
func scanFiles(dir *os.File) map[string]fileState {
	files := map[string]fileState{}
	entries := 0
	var walk func(rel string, depth int)
	walk = func(rel string, depth int) {
		if depth > maxScanDepth {
			return
		}
		name := rel
		if name == "" {
			name = "."
		}
		d, err := openBeneath(dir, name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return
		}
		defer d.Close()
		list, _ := d.ReadDir(maxScanEntries - entries)
		for _, e := range list {
			entries++
			p := path.Join(rel, e.Name())
			switch {
			case e.IsDir():
				walk(p, depth+1)
			case e.Type().IsRegular():
				var st unix.Stat_t
				if unix.Fstatat(int(d.Fd()), e.Name(), &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
					files[p] = fileState{size: st.Size, mtime: st.Mtim, ctime: st.Ctim, ino: st.Ino}
				}
			}
			if entries >= maxScanEntries {
				return
			}
		}
	}
	walk("", 0)
	return files
}

// collect reports the files that are new or changed since before, storing
// each in sink when there is one.
func (c *child) collect(ctx context.Context, before map[string]fileState, sink FileSink) []File {
	after := scanFiles(c.data)
	var paths []string
	for p, st := range after {
		if old, ok := before[p]; !ok || old != st {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	if len(paths) > maxListedFiles {
		paths = paths[:maxListedFiles]
	}
	files := []File{}
	for _, p := range paths {
		f := File{Path: p, Bytes: after[p].size, MIMEType: mimeType(p)}
		if sink != nil {
			id, err := c.storeFile(ctx, p, sink)
			if err != nil {
				c.p.log.Warn("store output file", "err", err, "sandbox_id", c.id)
				continue
			}
			f.ID = id
		}
		files = append(files, f)
	}
	return files
}

func (c *child) storeFile(ctx context.Context, p string, sink FileSink) (string, error) {
	f, size, err := openRegular(c.data, p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return sink.Put(ctx, p, size, io.LimitReader(f, size))
}

// openRegular opens p below dir for reading, refusing anything but a
// regular file.
func openRegular(dir *os.File, p string) (*os.File, int64, error) {
	f, err := openBeneath(dir, p, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, 0, fmt.Errorf("%s is not a regular file", p)
	}
	return f, st.Size(), nil
}

func mimeType(p string) string {
	if t := mime.TypeByExtension(path.Ext(p)); t != "" {
		return t
	}
	return "application/octet-stream"
}

// asUser runs f on a thread whose file-system ids are uid (setfsuid(2)),
// so files are created as that user. fsuid is per thread: the thread is
// locked for the call and retired if the ids cannot be restored (no
// sandbox dies with it: sandbox.Start forks from a thread of its own).
func asUser(uid int, f func() error) error {
	runtime.LockOSThread()
	unix.Setfsgid(uid)
	unix.Setfsuid(uid)
	err := f()
	unix.Setfsuid(0)
	unix.Setfsgid(0)
	// setfsuid and setfsgid report no error; -1 is never a valid id, so
	// these calls only return the current ones.
	fsuid, _ := unix.SetfsuidRetUid(-1)
	fsgid, _ := unix.SetfsgidRetGid(-1)
	if fsuid != 0 || fsgid != 0 {
		return err // leave the thread locked: it dies with this goroutine
	}
	runtime.UnlockOSThread()
	return err
}
