// Package store keeps the service's durable state, the part that survives a
// restart: the contents of uploaded and generated files, and the metadata
// of files, sessions, containers and stored responses. By default both are
// kept under one directory, the metadata in SQLite; Options moves the
// metadata to PostgreSQL and the contents to an S3-compatible bucket, which
// several processes can then share.
//
// Everything belongs to an owner (the id of an API key, or "" when the
// service runs without keys). Every lookup is by owner and id together: a
// record of another owner is reported exactly like a missing one, with
// ErrNotFound, and so is one whose ExpiresAt has passed.
//
// The layout under the store's directory is
//
//	codeexec.db        metadata (SQLite in WAL mode, with -wal and -shm beside it)
//	files/<file id>    the content of each file
//
// and in a bucket, <prefix><file id> is the content of each file.
//
// Contents are named by their generated id only, never by a name a user
// chose. Content storage sits behind a small internal interface (blobs:
// diskBlobs, s3Blobs). The Store's methods are written once, in SQL that
// both databases accept; what differs between them (placeholders, the
// schema's types, its version, locks) is the dialect's.
//
// A Store is safe for concurrent use. Only one Store (one process) may use a
// directory at a time.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" driver
)

var (
	// ErrNotFound means there is no such file or session for this owner:
	// it is missing, expired, or another owner's.
	ErrNotFound = errors.New("not found")
	// ErrTooLarge means a content is larger than the limit it was given.
	ErrTooLarge = errors.New("content too large")
	// ErrQuota means keeping a file would take its owner past its
	// storage quota (see Limits).
	ErrQuota = errors.New("storage quota exceeded")
)

// Store is the service's durable state. Open it with Open; its zero value
// is not usable.
type Store struct {
	// db is the pool that writes. With SQLite it is a single connection:
	// SQLite allows one writer at a time, and a single connection makes
	// writers queue in Go instead of failing with SQLITE_BUSY.
	db db
	// rdb holds connections that only read; in SQLite's WAL mode they run
	// concurrently with the writer and with each other. With PostgreSQL it
	// is db.
	rdb   db
	d     dialect
	blobs blobs
}

// Options choose where a Store keeps its state. The zero value keeps all of
// it under the directory given to Open.
type Options struct {
	// Database is the URL of a PostgreSQL database to keep the metadata in
	// (postgres://user@host:5432/db?sslmode=require, or any URL or
	// key=value string pgx accepts; a password is better given as
	// PGPASSWORD or in a passfile than in the URL). "" keeps it in SQLite,
	// in codeexec.db under the directory.
	Database string
	// BlobStore is the URL of an S3-compatible bucket to keep the contents
	// of files in: s3://bucket[/prefix]?endpoint=https://host:port&region=r
	// (see newS3Blobs). The credentials come from the environment
	// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN), never
	// from the URL. "" keeps the contents in files/ under the directory.
	BlobStore string
}

// Open opens the store, creating what is missing, and brings the
// database's schema up to date. The directory dir holds what opts leaves
// local (all of it by default) and is created if needed. Open fails if the
// database was written by a newer version with a schema this one does not
// know.
//
// Any number of processes may open the same PostgreSQL database and bucket
// at once: migrations run one at a time. A directory, and so an SQLite
// database, is for one process at a time.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	if opts.Database == "" || opts.BlobStore == "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
	}
	var (
		b   blobs
		err error
	)
	if opts.BlobStore == "" {
		b, err = newDiskBlobs(filepath.Join(dir, "files"))
	} else {
		b, err = newS3Blobs(ctx, opts.BlobStore, os.Getenv)
	}
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	var s *Store
	if opts.Database == "" {
		s, err = openSQLite(ctx, dir)
	} else {
		s, err = openPostgres(ctx, opts.Database)
	}
	if err != nil {
		return nil, err
	}
	s.blobs = b
	return s, nil
}

