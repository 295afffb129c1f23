package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"codeexec/internal/python"
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

// openBeneath opens p below dir with the RESOLVE_* flags above. It uses
// dir's descriptor inside SyscallConn().Control, which holds a reference
// on it: a dir closed meanwhile (its session ended) fails with
// os.ErrClosed, where a bare Fd() number could by then name the next
// child's directory.
func openBeneath(dir *os.File, p string, flags int, mode uint32) (*os.File, error) {
	raw, err := dir.SyscallConn()
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: p, Err: err}
	}
	fd := -1
	cerr := raw.Control(func(dfd uintptr) {
		fd, err = unix.Openat2(int(dfd), p, &unix.OpenHow{
			Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
			Mode:    uint64(mode),
			Resolve: resolveFlags,
		})
	})
	if cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, &os.PathError{Op: "openat2", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// placeWait bounds how long a child may take to take in its input files
// (it reads them from its socket as fast as it can write them to tmpfs).
const placeWait = time.Minute

// place writes files into the child's /mnt/data through the child itself,
// so that their pages are charged to the child's cgroup, not the server's:
// a Put frame, then each file's bytes on the socket. The child creates
// each file without following any symlink it or earlier code planted. A
// file that cannot be placed is an *InputError; the child stays usable.
// The child must be idle (between executions).
func (c *child) place(ctx context.Context, files []InputFile, l Limits) error {
	if len(files) == 0 {
		return nil
	}
	put := python.Put{Op: "put"}
	var total int64
	for _, f := range files {
		if err := CheckPath(f.Path); err != nil {
			return err
		}
		if f.Size < 0 || f.Open == nil {
			return fmt.Errorf("input file %s: no content", f.Path)
		}
		put.Files = append(put.Files, python.PutFile{Path: f.Path, Bytes: f.Size})
		total += f.Size
	}
	// tmpfs pages count against the memory limit: more would only get
	// the sandbox OOM-killed while it writes them.
	if room := l.MemoryBytes - placeReserve; total > room {
		return &InputError{"files", fmt.Sprintf("input files of %d MiB do not fit the sandbox's memory limit of %d MiB", total>>20, l.MemoryBytes>>20)}
	}
	// Open every content before sending any: once the put frame is sent,
	// a failure leaves the stream out of step and costs the child (and a
	// session its process).
	contents := make([]io.ReadCloser, 0, len(files))
	defer func() {
		for _, rc := range contents {
			rc.Close()
		}
	}()
	for _, f := range files {
		rc, err := f.Open()
		if err != nil {
			return fmt.Errorf("open input file %s: %w", f.Path, err)
		}
		contents = append(contents, rc)
	}
	c.budget.Store(64 << 10)
	c.open.Store(true)
	defer c.open.Store(false)
	c.conn.SetWriteDeadline(time.Now().Add(placeWait))
	defer c.conn.SetWriteDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { c.conn.SetWriteDeadline(time.Now()) })
	defer stop()
	err := python.WriteFrame(c.conn, put)
	for i, f := range files {
		if err != nil {
			break
		}
		var n int64
		n, err = io.CopyN(c.conn, contents[i], f.Size)
		if err == io.EOF {
			err = fmt.Errorf("input file %s ended after %d of its %d bytes", f.Path, n, f.Size)
		}
	}
	if err != nil {
		c.kill() // the stream is out of step: the child is of no further use
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("send input files to sandbox: %w", err)
	}
	var fr frame
	select {
	case fr = <-c.frames:
	case <-ctx.Done():
		c.kill()
		return ctx.Err()
	case <-time.After(placeWait):
		c.kill()
		return errors.New("the sandbox did not take its input files in time")
	}
	switch {
	case fr.ev != nil && fr.ev.Type == "put" && fr.ev.Error == nil:
		return nil
	case fr.ev != nil && fr.ev.Type == "put":
		msg := fr.ev.Error.Value
		// The runner's OSError, known only as its text: strerror(3) of
		// ENOSPC (the work directory is full) or EFBIG (over the file
		// size limit).
		if strings.Contains(msg, "No space left") || strings.Contains(msg, "File too large") {
			msg = "input files exceed the size of the work directory (" + msg + ")"
		}
		return &InputError{"files", "cannot place input file " + msg}
	case fr.err == nil && fr.ev == nil && fr.over == 0:
		return &InputError{"files", fmt.Sprintf("the sandbox ended while it took its input files (its memory limit is %d MiB)", l.MemoryBytes>>20)}
	default:
		c.kill()
		return &InputError{"files", "the sandbox broke the protocol while it took its input files"}
	}
}

// placeReserve is the memory a sandbox keeps for itself beside its input
// files.
const placeReserve = 32 << 20

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
		f := File{Path: p, Bytes: after[p].size, MIMEType: MIMEType(p)}
		if sink != nil {
			id, err := c.storeFile(ctx, p, sink)
			if err != nil {
				f.Error = "not stored: " + err.Error()
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
		c.p.log.Warn("open output file", "err", err, "sandbox_id", c.id)
		return "", errors.New("it changed or went while it was being stored")
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
