package store

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// An owner's quota holds for files and for bytes, whatever the order or
// the concurrency of the PutFiles; a refused file leaves nothing behind
// and the files already kept intact; expired files and other owners'
// files do not count.
func TestQuota(t *testing.T) { forEachBackend(t, testQuota) }

func testQuota(t *testing.T, b backend) {
	lim := Limits{MaxBytes: 1 << 20, OwnerBytes: 100, OwnerFiles: 3}
	putLim := func(s *Store, owner, content string, l Limits) (File, error) {
		return s.PutFile(t.Context(), File{Owner: owner, Filename: "f"}, strings.NewReader(content), l)
	}

	t.Run("files", func(t *testing.T) {
		e := b.newEnv(t)
		s := e.open(t)
		var kept []File
		for i := range 3 {
			f, err := putLim(s, "k", fmt.Sprint(i), lim)
			if err != nil {
				t.Fatalf("file %d within the quota: %v", i, err)
			}
			kept = append(kept, f)
		}
		if _, err := putLim(s, "k", "x", lim); !errors.Is(err, ErrQuota) {
			t.Errorf("a 4th file of an owner allowed 3 = %v, want ErrQuota", err)
		}
		if _, err := putLim(s, "other", "x", lim); err != nil {
			t.Errorf("another owner's file = %v, want it kept", err)
		}
		for i, f := range kept {
			if got := readContent(t, s, "k", f.ID); got != fmt.Sprint(i) {
				t.Errorf("kept file %d = %q after a refusal", i, got)
			}
		}
		if n := len(e.contents(t)); n != 4 {
			t.Errorf("%d contents, want 4 (nothing of the refused file)", n)
		}
	})

	t.Run("bytes", func(t *testing.T) {
		e := b.newEnv(t)
		s := e.open(t)
		if _, err := putLim(s, "k", strings.Repeat("a", 60), lim); err != nil {
			t.Fatal(err)
		}
		// 60 + 41 > 100: refused while its content is read, at the room left.
		if _, err := putLim(s, "k", strings.Repeat("b", 41), lim); !errors.Is(err, ErrQuota) {
			t.Errorf("a file past the byte quota = %v, want ErrQuota", err)
		}
		if _, err := putLim(s, "k", strings.Repeat("c", 40), lim); err != nil {
			t.Errorf("a file that fills the quota exactly = %v, want it kept", err)
		}
		if _, err := putLim(s, "k", "", lim); !errors.Is(err, ErrQuota) && err != nil {
			t.Errorf("an empty file at a full quota = %v", err)
		}
		// The limit of one file still says ErrTooLarge.
		if _, err := putLim(s, "o2", strings.Repeat("d", 11), Limits{MaxBytes: 10, OwnerBytes: 100}); !errors.Is(err, ErrTooLarge) {
			t.Errorf("a file over MaxBytes within the quota = %v, want ErrTooLarge", err)
		}
		if n := len(e.contents(t)); n != 2 && n != 3 {
			t.Errorf("%d contents, want the 2 kept (and maybe the empty one)", n)
		}
	})

	t.Run("expired files do not count", func(t *testing.T) {
		s := b.newEnv(t).open(t)
		f := File{Owner: "k", Filename: "old", ExpiresAt: time.Now().Add(50 * time.Millisecond)}
		if _, err := s.PutFile(t.Context(), f, strings.NewReader(strings.Repeat("a", 100)), lim); err != nil {
			t.Fatal(err)
		}
		if _, err := putLim(s, "k", "b", lim); !errors.Is(err, ErrQuota) {
			t.Errorf("with the quota full = %v, want ErrQuota", err)
		}
		time.Sleep(100 * time.Millisecond)
		if _, err := putLim(s, "k", "b", lim); err != nil {
			t.Errorf("after the file expired = %v, want it kept", err)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		// With PostgreSQL, as many Stores as nodes share the database.
		e := b.newEnv(t)
		stores := []*Store{e.open(t)}
		if b.meta == "postgres" {
			stores = append(stores, e.open(t), e.open(t))
		}
		s := stores[0]
		const n = 40
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range n {
			wg.Go(func() {
				_, errs[i] = putLim(stores[i%len(stores)], "k", strings.Repeat("x", 10), Limits{MaxBytes: 1 << 20, OwnerBytes: 1 << 20, OwnerFiles: 5})
			})
		}
		wg.Wait()
		kept := 0
		for _, err := range errs {
			switch {
			case err == nil:
				kept++
			case !errors.Is(err, ErrQuota):
				t.Errorf("PutFile = %v, want nil or ErrQuota", err)
			}
		}
		files, err := s.ListFiles(t.Context(), "k", "")
		if err != nil {
			t.Fatal(err)
		}
		if kept != 5 || len(files) != 5 {
			t.Errorf("%d concurrent PutFiles at a quota of 5 files kept %d (%d listed), want 5", n, kept, len(files))
		}
	})
}
