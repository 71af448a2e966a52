package object

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestDigestRoundTrip(t *testing.T) {
	d := Sum([]byte("x"))
	got, err := ParseDigest(d.String())
	if err != nil || got != d {
		t.Fatalf("ParseDigest(%s) = %v, %v", d, got, err)
	}
	for _, bad := range []string{"", "sha256-", "sha1-00", d.String()[:20], "sha256-" + string(bytes.Repeat([]byte("g"), 64)), "SHA256-" + d.String()[7:], "sha256-" + string(bytes.ToUpper([]byte(d.String()[7:])))} {
		if _, err := ParseDigest(bad); err == nil {
			t.Errorf("ParseDigest(%q) accepted", bad)
		}
	}
}

func TestEncodings(t *testing.T) {
	blob, err := EncodeBlob([]byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := DecodeBlob(blob); err != nil || string(b) != "hello" {
		t.Fatalf("blob: %q %v", b, err)
	}
	if _, err := EncodeBlob(make([]byte, ChunkSize+1)); err == nil {
		t.Fatal("blob over a chunk accepted")
	}
	f := &File{Size: ChunkSize + 1, Chunks: []Digest{Sum(blob), Zero}}
	enc, err := EncodeFile(f)
	if err != nil {
		t.Fatal(err)
	}
	g, err := DecodeFile(enc)
	if err != nil || g.Size != f.Size || len(g.Chunks) != 2 || g.Chunks[0] != f.Chunks[0] || !g.Chunks[1].IsZero() {
		t.Fatalf("file: %+v %v", g, err)
	}
	if _, err := EncodeFile(&File{Size: 5, Chunks: nil}); err == nil {
		t.Fatal("file with missing chunks accepted")
	}
	tree := &Tree{Entries: []Entry{
		{Name: "a", Mode: 0o100644, Size: 5, Mtime: 1e18, Object: Sum(enc), Xattrs: map[string][]byte{"user.x": []byte("1")}},
		{Name: "b", Mode: 0o120777, Target: "a"},
		{Name: "c", Mode: 0o40755, Uid: 1000, Gid: 1000, Mtime: -5},
	}}
	tenc, err := EncodeTree(tree)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeTree(tenc)
	if err != nil {
		t.Fatal(err)
	}
	if e, ok := back.Lookup("b"); !ok || e.Target != "a" {
		t.Fatalf("lookup b: %+v", e)
	}
	if e, ok := back.Lookup("a"); !ok || string(e.Xattrs["user.x"]) != "1" || e.Object != Sum(enc) {
		t.Fatalf("lookup a: %+v", e)
	}
	if _, ok := back.Lookup("zz"); ok {
		t.Fatal("lookup of a missing name")
	}
	unsorted := &Tree{Entries: []Entry{{Name: "b"}, {Name: "a"}}}
	if _, err := EncodeTree(unsorted); err == nil {
		t.Fatal("unsorted tree accepted")
	}
	for _, bad := range []string{"", ".", "..", "a/b", "a\x00"} {
		if _, err := EncodeTree(&Tree{Entries: []Entry{{Name: bad}}}); err == nil {
			t.Errorf("entry name %q accepted", bad)
		}
	}
	// A kind byte cannot be swapped: a blob with a tree's bytes is not a tree.
	if _, err := DecodeTree(blob); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("blob decoded as tree: %v", err)
	}
}

func TestDirStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := EncodeBlob([]byte("content"))
	d, err := s.Put(ctx, blob)
	if err != nil || d != Sum(blob) {
		t.Fatalf("put: %v %v", d, err)
	}
	if d2, err := s.Put(ctx, blob); err != nil || d2 != d {
		t.Fatalf("second put: %v %v", d2, err)
	}
	got, err := s.Get(ctx, d)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("get: %v", err)
	}
	fi, err := os.Stat(s.path(d))
	if err != nil || fi.Mode().Perm() != 0o400 {
		t.Fatalf("stored object mode: %v %v", fi, err)
	}
	if _, err := s.Get(ctx, Sum([]byte("nope"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing object: %v", err)
	}
	if _, err := s.Put(ctx, []byte("not an object")); err == nil {
		t.Fatal("garbage accepted")
	}
	// Flip a byte on disk: Get must refuse it.
	p := s.path(d)
	os.Chmod(p, 0o644)
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 1
	os.WriteFile(p, b, 0o444)
	if _, err := s.Get(ctx, d); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("corrupt object served: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(ents) != 0 {
		t.Fatalf("temporary files left: %v", ents)
	}
}

// FuzzDecodeTree checks that any bytes either fail to decode or decode to a
// tree that encodes back to exactly those bytes, and never panic.
func FuzzDecodeTree(f *testing.F) {
	enc, _ := EncodeTree(&Tree{Entries: []Entry{{Name: "a", Mode: 0o100644, Xattrs: map[string][]byte{"user.k": []byte("v")}}, {Name: "b"}}})
	f.Add(enc)
	f.Add([]byte{byte(KindTree), version})
	f.Add([]byte{byte(KindTree), version, 1, 'a'})
	small, _ := EncodeTree(&Tree{Entries: []Entry{{Name: "a"}, {Name: "b"}, {Name: "c"}}})
	f.Add(small)
	f.Fuzz(func(t *testing.T, b []byte) {
		tree, err := DecodeTree(b)
		if err != nil {
			return
		}
		if len(tree.Entries) > len(b)/minEntrySize {
			t.Fatalf("%d entries in %d bytes: minEntrySize %d is not the least an entry takes", len(tree.Entries), len(b), minEntrySize)
		}
		again, err := EncodeTree(tree)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded tree does not re-encode to its bytes: %v", err)
		}
	})
}

func FuzzDecodeFile(f *testing.F) {
	enc, _ := EncodeFile(&File{Size: 3, Chunks: []Digest{Zero}})
	f.Add(enc)
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := DecodeFile(b)
		if err != nil {
			return
		}
		again, err := EncodeFile(file)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded file does not re-encode: %v", err)
		}
	})
}

// Hard links make a tree version 2; a tree without them stays version 1,
// with the digest it always had, and every other use of version 2 is
// refused.
func TestTreeLinks(t *testing.T) {
	plain := &Tree{Entries: []Entry{{Name: "a", Mode: 0o100644}, {Name: "b", Mode: 0o100644}}}
	penc, err := EncodeTree(plain)
	if err != nil {
		t.Fatal(err)
	}
	if penc[1] != 1 {
		t.Fatalf("a tree without links encodes as version %d", penc[1])
	}
	linked := &Tree{Entries: []Entry{
		{Name: "a", Mode: 0o100644, Link: 7, Nlink: 2},
		{Name: "b", Mode: 0o100644, Link: 7, Nlink: 2},
		{Name: "c", Mode: 0o100644},
	}}
	lenc, err := EncodeTree(linked)
	if err != nil {
		t.Fatal(err)
	}
	if lenc[1] != 2 {
		t.Fatalf("a tree with links encodes as version %d", lenc[1])
	}
	back, err := DecodeTree(lenc)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range back.Entries {
		if e.Link != linked.Entries[i].Link || e.Nlink != linked.Entries[i].Nlink {
			t.Errorf("entry %s: link %d nlink %d after decoding", e.Name, e.Link, e.Nlink)
		}
	}
	// The same entries under the other version: not canonical.
	v2 := append([]byte(nil), penc...)
	v2[1] = 2
	if _, err := DecodeTree(v2); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a version 2 tree without links: %v", err)
	}
	blob, _ := EncodeBlob([]byte("x"))
	blob[1] = 2
	if _, err := DecodeBlob(blob); !errors.Is(err, ErrCorrupt) {
		t.Errorf("a version 2 blob: %v", err)
	}
	for _, bad := range []Entry{
		{Name: "d", Mode: 0o40755, Link: 7, Nlink: 2},
		{Name: "f", Mode: 0o100644, Link: 7, Nlink: 1},
		{Name: "f", Mode: 0o100644, Nlink: 2},
	} {
		if _, err := EncodeTree(&Tree{Entries: []Entry{bad}}); err == nil {
			t.Errorf("entry %+v accepted", bad)
		}
	}
}

// An object a crash left short (PutCached does not fsync) is replaced by
// the next Put of its bytes, instead of failing every Get for good.
func TestDirStoreShortObjectRepaired(t *testing.T) {
	ctx := context.Background()
	s, err := OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := EncodeBlob(bytes.Repeat([]byte("chunk bytes "), 1000))
	d, err := s.PutCached(ctx, blob)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int64{0, 100} {
		if err := os.Truncate(s.path(d), size); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, d); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("get of a short object: %v, want ErrCorrupt", err)
		}
		if _, err := s.PutCached(ctx, blob); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, d); err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("after a put of the same bytes: %d bytes, %v", len(got), err)
		}
	}
}

