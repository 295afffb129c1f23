package executor

import "testing"

// TestAllocUID: a child's uid is never that of a live child, even after
// the range wraps, and a full range says so instead of sharing a uid.
func TestAllocUID(t *testing.T) {
	p := &pool{uids: map[int]bool{}}
	first, ok := p.allocUID()
	if !ok || first != childUIDBase+1 {
		t.Fatalf("allocUID() = %d, %v; want %d, true", first, ok, childUIDBase+1)
	}
	// Fill the whole range but one long-lived child's uid, which stays.
	for {
		uid, ok := p.allocUID()
		if !ok {
			break
		}
		if uid <= childUIDBase || uid > maxChildUID {
			t.Fatalf("allocUID() = %d, outside %d..%d", uid, childUIDBase+1, maxChildUID)
		}
	}
	if n := len(p.uids); n != maxChildUID-childUIDBase {
		t.Fatalf("%d uids given before the range was full, want %d", n, maxChildUID-childUIDBase)
	}
	// Children end, but the first (a session, say) lives on: after the
	// wrap its uid is skipped.
	for uid := range p.uids {
		if uid != first {
			delete(p.uids, uid)
		}
	}
	seen := map[int]bool{}
	for range 3 * (maxChildUID - childUIDBase) {
		uid, ok := p.allocUID()
		if !ok {
			t.Fatal("allocUID() = false with free uids")
		}
		if uid == first {
			t.Fatalf("allocUID() gave %d, the uid of a live child", uid)
		}
		seen[uid] = true
		delete(p.uids, uid) // it ends at once
	}
	if len(seen) != maxChildUID-childUIDBase-1 {
		t.Errorf("%d distinct uids over the wraps, want every free one (%d)", len(seen), maxChildUID-childUIDBase-1)
	}
}
