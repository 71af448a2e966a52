package lower

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/object"
)

func TestBufClass(t *testing.T) {
	for _, c := range []struct{ n, class, size int }{
		{1, 0, 4096}, {4096, 0, 4096}, {4097, 1, 8192}, {100 << 10, 5, 128 << 10},
		{512 << 10, 7, 512 << 10}, {512<<10 + 1, 8, wholeChunk}, {wholeChunk, 8, wholeChunk},
	} {
		if class, size := bufClass(c.n); class != c.class || size != c.size {
			t.Errorf("bufClass(%d) = %d, %d; want %d, %d", c.n, class, size, c.class, c.size)
		}
	}
	for n := 1; n <= wholeChunk; n = n*3 + 1 {
		if b := getChunkBuf(n); cap(*b) < n {
			t.Errorf("getChunkBuf(%d): a buffer of %d", n, cap(*b))
		}
	}
}

// chunkFile stores a file of the given bytes in store, its chunks packed
// (or, with loose, each in a file of its own), an all-zero chunk as a
// hole, and returns its entry.
func chunkFile(t testing.TB, store *object.DirStore, name string, data []byte, loose bool) object.Entry {
	t.Helper()
	ctx := context.Background()
	f := &object.File{Size: int64(len(data))}
	for off := 0; off < len(data); off += object.ChunkSize {
		c := data[off:min(off+object.ChunkSize, len(data))]
		if !bytes.ContainsFunc(c, func(r rune) bool { return r != 0 }) {
			f.Chunks = append(f.Chunks, object.Digest{})
			continue
		}
		enc, err := object.EncodeBlob(c)
		if err != nil {
			t.Fatal(err)
		}
		put := store.PutPacked
		if loose {
			put = store.Put
		}
		d, err := put(ctx, enc)
		if err != nil {
			t.Fatal(err)
		}
		f.Chunks = append(f.Chunks, d)
	}
	enc, err := object.EncodeFile(f)
	if err != nil {
		t.Fatal(err)
	}
	d, err := store.Put(ctx, enc)
	if err != nil {
		t.Fatal(err)
	}
	return object.Entry{Name: name, Mode: unix.S_IFREG | 0o644, Size: f.Size, Object: d}
}

// filesTree stores files in a new store, their chunks packed but for
// those named in loose, and returns the store and the tree of a directory
// holding them.
func filesTree(t testing.TB, files map[string][]byte, loose ...string) (*object.DirStore, object.Digest) {
	t.Helper()
	store, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	var entries []object.Entry
	for name, data := range files {
		entries = append(entries, chunkFile(t, store, name, data, slices.Contains(loose, name)))
	}
	slices.SortFunc(entries, func(a, b object.Entry) int { return strings.Compare(a.Name, b.Name) })
	enc, err := object.EncodeTree(&object.Tree{Entries: entries})
	if err != nil {
		t.Fatal(err)
	}
	root, err := store.Put(context.Background(), enc)
	if err != nil {
		t.Fatal(err)
	}
	return store, root
}

