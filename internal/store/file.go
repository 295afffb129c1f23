package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"strings"
	"time"

	"codeexec/internal/ids"
)

// File is the metadata of a stored file.
type File struct {
	// ID is "file-" and a random id of package ids, chosen by
	// PutFile.
	ID string
	// Owner is the id of the API key that owns the file (a stable hash of
	// the key, never the key itself), or "" when the service runs without
	// keys.
	Owner string
	// Filename is the name the user sees, which may contain slashes (e.g.
	// "out.csv" or "plots/a.png"). The store keeps it as data only and never
	// uses it as a path; checking it is the caller's business.
	Filename string
	// Purpose is OpenAI's purpose of an uploaded file ("user_data",
	// "assistants", ...), or "execution_output" for a file a program made.
	Purpose string
	// Bytes is the size of the content, measured by PutFile.
	Bytes int64
	// MIMEType is the content's media type, as the caller decided it.
	MIMEType string
	// SessionID is the session the file was made in or uploaded to, or ""
	// for none. The session must exist and have the same Owner; the file
	// goes when the session's record goes.
	SessionID string
	// CreatedAt is when PutFile stored the file.
	CreatedAt time.Time
	// ExpiresAt is when the file stops being visible and may be removed by
	// DeleteExpired; the zero time means never.
	ExpiresAt time.Time
}

// filePrefix starts every file id.
const filePrefix = "file-"

// validFileID reports whether id has the form of an id made by PutFile. It
// is checked before an id reaches the database or the disk.
func validFileID(id string) bool {
	return len(id) == len(filePrefix)+ids.Len && strings.HasPrefix(id, filePrefix) && validID(id)
}

func fileNotFound(id string) error {
	return fmt.Errorf("file %q: %w", id, ErrNotFound)
}

// fileColumns are the columns scanFile reads, in its order.
const fileColumns = `id, owner, filename, purpose, bytes, mime_type, session_id, created_at, expires_at`

// liveFile is the condition for a file that has not expired at the time
// given as its parameter.
const liveFile = `(expires_at = 0 OR expires_at > ?)`

func scanFile(row interface{ Scan(...any) error }) (File, error) {
	var (
		f                File
		session          sql.NullString
		created, expires int64
	)
	err := row.Scan(&f.ID, &f.Owner, &f.Filename, &f.Purpose, &f.Bytes, &f.MIMEType, &session, &created, &expires)
	f.SessionID = session.String
	f.CreatedAt, f.ExpiresAt = fromDB(created), fromDB(expires)
	return f, err
}

// Limits bound what PutFile keeps.
type Limits struct {
	// MaxBytes caps the content's length (ErrTooLarge).
	MaxBytes int64
	// OwnerBytes and OwnerFiles cap what the file's owner keeps in all,
	// the new file included and expired files not counted (ErrQuota);
	// zero is no cap.
	OwnerBytes int64
	OwnerFiles int
}

