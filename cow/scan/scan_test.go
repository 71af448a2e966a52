package scan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/internal/cowtest"
	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
)

// scanT scans path of dir into a fresh store and returns the store and
// the entry. Its deadline only bounds a hang: a scan under a rename loop
// retries, and under -race on a loaded machine that takes a while.
func scanT(t *testing.T, lo lower.Layer, path string) (*object.DirStore, object.Entry, error) {
	t.Helper()
	store, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e, _, err := Tree(ctx, lo, path, store, nil)
	return store, e, err
}

// scanSetup opens exp as a lower and a fresh store, both closed or removed
// when the test ends, with a context that has a deadline.
func scanSetup(t *testing.T, exp string) (*lower.Dir, *object.DirStore, context.Context) {
	t.Helper()
	lo, err := lower.OpenDirStrict(exp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lo.Close() })
	store, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return lo, store, ctx
}

// A directory renamed away and back while the master scans it must come
// out whole or the scan must fail: a scan that took the ENOENTs of its
// moved children for removals gave workers a project without its code.
func TestScanRenameStorm(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("slow: 20 scans of 1,500 files under a rename loop (runs without -short)")
	}
	exp := t.TempDir()
	const files = 1500
	spiders := filepath.Join(exp, "p", "spiders")
	if err := os.MkdirAll(spiders, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range files {
		if err := os.WriteFile(filepath.Join(spiders, fmt.Sprintf("s%04d.py", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lo, err := lower.OpenDirStrict(exp)
	if err != nil {
		t.Fatal(err)
	}
	defer lo.Close()

	tmp := spiders + ".tmp"
	stop := inLoop(func() {
		os.Rename(spiders, tmp)
		os.Rename(tmp, spiders)
	})
	whole, failed := 0, 0
	for range 20 {
		store, e, err := scanT(t, lo, "p")
		if err != nil {
			if !errors.Is(err, ErrChanging) {
				t.Errorf("scan: %v, want a whole tree or ErrChanging", err)
			}
			failed++
			continue
		}
		p := cowtest.TreeOf(t, store, e.Object)
		if len(p.Entries) != 1 {
			t.Errorf("p has %d entries, want 1", len(p.Entries))
			continue
		}
		if n := len(cowtest.TreeOf(t, store, p.Entries[0].Object).Entries); n != files {
			t.Errorf("%s has %d of %d files", p.Entries[0].Name, n, files)
			continue
		}
		whole++
	}
	stop()
	t.Logf("%d whole trees, %d scans gave up", whole, failed)
	// Quiet again: the scan is whole.
	store, e, err := scanT(t, lo, "p")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(cowtest.TreeOf(t, store, cowtest.TreeOf(t, store, e.Object).Entries[0].Object).Entries); n != files {
		t.Fatalf("after the renames: %d of %d files", n, files)
	}
}

// A sparse file is scanned by its data, not read as zeros.
func TestScanSparse(t *testing.T) {
	t.Parallel()
	exp := t.TempDir()
	f, err := os.Create(filepath.Join(exp, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 30 // 64 GiB, almost all hole
	if _, err := f.WriteAt([]byte("data"), 5*object.ChunkSize+7); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	lo, store, ctx := scanSetup(t, exp)
	e, st, err := Tree(ctx, lo, "sparse", store, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.BytesRead != object.ChunkSize {
		t.Errorf("read %d bytes of a file with one chunk of data, want %d", st.BytesRead, object.ChunkSize)
	}
	b, err := store.Get(ctx, e.Object)
	if err != nil {
		t.Fatal(err)
	}
	fo, err := object.DecodeFile(b)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range fo.Chunks {
		if c.IsZero() != (i != 5) {
			t.Fatalf("chunk %d: zero %v", i, c.IsZero())
		}
	}
}

// A scan-cache hit that keeps its file object in memory (a master's) is
// still checked chunk by chunk: after a gc stopped half-way removed the
// chunks, the next scan stores them again.
func TestScanCacheHitChecksChunks(t *testing.T) {
	t.Parallel()
	exp := t.TempDir()
	if err := os.WriteFile(filepath.Join(exp, "f"), bytes.Repeat([]byte("spider "), 300000), 0o644); err != nil {
		t.Fatal(err)
	}
	lo, store, ctx := scanSetup(t, exp)
	var cache MemCache
	if _, _, err := Tree(ctx, lo, "", store, &cache); err != nil {
		t.Fatal(err)
	}
	var blobs []object.Digest
	store.Each(func(o object.StoredObject) error {
		if k, err := store.Kind(o.Digest); err == nil && k == object.KindBlob {
			blobs = append(blobs, o.Digest)
		}
		return nil
	})
	for _, d := range blobs {
		store.Remove(d)
	}
	e, st, err := Tree(ctx, lo, "", store, &cache)
	if err != nil {
		t.Fatal(err)
	}
	if st.BytesRead == 0 {
		t.Error("the second scan took the cache's word and read nothing")
	}
	if probs, err := object.Verify(ctx, store, e.Object); err != nil || len(probs) != 0 {
		t.Fatalf("after the second scan: %d problems (%v), %v", len(probs), probs, err)
	}
}

// A directory of the export swapped for a symlink to a directory outside
// it, again and again while the master scans: no scan reads a byte from
// outside the export. Each look at an entry goes through a descriptor of
// its directory, opened beneath the export's root with no symlinks
// (lower.Subdir), and never follows the entry's own name.
func TestScanSymlinkSwap(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("slow: scans under a symlink-swap loop (runs without -short)")
	}
	exp, outside := t.TempDir(), t.TempDir()
	d := filepath.Join(exp, "p", "d")
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		name := fmt.Sprintf("f%02d", i)
		if err := os.WriteFile(filepath.Join(d, name), []byte("inside\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(outside, name), []byte("SECRET\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lo, err := lower.OpenDirStrict(exp)
	if err != nil {
		t.Fatal(err)
	}
	defer lo.Close()
	stop := inLoop(func() {
		os.Rename(d, d+".away")
		os.Symlink(outside, d)
		os.Remove(d)
		os.Rename(d+".away", d)
	})
	defer stop()
	secret, _ := object.EncodeBlob([]byte("SECRET\n"))
	for range 10 {
		store, _, _ := scanT(t, lo, "p")
		if ok, _ := store.Has(context.Background(), object.Sum(secret)); ok {
			t.Fatal("a scan stored a file from outside the export")
		}
	}
}

// inLoop runs change again and again on another goroutine until the
// returned stop is called; stop waits for the last run to end.
func inLoop(change func()) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			change()
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}

// Hashing a big lower file must not allocate a chunk's worth of memory per
// chunk: a snapshot's prepare shares the mount process with the requests
// it serves, and garbage at the rate the lower is read made the collector
// stop them all about once every ten chunks.
func TestChunkReusesBuffers(t *testing.T) {
	exp := t.TempDir()
	const chunks = 16
	data := make([]byte, chunks*object.ChunkSize)
	for i := range data {
		data[i] = byte(i*7 + i/object.ChunkSize)
	}
	if err := os.WriteFile(filepath.Join(exp, "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	lo, store, ctx := scanSetup(t, exp)
	s := New(ctx, lo, cowtest.PutCached{DirStore: store}, nil)
	read := func(b []byte, off int64) (int, error) { return copy(b, data[off:]), nil }
	if _, err := s.Chunk(read, 0, object.ChunkSize); err != nil { // the buffers, once
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := int64(1); i < chunks; i++ {
		if _, err := s.Chunk(read, i*object.ChunkSize, (i+1)*object.ChunkSize); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > object.ChunkSize {
		t.Errorf("hashing %d chunks allocated %d bytes; want less than one chunk (%d)", chunks-1, got, object.ChunkSize)
	}
}
