package store

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"codeexec/internal/ids"
)

func TestContainers(t *testing.T) { forEachBackend(t, testContainers) }

func testContainers(t *testing.T, b backend) {
	e := b.newEnv(t)
	s := e.open(t)
	ctx := t.Context()
	base := time.Now().Add(-time.Hour).Truncate(time.Microsecond).UTC()
	var want []Container
	for i, name := range []string{"a", "b", "a", "c"} {
		c := Container{
			Session:      Session{ID: ids.New("cntr_"), Owner: "k1", CreatedAt: base.Add(time.Duration(i) * time.Minute)},
			Name:         name,
			ExpiresAfter: 20 * time.Minute,
			MemoryLimit:  "1g",
			LastActiveAt: base.Add(time.Duration(i) * time.Minute),
		}
		if err := s.PutContainer(ctx, c); err != nil {
			t.Fatal(err)
		}
		want = append(want, c)
	}
	// A plain session and another owner's container are not listed.
	if err := s.PutSession(ctx, Session{ID: ids.New("sess_"), Owner: "k1"}); err != nil {
		t.Fatal(err)
	}
	other := Container{Session: Session{ID: ids.New("cntr_"), Owner: "k2"}, Name: "a", MemoryLimit: "4g"}
	if err := s.PutContainer(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Container(ctx, "k1", other.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("another owner's container = %v, want ErrNotFound", err)
	}

	got, err := s.Container(ctx, "k1", want[1].ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(want[1], got); d != "" {
		t.Errorf("Container (-want +got):\n%s", d)
	}

	ids := func(cs []Container) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.ID)
		}
		return out
	}
	page, more, err := s.ListContainers(ctx, "k1", ContainerQuery{Limit: 2})
	if err != nil || !more {
		t.Fatalf("first page: more %v err %v", more, err)
	}
	if d := cmp.Diff([]string{want[3].ID, want[2].ID}, ids(page)); d != "" {
		t.Errorf("first page, newest first (-want +got):\n%s", d)
	}
	page, more, err = s.ListContainers(ctx, "k1", ContainerQuery{Limit: 2, After: page[1].ID})
	if err != nil || more {
		t.Fatalf("second page: more %v err %v", more, err)
	}
	if d := cmp.Diff([]string{want[1].ID, want[0].ID}, ids(page)); d != "" {
		t.Errorf("second page (-want +got):\n%s", d)
	}
	page, _, err = s.ListContainers(ctx, "k1", ContainerQuery{Ascending: true, Name: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{want[0].ID, want[2].ID}, ids(page)); d != "" {
		t.Errorf("named a, oldest first (-want +got):\n%s", d)
	}

	// Ending it updates the session and last_active_at, keeps the rest.
	ended := want[1]
	ended.EndedAt, ended.EndReason = base.Add(2*time.Hour), "idle_timeout"
	ended.LastActiveAt = base.Add(90 * time.Minute)
	ended.Name, ended.MemoryLimit = "ignored", "64g"
	if err := s.PutContainer(ctx, ended); err != nil {
		t.Fatal(err)
	}
	ended.Name, ended.MemoryLimit = want[1].Name, want[1].MemoryLimit
	s.Close()
	s = e.open(t) // it survives a reopen
	got, err = s.Container(ctx, "k1", ended.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(ended, got); d != "" {
		t.Errorf("ended container after reopen (-want +got):\n%s", d)
	}
	if sess, err := s.Session(ctx, "k1", ended.ID); err != nil || sess.EndReason != "idle_timeout" {
		t.Errorf("its session = %+v, %v", sess, err)
	}

	// Its files go with it when it expires.
	f := put(t, s, File{Owner: "k1", Filename: "x.csv", SessionID: want[0].ID}, "a,b\n")
	gone := want[0]
	gone.ExpiresAt = time.Now().Add(-time.Second)
	if err := s.PutContainer(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Container(ctx, "k1", gone.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("expired container = %v, want ErrNotFound", err)
	}
	nf, ns, err := s.DeleteExpired(ctx, time.Now())
	if err != nil || nf != 1 || ns != 1 {
		t.Errorf("DeleteExpired = %d files, %d sessions, %v; want 1, 1", nf, ns, err)
	}
	if _, err := s.File(ctx, "k1", f.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("file of the expired container = %v", err)
	}
	var n int
	if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM containers WHERE id = ?`, gone.ID).Scan(&n); err != nil || n != 0 {
		t.Errorf("container rows left = %d, %v", n, err)
	}
}
