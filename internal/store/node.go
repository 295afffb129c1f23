package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Node is a process of the service that shares the store's database with
// others. Each session records the node its sandbox runs on; a request
// for it that reaches another node is forwarded to Addr. A node is alive
// while its lease lasts: it renews it well before LeaseUntil, and when it
// stops doing so its sessions are over (EndOrphanSessions).
type Node struct {
	// ID is the node's id ("node_..."), new each time a process starts.
	ID string
	// Addr is the host:port the other nodes reach it at; "" when it
	// takes no forwarded requests.
	Addr string
	// StartedAt is when it registered.
	StartedAt time.Time
	// LeaseUntil is when it stops counting as alive unless renewed.
	LeaseUntil time.Time
}

// Shared reports whether other processes may use the store's metadata at
// the same time, that is whether it is kept in PostgreSQL.
func (s *Store) Shared() bool {
	_, ok := s.d.(*postgresDialect)
	return ok
}

// PutNode registers n, or renews its lease unconditionally. A node that
// registers at an address replaces every other node recorded at it: two
// processes cannot listen on one address, so those are the earlier
// lives of this one, and EndOrphanSessions ends their sessions.
func (s *Store) PutNode(ctx context.Context, n Node) error {
	if n.ID == "" {
		return errors.New("put node: empty id")
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("put node %s: %w", n.ID, err)
	}
	defer tx.Rollback()
	if n.Addr != "" {
		if _, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE addr = ? AND id != ?`, n.Addr, n.ID); err != nil {
			return fmt.Errorf("put node %s: %w", n.ID, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO nodes (id, addr, started_at, lease_until) VALUES (?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until`,
		n.ID, n.Addr, toDB(n.StartedAt), toDB(n.LeaseUntil)); err != nil {
		return fmt.Errorf("put node %s: %w", n.ID, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("put node %s: %w", n.ID, err)
	}
	return nil
}

// RenewNode extends node id's lease to until, if it still holds one at
// now. It returns false when the lease had lapsed or the node's record is
// gone: the other nodes may have ended its sessions already, so the node
// must end them too before it registers again.
func (s *Store) RenewNode(ctx context.Context, id string, now, until time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, `UPDATE nodes SET lease_until = ? WHERE id = ? AND lease_until > ?`,
		toDB(until), id, toDB(now))
	if err != nil {
		return false, fmt.Errorf("renew node %s: %w", id, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("renew node %s: %w", id, err)
	}
	return n == 1, nil
}

// RemoveNode deletes node id's record: it has stopped, and its sessions
// with it (their records say so already, or EndOrphanSessions will).
func (s *Store) RemoveNode(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, `DELETE FROM nodes WHERE id = ?`, id); err != nil {
		return fmt.Errorf("remove node %s: %w", id, err)
	}
	return nil
}

// SessionNode returns the record of owner's session id, as Session does,
// with the node it runs on: the zero Node when the session's node has no
// record (it is gone, or the store is not shared).
func (s *Store) SessionNode(ctx context.Context, owner, id string) (Session, Node, error) {
	var (
		sess                    = Session{ID: id, Owner: owner}
		n                       Node
		created, expires, ended int64
		nodeID, addr            sql.NullString
		started, lease          sql.NullInt64
	)
	err := s.rdb.QueryRowContext(ctx, `SELECT s.created_at, s.expires_at, s.ended_at, s.end_reason, s.node,
			n.id, n.addr, n.started_at, n.lease_until
		FROM sessions s LEFT JOIN nodes n ON n.id = s.node
		WHERE s.owner = ? AND s.id = ? AND (s.expires_at = 0 OR s.expires_at > ?)`,
		owner, id, toDB(time.Now())).Scan(&created, &expires, &ended, &sess.EndReason, &sess.Node,
		&nodeID, &addr, &started, &lease)
	if errors.Is(err, sql.ErrNoRows) {
		return Session{}, Node{}, fmt.Errorf("session %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Session{}, Node{}, fmt.Errorf("get session %s: %w", id, err)
	}
	sess.CreatedAt, sess.ExpiresAt, sess.EndedAt = fromDB(created), fromDB(expires), fromDB(ended)
	if nodeID.Valid {
		n = Node{ID: nodeID.String, Addr: addr.String, StartedAt: fromDB(started.Int64), LeaseUntil: fromDB(lease.Int64)}
	}
	return sess, n, nil
}

// EndOrphanSessions ends, at now and for reason "node_lost", every live
// session whose node holds no lease at now (it died, or stalled past its
// lease), sets their ExpiresAt to expires as a session's end does, and
// deletes the records of the nodes whose leases have lapsed. It returns
// how many sessions it ended. Any node may call it at any time: the
// sessions of a node with a lease are never touched.
func (s *Store) EndOrphanSessions(ctx context.Context, now, expires time.Time) (int, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("end orphan sessions: %w", err)
	}
	defer tx.Rollback()
	t := toDB(now)
	res, err := tx.ExecContext(ctx, `UPDATE sessions SET ended_at = ?, end_reason = 'node_lost', expires_at = ?
		WHERE ended_at = 0 AND NOT EXISTS (SELECT 1 FROM nodes n WHERE n.id = sessions.node AND n.lease_until > ?)`,
		t, toDB(expires), t)
	if err != nil {
		return 0, fmt.Errorf("end orphan sessions: %w", err)
	}
	ended, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("end orphan sessions: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM nodes WHERE lease_until <= ?`, t); err != nil {
		return 0, fmt.Errorf("end orphan sessions: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("end orphan sessions: %w", err)
	}
	return int(ended), nil
}