// A damaged object of the right size is replaced by the next Put of its
// bytes, not reused: reusing it gave every later snapshot a broken chunk.
// A Get that finds it damaged quarantines it and counts a removal, so that
// nothing goes on trusting it.
func TestDirStoreDamagedObjectReplaced(t *testing.T) {
	ctx := context.Background()
	blob, _ := EncodeBlob(bytes.Repeat([]byte("chunk bytes "), 1000))
	for _, put := range []struct {
		name string
		fn   func(s *DirStore, b []byte) (Digest, error)
	}{
		{"Put", func(s *DirStore, b []byte) (Digest, error) { return s.Put(ctx, b) }},
		{"PutCached", func(s *DirStore, b []byte) (Digest, error) { return s.PutCached(ctx, b) }},
		{"PutCachedAs", func(s *DirStore, b []byte) (Digest, error) { d := Sum(b); return d, s.PutCachedAs(d, b) }},
	} {
		t.Run(put.name, func(t *testing.T) {
			s, err := OpenDirStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			flip := func(d Digest) {
				t.Helper()
				p, off, size, err := s.Locate(d)
				if err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				b[off+size/2] ^= 1
				os.Chmod(p, 0o600)
				if err := os.WriteFile(p, b, 0o400); err != nil {
					t.Fatal(err)
				}
			}
			d, err := put.fn(s, blob)
			if err != nil {
				t.Fatal(err)
			}
			flip(d)
			if _, err := put.fn(s, blob); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Get(ctx, d); err != nil || !bytes.Equal(got, blob) {
				t.Fatalf("after a put of the same bytes over a damaged object: %d bytes, %v", len(got), err)
			}

			flip(d)
			before, _ := s.Removals()
			if _, err := s.Get(ctx, d); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("get of a damaged object: %v, want ErrCorrupt", err)
			}
			if ok, _ := s.Has(ctx, d); ok {
				t.Fatal("a damaged object is still in the store after a Get found it")
			}
			if after, _ := s.Removals(); after == before {
				t.Fatal("quarantine did not count as a removal")
			}
			q := filepath.Join(s.Dir(), QuarantineDir, d.String()[len(digestPrefix):])
			if _, err := os.Stat(q); err != nil {
				t.Fatalf("the damaged object was not kept in quarantine: %v", err)
			}
		})
	}
}

// Put stores only objects that decode: a blob over a chunk, or a file or
// tree object that does not decode, is refused with ErrCorrupt and
// nothing is stored. Such an object used to sit in the store until a gc,
// and a push could fill a master with them.
func TestDirStorePutRefusesUndecodable(t *testing.T) {
	ctx := context.Background()
	s, err := OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	bigBlob := append([]byte{byte(KindBlob), version}, make([]byte, ChunkSize+1)...)
	file, _ := EncodeFile(&File{Size: 3, Chunks: []Digest{Sum([]byte("x"))}})
	tree, _ := EncodeTree(&Tree{Entries: []Entry{{Name: "a", Mode: 0o100644}, {Name: "b", Mode: 0o100644}}})
	unsorted := bytes.Clone(tree)
	// Swap the two names: the entries are then out of order.
	i, j := bytes.IndexByte(unsorted[2:], 'a')+2, bytes.IndexByte(unsorted[2:], 'b')+2
	unsorted[i], unsorted[j] = 'b', 'a'
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"bad kind", []byte{'x', version, 1}},
		{"blob over a chunk", bigBlob},
		{"file with a chunk too few", file[:len(file)-1]},
		{"file with trailing bytes", append(bytes.Clone(file), 0)},
		{"file of version 2", append([]byte{byte(KindFile), versionLinks}, file[2:]...)},
		{"tree cut short", tree[:len(tree)-3]},
		{"tree not sorted", unsorted},
		{"garbage tree", append([]byte{byte(KindTree), version}, bytes.Repeat([]byte{0xff}, 100)...)},
	} {
		for _, put := range []struct {
			name string
			fn   func([]byte) error
		}{
			{"Put", func(b []byte) error { _, err := s.Put(ctx, b); return err }},
			{"PutCached", func(b []byte) error { _, err := s.PutCached(ctx, b); return err }},
			{"PutCachedAs", func(b []byte) error { return s.PutCachedAs(Sum(b), b) }},
		} {
			if err := put.fn(c.b); !errors.Is(err, ErrCorrupt) {
				t.Errorf("%s of %s: %v, want ErrCorrupt", put.name, c.name, err)
			}
			if ok, _ := s.Has(ctx, Sum(c.b)); ok {
				t.Errorf("%s of %s: stored", put.name, c.name)
			}
		}
	}
	// What decodes is stored, a blob of a whole chunk included.
	chunk, _ := EncodeBlob(make([]byte, ChunkSize))
	for _, b := range [][]byte{chunk, file, tree} {
		if _, err := s.Put(ctx, b); err != nil {
			t.Errorf("put of a valid %c object: %v", b[0], err)
		}
	}
}

