package remote

import (
	"testing"
	"time"
)

// Overlapping fetches begin the activity once; it ends once they have
// all stopped for fetchLinger, begins again with the next fetch, and
// ends at close whatever is under way.
func TestActivity(t *testing.T) {
	var h HookCounter
	a := &activity{begin: h.Begin}
	counts := h.Counts
	waitEnded := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, e := counts(); e == want {
				return
			} else if time.Now().After(deadline) {
				t.Fatalf("ended %d times, want %d", e, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	s1, s2 := a.start(), a.start()
	s1()
	s1() // once only
	if b, e := counts(); b != 1 || e != 0 {
		t.Fatalf("two fetches, one over: begun %d, ended %d; want 1, 0", b, e)
	}
	s2()
	waitEnded(1)
	s3 := a.start()
	if b, _ := counts(); b != 2 {
		t.Fatalf("a fetch after the pause: begun %d times, want 2", b)
	}
	a.close()
	if _, e := counts(); e != 2 {
		t.Fatalf("close with a fetch under way: ended %d times, want 2", e)
	}
	s3()
	a.start()()
	if b, e := counts(); b != 2 || e != 2 {
		t.Fatalf("after close: begun %d, ended %d; want 2, 2", b, e)
	}
}
