// Package bufpool is the buffer pool cowfs's gRPC client and server
// marshal and read messages with: gRPC's own clears every buffer it hands
// out, and an object stream moves each of its bytes through two or three
// such buffers at each end, so the clearing costs as much as a copy. gRPC
// fills every byte of a buffer it asks for (a message marshaled to its
// exact size, a frame or message read in full) before anything reads it,
// so buffers come out as they went in.
package bufpool

import (
	"math/bits"
	"sync"
)

// Buffers from 256 bytes to 2 MiB are pooled, one pool for each power of
// two: a message carrying one whole chunk (1 MiB and its header) fits the
// largest. Larger ones are made and dropped.
const (
	minShift = 8
	maxShift = 21
)

// Pool hands out buffers without clearing them. Its zero value is ready
// to use; it is safe for concurrent use.
type Pool struct {
	tiers [maxShift - minShift + 1]sync.Pool
}

// Get returns a buffer of length n, holding whatever it held before.
func (p *Pool) Get(n int) *[]byte {
	i := tier(n)
	if i < 0 {
		b := make([]byte, n)
		return &b
	}
	if b, ok := p.tiers[i].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<(minShift+i))
	return &b
}

// Put gives b back for a later Get. A buffer of a capacity no tier has
// (made elsewhere, or too large) is left to the garbage collector.
func (p *Pool) Put(b *[]byte) {
	c := cap(*b)
	if c < 1<<minShift || c > 1<<maxShift || c&(c-1) != 0 {
		return
	}
	p.tiers[bits.Len(uint(c))-1-minShift].Put(b)
}

// tier returns the index of the smallest tier that holds n bytes, -1 if
// none does.
func tier(n int) int {
	switch {
	case n > 1<<maxShift:
		return -1
	case n <= 1<<minShift:
		return 0
	}
	return bits.Len(uint(n-1)) - minShift
}