// readUnverifiedInto reads d with ReadUnverifiedWith into buf when the
// object fits buf's capacity, else into a new slice.
func readUnverifiedInto(s *DirStore, d Digest, buf []byte) ([]byte, error) {
	return s.ReadUnverifiedWith(d, func(n int) []byte {
		if cap(buf) >= n {
			return buf[:n]
		}
		return make([]byte, n)
	})
}

// ReadUnverifiedWith reads into the buffer it is given when the object
// fits, allocates when not, and reads a packed object too.
func TestDirStoreReadUnverifiedInto(t *testing.T) {
	s, err := OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	small, _ := EncodeBlob([]byte("small object"))
	big, _ := EncodeBlob(bytes.Repeat([]byte("big "), 1000))
	packed, _ := EncodeBlob([]byte("packed object"))
	var ds []Digest
	for _, b := range [][]byte{small, big} {
		d, err := s.Put(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	if err := s.PutCachedAs(Sum(packed), packed); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	got, err := readUnverifiedInto(s, ds[0], buf)
	if err != nil || !bytes.Equal(got, small) || &got[0] != &buf[0] {
		t.Fatalf("small object: %q, %v (in the buffer given: %v)", got, err, err == nil && &got[0] == &buf[0])
	}
	if got, err := readUnverifiedInto(s, ds[1], buf); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("object bigger than the buffer: %v", err)
	}
	if got, err := readUnverifiedInto(s, Sum(packed), buf); err != nil || !bytes.Equal(got, packed) {
		t.Fatalf("packed object: %q, %v", got, err)
	}
	if _, err := readUnverifiedInto(s, Sum([]byte("nope")), buf); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing object: %v", err)
	}
}

// ReadUnverifiedWith asks for one buffer of the object's size, packed or
// stored as a file of its own, and reads the object into it.
func TestDirStoreReadUnverifiedWith(t *testing.T) {
	s, err := OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	loose, _ := EncodeBlob(bytes.Repeat([]byte("loose "), 500))
	packed, _ := EncodeBlob([]byte("packed object"))
	if _, err := s.Put(context.Background(), loose); err != nil {
		t.Fatal(err)
	}
	if err := s.PutCachedAs(Sum(packed), packed); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]byte{"loose": loose, "packed": packed} {
		var asked []int
		var buf []byte
		got, err := s.ReadUnverifiedWith(Sum(want), func(n int) []byte {
			asked = append(asked, n)
			buf = make([]byte, n)
			return buf
		})
		if err != nil || !bytes.Equal(got, want) || &got[0] != &buf[0] {
			t.Errorf("%s: %d bytes, %v (in the buffer asked for: %v)", name, len(got), err, err == nil && &got[0] == &buf[0])
		}
		if len(asked) != 1 || asked[0] != len(want) {
			t.Errorf("%s: buffers of %v asked for; want one of %d", name, asked, len(want))
		}
	}
	if _, err := s.ReadUnverifiedWith(Sum([]byte("nope")), func(n int) []byte { return make([]byte, n) }); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing object: %v", err)
	}
}

// BenchmarkDecodeTree decodes a directory of 100 files, as a mount does at
// its first look into each directory.
func BenchmarkDecodeTree(b *testing.B) {
	t := &Tree{}
	for i := range 100 {
		t.Entries = append(t.Entries, Entry{Name: fmt.Sprintf("f%06d", i), Mode: 0o100644, Size: 107374, Mtime: 1764900000000000000, Object: Sum([]byte{byte(i)})})
	}
	enc, err := EncodeTree(t)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeTree(enc); err != nil {
			b.Fatal(err)
		}
	}
}
