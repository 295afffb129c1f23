package store

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNodes(t *testing.T) { forEachBackend(t, testNodes) }

// testNodes walks the life of two nodes: a session is found with its
// node, a lapsed lease cannot be renewed, EndOrphanSessions ends exactly
// the sessions of nodes without a lease, and a node that registers again
// at an address replaces its earlier life.
func testNodes(t *testing.T, b backend) {
	s := b.newEnv(t).open(t)
	ctx := t.Context()
	if got, want := s.Shared(), b.meta == "postgres"; got != want {
		t.Errorf("Shared() = %v, want %v", got, want)
	}
	now := time.Now().Truncate(time.Microsecond).UTC()
	alive := Node{ID: "node_a", Addr: "10.0.0.1:8080", StartedAt: now.Add(-time.Minute), LeaseUntil: now.Add(time.Minute)}
	dead := Node{ID: "node_b", Addr: "10.0.0.2:8080", StartedAt: now.Add(-time.Hour), LeaseUntil: now.Add(-time.Second)}
	for _, n := range []Node{alive, dead} {
		if err := s.PutNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	sessions := []Session{
		{ID: "sess_a", Owner: "k", CreatedAt: now, Node: alive.ID},
		{ID: "sess_b", Owner: "k", CreatedAt: now, Node: dead.ID},
		{ID: "sess_none", Owner: "k", CreatedAt: now}, // a node that never registered
		{ID: "sess_done", Owner: "k", CreatedAt: now, Node: dead.ID, EndedAt: now, EndReason: "deleted"},
	}
	for _, sess := range sessions {
		if err := s.PutSession(ctx, sess); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutContainer(ctx, Container{Session: Session{ID: "cntr_a", Owner: "k", CreatedAt: now, Node: alive.ID}, Name: "c", MemoryLimit: "1g"}); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Container(ctx, "k", "cntr_a"); err != nil || c.Node != alive.ID {
		t.Errorf("Container(cntr_a).Node = %q, %v, want %q", c.Node, err, alive.ID)
	}

	sess, n, err := s.SessionNode(ctx, "k", "sess_a")
	if err != nil || !cmp.Equal(sess, sessions[0]) || !cmp.Equal(n, alive) {
		t.Errorf("SessionNode(sess_a) = %+v, %+v, %v, want %+v, %+v", sess, n, err, sessions[0], alive)
	}
	if _, n, err := s.SessionNode(ctx, "k", "sess_none"); err != nil || n != (Node{}) {
		t.Errorf("SessionNode(sess_none) = %+v, %v, want the zero Node", n, err)
	}
	if _, _, err := s.SessionNode(ctx, "other", "sess_a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("SessionNode of another owner = %v, want ErrNotFound", err)
	}

	if ok, err := s.RenewNode(ctx, alive.ID, now, now.Add(2*time.Minute)); err != nil || !ok {
		t.Errorf("RenewNode(alive) = %v, %v, want true", ok, err)
	}
	if ok, err := s.RenewNode(ctx, dead.ID, now, now.Add(2*time.Minute)); err != nil || ok {
		t.Errorf("RenewNode(lapsed) = %v, %v, want false: its sessions may be ended already", ok, err)
	}

	expires := now.Add(24 * time.Hour)
	if got, err := s.EndOrphanSessions(ctx, now, expires); err != nil || got != 2 {
		t.Fatalf("EndOrphanSessions = %d, %v, want 2 (sess_b, sess_none)", got, err)
	}
	for _, id := range []string{"sess_b", "sess_none"} {
		got, n, err := s.SessionNode(ctx, "k", id)
		if err != nil || !got.EndedAt.Equal(now) || got.EndReason != "node_lost" || !got.ExpiresAt.Equal(expires) || n != (Node{}) {
			t.Errorf("SessionNode(%s) after EndOrphanSessions = %+v, %+v, %v, want ended node_lost at %v expiring %v, node record gone", id, got, n, err, now, expires)
		}
	}
	if got, err := s.Session(ctx, "k", "sess_a"); err != nil || !got.EndedAt.IsZero() {
		t.Errorf("the session of a node with a lease = %+v, %v, want it live", got, err)
	}
	if got, err := s.Session(ctx, "k", "sess_done"); err != nil || got.EndReason != "deleted" {
		t.Errorf("an ended session = %+v, %v, want it unchanged", got, err)
	}
	if got, err := s.EndOrphanSessions(ctx, now, expires); err != nil || got != 0 {
		t.Errorf("EndOrphanSessions again = %d, %v, want 0", got, err)
	}

	// The node restarts at its address: its earlier life is over.
	again := Node{ID: "node_a2", Addr: alive.Addr, StartedAt: now, LeaseUntil: now.Add(time.Minute)}
	if err := s.PutNode(ctx, again); err != nil {
		t.Fatal(err)
	}
	if got, err := s.EndOrphanSessions(ctx, now, expires); err != nil || got != 2 {
		t.Errorf("EndOrphanSessions after the restart = %d, %v, want 2 (sess_a, cntr_a)", got, err)
	}
	if ok, err := s.RenewNode(ctx, alive.ID, now, now.Add(time.Minute)); err != nil || ok {
		t.Errorf("RenewNode(replaced) = %v, %v, want false", ok, err)
	}
	if err := s.PutSession(ctx, Session{ID: "sess_a2", Owner: "k", Node: again.ID}); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveNode(ctx, again.ID); err != nil {
		t.Fatal(err)
	}
	if _, n, err := s.SessionNode(ctx, "k", "sess_a2"); err != nil || n != (Node{}) {
		t.Errorf("SessionNode after RemoveNode = %+v, %v, want the zero Node", n, err)
	}
}