// PutFile stores the content read from r with the metadata f, and returns
// the stored File with ID, Bytes and CreatedAt set (whatever f had in them
// is ignored) and times rounded to the microsecond as they are kept.
//
// The content may be at most lim.MaxBytes long; if r holds more, PutFile
// returns ErrTooLarge. If keeping it would take f.Owner past lim's
// OwnerBytes or OwnerFiles, it returns ErrQuota: the check and the insert
// are one statement, so concurrent PutFiles cannot pass the quota
// together. If f.SessionID names no session of f.Owner, it returns
// ErrNotFound. On any error nothing is kept, and no other file is
// touched.
func (s *Store) PutFile(ctx context.Context, f File, r io.Reader, lim Limits) (File, error) {
	ownerBytes, ownerFiles := int64(math.MaxInt64), int64(math.MaxInt64)
	if lim.OwnerBytes > 0 {
		ownerBytes = lim.OwnerBytes
	}
	if lim.OwnerFiles > 0 {
		ownerFiles = int64(lim.OwnerFiles)
	}
	// A first look at the owner's usage spares writing a content that
	// cannot be kept, and bounds it by the room left.
	limit, quotaBound := lim.MaxBytes, false
	if lim.OwnerBytes > 0 || lim.OwnerFiles > 0 {
		used, files, err := s.usage(ctx, s.rdb, f.Owner)
		if err != nil {
			return File{}, fmt.Errorf("put file: %w", err)
		}
		if files >= ownerFiles || used > ownerBytes {
			return File{}, fmt.Errorf("put file: %w", ErrQuota)
		}
		if room := ownerBytes - used; room < limit {
			limit, quotaBound = room, true
		}
	}
	f.ID = ids.New(filePrefix)
	f.CreatedAt = fromDB(toDB(time.Now()))
	f.ExpiresAt = fromDB(toDB(f.ExpiresAt))
	n, err := s.blobs.put(ctx, f.ID, r, limit)
	if errors.Is(err, ErrTooLarge) && quotaBound {
		err = ErrQuota
	}
	if err != nil {
		return File{}, fmt.Errorf("put file %s: %w", f.ID, err)
	}
	f.Bytes = n
	err = s.insertFile(ctx, f, ownerFiles, ownerBytes)
	if err != nil {
		// The content must go even when ctx is what made the insert fail.
		if derr := s.blobs.delete(context.WithoutCancel(ctx), f.ID); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove content: %w", derr))
		}
		if isForeignKey(err) {
			err = fmt.Errorf("session %q: %w", f.SessionID, ErrNotFound)
		}
		return File{}, fmt.Errorf("put file %s: %w", f.ID, err)
	}
	return f, nil
}

// insertFile records f unless that takes its owner past ownerFiles files or
// ownerBytes bytes (ErrQuota). The check and the insert are one statement.
// With SQLite's single writer that alone keeps concurrent PutFiles from
// passing the quota together. PostgreSQL takes a statement's snapshot when
// the statement starts, so there the owner's lock comes first: the
// statement starts once the PutFiles before it have committed, and counts
// their files.
func (s *Store) insertFile(ctx context.Context, f File, ownerFiles, ownerBytes int64) error {
	t, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer t.Rollback()
	if err := s.d.lockOwner(ctx, t.Tx, f.Owner); err != nil {
		return fmt.Errorf("lock the quota of %q: %w", f.Owner, err)
	}
	// The casts give PostgreSQL the types of the values the SELECT makes
	// (it would take them for text); SQLite's BIGINT is its INTEGER.
	now := toDB(time.Now())
	res, err := t.ExecContext(ctx, `INSERT INTO files (`+fileColumns+`)
		SELECT ?, ?, ?, ?, CAST(? AS BIGINT), ?, ?, CAST(? AS BIGINT), CAST(? AS BIGINT)
		WHERE (SELECT COUNT(*) FROM files WHERE owner = ? AND `+liveFile+`) < ?
		AND (SELECT COALESCE(SUM(bytes), 0) FROM files WHERE owner = ? AND `+liveFile+`) + ? <= ?`,
		f.ID, f.Owner, f.Filename, f.Purpose, f.Bytes, f.MIMEType,
		sql.NullString{String: f.SessionID, Valid: f.SessionID != ""},
		toDB(f.CreatedAt), toDB(f.ExpiresAt),
		f.Owner, now, ownerFiles, f.Owner, now, f.Bytes, ownerBytes)
	if err != nil {
		return err
	}
	if added, err := res.RowsAffected(); err != nil {
		return err
	} else if added == 0 {
		return ErrQuota
	}
	return t.Commit()
}

// usage returns the bytes and the number of owner's files that have not
// expired.
func (s *Store) usage(ctx context.Context, db db, owner string) (bytes, files int64, err error) {
	err = db.QueryRowContext(ctx, `SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT), COUNT(*) FROM files WHERE owner = ? AND `+liveFile,
		owner, toDB(time.Now())).Scan(&bytes, &files)
	if err != nil {
		return 0, 0, fmt.Errorf("usage of %q: %w", owner, err)
	}
	return bytes, files, nil
}

