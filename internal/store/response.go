package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Response is a stored response of the Responses API. The store keeps its
// parts as JSON it does not look into.
type Response struct {
	// Owner and ID identify it; the ID is chosen by the caller.
	Owner, ID string
	// Response is the response object; Input the request's input items;
	// History the conversation a response that follows it starts from.
	Response json.RawMessage
	Input    json.RawMessage
	History  json.RawMessage
	// CreatedAt is when it was made; ExpiresAt when it goes (zero: never).
	CreatedAt, ExpiresAt time.Time
}

// PutResponse stores r, replacing a response of the same owner and id.
func (s *Store) PutResponse(ctx context.Context, r Response) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO responses
		(owner, id, created_at, expires_at, response, input, history) VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (owner, id) DO UPDATE SET created_at = excluded.created_at, expires_at = excluded.expires_at,
			response = excluded.response, input = excluded.input, history = excluded.history`,
		r.Owner, r.ID, toDB(r.CreatedAt), toDB(r.ExpiresAt), []byte(r.Response), []byte(r.Input), []byte(r.History))
	if err != nil {
		return fmt.Errorf("put response %s: %w", r.ID, err)
	}
	return nil
}

// Response returns owner's stored response id, or ErrNotFound.
func (s *Store) Response(ctx context.Context, owner, id string) (Response, error) {
	r := Response{Owner: owner, ID: id}
	var created, expires int64
	var resp, input, history []byte
	err := s.rdb.QueryRowContext(ctx, `SELECT created_at, expires_at, response, input, history FROM responses
		WHERE owner = ? AND id = ? AND (expires_at = 0 OR expires_at > ?)`, owner, id, toDB(time.Now())).
		Scan(&created, &expires, &resp, &input, &history)
	if errors.Is(err, sql.ErrNoRows) {
		return Response{}, fmt.Errorf("response %q: %w", id, ErrNotFound)
	}
	if err != nil {
		return Response{}, fmt.Errorf("get response %s: %w", id, err)
	}
	r.CreatedAt, r.ExpiresAt = fromDB(created), fromDB(expires)
	r.Response, r.Input, r.History = resp, input, history
	return r, nil
}

// DeleteResponse removes owner's stored response id, or returns
// ErrNotFound.
func (s *Store) DeleteResponse(ctx context.Context, owner, id string) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM responses WHERE owner = ? AND id = ? AND (expires_at = 0 OR expires_at > ?)`,
		owner, id, toDB(time.Now()))
	if err != nil {
		return fmt.Errorf("delete response %s: %w", id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("delete response %s: %w", id, err)
	} else if n == 0 {
		return fmt.Errorf("response %q: %w", id, ErrNotFound)
	}
	return nil
}
