package object

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"
)

// testBlob returns an encoded blob of n bytes, different for each seed.
func testBlob(seed, n int) []byte {
	r := rand.New(rand.NewPCG(uint64(seed), 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	enc, _ := EncodeBlob(b)
	return enc
}

func packFiles(t *testing.T, dir, ext string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, packsDirName, "*"+ext))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func smallPacks(t *testing.T, n int64) {
	old := packTarget
	packTarget = n
	t.Cleanup(func() { packTarget = old })
}

// twoStores opens two stores on one new directory: two mount processes.
func twoStores(t *testing.T) (a, b *DirStore) {
	t.Helper()
	dir := t.TempDir()
	var err error
	if a, err = OpenDirStore(dir); err != nil {
		t.Fatal(err)
	}
	if b, err = OpenDirStore(dir); err != nil {
		t.Fatal(err)
	}
	return a, b
}

// What a cache stores goes to a pack, not a file per object; it is read
// back verified, by this store and by another one on the same directory
// (another mount process), and an existing store's files are still read.
func TestPackPutGet(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a, err := OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	loose, err := a.Put(ctx, testBlob(0, 1000)) // as an older cowfs stored it
	if err != nil {
		t.Fatal(err)
	}
	var ds []Digest
	for i := 1; i <= 20; i++ {
		b := testBlob(i, 10000+i)
		d := Sum(b)
		if err := a.PutCachedAs(d, b); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	h := ds[0].String()[len(digestPrefix):]
	if _, err := os.Stat(filepath.Join(dir, h[:2], h[2:])); err == nil {
		t.Fatal("a cached object was stored in a file of its own")
	}
	if n := len(packFiles(t, dir, ".pack")); n != 1 {
		t.Fatalf("%d packs for 20 small objects", n)
	}
	b, err := OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range append(ds, loose) {
		for _, s := range []*DirStore{a, b} {
			got, err := s.Get(ctx, d)
			if err != nil || Sum(got) != d {
				t.Fatalf("object %d: %d bytes, %v", i, len(got), err)
			}
			if ok, err := s.Has(ctx, d); !ok || err != nil {
				t.Fatalf("object %d: has %v, %v", i, ok, err)
			}
			if k, err := s.Kind(d); k != KindBlob || err != nil {
				t.Fatalf("object %d: kind %c, %v", i, k, err)
			}
		}
	}
	// Stored by b after a loaded its packs: a finds it on its miss.
	late := testBlob(99, 5000)
	if err := b.PutCachedAs(Sum(late), late); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Get(ctx, Sum(late)); err != nil || !bytes.Equal(got, late) {
		t.Fatalf("object another store packed: %d bytes, %v", len(got), err)
	}
	n := 0
	a.Each(func(o StoredObject) error { n++; return nil })
	if n != 22 {
		t.Fatalf("Each listed %d objects, want 22", n)
	}
}

// HasKnown answers from what this store last read of the packs: yes for
// what it packed, no for what another store packed since, until a look
// (Has) reads that; never yes for what is not there.
func TestPackHasKnown(t *testing.T) {
	ctx := context.Background()
	a, b := twoStores(t)
	mine, theirs := testBlob(1, 3000), testBlob(2, 3000)
	if a.HasKnown(Sum(mine)) {
		t.Fatal("known before it was stored")
	}
	if err := a.PutCachedAs(Sum(mine), mine); err != nil {
		t.Fatal(err)
	}
	if err := b.PutCachedAs(Sum(theirs), theirs); err != nil {
		t.Fatal(err)
	}
	if !a.HasKnown(Sum(mine)) {
		t.Error("an object this store packed is not known")
	}
	if a.HasKnown(Sum(theirs)) {
		t.Error("an object another store packed is known without a look")
	}
	if ok, err := a.Has(ctx, Sum(theirs)); !ok || err != nil {
		t.Fatalf("has: %v, %v", ok, err)
	}
	if !a.HasKnown(Sum(theirs)) {
		t.Error("not known after a look found it")
	}
}

// HasMany answers as Has would for each object: in this store's pack, in
// another store's pack on the same directory (another mount process)
// written after this one last looked, in a file of its own, or missing.
func TestPackHasMany(t *testing.T) {
	ctx := context.Background()
	a, b := twoStores(t)
	mine, theirs, loose, missing := testBlob(1, 3000), testBlob(2, 3000), testBlob(3, 3000), testBlob(4, 3000)
	if err := a.PutCachedAs(Sum(mine), mine); err != nil {
		t.Fatal(err)
	}
	// a looks once, then b packs theirs: only a fresh look finds it.
	if ok, err := a.Has(ctx, Sum(missing)); ok || err != nil {
		t.Fatalf("has missing: %v, %v", ok, err)
	}
	if err := b.PutCachedAs(Sum(theirs), theirs); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Put(ctx, loose); err != nil {
		t.Fatal(err)
	}
	ds := []Digest{Sum(missing), Sum(mine), Sum(theirs), Sum(loose), Sum(missing)}
	got, err := a.HasMany(ds)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		want, err := a.Has(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if got[i] != want {
			t.Errorf("object %d: HasMany says %v, Has %v", i, got[i], want)
		}
	}
	if want := []bool{false, true, true, true, false}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("HasMany = %v; want %v", got, want)
	}
	if got, err := a.HasMany(nil); err != nil || len(got) != 0 {
		t.Errorf("HasMany(nil) = %v, %v", got, err)
	}
}

// A writer seals its pack once it is full and starts another.
func TestPackSeals(t *testing.T) {
	smallPacks(t, 64<<10)
	dir := t.TempDir()
	s, _ := OpenDirStore(dir)
	for i := range 20 {
		b := testBlob(i, 10000)
		if err := s.PutCachedAs(Sum(b), b); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(packFiles(t, dir, ".pack")); n < 3 {
		t.Fatalf("%d packs for 200 KB with packs of 64 KiB", n)
	}
	other, _ := OpenDirStore(dir)
	if err := other.packs.refresh(false); err != nil {
		t.Fatal(err)
	}
	sealed := 0
	for _, p := range other.packs.all {
		if p.sealed {
			sealed++
		}
	}
	if sealed != len(other.packs.all)-1 {
		t.Fatalf("%d of %d packs sealed; all but the one being written should be", sealed, len(other.packs.all))
	}
}

// A damaged byte in a pack is caught by the read that meets it: the copy
// is quarantined and never read again, the store no longer has the
// object (a cache fetches it again), and storing it again serves it.
func TestPackDamagedByte(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, _ := OpenDirStore(dir)
	blob := testBlob(1, 100000)
	other := testBlob(2, 100000)
	d := Sum(blob)
	for _, b := range [][]byte{blob, other} {
		if err := s.PutCachedAs(Sum(b), b); err != nil {
			t.Fatal(err)
		}
	}
	damage(t, s, d)
	reader, _ := OpenDirStore(dir) // another process, which loaded the index before
	if _, err := reader.Has(ctx, d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, d); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("get of a damaged packed object: %v, want ErrCorrupt", err)
	}
	for _, st := range []*DirStore{s, reader} {
		if ok, _ := st.Has(ctx, d); ok {
			t.Fatal("the damaged object is still in the store")
		}
	}
	if _, err := os.Stat(filepath.Join(dir, QuarantineDir, d.String()[len(digestPrefix):])); err != nil {
		t.Fatalf("not quarantined: %v", err)
	}
	if got, err := reader.Get(ctx, Sum(other)); err != nil || !bytes.Equal(got, other) {
		t.Fatalf("the object beside it: %d bytes, %v", len(got), err)
	}
	if err := reader.PutCachedAs(d, blob); err != nil {
		t.Fatal(err)
	}
	for _, st := range []*DirStore{s, reader} {
		if got, err := st.Get(ctx, d); err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("after storing it again: %d bytes, %v", len(got), err)
		}
	}
}

