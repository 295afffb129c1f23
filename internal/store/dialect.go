package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// A dialect is what differs between the SQL databases the store keeps its
// metadata in. The Store's methods are written once, in SQL that SQLite and
// PostgreSQL both accept, with ? placeholders; the dialect rewrites the
// placeholders (rebind), translates the migrations, keeps the schema's
// version, and takes the locks that SQLite's single writer makes
// unnecessary.
type dialect interface {
	// rebind returns query with its ? placeholders in the dialect's form.
	rebind(query string) string
	// migration returns migrations[i] in the dialect's SQL.
	migration(i int) string
	// schemaVersion is the first statement of the migration's transaction:
	// it waits until no other process migrates the same database, then
	// returns how many migrations the database has had.
	schemaVersion(ctx context.Context, tx *sql.Tx) (int, error)
	// setSchemaVersion records that the database has had v migrations.
	setSchemaVersion(ctx context.Context, tx *sql.Tx, v int) error
	// lockOwner makes the rest of tx wait for the other transactions that
	// took owner's lock, so that a statement that follows sees what they
	// committed.
	lockOwner(ctx context.Context, tx *sql.Tx, owner string) error
}

// sqliteDialect is SQLite's: the SQL as written. Its writes need no lock of
// their own, since the Store has a single writing connection and takes the
// database's write lock at BEGIN (_txlock=immediate).
type sqliteDialect struct{}

func (sqliteDialect) rebind(query string) string { return query }
func (sqliteDialect) migration(i int) string     { return migrations[i] }

func (sqliteDialect) schemaVersion(ctx context.Context, tx *sql.Tx) (v int, err error) {
	err = tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v)
	return v, err
}

func (sqliteDialect) setSchemaVersion(ctx context.Context, tx *sql.Tx, v int) error {
	// PRAGMA takes no parameters; the value is our own integer.
	_, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v))
	return err
}

func (sqliteDialect) lockOwner(context.Context, *sql.Tx, string) error { return nil }

// postgresDialect is PostgreSQL's. Several processes may share one
// database, so what SQLite's single writer serialises is serialised here
// with advisory locks that end with their transaction.
type postgresDialect struct {
	// rebound caches rebind's results: the queries are constants.
	rebound sync.Map
}

// migrateLock is the key of the advisory lock migrations take (the single
// bigint form; ownerLockClass's two int4 keys are another key space).
const migrateLock int64 = 0x636f646565786563 // "codeexec"

// ownerLockClass is the first key of an owner's advisory lock; the second
// is a hash of the owner. Owners whose hashes collide share a lock, which
// only makes them wait for each other.
const ownerLockClass int32 = 0x636f6465 // "code"

// pgSchema rewrites SQLite's schema into PostgreSQL's: an INTEGER there is
// 64-bit, a BLOB is BYTEA, and PostgreSQL's tables are always strict.
// SQLite's tables have an implicit rowid, which orders rows made in the
// same microsecond (ListFiles, SessionFile); PostgreSQL's get a column of
// that name, numbered as rows are inserted.
var pgSchema = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\bINTEGER\b`), "BIGINT"},
	{regexp.MustCompile(`\bBLOB\b`), "BYTEA"},
	{regexp.MustCompile(`\)\s*STRICT\b`), ")"},
	{regexp.MustCompile(`\bCREATE TABLE (\w+) \(`), "CREATE TABLE $1 (\n\t\trowid BIGINT GENERATED ALWAYS AS IDENTITY,"},
}

func (*postgresDialect) migration(i int) string {
	q := migrations[i]
	for _, r := range pgSchema {
		q = r.re.ReplaceAllString(q, r.with)
	}
	return q
}

func (d *postgresDialect) rebind(query string) string {
	if q, ok := d.rebound.Load(query); ok {
		return q.(string)
	}
	q := rebindDollar(query)
	d.rebound.Store(query, q)
	return q
}

// rebindDollar numbers the ? placeholders of query outside quoted strings
// and identifiers $1, $2, ...
func rebindDollar(query string) string {
	var b strings.Builder
	n := 0
	var quote byte // the quote we are inside of, or 0
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0 // a doubled quote leaves and re-enters at once
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func (*postgresDialect) schemaVersion(ctx context.Context, tx *sql.Tx) (v int, err error) {
	// The lock is held until tx ends: nodes starting at once migrate one
	// after the other, and the later ones find the schema up to date.
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, migrateLock); err != nil {
		return 0, fmt.Errorf("lock the schema: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)`); err != nil {
		return 0, err
	}
	err = tx.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return v, err
}

func (*postgresDialect) setSchemaVersion(ctx context.Context, tx *sql.Tx, v int) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM schema_version`); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES ($1)`, v)
	return err
}

func (*postgresDialect) lockOwner(ctx context.Context, tx *sql.Tx, owner string) error {
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1, hashtext($2))`, ownerLockClass, owner)
	return err
}

// isForeignKey reports whether err is the database refusing a row whose
// foreign key points at nothing.
func isForeignKey(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
	}
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23503" // foreign_key_violation
}

// db is a pool of connections to the metadata database that takes queries
// written with ? placeholders and rebinds them for its dialect.
type db struct {
	*sql.DB
	d dialect
}

func (db db) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return db.DB.ExecContext(ctx, db.d.rebind(query), args...)
}

func (db db) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return db.DB.QueryContext(ctx, db.d.rebind(query), args...)
}

func (db db) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return db.DB.QueryRowContext(ctx, db.d.rebind(query), args...)
}

func (db db) BeginTx(ctx context.Context, opts *sql.TxOptions) (tx, error) {
	t, err := db.DB.BeginTx(ctx, opts)
	return tx{t, db.d}, err
}

// tx is a transaction of db, rebinding like it.
type tx struct {
	*sql.Tx
	d dialect
}

func (tx tx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return tx.Tx.ExecContext(ctx, tx.d.rebind(query), args...)
}

func (tx tx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return tx.Tx.QueryContext(ctx, tx.d.rebind(query), args...)
}

func (tx tx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return tx.Tx.QueryRowContext(ctx, tx.d.rebind(query), args...)
}