// Object files read their chunks into buffers they hand on when closed:
// however reads, opens and closes of many files interleave, each read
// returns its own file's bytes.
func TestObjectFilesShareBuffers(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	random := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	hole := append(random(object.ChunkSize), make([]byte, object.ChunkSize)...)
	hole = append(hole, random(300<<10)...)
	files := map[string][]byte{
		"small": random(3000), "medium": random(100 << 10), "chunk": random(object.ChunkSize),
		"big": random(2*object.ChunkSize + 12345), "hole": hole, "loose": random(200 << 10),
	}
	for i := range 8 {
		files[fmt.Sprintf("f%d", i)] = random(1000 + i*37000)
	}
	store, root := filesTree(t, files, "loose")
	l := NewObjects(store, root, object.Entry{})

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	// The first few errors are enough; a reader never waits to say one.
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			names := make([]string, 0, len(files))
			for name := range files {
				names = append(names, name)
			}
			for range 30 {
				name := names[rng.Intn(len(names))]
				want := files[name]
				f, err := l.Open(name)
				if err != nil {
					fail(err)
					return
				}
				// Two readers of one open file, in pieces of the
				// kernel's sizes, from random places.
				var rw sync.WaitGroup
				for r := range 2 {
					rw.Add(1)
					rng := rand.New(rand.NewSource(rng.Int63() + int64(r)))
					go func() {
						defer rw.Done()
						for range 4 {
							off := rng.Int63n(int64(len(want)))
							size := []int{4096, 128 << 10, 1 << 20}[rng.Intn(3)]
							if r == 1 {
								// Views, held while the other
								// reader moves the file on.
								if err := checkSlices(f, want, off, size, func() { time.Sleep(time.Duration(rng.Intn(200)) * time.Microsecond) }); err != nil {
									fail(fmt.Errorf("%s: %v", name, err))
									return
								}
								continue
							}
							p := make([]byte, size)
							n, err := f.ReadAt(p, off)
							if err != nil && err != io.EOF {
								fail(fmt.Errorf("%s at %d: %v", name, off, err))
								return
							}
							if !bytes.Equal(p[:n], want[off:off+int64(n)]) {
								fail(fmt.Errorf("%s at %d: %d bytes not the file's", name, off, n))
								return
							}
						}
					}()
				}
				rw.Wait()
				if err := f.Close(); err != nil {
					fail(err)
					return
				}
				// A read after Close still reads the file.
				if rng.Intn(10) == 0 {
					p := make([]byte, 100)
					if n, _ := f.ReadAt(p, 0); !bytes.Equal(p[:n], want[:n]) {
						fail(fmt.Errorf("%s after close: not the file's bytes", name))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// checkSlices reads n bytes at off of f as views (ReadSlices), runs meanwhile
// while holding them, and checks them against the file's bytes, want.
func checkSlices(f File, want []byte, off int64, n int, meanwhile func()) error {
	vecs, release, err := f.(SliceReader).ReadSlices(context.Background(), off, n)
	if err != nil {
		return fmt.Errorf("views at %d: %v", off, err)
	}
	meanwhile()
	got := bytes.Join(vecs, nil)
	if release != nil {
		release()
	}
	end := min(off+int64(n), int64(len(want)))
	if !bytes.Equal(got, want[off:end]) {
		return fmt.Errorf("views at %d: %d bytes not the file's %d", off, len(got), end-off)
	}
	return nil
}

// Views of a file's bytes (ReadSlices) are its bytes, holes and chunk
// ends included, and stay so while the file reads on and other files
// read into the buffers of the pool: the memory of a chunk viewed goes
// back only once the view is released, and then is used again.
func TestObjectFileSlices(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	random := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	big := append(random(object.ChunkSize), make([]byte, object.ChunkSize)...)
	big = append(big, random(object.ChunkSize+5000)...)
	files := map[string][]byte{"big": big, "empty": nil}
	for i := range 6 {
		files[fmt.Sprintf("o%d", i)] = random(2 * object.ChunkSize)
	}
	store, root := filesTree(t, files)
	l := NewObjects(store, root, object.Entry{})
	f, err := l.Open("big")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const cs = object.ChunkSize
	for _, c := range []struct {
		off int64
		n   int
	}{{0, 4096}, {cs - 100, 200}, {cs, 4096}, {cs - 10, cs + 20}, {2*cs + 4000, cs}, {3*cs + 4999, 100}, {3*cs + 5000, 10}, {0, len(big)}} {
		if err := checkSlices(f, big, c.off, c.n, func() {}); err != nil {
			t.Error(err)
		}
	}
	if e, err := l.Open("empty"); err != nil {
		t.Fatal(err)
	} else if vecs, release, err := e.(SliceReader).ReadSlices(context.Background(), 0, 4096); len(vecs) != 0 || release != nil || err != nil {
		t.Errorf("an empty file: %d views, %v", len(vecs), err)
	}

	// A view of chunk 0, held while the file reads chunk 2 and other
	// files read whole chunks into the pool's buffers.
	err = checkSlices(f, big, 1000, 128<<10, func() {
		p := make([]byte, 4096)
		if _, err := f.ReadAt(p, 2*cs); err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			o, err := l.Open(fmt.Sprintf("o%d", i))
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, io.NewSectionReader(o, 0, 2*cs))
			o.Close()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// Released, it is the file's buffer again, or the pool's: not
	// kept by the file beside its last chunk.
	if m := lastMem(f); m == nil || m.refs.Load() != 1 {
		refs := int32(0)
		if m != nil {
			refs = m.refs.Load()
		}
		t.Fatalf("after the views' release: the last chunk's memory has %d references, want the file's 1", refs)
	}
}

// A file read after Close, its buffer meanwhile another file's, still
// reads its own bytes.
func TestObjectFileReadAfterClose(t *testing.T) {
	a, b := bytes.Repeat([]byte("a"), 50<<10), bytes.Repeat([]byte("b"), 50<<10)
	store, root := filesTree(t, map[string][]byte{"a": a, "b": b})
	l := NewObjects(store, root, object.Entry{})
	read := func(f File, want []byte) {
		t.Helper()
		p := make([]byte, len(want))
		if n, err := f.ReadAt(p, 0); n != len(want) || !bytes.Equal(p, want) {
			t.Fatalf("read %d bytes (%v), %q...; want %q...", n, err, p[:4], want[:4])
		}
	}
	for range 20 {
		fa, err := l.Open("a")
		if err != nil {
			t.Fatal(err)
		}
		read(fa, a)
		fa.Close()
		fb, err := l.Open("b")
		if err != nil {
			t.Fatal(err)
		}
		read(fb, b)
		read(fa, a)
		fb.Close()
		fa.Close()
	}
}

// gatedStore is a store whose reads, once armed, wait for gate, once
// entered says so.
type gatedStore struct {
	*object.DirStore
	armed   atomic.Bool
	entered chan struct{}
	gate    chan struct{}
}

func (g *gatedStore) GetInto(ctx context.Context, d object.Digest, buf []byte) ([]byte, error) {
	if g.armed.Load() {
		g.entered <- struct{}{}
		<-g.gate
	}
	return g.DirStore.GetInto(ctx, d, buf)
}

// Close does not wait for a read whose chunk is on its way (from a
// master, perhaps for long), and that read still returns the file's
// bytes.
func TestObjectFileCloseDuringRead(t *testing.T) {
	data := bytes.Repeat([]byte("x"), 70<<10)
	store, root := filesTree(t, map[string][]byte{"f": data})
	g := &gatedStore{DirStore: store, entered: make(chan struct{}, 1), gate: make(chan struct{})}
	f, err := NewObjects(g, root, object.Entry{}).Open("f")
	if err != nil {
		t.Fatal(err)
	}
	g.armed.Store(true) // the chunk's read, not the trees' on the way
	read := make(chan error, 1)
	go func() {
		p := make([]byte, len(data))
		n, err := f.ReadAt(p, 0)
		if err == nil && !bytes.Equal(p[:n], data) {
			err = fmt.Errorf("%d bytes, not the file's", n)
		}
		read <- err
	}()
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the read did not reach the store")
	}
	closed := make(chan error, 1)
	go func() { closed <- f.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		close(g.gate)
		t.Fatal("Close waited for the read under way")
	}
	close(g.gate)
	select {
	case err := <-read:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the read did not finish")
	}
}

// ownStore reads every object into memory of its own, as a remote
// cache does for what it fetches or holds.
type ownStore struct{ *object.DirStore }

func (s ownStore) GetInto(ctx context.Context, d object.Digest, _ []byte) ([]byte, error) {
	return s.DirStore.Get(ctx, d)
}

// A file holds a buffer only while its chunk is in it: one whose chunk
// came in memory of its own (fetched, held) hands the buffer back at
// once rather than hold both.
func TestObjectFileHoldsBufferOnlyInUse(t *testing.T) {
	data := bytes.Repeat([]byte("y"), 30<<10)
	store, root := filesTree(t, map[string][]byte{"f": data})
	for _, c := range []struct {
		name string
		g    object.Getter
		held bool
	}{{"packed", store, true}, {"own memory", ownStore{store}, false}} {
		f, err := NewObjects(c.g, root, object.Entry{}).Open("f")
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, len(data))
		if n, err := f.ReadAt(p, 0); n != len(data) || !bytes.Equal(p, data) {
			t.Fatalf("%s: read %d bytes, %v", c.name, n, err)
		}
		m := lastMem(f)
		if held := m != nil && m.buf != nil; held != c.held {
			t.Errorf("%s: holds a buffer: %v, want %v", c.name, held, c.held)
		}
		f.Close()
	}
}

// Trees are read into a buffer kept between them and decoded out of it:
// a tree decoded before another was read into the same buffer keeps its
// names, targets and xattrs.
func TestTreesOutOfOneBuffer(t *testing.T) {
	ctx := context.Background()
	store, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	dir := func(prefix string) (*object.Tree, object.Digest) {
		tr := &object.Tree{}
		for i := range 50 {
			tr.Entries = append(tr.Entries, object.Entry{
				Name: fmt.Sprintf("%s%02d", prefix, i), Mode: unix.S_IFLNK | 0o777,
				Target: strings.Repeat(prefix, i+1),
				Xattrs: map[string][]byte{"user." + prefix: []byte(prefix + "value")},
			})
		}
		enc, err := object.EncodeTree(tr)
		if err != nil {
			t.Fatal(err)
		}
		d, err := store.PutPacked(ctx, enc)
		if err != nil {
			t.Fatal(err)
		}
		return tr, d
	}
	wantA, a := dir("a")
	wantB, b := dir("b")
	root, err := object.EncodeTree(&object.Tree{Entries: []object.Entry{
		{Name: "a", Mode: unix.S_IFDIR | 0o755, Object: a},
		{Name: "b", Mode: unix.S_IFDIR | 0o755, Object: b},
	}})
	if err != nil {
		t.Fatal(err)
	}
	r, err := store.PutPacked(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	l := NewObjects(store, r, object.Entry{})
	gotA, err := l.Tree(a)
	if err != nil {
		t.Fatal(err)
	}
	gotB, err := l.Tree(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ got, want *object.Tree }{{gotA, wantA}, {gotB, wantB}} {
		if !reflect.DeepEqual(c.got.Entries, c.want.Entries) {
			t.Errorf("tree of %s... decoded as %+v", c.want.Entries[0].Name, c.got.Entries[:2])
		}
	}
}

// lastMem is the memory of the chunk f read last.
func lastMem(f File) *chunkMem {
	o := f.(*objectFile)
	var last *stream
	for k := range o.streams {
		if s := &o.streams[k]; last == nil || s.used > last.used {
			last = s
		}
	}
	return last.mem
}