// File returns the metadata of owner's file id, or ErrNotFound.
func (s *Store) File(ctx context.Context, owner, id string) (File, error) {
	if !validFileID(id) {
		return File{}, fileNotFound(id)
	}
	f, err := scanFile(s.rdb.QueryRowContext(ctx,
		`SELECT `+fileColumns+` FROM files WHERE id = ? AND owner = ? AND `+liveFile,
		id, owner, toDB(time.Now())))
	if errors.Is(err, sql.ErrNoRows) {
		return File{}, fileNotFound(id)
	}
	if err != nil {
		return File{}, fmt.Errorf("get file %s: %w", id, err)
	}
	return f, nil
}

// OpenFile returns the content and the metadata of owner's file id, or
// ErrNotFound. The caller must close the content. From the directory it
// stays readable if the file is deleted meanwhile; from a bucket it is
// fetched as it is read, and a deletion may cut it short. With the File's
// Bytes, CreatedAt and MIMEType it is what http.ServeContent needs.
func (s *Store) OpenFile(ctx context.Context, owner, id string) (io.ReadSeekCloser, File, error) {
	f, err := s.File(ctx, owner, id)
	if err != nil {
		return nil, File{}, err
	}
	c, err := s.blobs.open(ctx, id)
	if errors.Is(err, fs.ErrNotExist) {
		// Deleted between the two steps.
		return nil, File{}, fileNotFound(id)
	}
	if err != nil {
		return nil, File{}, fmt.Errorf("open file %s: %w", id, err)
	}
	return c, f, nil
}

// DeleteFile removes owner's file id and its content, or returns
// ErrNotFound.
func (s *Store) DeleteFile(ctx context.Context, owner, id string) error {
	if !validFileID(id) {
		return fileNotFound(id)
	}
	res, err := s.db.ExecContext(ctx, `DELETE FROM files WHERE id = ? AND owner = ? AND `+liveFile,
		id, owner, toDB(time.Now()))
	if err != nil {
		return fmt.Errorf("delete file %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("delete file %s: %w", id, err)
	} else if n == 0 {
		return fileNotFound(id)
	}
	if err := s.blobs.delete(context.WithoutCancel(ctx), id); err != nil {
		return fmt.Errorf("delete content of file %s: %w", id, err)
	}
	return nil
}

// ListFiles returns owner's files, newest first: those of session
// sessionID, or all of them when sessionID is "". No files is not an
// error.
func (s *Store) ListFiles(ctx context.Context, owner, sessionID string) ([]File, error) {
	// rowid breaks ties of created_at in the order of insertion.
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+fileColumns+` FROM files
		WHERE owner = ? AND (? = '' OR session_id = ?) AND `+liveFile+`
		ORDER BY created_at DESC, rowid DESC`,
		owner, sessionID, sessionID, toDB(time.Now()))
	if err != nil {
		return nil, fmt.Errorf("list files: %w", err)
	}
	defer rows.Close()
	var files []File
	for rows.Next() {
		f, err := scanFile(rows)
		if err != nil {
			return nil, fmt.Errorf("list files: %w", err)
		}
		files = append(files, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list files: %w", err)
	}
	return files, nil
}

// SessionFile returns the newest of owner's files in session sessionID
// with that Filename, or ErrNotFound. It serves a session's files after
// its process is gone.
func (s *Store) SessionFile(ctx context.Context, owner, sessionID, filename string) (File, error) {
	f, err := scanFile(s.rdb.QueryRowContext(ctx, `SELECT `+fileColumns+` FROM files
		WHERE owner = ? AND session_id = ? AND filename = ? AND `+liveFile+`
		ORDER BY created_at DESC, rowid DESC LIMIT 1`,
		owner, sessionID, filename, toDB(time.Now())))
	if errors.Is(err, sql.ErrNoRows) {
		return File{}, fmt.Errorf("file %q of session %q: %w", filename, sessionID, ErrNotFound)
	}
	if err != nil {
		return File{}, fmt.Errorf("get file %q of session %s: %w", filename, sessionID, err)
	}
	return f, nil
}
