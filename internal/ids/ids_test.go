package ids

import (
	"regexp"
	"testing"
)

func TestNew(t *testing.T) {
	form := regexp.MustCompile(`^sess_[0-9a-f]{24}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := New("sess_")
		if !form.MatchString(id) {
			t.Fatalf("New(sess_) = %q, want sess_ and 24 hex digits", id)
		}
		if seen[id] {
			t.Fatalf("New(sess_) = %q twice", id)
		}
		seen[id] = true
	}
	if id := New(""); len(id) != Len {
		t.Errorf("New(\"\") = %q, want %d characters", id, Len)
	}
}
