package executor

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestSessionFilesRaceEnd races listing and reading a session's files
// against the session's end and the start of the next session, whose
// directory handle can get the same descriptor number: a call on the old
// session must never see the new session's files.
func TestSessionFilesRaceEnd(t *testing.T) {
	e := newTestExecutor(t, Config{PoolSize: 1, HostUID: 1_740_000_000})
	const rounds = 20
	var calls, crossed atomic.Int64
	open := func(i int) *Session {
		s, err := e.NewSession(context.Background(), 0)
		if err != nil {
			t.Fatalf("NewSession: %v", err)
		}
		if err := s.WriteFile(context.Background(), DataFile("mine.txt", fmt.Appendf(nil, "%d", i))); err != nil {
			t.Fatalf("WriteFile: %v", err)
		}
		return s
	}
	s := open(0)
	for i := range rounds {
		cur := s
		var wg sync.WaitGroup
		stop := make(chan struct{})
		want := fmt.Sprint(i)
		for range 4 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					calls.Add(1)
					if files, err := cur.Files(); err == nil {
						for _, f := range files {
							if f.Path != "mine.txt" {
								crossed.Add(1)
								t.Errorf("round %d: Files() lists %q", i, f.Path)
							}
						}
					}
					if f, _, err := cur.Open("mine.txt"); err == nil {
						b, _ := io.ReadAll(f)
						f.Close()
						if string(b) != want {
							crossed.Add(1)
							t.Errorf("round %d: Open(mine.txt) of an ended session read %q, another session's file", i, b)
						}
					}
				}
			})
		}
		cur.Close()
		next := open(i + 1) // likely to get the old directory's descriptor number
		// Keep calling on the old session while its child is destroyed
		// and the pool spawns the next children, whose directories are
		// opened then.
		time.Sleep(200 * time.Millisecond)
		close(stop)
		wg.Wait()
		s = next
	}
	s.Close()
	t.Logf("%d file calls over %d session ends, %d crossed", calls.Load(), rounds, crossed.Load())
}
