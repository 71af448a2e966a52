package cow

// ChunkSize is the unit of copy-up and, later, of content-addressed blobs.
// 1 MiB matches the mount's max_write, keeps the presence bitmap of a 1 TiB
// file at 128 KiB, and bounds the copy-up cost of a small write to one chunk.
const ChunkSize = 1 << 20

// chunkMap records which chunks of a copied-up file are present in the upper
// file. A chunk that is not present is read from the file's origin in the
// lower layer. The zero value is an empty map.
type chunkMap []byte

// Has reports whether chunk i is present.
func (m chunkMap) Has(i int64) bool {
	b := i / 8
	return b < int64(len(m)) && m[b]&(1<<(i%8)) != 0
}

// Set marks chunk i present, growing the map as needed.
func (m *chunkMap) Set(i int64) {
	b := i / 8
	if b >= int64(len(*m)) {
		grown := make(chunkMap, b+1)
		copy(grown, *m)
		*m = grown
	}
	(*m)[b] |= 1 << (i % 8)
}

// Count returns how many chunks are present.
func (m chunkMap) Count() int {
	n := 0
	for _, b := range m {
		for ; b != 0; b &= b - 1 {
			n++
		}
	}
	return n
}

// chunkRange returns the first and last chunk touched by [off, off+n).
func chunkRange(off, n int64) (first, last int64) {
	return off / ChunkSize, (off + n - 1) / ChunkSize
}
