package bufpool

import (
	"testing"

	"google.golang.org/grpc/mem"
)

var _ mem.BufferPool = (*Pool)(nil)

// TestSizes: every length comes back with that length and the capacity of
// the smallest power of two that holds it (made fresh beyond the largest
// tier), and a buffer given back is handed out again for a length of its
// tier.
func TestSizes(t *testing.T) {
	var p Pool
	for _, tc := range []struct{ n, cap int }{
		{0, 256}, {1, 256}, {256, 256}, {257, 512}, {16 << 10, 16 << 10},
		{1<<20 + 40, 2 << 20}, {2 << 20, 2 << 20}, {2<<20 + 1, 2<<20 + 1},
	} {
		b := p.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.cap {
			t.Errorf("Get(%d): len %d cap %d, want len %d cap %d", tc.n, len(*b), cap(*b), tc.n, tc.cap)
		}
		p.Put(b)
	}
	// sync.Pool may drop what it is given (it does, at random, under
	// -race), so reuse is looked for over many tries.
	reused := false
	for range 100 {
		b := p.Get(1000)
		(*b)[0] = 7
		p.Put(b)
		if c := p.Get(600); cap(*c) == 1024 && len(*c) == 600 && (*c)[0] == 7 {
			reused = true
		}
	}
	if !reused {
		t.Error("a buffer given back was never handed out again")
	}
}

// TestPutForeign: buffers of a capacity no tier has are not pooled, so a
// later Get never sees a capacity outside its tier.
func TestPutForeign(t *testing.T) {
	var p Pool
	for _, c := range []int{100, 300, 3 << 20, 4 << 20} {
		b := make([]byte, c)
		p.Put(&b)
	}
	for _, tc := range []struct{ n, cap int }{{200, 256}, {300, 512}, {1 << 20, 1 << 20}} {
		if b := p.Get(tc.n); cap(*b) != tc.cap {
			t.Errorf("Get(%d): cap %d, want %d", tc.n, cap(*b), tc.cap)
		}
	}
}
