package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// A content's rename is durable only once its directory is synced, and
// that must happen before the metadata naming it is committed: otherwise
// after a power loss a committed file could point at a missing content.
// A test cannot cut the power; it checks the order instead. When the
// directory sync runs, the content is complete under its final name and
// no metadata names it yet; a failed sync keeps nothing. (That the file
// itself is synced before the rename cannot be observed from here.)
func TestPutSyncsDirectoryBeforeMetadata(t *testing.T) {
	tests := []struct {
		name    string
		syncErr error
	}{
		{name: "synced"},
		{name: "sync fails", syncErr: errors.New("disk on fire")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := backend{"sqlite", "disk"}.newEnv(t)
			s := e.open(t)
			ctx := t.Context()
			b := s.blobs.(*diskBlobs)
			var synced []string
			b.syncDir = func(d string) error {
				synced = append(synced, d)
				names := e.contents(t)
				if len(names) != 1 || strings.HasPrefix(names[0], tempPrefix) {
					t.Errorf("at the directory sync, the contents are %q, want one under its final name", names)
				} else if data, err := os.ReadFile(filepath.Join(b.dir, names[0])); err != nil || string(data) != "complete" {
					t.Errorf("at the directory sync, the content is %q (%v), want %q", data, err, "complete")
				}
				if files, err := s.ListFiles(ctx, "o", ""); err != nil || len(files) != 0 {
					t.Errorf("at the directory sync, ListFiles = %v, %v, want no file committed yet", files, err)
				}
				if tt.syncErr != nil {
					return tt.syncErr
				}
				return syncDir(d)
			}
			f, err := s.PutFile(ctx, File{Owner: "o", Filename: "a.txt"}, strings.NewReader("complete"), Limits{MaxBytes: 1 << 20})
			if diff := cmp.Diff([]string{b.dir}, synced); diff != "" {
				t.Errorf("directories synced (-want +got):\n%s", diff)
			}
			if tt.syncErr != nil {
				if !errors.Is(err, tt.syncErr) {
					t.Errorf("PutFile = %v, want the sync's error", err)
				}
				if names := e.contents(t); len(names) != 0 {
					t.Errorf("after a failed sync the contents are %q, want none", names)
				}
				if files, _ := s.ListFiles(ctx, "o", ""); len(files) != 0 {
					t.Errorf("after a failed sync ListFiles = %v, want none", files)
				}
				return
			}
			if err != nil {
				t.Fatalf("PutFile = %v", err)
			}
			if got := readContent(t, s, "o", f.ID); got != "complete" {
				t.Errorf("content = %q, want %q", got, "complete")
			}
		})
	}
}
