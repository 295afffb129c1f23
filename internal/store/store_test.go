package store

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"codeexec/internal/ids"
)

func put(t *testing.T, s *Store, f File, content string) File {
	t.Helper()
	got, err := s.PutFile(t.Context(), f, strings.NewReader(content), Limits{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatalf("PutFile(%+v) = %v", f, err)
	}
	return got
}

func readContent(t *testing.T, s *Store, owner, id string) string {
	t.Helper()
	c, _, err := s.OpenFile(t.Context(), owner, id)
	if err != nil {
		t.Fatalf("OpenFile(%q, %q) = %v", owner, id, err)
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read %s: %v", id, err)
	}
	return string(b)
}

func TestFileLifecycle(t *testing.T) { forEachBackend(t, testFileLifecycle) }

func testFileLifecycle(t *testing.T, b backend) {
	e := b.newEnv(t)
	s := e.open(t)
	ctx := t.Context()
	before := time.Now()

	in := File{Owner: "key1", Filename: "plots/a.csv", Purpose: "user_data", MIMEType: "text/csv"}
	f := put(t, s, in, "a,b\n1,2\n")
	if !validFileID(f.ID) {
		t.Errorf("PutFile ID = %q, want file- and an id of package ids", f.ID)
	}
	if f.CreatedAt.Before(before.Truncate(time.Microsecond)) || f.CreatedAt.After(time.Now()) {
		t.Errorf("PutFile CreatedAt = %v, want between %v and now", f.CreatedAt, before)
	}
	want := in
	want.ID, want.Bytes, want.CreatedAt = f.ID, 8, f.CreatedAt
	if diff := cmp.Diff(want, f); diff != "" {
		t.Errorf("PutFile mismatch (-want +got):\n%s", diff)
	}

	got, err := s.File(ctx, "key1", f.ID)
	if err != nil {
		t.Fatalf("File = %v", err)
	}
	if diff := cmp.Diff(f, got); diff != "" {
		t.Errorf("File mismatch (-want +got):\n%s", diff)
	}

	c, got, err := s.OpenFile(ctx, "key1", f.ID)
	if err != nil {
		t.Fatalf("OpenFile = %v", err)
	}
	data, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(data) != "a,b\n1,2\n" {
		t.Errorf("OpenFile content = %q, %v, want %q", data, err, "a,b\n1,2\n")
	}
	if diff := cmp.Diff(f, got); diff != "" {
		t.Errorf("OpenFile mismatch (-want +got):\n%s", diff)
	}

	g := put(t, s, File{Owner: "key1", Filename: "b.txt", Purpose: "assistants"}, "")
	list, err := s.ListFiles(ctx, "key1", "")
	if err != nil {
		t.Fatalf("ListFiles = %v", err)
	}
	if diff := cmp.Diff([]File{g, f}, list); diff != "" {
		t.Errorf("ListFiles mismatch, want newest first (-want +got):\n%s", diff)
	}

	if err := s.DeleteFile(ctx, "key1", f.ID); err != nil {
		t.Fatalf("DeleteFile = %v", err)
	}
	if _, err := s.File(ctx, "key1", f.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("File after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteFile(ctx, "key1", f.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteFile again = %v, want ErrNotFound", err)
	}
	if diff := cmp.Diff([]string{g.ID}, e.contents(t)); diff != "" {
		t.Errorf("contents after delete (-want +got):\n%s", diff)
	}
}

func TestOwnerIsolation(t *testing.T) { forEachBackend(t, testOwnerIsolation) }

func testOwnerIsolation(t *testing.T, b backend) {
	s := b.newEnv(t).open(t)
	ctx := t.Context()
	if err := s.PutSession(ctx, Session{ID: "sess_a", Owner: "alice"}); err != nil {
		t.Fatal(err)
	}
	f := put(t, s, File{Owner: "alice", Filename: "x.txt", SessionID: "sess_a"}, "secret")

	for _, owner := range []string{"bob", ""} {
		t.Run(fmt.Sprintf("owner=%q", owner), func(t *testing.T) {
			if _, err := s.File(ctx, owner, f.ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("File(%q, %q) = %v, want ErrNotFound", owner, f.ID, err)
			}
			if _, _, err := s.OpenFile(ctx, owner, f.ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("OpenFile(%q, %q) = %v, want ErrNotFound", owner, f.ID, err)
			}
			if err := s.DeleteFile(ctx, owner, f.ID); !errors.Is(err, ErrNotFound) {
				t.Errorf("DeleteFile(%q, %q) = %v, want ErrNotFound", owner, f.ID, err)
			}
			for _, sess := range []string{"", "sess_a"} {
				if list, err := s.ListFiles(ctx, owner, sess); err != nil || len(list) != 0 {
					t.Errorf("ListFiles(%q, %q) = %v, %v, want none", owner, sess, list, err)
				}
			}
			if _, err := s.SessionFile(ctx, owner, "sess_a", "x.txt"); !errors.Is(err, ErrNotFound) {
				t.Errorf("SessionFile(%q, sess_a, x.txt) = %v, want ErrNotFound", owner, err)
			}
			if _, err := s.Session(ctx, owner, "sess_a"); !errors.Is(err, ErrNotFound) {
				t.Errorf("Session(%q, sess_a) = %v, want ErrNotFound", owner, err)
			}
			// A file may not be put into another owner's session.
			_, err := s.PutFile(ctx, File{Owner: owner, Filename: "y", SessionID: "sess_a"}, strings.NewReader("y"), Limits{MaxBytes: 10})
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("PutFile into another owner's session = %v, want ErrNotFound", err)
			}
		})
	}
	// The same session id for another owner is another session, and does
	// not touch alice's.
	if err := s.PutSession(ctx, Session{ID: "sess_a", Owner: "bob", EndReason: "deleted", EndedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Session(ctx, "alice", "sess_a"); err != nil || !got.EndedAt.IsZero() {
		t.Errorf("alice's Session after bob's PutSession = %+v, %v, want live", got, err)
	}
	if got := readContent(t, s, "alice", f.ID); got != "secret" {
		t.Errorf("alice's content = %q, want %q", got, "secret")
	}
}

func TestTooLarge(t *testing.T) { forEachBackend(t, testTooLarge) }

func testTooLarge(t *testing.T, b backend) {
	tests := []struct {
		name    string
		size    int
		max     int64
		wantErr error
	}{
		{name: "empty", size: 0, max: 0},
		{name: "exactly max", size: 100, max: 100},
		{name: "one over", size: 101, max: 100, wantErr: ErrTooLarge},
		{name: "far over", size: 1 << 20, max: 1000, wantErr: ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := b.newEnv(t)
			s := e.open(t)
			content := bytes.Repeat([]byte("x"), tt.size)
			f, err := s.PutFile(t.Context(), File{Owner: "k", Filename: "f"}, bytes.NewReader(content), Limits{MaxBytes: tt.max})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("PutFile(%d bytes, max %d) = %v, want %v", tt.size, tt.max, err, tt.wantErr)
			}
			if tt.wantErr != nil {
				if names := e.contents(t); len(names) != 0 {
					t.Errorf("contents after %v = %q, want none", err, names)
				}
				if list, _ := s.ListFiles(t.Context(), "k", ""); len(list) != 0 {
					t.Errorf("ListFiles after %v = %v, want none", err, list)
				}
				return
			}
			if f.Bytes != int64(tt.size) {
				t.Errorf("PutFile Bytes = %d, want %d", f.Bytes, tt.size)
			}
		})
	}
}