// GetInto reads a packed object into the caller's buffer when it fits,
// into new memory when it does not or the object is a file of its own,
// and checks it either way: a damaged copy read into the buffer is
// refused and quarantined as Get's is.
func TestGetInto(t *testing.T) {
	ctx := context.Background()
	s, _ := OpenDirStore(t.TempDir())
	packed, loose, bad := testBlob(1, 100000), testBlob(2, 5000), testBlob(3, 7000)
	for _, b := range [][]byte{packed, bad} {
		if err := s.PutCachedAs(Sum(b), b); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Put(ctx, loose); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 200000)
	got, err := s.GetInto(ctx, Sum(packed), buf)
	if err != nil || !bytes.Equal(got, packed) {
		t.Fatalf("packed: %d bytes, %v", len(got), err)
	}
	if &got[0] != &buf[0] {
		t.Error("a packed object that fits was not read into the buffer")
	}
	small := make([]byte, 10)
	if got, err := s.GetInto(ctx, Sum(packed), small); err != nil || !bytes.Equal(got, packed) || &got[0] == &small[0] {
		t.Errorf("packed, buffer too small: %d bytes, %v", len(got), err)
	}
	if got, err := s.GetInto(ctx, Sum(loose), buf); err != nil || !bytes.Equal(got, loose) {
		t.Errorf("loose: %d bytes, %v", len(got), err)
	}
	damage(t, s, Sum(bad))
	if _, err := s.GetInto(ctx, Sum(bad), buf); !errors.Is(err, ErrCorrupt) {
		t.Errorf("damaged: %v, want ErrCorrupt", err)
	}
	if ok, _ := s.Has(ctx, Sum(bad)); ok {
		t.Error("the damaged object is still in the store")
	}
}

