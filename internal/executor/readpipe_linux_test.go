package executor

import (
	"math/rand"
	"os"
	"strings"
	"testing"
)

// readPipe must pass data through unchanged and turn exactly the marks of
// the current execution into end and sync chunks, however the writes are
// split, and whatever hex digit the nonce ends in (one ending in 'd' once
// made the end mark look like a sync mark, so 1 execution in 16 waited a
// second for an end that had already come).
func TestReadPipeMarks(t *testing.T) {
	for _, nonce := range []string{"0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcded", "0123456789abcdef0123456789abcd00"} {
		t.Run(nonce[len(nonce)-2:], func(t *testing.T) { testReadPipeMarks(t, nonce) })
	}
}

func testReadPipeMarks(t *testing.T, nonce string) {
	end, sync := "\x00"+nonce+"\x00", "\x00"+nonce+"d\x00"
	input := "a\x00b" + sync + "line\n\x00" + nonce[:5] + "x" + sync + "\x00" + nonce + "zz" + end + "after"
	want := "a\x00b|S|line\n\x00" + nonce[:5] + "x|S|\x00" + nonce + "zz|E|after"
	for seed := int64(0); seed < 200; seed++ {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		c := &child{}
		m := []byte(end)
		c.mark.Store(&m)
		out := make(chan []byte, 1024)
		c.wg.Add(1)
		go c.readPipe(r, out)
		rng := rand.New(rand.NewSource(seed))
		for rest := input; rest != ""; {
			n := 1 + rng.Intn(len(rest))
			w.Write([]byte(rest[:n]))
			rest = rest[n:]
		}
		w.Close()
		var got strings.Builder
		for chunk := range out {
			switch {
			case chunk == nil:
				got.WriteString("|E|")
			case len(chunk) == 0:
				got.WriteString("|S|")
			default:
				got.Write(chunk)
			}
		}
		c.wg.Wait()
		r.Close()
		if got.String() != want {
			t.Fatalf("seed %d: got %q, want %q", seed, got.String(), want)
		}
	}
}
