package lower

import (
	"math/bits"
	"sync"

	"github.com/cowfs/cowfs/cow/object"
)

// Buffers that open object files read their chunks into, kept between
// files: a mount reading file after file from its store otherwise put
// each chunk in new memory, which the process faults in page by page and
// the collector then sweeps. By size class, so that a small file's chunk
// does not hold a chunk's worth: powers of two from 4 KiB, and one class
// of a whole encoded chunk above the largest.
const (
	minBufShift = 12
	maxBufShift = 19
	// bufClasses is the powers of two and the whole-chunk class.
	bufClasses = maxBufShift - minBufShift + 2
	// wholeChunk is an encoded chunk at its largest: its two header
	// bytes and its data.
	wholeChunk = object.ChunkSize + 2
)

var chunkBufs [bufClasses]sync.Pool

// bufClass returns the class of a buffer of n bytes, at most
// wholeChunk, and that class's size.
func bufClass(n int) (int, int) {
	if n > 1<<maxBufShift {
		return bufClasses - 1, wholeChunk
	}
	shift := max(minBufShift, bits.Len(uint(n-1)))
	return shift - minBufShift, 1 << shift
}

// getChunkBuf returns a buffer of at least n bytes, at most wholeChunk:
// its class's size, so that putChunkBuf finds the class again.
func getChunkBuf(n int) *[]byte {
	c, size := bufClass(n)
	if b, ok := chunkBufs[c].Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, size)
	return &b
}

// putChunkBuf keeps b, which getChunkBuf returned, for another reader;
// the caller reads nothing of it after.
func putChunkBuf(b *[]byte) {
	c, _ := bufClass(cap(*b))
	chunkBufs[c].Put(b)
}