// damage flips a byte in the middle of d's stored bytes.
func damage(t *testing.T, s *DirStore, d Digest) {
	t.Helper()
	p, off, size, err := s.Locate(d)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(p, 0o600)
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	f.ReadAt(b[:], off+size/2)
	b[0] ^= 0x40
	if _, err := f.WriteAt(b[:], off+size/2); err != nil {
		t.Fatal(err)
	}
}

// A crash can leave a pack's index ahead of its bytes (the index reached
// the disk, the bytes did not), or the bytes without their index entry,
// or a torn entry at the index's end. Nothing synced before is lost, and
// nothing wrong is served: a copy whose bytes are missing or zeroed is
// reported damaged, and storing it again serves it.
func TestPackCrash(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		// crash does to the pack and index files what a crash could,
		// after synced objects of syncedLen bytes, and returns which
		// unsynced objects may be missing (all of them may).
		crash func(t *testing.T, pack, idx string, syncedLen, syncedIdx int64)
	}{
		{"bytes cut off", func(t *testing.T, pack, idx string, n, _ int64) {
			if err := os.Truncate(pack, n+100); err != nil {
				t.Fatal(err)
			}
		}},
		{"bytes zeroed", func(t *testing.T, pack, idx string, n, _ int64) {
			fi, _ := os.Stat(pack)
			os.Truncate(pack, n)
			os.Truncate(pack, fi.Size())
		}},
		{"index entries lost", func(t *testing.T, pack, idx string, _, n int64) {
			if err := os.Truncate(idx, n); err != nil {
				t.Fatal(err)
			}
		}},
		{"index torn", func(t *testing.T, pack, idx string, _, n int64) {
			if err := os.Truncate(idx, n+entrySize+20); err != nil {
				t.Fatal(err)
			}
			f, _ := os.OpenFile(idx, os.O_WRONLY|os.O_APPEND, 0)
			f.Write(bytes.Repeat([]byte{0xee}, entrySize))
			f.Close()
		}},
		{"index of a pack that is gone", func(t *testing.T, pack, idx string, _, _ int64) {
			os.Remove(pack)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := OpenDirStore(dir)
			var synced, unsynced [][]byte
			for i := range 5 {
				b := testBlob(i, 30000)
				if err := s.PutCachedAs(Sum(b), b); err != nil {
					t.Fatal(err)
				}
				synced = append(synced, b)
			}
			if err := s.Sync(); err != nil {
				t.Fatal(err)
			}
			pack, idx := packFiles(t, dir, ".pack")[0], packFiles(t, dir, ".idx")[0]
			pfi, _ := os.Stat(pack)
			ifi, _ := os.Stat(idx)
			for i := 5; i < 10; i++ {
				b := testBlob(i, 30000)
				if err := s.PutCachedAs(Sum(b), b); err != nil {
					t.Fatal(err)
				}
				unsynced = append(unsynced, b)
			}
			if c.name == "index of a pack that is gone" {
				synced, unsynced = nil, append(synced, unsynced...)
			}
			c.crash(t, pack, idx, pfi.Size(), ifi.Size())

			after, _ := OpenDirStore(dir) // the process after the crash
			for i, b := range synced {
				if got, err := after.Get(ctx, Sum(b)); err != nil || !bytes.Equal(got, b) {
					t.Fatalf("synced object %d: %d bytes, %v", i, len(got), err)
				}
			}
			for i, b := range unsynced {
				got, err := after.Get(ctx, Sum(b))
				switch {
				case err == nil && !bytes.Equal(got, b):
					t.Fatalf("unsynced object %d: wrong bytes served", i)
				case err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotFound):
					t.Fatalf("unsynced object %d: %v", i, err)
				case err != nil:
					if ok, _ := after.Has(ctx, Sum(b)); ok {
						t.Fatalf("unsynced object %d: unreadable (%v) but the store has it", i, err)
					}
					// The cache fetches it again.
					if err := after.PutCachedAs(Sum(b), b); err != nil {
						t.Fatal(err)
					}
					if got, err := after.Get(ctx, Sum(b)); err != nil || !bytes.Equal(got, b) {
						t.Fatalf("unsynced object %d stored again: %d bytes, %v", i, len(got), err)
					}
				}
			}
			if _, err := os.Stat(idx); c.name == "index of a pack that is gone" && err == nil {
				t.Error("the index of a pack that is gone was kept")
			}
		})
	}
}

