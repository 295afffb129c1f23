package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// blobs holds the contents of files, named by file id. It is all the store
// asks of its content storage: diskBlobs keeps them in a local directory,
// s3Blobs in an S3-compatible bucket.
//
// Callers pass only ids that validID accepts; implementations check again,
// since an id becomes part of a path or an object key.
type blobs interface {
	// put stores at most limit bytes from r under id and returns how many it
	// stored. If r holds more than limit bytes it stores nothing and returns
	// ErrTooLarge; on any error nothing is left behind. The content is
	// durable when put returns.
	put(ctx context.Context, id string, r io.Reader, limit int64) (int64, error)
	// open returns the content stored under id, or an error matching
	// fs.ErrNotExist.
	open(ctx context.Context, id string) (io.ReadSeekCloser, error)
	// delete removes the content stored under id. Deleting a missing id is
	// not an error.
	delete(ctx context.Context, id string) error
}

// diskBlobs keeps each content as the file dir/<id>. A content is written to
// a temporary file in dir first and renamed into place once complete, so a
// crash leaves no partial content under an id, only temporaries, which
// newDiskBlobs removes.
type diskBlobs struct {
	dir string
	// syncDir makes dir's entries durable (syncDir below); a test
	// replaces it to see when it runs.
	syncDir func(dir string) error
}

// tempPrefix starts the names of contents being written. validID never
// accepts it, so a temporary can never be opened by id.
const tempPrefix = ".tmp-"

func newDiskBlobs(dir string) (*diskBlobs, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	// Only one store may use dir at a time (SQLite's locking does not extend
	// to it), so whatever temporaries are there were left by a crash.
	temps, err := filepath.Glob(filepath.Join(dir, tempPrefix+"*"))
	if err != nil {
		return nil, err
	}
	for _, t := range temps {
		if err := os.Remove(t); err != nil {
			return nil, fmt.Errorf("remove leftover %s: %w", t, err)
		}
	}
	return &diskBlobs{dir: dir, syncDir: syncDir}, nil
}

// syncDir fsyncs the directory dir. A rename is durable only once the
// directory holding it is synced (fsync(2): syncing a file "does not
// necessarily ensure that the entry in the directory containing the file
// has also reached disk").
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func (b *diskBlobs) path(id string) (string, error) {
	if !validID(id) {
		return "", fmt.Errorf("invalid content id %q: %w", id, fs.ErrNotExist)
	}
	return filepath.Join(b.dir, id), nil
}

func (b *diskBlobs) put(ctx context.Context, id string, r io.Reader, limit int64) (n int64, err error) {
	p, err := b.path(id)
	if err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(b.dir, tempPrefix+"*")
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	// Read one byte more than allowed to tell "exactly limit" from "more".
	n, err = io.Copy(f, io.LimitReader(ctxReader{ctx, r}, limit+1))
	if err != nil {
		return 0, fmt.Errorf("write content %s: %w", id, err)
	}
	if n > limit {
		return 0, ErrTooLarge
	}
	// Sync before the rename so that after a crash the name never points at
	// missing data.
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("sync content %s: %w", id, err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("write content %s: %w", id, err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return 0, fmt.Errorf("store content %s: %w", id, err)
	}
	// The caller commits metadata naming id once put returns: the new name
	// must be on disk first, or after a power loss the metadata could name
	// a content that is not there.
	if err := b.syncDir(b.dir); err != nil {
		os.Remove(p)
		return 0, fmt.Errorf("sync content %s: %w", id, err)
	}
	return n, nil
}

func (b *diskBlobs) open(_ context.Context, id string) (io.ReadSeekCloser, error) {
	p, err := b.path(id)
	if err != nil {
		return nil, err
	}
	return os.Open(p)
}

func (b *diskBlobs) delete(_ context.Context, id string) error {
	p, err := b.path(id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// validID reports whether id is safe to use as a file name and an object
// key: 1 to 64 ASCII letters, digits, '-' or '_'. Without '.' and '/'
// there is no "..", no separator and no temporary name.
func validID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	return strings.IndexFunc(id, func(r rune) bool {
		return !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '-' || r == '_')
	}) < 0
}

// ctxReader stops reading once ctx is done, so that an upload whose request
// was cancelled does not keep copying.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
