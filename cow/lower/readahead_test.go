package lower

import (
	"bytes"
	"math/rand"
	"slices"
	"testing"

	"github.com/cowfs/cowfs/cow/object"
)

// aheadStore is a machine's store that notes the chunks read-ahead asks
// for, batch by batch, as chunk indexes of one file.
type aheadStore struct {
	*object.DirStore
	index   map[object.Digest]int64
	batches [][]int64
}

func (s *aheadStore) Prefetch(ds []object.Digest) {
	var b []int64
	for _, d := range ds {
		b = append(b, s.index[d])
	}
	s.batches = append(s.batches, b)
}

// deepAheadStore is an aheadStore that asks for n chunks in flight, as a
// cache over a bucket does, and, if batch is set, for them batch at a
// time.
type deepAheadStore struct {
	*aheadStore
	n, batch int64
}

func (s deepAheadStore) ReadAhead() int64  { return s.n }
func (s deepAheadStore) AheadBatch() int64 { return s.batch }

// A sequential reader's read-ahead asks for whole chunk groups
// (object.ChunkGroup), each in one batch, past the second chunk: a store
// that keeps a group together (a bucket's pack) sends a batch in one
// request a group. Random reads ask for nothing ahead.
func TestReadAheadByChunkGroups(t *testing.T) {
	// Chunk 1 is read before read-ahead starts; the rest of its group
	// and the next come in the first batch, a group a batch after.
	want := [][]int64{{2, 3, 4, 5, 6, 7, 8}, {9, 10, 11, 12}, {13, 14, 15, 16}, {17, 18, 19, 20}, {21, 22}}
	testReadAhead(t, 0, 0, want)
}

// A store that asks for more chunks in flight (a cache over a bucket) gets
// that many past a sequential read, still in whole groups.
func TestReadAheadAsTheStoreAsks(t *testing.T) {
	want := [][]int64{{2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, {17, 18, 19, 20}, {21, 22}}
	testReadAhead(t, 4*object.ChunkGroup, 0, want)
}

// A store that asks for its chunks a batch at a time (a cache over a
// bucket, whose packs hold a batch each) gets batches that end where its
// packs do, at multiples of the batch, a batch being asked for once the
// reader enters the one before it.
func TestReadAheadInBatches(t *testing.T) {
	const batch = 2 * object.ChunkGroup
	want := [][]int64{{2, 3, 4, 5, 6, 7, 8}, {9, 10, 11, 12, 13, 14, 15, 16}, {17, 18, 19, 20, 21, 22}}
	testReadAhead(t, 2*batch, batch, want)
}

// testReadAhead reads a file of 23 chunks through a store that asks for n
// chunks in flight (0: one that does not say), batch at a time (0: as
// they come), and wants the batches read-ahead asks it for to be want.
func testReadAhead(t *testing.T, n, batch int64, want [][]int64) {
	const chunks = 23
	data := make([]byte, (chunks-1)*object.ChunkSize+5000)
	rand.New(rand.NewSource(1)).Read(data)
	store, root := filesTree(t, map[string][]byte{"f": data})
	file, _, err := NewObjects(store, root, object.Entry{}).FileObject("f")
	if err != nil {
		t.Fatal(err)
	}
	s := &aheadStore{DirStore: store, index: map[object.Digest]int64{}}
	for i, d := range file.Chunks {
		s.index[d] = int64(i)
	}

	var g object.Getter = s
	if n > 0 {
		g = deepAheadStore{s, n, batch}
	}
	f, err := NewObjects(g, root, object.Entry{}).Open("f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, 0, len(data))
	p := make([]byte, 128<<10)
	for off := int64(0); off < int64(len(data)); {
		n, err := f.ReadAt(p, off)
		if n == 0 {
			t.Fatalf("read at %d: %v", off, err)
		}
		got = append(got, p[:n]...)
		off += int64(n)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the file read differs")
	}
	if !slices.EqualFunc(s.batches, want, slices.Equal) {
		t.Errorf("read-ahead asked for %v; want %v", s.batches, want)
	}

	s.batches = nil
	for _, i := range []int64{7, 3, 15, 9} {
		if _, err := f.ReadAt(p, i*object.ChunkSize); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.batches) != 0 {
		t.Errorf("random reads asked for %v ahead; want nothing", s.batches)
	}
}
