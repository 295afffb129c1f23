package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Session is the record of a session: what is left of it when its process
// is gone, e.g. after a restart.
type Session struct {
	// ID is the session's id ("sess_..."), chosen by the caller (see ids.New).
	ID string
	// Owner is the id of the API key that owns the session, as in File.
	Owner string
	// CreatedAt is when the session started.
	CreatedAt time.Time
	// ExpiresAt is when the session's record and its files go (see
	// DeleteExpired); the zero time means never.
	ExpiresAt time.Time
	// EndedAt is when the session's process ended, zero while it lives.
	EndedAt time.Time
	// EndReason says why it ended: "deleted", "idle_timeout",
	// "max_lifetime", "restart", "killed", "node_lost" and others; ""
	// while it lives.
	EndReason string
	// Node is the id of the node (process) its sandbox runs on, "" when
	// the store is not shared (see PutNode). It is recorded once, when
	// the session is.
	Node string
}

// PutSession records sess, or updates the record of owner sess.Owner with
// id sess.ID: its ExpiresAt, EndedAt and EndReason change, its CreatedAt
// stays. A zero CreatedAt is recorded as the current time. Times are kept
// to the microsecond.
func (s *Store) PutSession(ctx context.Context, sess Session) error {
	if sess.ID == "" {
		return errors.New("put session: empty id")
	}
	if sess.CreatedAt.IsZero() {
		sess.CreatedAt = time.Now()
	}
	// Not INSERT OR REPLACE: replacing deletes the old row first, and the
	// foreign key would take the session's files with it.
	_, err := s.db.ExecContext(ctx, putSession, sess.Owner, sess.ID, toDB(sess.CreatedAt), toDB(sess.ExpiresAt), toDB(sess.EndedAt), sess.EndReason, sess.Node)
	if err != nil {
		return fmt.Errorf("put session %s: %w", sess.ID, err)
	}
	return nil
}

// putSession records a session (PutSession, PutContainer).
const putSession = `INSERT INTO sessions (owner, id, created_at, expires_at, ended_at, end_reason, node)
	VALUES (?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (owner, id) DO UPDATE SET
		expires_at = excluded.expires_at, ended_at = excluded.ended_at, end_reason = excluded.end_reason`

// Session returns the record of owner's session id, or ErrNotFound. A
// session that has ended is still found until its ExpiresAt.
func (s *Store) Session(ctx context.Context, owner, id string) (Session, error) {
	var (
		sess                    = Session{ID: id, Owner: owner}
		created, expires, ended int64
	)
	err := s.rdb.QueryRowContext(ctx, `SELECT created_at, expires_at, ended_at, end_reason, node FROM sessions
		WHERE owner = ? AND id = ? AND (expires_at = 0 OR expires_at > ?)`,
		owner, id, toDB(time.Now())).Scan(&created, &expires, &ended, &sess.EndReason, &sess.Node)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, fmt.Errorf("session %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Session{}, fmt.Errorf("get session %s: %w", id, err)
	}
	sess.CreatedAt, sess.ExpiresAt, sess.EndedAt = fromDB(created), fromDB(expires), fromDB(ended)
	return sess, nil
}

// EndLiveSessions marks every session that has not ended, of all owners, as
// ended at the time at for reason, and returns how many it marked. The
// service calls it at start-up with reason "restart": no session's process
// survives a restart. It leaves ExpiresAt alone.
func (s *Store) EndLiveSessions(ctx context.Context, reason string, at time.Time) (int, error) {
	if at.IsZero() {
		return 0, errors.New("end live sessions: zero time")
	}
	res, err := s.db.ExecContext(ctx, `UPDATE sessions SET ended_at = ?, end_reason = ? WHERE ended_at = 0`,
		toDB(at), reason)
	if err != nil {
		return 0, fmt.Errorf("end live sessions: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("end live sessions: %w", err)
	}
	return int(n), nil
}