func TestPutFileFailureLeavesNothing(t *testing.T) {
	forEachBackend(t, testPutFileFailureLeavesNothing)
}

func testPutFileFailureLeavesNothing(t *testing.T, b backend) {
	e := b.newEnv(t)
	s := e.open(t)
	ctx := t.Context()
	tests := []struct {
		name string
		f    File
		r    io.Reader
	}{
		{name: "reader fails", f: File{Owner: "k"}, r: io.MultiReader(strings.NewReader("abc"), errReader{})},
		{name: "no such session", f: File{Owner: "k", SessionID: "sess_missing"}, r: strings.NewReader("abc")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.PutFile(ctx, tt.f, tt.r, Limits{MaxBytes: 100}); err == nil {
				t.Fatal("PutFile succeeded, want error")
			}
			if names := e.contents(t); len(names) != 0 {
				t.Errorf("contents = %q, want none", names)
			}
			if list, _ := s.ListFiles(ctx, "k", ""); len(list) != 0 {
				t.Errorf("ListFiles = %v, want none", list)
			}
		})
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestExpiry(t *testing.T) { forEachBackend(t, testExpiry) }

func testExpiry(t *testing.T, b backend) {
	e := b.newEnv(t)
	s := e.open(t)
	ctx := t.Context()
	now := time.Now()
	past, future := now.Add(-time.Minute), now.Add(time.Hour)

	expired := put(t, s, File{Owner: "k", Filename: "old", ExpiresAt: past}, "old")
	kept := put(t, s, File{Owner: "k", Filename: "new", ExpiresAt: future}, "new")
	forever := put(t, s, File{Owner: "k", Filename: "forever"}, "forever")
	if err := s.PutSession(ctx, Session{ID: "sess_old", Owner: "k", ExpiresAt: future}); err != nil {
		t.Fatal(err)
	}
	// A session file that would outlive its session goes with it.
	inOld := put(t, s, File{Owner: "k", Filename: "s", SessionID: "sess_old", ExpiresAt: future}, "s")
	if err := s.PutSession(ctx, Session{ID: "sess_old", Owner: "k", ExpiresAt: past}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutSession(ctx, Session{ID: "sess_new", Owner: "k", ExpiresAt: future}); err != nil {
		t.Fatal(err)
	}

	// Expired records are invisible before DeleteExpired runs.
	if _, err := s.File(ctx, "k", expired.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("File(expired) = %v, want ErrNotFound", err)
	}
	if _, _, err := s.OpenFile(ctx, "k", expired.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenFile(expired) = %v, want ErrNotFound", err)
	}
	if err := s.DeleteFile(ctx, "k", expired.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteFile(expired) = %v, want ErrNotFound", err)
	}
	if _, err := s.Session(ctx, "k", "sess_old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Session(expired) = %v, want ErrNotFound", err)
	}

	files, sessions, err := s.DeleteExpired(ctx, now)
	if err != nil || files != 2 || sessions != 1 {
		t.Errorf("DeleteExpired = %d, %d, %v, want 2, 1, nil", files, sessions, err)
	}
	list, err := s.ListFiles(ctx, "k", "")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]File{forever, kept}, list); diff != "" {
		t.Errorf("ListFiles after DeleteExpired (-want +got):\n%s", diff)
	}
	want := []string{kept.ID, forever.ID}
	if diff := cmp.Diff(want, e.contents(t), cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("contents after DeleteExpired, removed %s and %s (-want +got):\n%s", expired.ID, inOld.ID, diff)
	}
	if _, err := s.Session(ctx, "k", "sess_new"); err != nil {
		t.Errorf("Session(sess_new) = %v", err)
	}

	files, sessions, err = s.DeleteExpired(ctx, now)
	if err != nil || files != 0 || sessions != 0 {
		t.Errorf("DeleteExpired again = %d, %d, %v, want 0, 0, nil", files, sessions, err)
	}
}