// openSQLite opens the SQLite database codeexec.db under dir.
func openSQLite(ctx context.Context, dir string) (*Store, error) {
	path, err := filepath.Abs(filepath.Join(dir, "codeexec.db"))
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}

	// synchronous=FULL makes each commit durable before it returns, so that
	// a file whose upload was answered is still there after a power loss.
	// _txlock=immediate takes the write lock at BEGIN, so a transaction
	// never has to upgrade a read lock, which SQLite can refuse without
	// waiting.
	d := sqliteDialect{}
	w, err := sql.Open("sqlite", dsn(path, url.Values{
		"_pragma": {"journal_mode(WAL)", "synchronous(FULL)"},
		"_txlock": {"immediate"},
	}))
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	w.SetMaxOpenConns(1)
	if err := migrate(ctx, db{w, d}); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn(path, url.Values{"_pragma": {"query_only(1)"}}))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open store: %w", err)
	}
	r.SetMaxOpenConns(max(4, runtime.GOMAXPROCS(0)))
	return &Store{db: db{w, d}, rdb: db{r, d}, d: d}, nil
}

// dsn returns the modernc.org/sqlite data source name for the database at
// the absolute path, with q (pragmas as "_pragma" values "name(value)", and
// the driver's parameters) plus the settings every connection needs.
func dsn(path string, q url.Values) string {
	// busy_timeout makes a connection wait for a lock (the writer's, or a
	// checkpoint's) instead of failing at once.
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(1)")
	// A file: URI keeps a path with '?' or '#' in it intact.
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path), RawQuery: q.Encode()}
	return u.String()
}

// Close closes the database. Contents opened with OpenFile stay readable
// until they are closed themselves.
func (s *Store) Close() error {
	if s.rdb.DB == s.db.DB {
		return s.db.Close()
	}
	return errors.Join(s.rdb.Close(), s.db.Close())
}

// migrations are the schema's versions: the database's user_version (in
// PostgreSQL, the table schema_version) says how many of them it has had.
// Only ever append to this list. They are written for SQLite; PostgreSQL
// runs them as postgresDialect.migration rewrites them (INTEGER is BIGINT,
// BLOB is BYTEA, no STRICT, and each table has a rowid column), so write
// them in SQL that survives that rewrite.
//
// Times are Unix microseconds, 0 for "never" (zero time.Time). A file's
// session_id is NULL when it belongs to no session; when set, the foreign key
// makes sure the session exists and has the same owner, and takes the file
// with it when the session's record goes.
var migrations = []string{
	`CREATE TABLE sessions (
		owner      TEXT NOT NULL,
		id         TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		ended_at   INTEGER NOT NULL,
		end_reason TEXT NOT NULL,
		PRIMARY KEY (owner, id)
	) STRICT;
	CREATE INDEX sessions_expires ON sessions (expires_at) WHERE expires_at != 0;
	CREATE INDEX sessions_live ON sessions (ended_at) WHERE ended_at = 0;

	CREATE TABLE files (
		id         TEXT PRIMARY KEY,
		owner      TEXT NOT NULL,
		filename   TEXT NOT NULL,
		purpose    TEXT NOT NULL,
		bytes      INTEGER NOT NULL,
		mime_type  TEXT NOT NULL,
		session_id TEXT,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		FOREIGN KEY (owner, session_id) REFERENCES sessions (owner, id) ON DELETE CASCADE
	) STRICT;
	CREATE INDEX files_owner ON files (owner, created_at);
	CREATE INDEX files_session ON files (owner, session_id, filename, created_at);
	CREATE INDEX files_expires ON files (expires_at) WHERE expires_at != 0;`,

	// Stored responses of the Responses API: the response object, the
	// request's input items, and the conversation a response that follows
	// it starts from, each as JSON.
	`CREATE TABLE responses (
		owner      TEXT NOT NULL,
		id         TEXT NOT NULL,
		created_at INTEGER NOT NULL,
		expires_at INTEGER NOT NULL,
		response   BLOB NOT NULL,
		input      BLOB NOT NULL,
		history    BLOB NOT NULL,
		PRIMARY KEY (owner, id)
	) STRICT;
	CREATE INDEX responses_expires ON responses (expires_at) WHERE expires_at != 0;`,

	// Containers (OpenAI's Containers API). A container is a session
	// with a few more fields; its row goes with the session's.
	`CREATE TABLE containers (
		owner          TEXT NOT NULL,
		id             TEXT NOT NULL,
		name           TEXT NOT NULL,
		expires_after  INTEGER NOT NULL,
		memory_limit   TEXT NOT NULL,
		last_active_at INTEGER NOT NULL,
		PRIMARY KEY (owner, id),
		FOREIGN KEY (owner, id) REFERENCES sessions (owner, id) ON DELETE CASCADE
	) STRICT;`,

	// Nodes: the processes sharing a database, each with the address
	// the others forward its sessions' requests to and a lease it
	// renews (node.go). A session records the node its sandbox runs on.
	`CREATE TABLE nodes (
		id          TEXT PRIMARY KEY,
		addr        TEXT NOT NULL,
		started_at  INTEGER NOT NULL,
		lease_until INTEGER NOT NULL
	) STRICT;
	ALTER TABLE sessions ADD COLUMN node TEXT NOT NULL DEFAULT '';
	CREATE INDEX sessions_node ON sessions (node) WHERE ended_at = 0;`,
}