// A sweep (gc, eviction) removes packed objects one by one as before;
// a pack with nothing live goes whole, one partly dead has its live
// objects copied out first, and every process stops seeing what went.
func TestPackSweep(t *testing.T) {
	smallPacks(t, 100<<10)
	ctx := context.Background()
	dir := t.TempDir()
	s, _ := OpenDirStore(dir)
	var blobs [][]byte
	for i := range 12 {
		b := testBlob(i, 30000)
		if err := s.PutCachedAs(Sum(b), b); err != nil {
			t.Fatal(err)
		}
		blobs = append(blobs, b)
	}
	// Four objects of 30 KB to a pack of 100 KiB: three sealed packs.
	if n := len(packFiles(t, dir, ".pack")); n != 3 {
		t.Fatalf("%d packs", n)
	}
	other, _ := OpenDirStore(dir)
	for _, b := range blobs {
		if ok, _ := other.Has(ctx, Sum(b)); !ok {
			t.Fatal("other store misses an object")
		}
	}
	sweep := func(ds ...Digest) {
		t.Helper()
		w, err := s.LockSweep(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer w.Unlock()
		for _, d := range ds {
			if ok, size, err := w.Remove(d); !ok || size != 30000+2 || err != nil {
				t.Fatalf("remove: %v %d %v", ok, size, err)
			}
		}
	}
	// Too young for a sweep with a cutoff in the past.
	w, _ := s.LockSweep(ctx)
	if ok, _, err := w.RemoveIfOlder(Sum(blobs[0]), time.Now().Add(-time.Hour)); ok || err != nil {
		t.Fatalf("removed an object younger than the cutoff: %v", err)
	}
	w.Unlock()

	// The first pack entirely: it goes.
	sweep(Sum(blobs[0]), Sum(blobs[1]), Sum(blobs[2]), Sum(blobs[3]))
	if n := len(packFiles(t, dir, ".pack")); n != 2 {
		t.Fatalf("%d packs after one was emptied", n)
	}
	// Three of the second's four: the last is copied out, the pack goes.
	sweep(Sum(blobs[4]), Sum(blobs[5]), Sum(blobs[6]))
	for _, st := range []*DirStore{s, other} {
		for i, b := range blobs {
			ok, _ := st.Has(ctx, Sum(b))
			got, err := st.Get(ctx, Sum(b))
			if i < 7 && (ok || err == nil) {
				t.Fatalf("object %d still there after its removal: %v", i, err)
			}
			if i >= 7 && (!ok || !bytes.Equal(got, b)) {
				t.Fatalf("object %d: has %v, %v", i, ok, err)
			}
		}
	}
	var total int64
	other.Each(func(o StoredObject) error { total += o.Size; return nil })
	if total != 5*30002 {
		t.Fatalf("Each counts %d bytes, want %d", total, 5*30002)
	}
	var onDisk int64
	for _, p := range packFiles(t, dir, ".pack") {
		fi, _ := os.Stat(p)
		onDisk += fi.Size()
	}
	if onDisk > 6*30002 {
		t.Fatalf("packs hold %d bytes on disk for 5 live objects", onDisk)
	}
}

// A pack another process still appends to is not removed, however dead:
// its writer would go on appending to a file that is gone.
func TestPackSweepSparesWritersPack(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	writer, _ := OpenDirStore(dir)
	b := testBlob(1, 1000)
	if err := writer.PutCachedAs(Sum(b), b); err != nil {
		t.Fatal(err)
	}
	sweeper, _ := OpenDirStore(dir)
	w, _ := sweeper.LockSweep(ctx)
	if ok, _, err := w.Remove(Sum(b)); !ok || err != nil {
		t.Fatalf("remove: %v, %v", ok, err)
	}
	w.Unlock()
	if n := len(packFiles(t, dir, ".pack")); n != 1 {
		t.Fatal("the writer's pack was removed")
	}
	c := testBlob(2, 1000)
	if err := writer.PutCachedAs(Sum(c), c); err != nil {
		t.Fatal(err)
	}
	if got, err := sweeper.Get(ctx, Sum(c)); err != nil || !bytes.Equal(got, c) {
		t.Fatalf("appended after the sweep: %v", err)
	}
	if ok, _ := writer.Has(ctx, Sum(b)); ok {
		t.Fatal("the writer still has what the sweep removed")
	}
}

// Readers and writers on two stores over one directory, with sweeps,
// under -race: every read is whole or not found, never wrong.
func TestPackConcurrent(t *testing.T) {
	smallPacks(t, 256<<10)
	ctx := context.Background()
	dir := t.TempDir()
	stores := make([]*DirStore, 2)
	for i := range stores {
		stores[i], _ = OpenDirStore(dir)
	}
	const n = 200
	blobs := make([][]byte, n)
	for i := range blobs {
		blobs[i] = testBlob(i, 2000+i*50)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	deadline := time.Now().Add(3 * time.Second)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[g%2]
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for i := 0; time.Now().Before(deadline) && i < 2000; i++ {
				b := blobs[r.IntN(n)]
				d := Sum(b)
				switch r.IntN(4) {
				case 0:
					if err := s.PutCachedAs(d, b); err != nil {
						errs <- err
						return
					}
				case 1:
					if g%3 != 0 {
						continue
					}
					w, err := s.LockSweep(ctx)
					if err != nil {
						errs <- err
						return
					}
					_, _, err = w.Remove(d)
					w.Unlock()
					if err != nil {
						errs <- err
						return
					}
				default:
					got, err := s.Get(ctx, d)
					if err == nil && !bytes.Equal(got, b) {
						errs <- fmt.Errorf("wrong bytes for object %s", d.Short())
						return
					}
					if err != nil && !errors.Is(err, ErrNotFound) {
						errs <- err
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
	// Whatever is listed is whole.
	stores[0].Each(func(o StoredObject) error {
		if _, err := stores[0].Get(ctx, o.Digest); err != nil {
			t.Errorf("listed but unreadable: %v", err)
		}
		return nil
	})
	if q, _ := os.ReadDir(filepath.Join(dir, QuarantineDir)); len(q) > 0 {
		t.Errorf("%d objects quarantined with nothing damaged", len(q))
	}
}

// PutPacked (a master's scans and pushes) packs a new object and leaves
// an object an older store kept as a file, whole, where it is, with no
// second copy; a damaged file is quarantined and the object packed. The
// unverified reads a master serves from find both kinds, into the
// caller's buffer when it fits.
func TestPutPacked(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	fileObj := func(d Digest) string {
		h := d.String()[len(digestPrefix):]
		return filepath.Join(dir, h[:2], h[2:])
	}
	loose, err := s.Put(ctx, testBlob(0, 3000)) // as an older cowfs stored it
	if err != nil {
		t.Fatal(err)
	}
	damaged, err := s.Put(ctx, testBlob(1, 3000))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(fileObj(damaged), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fileObj(damaged), testBlob(2, 3000), 0o600); err != nil {
		t.Fatal(err)
	}

	for i := range 3 {
		d, err := s.PutPacked(ctx, testBlob(i, 3000))
		if err != nil || d != Sum(testBlob(i, 3000)) {
			t.Fatalf("PutPacked %d: %s, %v", i, d.Short(), err)
		}
	}
	packed := Sum(testBlob(2, 3000))
	if _, err := os.Stat(fileObj(packed)); err == nil {
		t.Error("PutPacked stored a file of its own")
	}
	if _, err := os.Stat(fileObj(loose)); err != nil {
		t.Errorf("the object stored as a file before: %v", err)
	}
	if ls, _ := s.packs.locs(loose, lookFresh); len(ls) != 0 {
		t.Error("an object held whole as a file was packed again")
	}
	if _, err := os.Stat(fileObj(damaged)); err == nil {
		t.Error("the damaged file is still in the store")
	}
	if _, err := os.Stat(filepath.Join(dir, QuarantineDir, damaged.String()[len(digestPrefix):])); err != nil {
		t.Errorf("the damaged file was not quarantined: %v", err)
	}
	if _, err := s.PutPacked(ctx, []byte("not an object")); !errors.Is(err, ErrCorrupt) {
		t.Errorf("PutPacked of garbage: %v, want ErrCorrupt", err)
	}

	other, err := OpenDirStore(dir) // another process: the packs not loaded yet
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []*DirStore{s, other} {
		buf := make([]byte, 0, 4096)
		for _, d := range []Digest{loose, damaged, packed} {
			got, err := readUnverifiedInto(st, d, buf)
			if err != nil || Sum(got) != d {
				t.Fatalf("ReadUnverifiedInto %s: %d bytes, %v", d.Short(), len(got), err)
			}
			if &got[0] != &buf[:1][0] {
				t.Errorf("ReadUnverifiedInto %s did not read into the buffer that fits", d.Short())
			}
			if got, err := st.ReadUnverified(d); err != nil || Sum(got) != d {
				t.Fatalf("ReadUnverified %s: %d bytes, %v", d.Short(), len(got), err)
			}
		}
		if _, err := readUnverifiedInto(st, Sum(testBlob(9, 10)), buf); !errors.Is(err, ErrNotFound) {
			t.Errorf("ReadUnverifiedInto of a missing object: %v, want ErrNotFound", err)
		}
		// WillNeed knows a packed copy's size, and nothing else.
		for d, want := range map[Digest]int64{packed: int64(len(testBlob(2, 3000))), loose: 0, Sum(testBlob(9, 10)): 0} {
			if n := st.WillNeed(d, 0); n != want {
				t.Errorf("WillNeed %s: %d, want %d", d.Short(), n, want)
			}
		}
	}
}

// A copy another process removed is not read by a store that loaded the
// packs before (a master serving while `cowfs gc` runs), even while its
// bytes are still in a pack that store writes: a removal is seen at the
// next look, as a removed file is.
func TestPackRemovalSeen(t *testing.T) {
	ctx := context.Background()
	a, b := twoStores(t)
	d, err := a.PutPacked(ctx, testBlob(1, 3000))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ReadUnverified(d); err != nil {
		t.Fatal(err)
	}
	before, err := a.Reads()
	if err != nil {
		t.Fatal(err)
	}
	removeOne(t, b, d)
	if got, err := a.ReadUnverified(d); !errors.Is(err, ErrNotFound) {
		t.Errorf("read of a removed copy: %d bytes, %v; want ErrNotFound", len(got), err)
	}
	if _, err := a.Get(ctx, d); !errors.Is(err, ErrNotFound) {
		t.Errorf("verified read of a removed copy: %v; want ErrNotFound", err)
	}
	if n := a.WillNeed(d, 0); n != 0 {
		t.Errorf("WillNeed of a removed copy: %d", n)
	}
	// Reads looked once: those from before the removal may read the
	// copy, whole (its bytes are still in the pack); those from after
	// do not.
	if got, err := before.ReadUnverifiedWith(d, func(n int) []byte { return make([]byte, n) }); err == nil && Sum(got) != d {
		t.Errorf("read of a removed copy, looked for before: %d bytes not the object's", len(got))
	}
	after, err := a.Reads()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := after.ReadUnverifiedWith(d, func(n int) []byte { return make([]byte, n) }); !errors.Is(err, ErrNotFound) {
		t.Errorf("read of a removed copy, looked for after: %d bytes, %v; want ErrNotFound", len(got), err)
	}
	if n := after.WillNeed(d, 0); n != 0 {
		t.Errorf("WillNeed of a removed copy, looked for after: %d", n)
	}
}

// Reads look at the removal count once, when taken, not at every read:
// another process's removal is seen by the next Reads.
func TestReadsLookOnce(t *testing.T) {
	ctx := context.Background()
	a, b := twoStores(t)
	d1, err := a.PutPacked(ctx, testBlob(1, 3000))
	if err != nil {
		t.Fatal(err)
	}
	d2, err := a.PutPacked(ctx, testBlob(2, 3000))
	if err != nil {
		t.Fatal(err)
	}
	rd, err := a.Reads()
	if err != nil {
		t.Fatal(err)
	}
	removeOne(t, b, d1)
	get := func(n int) []byte { return make([]byte, n) }
	for _, d := range []Digest{d1, d2} {
		if got, err := rd.ReadUnverifiedWith(d, get); err != nil || Sum(got) != d {
			t.Errorf("read of %s after one look: %d bytes, %v", d.Short(), len(got), err)
		}
		if n := rd.WillNeed(d, 0); n != 3000+2 {
			t.Errorf("WillNeed of %s after one look: %d", d.Short(), n)
		}
	}
	rd, err = a.Reads()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rd.ReadUnverifiedWith(d1, get); !errors.Is(err, ErrNotFound) {
		t.Errorf("read of the removed copy after a second look: %v, want ErrNotFound", err)
	}
	if got, err := rd.ReadUnverifiedWith(d2, get); err != nil || Sum(got) != d2 {
		t.Errorf("read of the kept copy after a second look: %d bytes, %v", len(got), err)
	}
}

// What lies right before an object in its pack is found from the
// offsets this store knows, live copies only (WillNeed's before).
func TestPackBefore(t *testing.T) {
	ctx := context.Background()
	a, b := twoStores(t)
	var ds []Digest
	for i := range 3 {
		d, err := a.PutPacked(ctx, testBlob(i, 1000+i))
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	before := func(s *DirStore, d Digest) (Digest, bool) {
		ls, err := s.packs.locs(d, lookRemovals)
		if err != nil || len(ls) == 0 {
			t.Fatalf("%s not packed: %v", d.Short(), err)
		}
		s.packs.mu.Lock()
		defer s.packs.mu.Unlock()
		e, ok := ls[0].p.before(ls[0].e.off)
		return e.d, ok
	}
	for _, s := range []*DirStore{a, b} { // the writer, and a store that read the index
		if d, ok := before(s, ds[1]); !ok || d != ds[0] {
			t.Errorf("before the second object: %s, %v; want the first", d.Short(), ok)
		}
		if _, ok := before(s, ds[0]); ok {
			t.Error("something before the first object of a pack")
		}
	}
	w, err := a.LockSweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if removed, _, err := w.Remove(ds[1]); !removed || err != nil {
		t.Fatalf("remove: %v, %v", removed, err)
	}
	w.Unlock()
	// The sweep may have copied what is live into a new pack, side by
	// side: whatever is before the third object now, it is live.
	if d, ok := before(a, ds[2]); ok && d == ds[1] {
		t.Error("a removed copy found before the third object")
	}
	if n := a.WillNeed(ds[2], 1<<20); n != int64(len(testBlob(2, 1002))) {
		t.Errorf("WillNeed with what lies before: %d", n)
	}
}

// BenchmarkPackIndexLoad is what a process opening a store of 100,000
// packed objects pays before its first look: every pack's index read into
// memory. A mount pays it at its start, in proportion to the cache.
func BenchmarkPackIndexLoad(b *testing.B) {
	const objects = 100_000
	old := packTarget
	packTarget = 1 << 20
	b.Cleanup(func() { packTarget = old })
	dir := b.TempDir()
	s, err := OpenDirStore(dir)
	if err != nil {
		b.Fatal(err)
	}
	var last Digest
	ds := make([]Digest, 0, 1000)
	bs := make([][]byte, 0, 1000)
	for i := range objects {
		enc := testBlob(i, 64)
		last = Sum(enc)
		ds, bs = append(ds, last), append(bs, enc)
		if len(ds) == cap(ds) || i == objects-1 {
			if err := s.packs.put(ds, bs); err != nil {
				b.Fatal(err)
			}
			ds, bs = ds[:0], bs[:0]
		}
	}
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	load := func() *DirStore {
		s, err := OpenDirStore(dir)
		if err != nil {
			b.Fatal(err)
		}
		if ok, err := s.Has(context.Background(), last); !ok || err != nil {
			b.Fatal("last object not found", err)
		}
		return s
	}
	// What a loaded index keeps in memory, per object.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	held := load()
	runtime.GC()
	runtime.ReadMemStats(&after)
	heldBytes := float64(after.HeapAlloc-before.HeapAlloc) / objects
	held.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		s := load()
		b.StopTimer()
		s.Close()
		b.StartTimer()
	}
	b.ReportMetric(heldBytes, "held-B/object")
}

// The in-memory index keeps every live copy of an object, newest first
// for a reader, whichever copy dies first; a dead copy stays dead when
// its entry is read again; an entry out of offset order (never written so,
// but not trusted) still finds its place.
func TestPackIndexCopies(t *testing.T) {
	ps := newPacks(&DirStore{dir: t.TempDir()})
	ps.loaded = true // what is added here is all there is: no packs on disk to read
	open := func(name string) *pack {
		f, err := os.Create(filepath.Join(t.TempDir(), name))
		if err != nil {
			t.Fatal(err)
		}
		p := &pack{name: name, f: f}
		ps.all[name] = p
		return p
	}
	a, b := open("a"), open("b")
	d, other := Sum([]byte("d")), Sum([]byte("other"))
	ps.add(a, entry{d: d, off: 0, n: 10})
	ps.add(a, entry{d: other, off: 10, n: 5})
	ps.add(b, entry{d: d, off: 0, n: 10})
	ps.add(a, entry{d: d, off: 15, n: 10})
	where := func() []string {
		ls, err := ps.locs(d, lookRemovals)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range ls {
			out = append(out, fmt.Sprintf("%s@%d", l.p.name, l.e.off))
		}
		return out
	}
	check := func(what string, want ...string) {
		t.Helper()
		if got := where(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: copies %v, want %v", what, got, want)
		}
		if got := ps.known(d); got != (len(want) > 0) {
			t.Errorf("%s: known %v with copies %v", what, got, want)
		}
	}
	check("three copies", "a@15", "b@0", "a@0")
	ps.kill(b, 0)
	check("the middle one killed", "a@15", "a@0")
	ps.kill(a, 0)
	check("the oldest killed", "a@15")
	ps.add(a, entry{d: d, off: 0, n: 10})
	check("a dead copy's entry read again", "a@15")
	if a.liveBytes != 15 {
		t.Errorf("pack a: %d live bytes, want 15", a.liveBytes)
	}
	ps.add(b, entry{d: d, off: 40, n: 10})
	ps.add(b, entry{d: other, off: 20, n: 20})
	if e, ok := b.before(40); !ok || e.d != other {
		t.Errorf("before b@40: %v %v, want the entry added out of order", e, ok)
	}
	check("a copy in b again", "b@40", "a@15")
	ps.forget(a)
	check("pack a forgotten", "b@40")
	ps.forget(b)
	check("pack b forgotten")
	if len(ps.index) != 0 || len(ps.more) != 0 {
		t.Errorf("index %v, more %v left after every pack was forgotten", ps.index, ps.more)
	}
}

// A miss lists the packs directory only while a pack made since the last
// listing could have left the directory's time as it was: a time with
// nanoseconds lags the clock by a tick, one on a whole second (a
// filesystem that keeps no more) by up to a second. A pack another store
// makes after that is still found.
func TestPackMissListing(t *testing.T) {
	ctx := context.Background()
	a, b := twoStores(t)
	if err := a.PutCachedAs(Sum(testBlob(1, 3000)), testBlob(1, 3000)); err != nil {
		t.Fatal(err)
	}
	missing := Sum(testBlob(2, 3000))
	listedAt := func() time.Time {
		a.packs.mu.Lock()
		defer a.packs.mu.Unlock()
		return a.packs.listedAt
	}
	time.Sleep(fineMargin + 20*time.Millisecond) // the pack's making, a lag ago
	if _, err := a.Get(ctx, missing); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of an object nowhere: %v", err)
	}
	first := listedAt()
	if _, err := a.Get(ctx, missing); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of an object nowhere: %v", err)
	}
	a.packs.mu.Lock()
	lag := lagOf(a.packs.dirTime)
	a.packs.mu.Unlock()
	if again := !listedAt().Equal(first); again != (lag == coarseMargin) {
		t.Errorf("second miss listed the directory: %v; want %v (directory time lags by %v)", again, !again, lag)
	}
	late := testBlob(3, 3000)
	if err := b.PutCachedAs(Sum(late), late); err != nil {
		t.Fatal(err)
	}
	if got, err := a.Get(ctx, Sum(late)); err != nil || !bytes.Equal(got, late) {
		t.Fatalf("object another store packed after the listing: %d bytes, %v", len(got), err)
	}
}

func TestLagOf(t *testing.T) {
	if got := lagOf(time.Unix(1700000000, 0)); got != coarseMargin {
		t.Errorf("a whole second lags by %v, want %v", got, coarseMargin)
	}
	if got := lagOf(time.Unix(1700000000, 1)); got != fineMargin {
		t.Errorf("a time with nanoseconds lags by %v, want %v", got, fineMargin)
	}
}

// PutPacked (a master's pushes) looks for the removals counted before it
// takes a packed copy for the object: an object another process swept
// and that is put again is stored again, not taken for the copy swept.
// (PutCachedAs does not look: a cache's copy taken out under it costs a
// fetch.)
func TestPutPackedAfterRemoval(t *testing.T) {
	ctx := context.Background()
	a, b := twoStores(t)
	blob := testBlob(9, 3000)
	d, err := a.PutPacked(ctx, blob)
	if err != nil {
		t.Fatal(err)
	}
	removeOne(t, b, d)
	if _, err := a.PutPacked(ctx, blob); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*DirStore{a, b} {
		if got, err := s.Get(ctx, d); err != nil || !bytes.Equal(got, blob) {
			t.Errorf("put again after its removal: %d bytes, %v", len(got), err)
		}
	}
}

// removeOne sweeps d out of s, as another process's gc would.
func removeOne(t *testing.T, s *DirStore, d Digest) {
	t.Helper()
	w, err := s.LockSweep(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Unlock()
	if removed, _, err := w.Remove(d); !removed || err != nil {
		t.Fatalf("remove %s: %v, %v", d.Short(), removed, err)
	}
}
