package store

import (
	"encoding/json"
	"errors"
	"testing"
	"time"
)

// A stored response is its owner's only, comes back as stored, can be
// replaced and deleted, and goes when it expires.
func TestResponses(t *testing.T) { forEachBackend(t, testResponses) }

func testResponses(t *testing.T, b backend) {
	s := b.newEnv(t).open(t)
	ctx := t.Context()
	r := Response{Owner: "k", ID: "resp_1", Response: json.RawMessage(`{"id":"resp_1"}`), Input: json.RawMessage(`[1]`),
		History: json.RawMessage(`[1,2]`), CreatedAt: time.Now()}
	if err := s.PutResponse(ctx, r); err != nil {
		t.Fatal(err)
	}
	got, err := s.Response(ctx, "k", "resp_1")
	if err != nil || string(got.Response) != `{"id":"resp_1"}` || string(got.Input) != `[1]` || string(got.History) != `[1,2]` {
		t.Errorf("Response = %+v, %v", got, err)
	}
	if _, err := s.Response(ctx, "other", "resp_1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another owner's Response = %v, want ErrNotFound", err)
	}
	if err := s.DeleteResponse(ctx, "other", "resp_1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("another owner's DeleteResponse = %v, want ErrNotFound", err)
	}
	if err := s.DeleteResponse(ctx, "k", "resp_1"); err != nil {
		t.Errorf("DeleteResponse = %v", err)
	}
	if _, err := s.Response(ctx, "k", "resp_1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted Response = %v, want ErrNotFound", err)
	}
	r.ID, r.ExpiresAt = "resp_2", time.Now().Add(-time.Second)
	if err := s.PutResponse(ctx, r); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Response(ctx, "k", "resp_2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired Response = %v, want ErrNotFound", err)
	}
	if _, _, err := s.DeleteExpired(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	var n int
	s.rdb.QueryRow(`SELECT COUNT(*) FROM responses`).Scan(&n)
	if n != 0 {
		t.Errorf("%d responses left after DeleteExpired, want 0", n)
	}
}