// migrate brings db's schema up to the last of migrations in one
// transaction, so that a failure leaves the previous version intact.
func migrate(ctx context.Context, db db) error {
	t, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer t.Rollback()
	v, err := db.d.schemaVersion(ctx, t.Tx)
	if err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this program's %d", v, len(migrations))
	}
	if v == len(migrations) {
		return nil
	}
	for i := v; i < len(migrations); i++ {
		if _, err := t.Tx.ExecContext(ctx, db.d.migration(i)); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", i+1, err)
		}
	}
	if err := db.d.setSchemaVersion(ctx, t.Tx, len(migrations)); err != nil {
		return fmt.Errorf("set schema version: %w", err)
	}
	return t.Commit()
}

// DeleteExpired removes every file, session and stored response whose
// ExpiresAt is at or before now, together with the files of the removed sessions and their
// contents, and reports how many files and sessions it removed. It works
// across all owners; the service calls it periodically.
//
// If removing a content fails after its metadata went, DeleteExpired still
// removes the rest and returns the counts with the error; the content left
// on disk is no longer reachable.
func (s *Store) DeleteExpired(ctx context.Context, now time.Time) (files, sessions int, err error) {
	t := toDB(now)
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, 0, fmt.Errorf("delete expired: %w", err)
	}
	defer tx.Rollback()
	// The files of expired sessions are deleted here explicitly rather than
	// by the foreign key's cascade, to learn their ids.
	rows, err := tx.QueryContext(ctx, `DELETE FROM files
		WHERE (expires_at != 0 AND expires_at <= ?)
		OR EXISTS (SELECT 1 FROM sessions s
			WHERE s.owner = files.owner AND s.id = files.session_id
			AND s.expires_at != 0 AND s.expires_at <= ?)
		RETURNING id`, t, t)
	if err != nil {
		return 0, 0, fmt.Errorf("delete expired files: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, 0, fmt.Errorf("delete expired files: %w", err)
		}
		ids = append(ids, id)
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, 0, fmt.Errorf("delete expired files: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM responses WHERE expires_at != 0 AND expires_at <= ?`, t); err != nil {
		return 0, 0, fmt.Errorf("delete expired responses: %w", err)
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE expires_at != 0 AND expires_at <= ?`, t)
	if err != nil {
		return 0, 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, 0, fmt.Errorf("delete expired sessions: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, 0, fmt.Errorf("delete expired: %w", err)
	}

	// The metadata is gone, so these contents can no longer be reached;
	// removing them must not depend on ctx any more.
	ctx = context.WithoutCancel(ctx)
	var errs []error
	for _, id := range ids {
		if err := s.blobs.delete(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("delete content of %s: %w", id, err))
		}
	}
	return len(ids), int(n), errors.Join(errs...)
}

// toDB returns how t is kept in the database: Unix microseconds, 0 for the
// zero time.
func toDB(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// fromDB is the inverse of toDB, in UTC.
func fromDB(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return time.UnixMicro(us).UTC()
}
