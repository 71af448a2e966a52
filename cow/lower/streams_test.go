package lower

import (
	"bytes"
	"context"
	"fmt"
	"math/rand"
	"slices"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cowfs/cowfs/cow/object"
)

// readsStore is an aheadStore that counts the chunks read from it, by
// chunk index.
type readsStore struct {
	*aheadStore
	reads map[int64]int
}

func (s *readsStore) GetInto(ctx context.Context, d object.Digest, buf []byte) ([]byte, error) {
	if i, ok := s.index[d]; ok {
		s.reads[i]++
	}
	return s.DirStore.GetInto(ctx, d, buf)
}

// chunksFile stores a file "f" of n chunks of random bytes (from seed)
// and returns the store, the tree holding it, its bytes and its chunks.
func chunksFile(t testing.TB, n int, seed int64) (*object.DirStore, object.Digest, []byte, []object.Digest) {
	t.Helper()
	data := make([]byte, n*object.ChunkSize)
	rand.New(rand.NewSource(seed)).Read(data)
	store, root := filesTree(t, map[string][]byte{"f": data})
	file, _, err := NewObjects(store, root, object.Entry{}).FileObject("f")
	if err != nil {
		t.Fatal(err)
	}
	return store, root, data, file.Chunks
}

// streamsFile is a file of n chunks of random bytes, opened through a
// store that counts its reads and read-ahead's batches.
func streamsFile(t *testing.T, n int) (File, []byte, *readsStore) {
	t.Helper()
	store, root, data, chunks := chunksFile(t, n, 2)
	s := &readsStore{aheadStore: &aheadStore{DirStore: store, index: map[object.Digest]int64{}}, reads: map[int64]int{}}
	for i, d := range chunks {
		s.index[d] = int64(i)
	}
	f, err := NewObjects(s, root, object.Entry{}).Open("f")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, data, s
}

// Two readers of one file at two places, their reads interleaved (two
// processes reading one file share its node's objectFile): each chunk is
// read from the store once, not once for each read after the other
// reader's, and each reader's place gets its own read-ahead.
func TestReadersAtTwoPlaces(t *testing.T) {
	const chunks = 20
	f, data, s := streamsFile(t, chunks)
	p := make([]byte, 256<<10)
	for off := int64(0); off < chunks/2*object.ChunkSize; off += int64(len(p)) {
		for _, at := range []int64{off, off + chunks/2*object.ChunkSize} {
			n, err := f.ReadAt(p, at)
			if n != len(p) || !bytes.Equal(p, data[at:at+int64(n)]) {
				t.Fatalf("read at %d: %d bytes, %v, or not the file's", at, n, err)
			}
		}
	}
	for i := range int64(chunks) {
		if s.reads[i] != 1 {
			t.Errorf("chunk %d read from the store %d times; want once", i, s.reads[i])
		}
	}
	var first, second bool
	for _, b := range s.batches {
		first = first || slices.Contains(b, 2)
		second = second || slices.Contains(b, chunks/2+2)
	}
	if !first || !second {
		t.Errorf("read-ahead asked for %v; want batches ahead of both places", s.batches)
	}
}

// Up to maxStreams places keep their last chunk; a place more takes the
// place of the one read least recently.
func TestReadPlacesLeastRecentGoes(t *testing.T) {
	f, _, s := streamsFile(t, 6*object.ChunkGroup)
	p := make([]byte, 4096)
	read := func(chunk int64, fromStore bool) {
		t.Helper()
		before := s.reads[chunk]
		if _, err := f.ReadAt(p, chunk*object.ChunkSize+4096); err != nil {
			t.Fatal(err)
		}
		if got := s.reads[chunk] > before; got != fromStore {
			t.Errorf("chunk %d read from the store: %v; want %v", chunk, got, fromStore)
		}
	}
	// Places a group apart: none is read in order after another.
	g := int64(object.ChunkGroup)
	for k := range int64(maxStreams) {
		read(k*g, true)
	}
	read(0, false)
	read(maxStreams*g, true) // takes the place of chunk g's
	read(2*g, false)
	read(g, true)
	read(maxStreams*g, false)
	if len(s.batches) != 0 {
		t.Errorf("reads at places apart asked for %v ahead; want nothing", s.batches)
	}
}

// BenchmarkReadersAtPlaces reads a file of 32 chunks from a machine's
// store through one open file, by 1, 2 or 4 readers at once, each its own
// part of the file in 128 KiB reads, as processes sharing a file's node
// do.
func BenchmarkReadersAtPlaces(b *testing.B) {
	store, root, data, _ := chunksFile(b, 32, 3)
	for _, readers := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("readers=%d", readers), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				f, err := NewObjects(store, root, object.Entry{}).Open("f")
				if err != nil {
					b.Fatal(err)
				}
				part := int64(len(data) / readers)
				var g errgroup.Group
				for r := range int64(readers) {
					g.Go(func() error {
						p := make([]byte, 128<<10)
						for off := r * part; off < (r+1)*part; off += int64(len(p)) {
							if _, err := f.ReadAt(p, off); err != nil {
								return err
							}
						}
						return nil
					})
				}
				if err := g.Wait(); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
	}
}

// slowChunkStore holds back the read of one object until gate closes.
type slowChunkStore struct {
	*object.DirStore
	slow    object.Digest
	entered chan struct{}
	gate    chan struct{}
}

func (s *slowChunkStore) GetInto(ctx context.Context, d object.Digest, buf []byte) ([]byte, error) {
	if d == s.slow {
		s.entered <- struct{}{}
		<-s.gate
	}
	return s.DirStore.GetInto(ctx, d, buf)
}

// A read at one place of a file goes on while a chunk at another is on
// its way from the store (from a master, perhaps for long); a second
// read of that chunk waits for it rather than reading it again.
func TestReadPlaceNotHeldByAnother(t *testing.T) {
	store, root, data, chunks := chunksFile(t, 8, 4)
	s := &slowChunkStore{DirStore: store, slow: chunks[6], entered: make(chan struct{}, 2), gate: make(chan struct{})}
	f, err := NewObjects(s, root, object.Entry{}).Open("f")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	released := false
	release := func() {
		if !released {
			released = true
			close(s.gate)
		}
	}
	t.Cleanup(release)

	readAt := func(chunk int64) <-chan error {
		done := make(chan error, 1)
		go func() {
			p := make([]byte, 4096)
			off := chunk*object.ChunkSize + 100
			_, err := f.ReadAt(p, off)
			if err == nil && !bytes.Equal(p, data[off:off+int64(len(p))]) {
				err = fmt.Errorf("chunk %d: not the file's bytes", chunk)
			}
			done <- err
		}()
		return done
	}
	wait := func(what string, done <-chan error) {
		t.Helper()
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			release()
			t.Fatalf("%s did not finish", what)
		}
	}
	slow := readAt(6)
	select {
	case <-s.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the slow read did not reach the store")
	}
	again := readAt(6)
	wait("a read at another place, while chunk 6 is on its way", readAt(1))
	wait("a second read at that place", readAt(1))
	release()
	wait("the read of chunk 6", slow)
	wait("a second read of chunk 6", again)
	if n := len(s.entered); n != 0 {
		t.Errorf("chunk 6 read from the store %d more times; want once", n)
	}
}
