package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Container is the record of a container, OpenAI's name for a sandbox
// that code_interpreter runs in: a session (its ID is "cntr_...") with a
// name, an idle expiry and a memory limit. Its files are the session's.
type Container struct {
	Session
	// Name is the name its creator gave it.
	Name string
	// ExpiresAfter is how long it lives without being used (OpenAI's
	// expires_after.minutes, anchored at LastActiveAt).
	ExpiresAfter time.Duration
	// MemoryLimit is OpenAI's memory_limit: "1g", "4g", "16g" or "64g".
	MemoryLimit string
	// LastActiveAt is when it was last used (created, or ran code).
	LastActiveAt time.Time
}

// PutContainer records c and its session in one transaction, or updates
// them: the session as PutSession does, and the container's LastActiveAt
// (its Name, ExpiresAfter and MemoryLimit stay as first recorded).
func (s *Store) PutContainer(ctx context.Context, c Container) error {
	if c.ID == "" {
		return errors.New("put container: empty id")
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now()
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("put container %s: %w", c.ID, err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, putSession,
		c.Owner, c.ID, toDB(c.CreatedAt), toDB(c.ExpiresAt), toDB(c.EndedAt), c.EndReason, c.Node); err != nil {
		return fmt.Errorf("put container %s: %w", c.ID, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO containers (owner, id, name, expires_after, memory_limit, last_active_at)
		VALUES (?, ?, ?, ?, ?, ?)
		ON CONFLICT (owner, id) DO UPDATE SET last_active_at = excluded.last_active_at`,
		c.Owner, c.ID, c.Name, c.ExpiresAfter.Microseconds(), c.MemoryLimit, toDB(c.LastActiveAt)); err != nil {
		return fmt.Errorf("put container %s: %w", c.ID, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("put container %s: %w", c.ID, err)
	}
	return nil
}

// containerColumns are the columns scanContainer reads, in its order, of
// containers c joined with sessions s.
const containerColumns = `s.id, s.owner, s.created_at, s.expires_at, s.ended_at, s.end_reason, s.node,
	c.name, c.expires_after, c.memory_limit, c.last_active_at`

func scanContainer(row interface{ Scan(...any) error }) (Container, error) {
	var (
		c                                      Container
		created, expires, ended, after, active int64
	)
	err := row.Scan(&c.ID, &c.Owner, &created, &expires, &ended, &c.EndReason, &c.Node,
		&c.Name, &after, &c.MemoryLimit, &active)
	c.CreatedAt, c.ExpiresAt, c.EndedAt = fromDB(created), fromDB(expires), fromDB(ended)
	c.ExpiresAfter = time.Duration(after) * time.Microsecond
	c.LastActiveAt = fromDB(active)
	return c, err
}

// Container returns the record of owner's container id, or ErrNotFound
// (also for a session that is not a container). Like a session, an ended
// container is found until its ExpiresAt.
func (s *Store) Container(ctx context.Context, owner, id string) (Container, error) {
	c, err := scanContainer(s.rdb.QueryRowContext(ctx, `SELECT `+containerColumns+`
		FROM containers c JOIN sessions s ON s.owner = c.owner AND s.id = c.id
		WHERE c.owner = ? AND c.id = ? AND (s.expires_at = 0 OR s.expires_at > ?)`,
		owner, id, toDB(time.Now())))
	if errors.Is(err, sql.ErrNoRows) {
		return Container{}, fmt.Errorf("container %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Container{}, fmt.Errorf("get container %s: %w", id, err)
	}
	return c, nil
}

// ContainerQuery selects a page of containers (OpenAI's list parameters).
type ContainerQuery struct {
	// After is the id of the container the page starts after ("" for
	// the first page); one that is not found gives an empty page.
	After string
	// Limit is the page's size; 0 or less means 20.
	Limit int
	// Ascending orders oldest first; by default newest first.
	Ascending bool
	// Name, when set, keeps only the containers of that name.
	Name string
}

// ListContainers returns a page of owner's containers, ended ones
// included until they expire, and whether more follow it.
func (s *Store) ListContainers(ctx context.Context, owner string, q ContainerQuery) ([]Container, bool, error) {
	limit := q.Limit
	if limit <= 0 {
		limit = 20
	}
	// rowid breaks ties of created_at in the order of insertion.
	cmp, order := "<", "DESC"
	if q.Ascending {
		cmp, order = ">", "ASC"
	}
	rows, err := s.rdb.QueryContext(ctx, `SELECT `+containerColumns+`
		FROM containers c JOIN sessions s ON s.owner = c.owner AND s.id = c.id
		WHERE c.owner = ? AND (s.expires_at = 0 OR s.expires_at > ?) AND (? = '' OR c.name = ?)
		AND (? = '' OR (s.created_at, s.rowid) `+cmp+` (SELECT created_at, rowid FROM sessions WHERE owner = ? AND id = ?))
		ORDER BY s.created_at `+order+`, s.rowid `+order+` LIMIT ?`,
		owner, toDB(time.Now()), q.Name, q.Name, q.After, owner, q.After, limit+1)
	if err != nil {
		return nil, false, fmt.Errorf("list containers: %w", err)
	}
	defer rows.Close()
	var out []Container
	for rows.Next() {
		c, err := scanContainer(rows)
		if err != nil {
			return nil, false, fmt.Errorf("list containers: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("list containers: %w", err)
	}
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}