func TestReopen(t *testing.T) { forEachBackend(t, testReopen) }

func testReopen(t *testing.T, b backend) {
	e := b.newEnv(t)
	ctx := t.Context()
	s, err := Open(ctx, e.dir, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Now().Add(-time.Minute).Truncate(time.Microsecond)
	sessions := []Session{
		{ID: "sess_live", Owner: "k", CreatedAt: created, ExpiresAt: created.Add(time.Hour)},
		{ID: "sess_done", Owner: "k", CreatedAt: created, EndedAt: created.Add(time.Second), EndReason: "deleted"},
	}
	for _, sess := range sessions {
		if err := s.PutSession(ctx, sess); err != nil {
			t.Fatal(err)
		}
	}
	content := make([]byte, 300_000)
	for i := range content {
		content[i] = byte(i * 7)
	}
	f, err := s.PutFile(ctx, File{Owner: "k", Filename: "data.bin", SessionID: "sess_live", MIMEType: "application/octet-stream"},
		bytes.NewReader(content), Limits{MaxBytes: int64(len(content))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close = %v", err)
	}

	s = e.open(t)
	got, err := s.File(ctx, "k", f.ID)
	if err != nil {
		t.Fatalf("File after reopen = %v", err)
	}
	if diff := cmp.Diff(f, got); diff != "" {
		t.Errorf("File after reopen (-want +got):\n%s", diff)
	}
	if got := readContent(t, s, "k", f.ID); got != string(content) {
		t.Errorf("content after reopen differs (%d bytes, want %d)", len(got), len(content))
	}
	for _, want := range sessions {
		got, err := s.Session(ctx, "k", want.ID)
		if err != nil {
			t.Fatalf("Session(%q) after reopen = %v", want.ID, err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("Session(%q) after reopen (-want +got):\n%s", want.ID, diff)
		}
	}

	// After a restart no session's process survives.
	at := time.Now().Truncate(time.Microsecond)
	n, err := s.EndLiveSessions(ctx, "restart", at)
	if err != nil || n != 1 {
		t.Fatalf("EndLiveSessions = %d, %v, want 1, nil", n, err)
	}
	want := sessions[0]
	want.EndedAt, want.EndReason = at, "restart"
	if got, err := s.Session(ctx, "k", "sess_live"); err != nil || !cmp.Equal(want, got) {
		t.Errorf("Session(sess_live) after EndLiveSessions = %+v, %v, want %+v", got, err, want)
	}
	if got, err := s.Session(ctx, "k", "sess_done"); err != nil || !cmp.Equal(sessions[1], got) {
		t.Errorf("Session(sess_done) after EndLiveSessions = %+v, %v, want unchanged %+v", got, err, sessions[1])
	}
	// The ended session's files stay downloadable.
	if sf, err := s.SessionFile(ctx, "k", "sess_live", "data.bin"); err != nil || sf.ID != f.ID {
		t.Errorf("SessionFile after EndLiveSessions = %v, %v, want %s", sf.ID, err, f.ID)
	}
	if n, err := s.EndLiveSessions(ctx, "restart", at); err != nil || n != 0 {
		t.Errorf("EndLiveSessions again = %d, %v, want 0, nil", n, err)
	}
}

func TestSessionFile(t *testing.T) { forEachBackend(t, testSessionFile) }

func testSessionFile(t *testing.T, b backend) {
	s := b.newEnv(t).open(t)
	ctx := t.Context()
	for _, id := range []string{"sess_1", "sess_2"} {
		if err := s.PutSession(ctx, Session{ID: id, Owner: "k"}); err != nil {
			t.Fatal(err)
		}
	}
	first := put(t, s, File{Owner: "k", SessionID: "sess_1", Filename: "out.csv"}, "v1")
	second := put(t, s, File{Owner: "k", SessionID: "sess_1", Filename: "out.csv"}, "v2")
	other := put(t, s, File{Owner: "k", SessionID: "sess_1", Filename: "plots/a.png"}, "png")
	elsewhere := put(t, s, File{Owner: "k", SessionID: "sess_2", Filename: "out.csv"}, "v3")
	loose := put(t, s, File{Owner: "k", Filename: "out.csv"}, "v4")

	tests := []struct {
		name, session, filename string
		want                    string // file id, "" for ErrNotFound
	}{
		{name: "newest of two", session: "sess_1", filename: "out.csv", want: second.ID},
		{name: "path", session: "sess_1", filename: "plots/a.png", want: other.ID},
		{name: "other session", session: "sess_2", filename: "out.csv", want: elsewhere.ID},
		{name: "missing name", session: "sess_1", filename: "nope.csv"},
		{name: "missing session", session: "sess_3", filename: "out.csv"},
		{name: "no session", session: "", filename: "out.csv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.SessionFile(ctx, "k", tt.session, tt.filename)
			if tt.want == "" {
				if !errors.Is(err, ErrNotFound) {
					t.Errorf("SessionFile(%q, %q) = %v, %v, want ErrNotFound", tt.session, tt.filename, got.ID, err)
				}
				return
			}
			if err != nil || got.ID != tt.want {
				t.Errorf("SessionFile(%q, %q) = %v, %v, want %v", tt.session, tt.filename, got.ID, err, tt.want)
			}
		})
	}

	list, err := s.ListFiles(ctx, "k", "sess_1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]File{other, second, first}, list); diff != "" {
		t.Errorf("ListFiles(sess_1) (-want +got):\n%s", diff)
	}
	if all, err := s.ListFiles(ctx, "k", ""); err != nil || len(all) != 5 || all[0].ID != loose.ID {
		t.Errorf("ListFiles(all) = %d files (first %v), %v, want 5, newest first", len(all), all, err)
	}
}

func TestConcurrentPutFile(t *testing.T) { forEachBackend(t, testConcurrentPutFile) }

func testConcurrentPutFile(t *testing.T, b backend) {
	e := b.newEnv(t)
	s := e.open(t)
	ctx := t.Context()
	const n = 20
	var wg sync.WaitGroup
	files := make([]File, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			files[i], errs[i] = s.PutFile(ctx, File{Owner: "k", Filename: fmt.Sprintf("f%d", i)},
				strings.NewReader(strings.Repeat(fmt.Sprint(i), 1000)), Limits{MaxBytes: 1 << 20})
			if errs[i] == nil {
				_, errs[i] = s.ListFiles(ctx, "k", "")
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("goroutine %d: %v", i, err)
		}
	}
	list, err := s.ListFiles(ctx, "k", "")
	if err != nil || len(list) != n {
		t.Fatalf("ListFiles = %d files, %v, want %d", len(list), err, n)
	}
	for i, f := range files {
		if got, want := readContent(t, s, "k", f.ID), strings.Repeat(fmt.Sprint(i), 1000); got != want {
			t.Errorf("content of f%d = %.20q..., want %.20q...", i, got, want)
		}
	}
	if names := e.contents(t); len(names) != n {
		t.Errorf("contents = %d, want %d", len(names), n)
	}
}

func TestInvalidIDs(t *testing.T) { forEachBackend(t, testInvalidIDs) }

func testInvalidIDs(t *testing.T, b backend) {
	e := b.newEnv(t)
	s := e.open(t)
	ctx := t.Context()
	// Victims the ids below point at, were they used as paths or keys: x
	// beside the contents' directory, or at the top of the bucket above
	// the store's prefix.
	const victim = "x"
	e.writeRaw(t, victim, "victim")
	// A content with a valid-looking id but no metadata is not served.
	stray := "file-" + strings.Repeat("A", ids.Len)
	e.writeRaw(t, e.contentKey(stray), "stray")

	for _, id := range []string{
		"", "../x", "..", ".", "/etc/passwd", "file-../../x", "../codeexec.db", "file-" + strings.Repeat("A", ids.Len) + "/..",
		"file-" + strings.Repeat(".", ids.Len), "file-\x00" + strings.Repeat("A", ids.Len-1), stray,
	} {
		t.Run(fmt.Sprintf("%q", id), func(t *testing.T) {
			if _, err := s.File(ctx, "k", id); !errors.Is(err, ErrNotFound) {
				t.Errorf("File(%q) = %v, want ErrNotFound", id, err)
			}
			if c, _, err := s.OpenFile(ctx, "k", id); !errors.Is(err, ErrNotFound) {
				if c != nil {
					c.Close()
				}
				t.Errorf("OpenFile(%q) = %v, want ErrNotFound", id, err)
			}
			if err := s.DeleteFile(ctx, "k", id); !errors.Is(err, ErrNotFound) {
				t.Errorf("DeleteFile(%q) = %v, want ErrNotFound", id, err)
			}
		})
	}
	for _, key := range []string{victim, e.contentKey(stray)} {
		if _, err := e.readRaw(t, key); err != nil {
			t.Errorf("%s is gone: %v", key, err)
		}
	}
	if b.meta == "sqlite" {
		if _, err := os.Stat(filepath.Join(e.dir, "codeexec.db")); err != nil {
			t.Errorf("codeexec.db is gone: %v", err)
		}
	}
	// The content store refuses such ids by itself, too.
	for _, id := range []string{"", "../x", "..", "a/b", ".tmp-1"} {
		if _, err := s.blobs.put(ctx, id, strings.NewReader("x"), 10); err == nil {
			t.Errorf("blobs.put(%q) succeeded, want error", id)
		}
		if c, err := s.blobs.open(ctx, id); err == nil {
			c.Close()
			t.Errorf("blobs.open(%q) succeeded, want error", id)
		}
		if err := s.blobs.delete(ctx, id); err == nil {
			t.Errorf("blobs.delete(%q) succeeded, want error", id)
		}
	}
	if got, err := e.readRaw(t, victim); err != nil || got != "victim" {
		t.Errorf("victim = %q, %v, want untouched", got, err)
	}
}

// Only the directory writes temporaries.
func TestOpenCleansTemporaries(t *testing.T) {
	e := backend{"sqlite", "disk"}.newEnv(t)
	s := e.open(t)
	f := put(t, s, File{Owner: "k"}, "kept")
	s.Close()
	// As a crash in the middle of PutFile leaves it.
	e.writeRaw(t, e.contentKey(tempPrefix+"123"), "partial")
	s = e.open(t)
	if diff := cmp.Diff([]string{f.ID}, e.contents(t)); diff != "" {
		t.Errorf("contents after reopen (-want +got):\n%s", diff)
	}
}

func TestSchemaTooNew(t *testing.T) { forEachBackend(t, testSchemaTooNew) }

func testSchemaTooNew(t *testing.T, b backend) {
	e := b.newEnv(t)
	s := e.open(t)
	tx, err := s.db.DB.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.d.schemaVersion(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	if err := s.d.setSchemaVersion(t.Context(), tx, len(migrations)+1); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err := Open(t.Context(), e.dir, e.opts); err == nil {
		s.Close()
		t.Errorf("Open of a newer schema succeeded, want error")
	}
}

func TestCancelledPut(t *testing.T) { forEachBackend(t, testCancelledPut) }

func testCancelledPut(t *testing.T, b backend) {
	e := b.newEnv(t)
	s := e.open(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.PutFile(ctx, File{Owner: "k"}, strings.NewReader("abc"), Limits{MaxBytes: 10}); !errors.Is(err, context.Canceled) {
		t.Errorf("PutFile(cancelled) = %v, want context.Canceled", err)
	}
	if names := e.contents(t); len(names) != 0 {
		t.Errorf("contents = %q, want none", names)
	}
}

// TestFileIDs: the ids PutFile makes are valid file ids, and ids of the
// older base62 form, which stored files may still have, are too.
func TestFileIDs(t *testing.T) {
	for range 100 {
		if id := ids.New(filePrefix); !validFileID(id) {
			t.Fatalf("ids.New(file-) = %q, not a valid file id", id)
		}
	}
	if id := "file-0123456789ABCDEFGHIJabcd"; !validFileID(id) {
		t.Errorf("%q is not a valid file id", id)
	}
}

func TestOpenSettings(t *testing.T) {
	// A directory name that would break a naive DSN.
	dir := filepath.Join(t.TempDir(), "a?b#c %20")
	s := (&env{b: backend{"sqlite", "disk"}, dir: dir}).open(t)
	if _, err := os.Stat(filepath.Join(dir, "codeexec.db")); err != nil {
		t.Fatalf("database not where expected: %v", err)
	}
	tests := []struct {
		name   string
		pragma string
		want   map[string]string // by pool
	}{
		{name: "WAL", pragma: "journal_mode", want: map[string]string{"db": "wal", "rdb": "wal"}},
		{name: "foreign keys", pragma: "foreign_keys", want: map[string]string{"db": "1", "rdb": "1"}},
		{name: "busy timeout", pragma: "busy_timeout", want: map[string]string{"db": "10000", "rdb": "10000"}},
		{name: "read only", pragma: "query_only", want: map[string]string{"db": "0", "rdb": "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for pool, db := range map[string]*sql.DB{"db": s.db.DB, "rdb": s.rdb.DB} {
				var got string
				if err := db.QueryRowContext(t.Context(), "PRAGMA "+tt.pragma).Scan(&got); err != nil {
					t.Fatal(err)
				}
				if got != tt.want[pool] {
					t.Errorf("%s: PRAGMA %s = %q, want %q", pool, tt.pragma, got, tt.want[pool])
				}
			}
		})
	}
}
