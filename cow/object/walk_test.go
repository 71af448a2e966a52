package object

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"testing"
)

// build stores a tree of files given as path -> content (directories are
// made as needed) and returns its root.
func build(t *testing.T, s *DirStore, files map[string]string) Digest {
	t.Helper()
	ctx := context.Background()
	type dir struct {
		files map[string]string
		dirs  map[string]*dir
	}
	root := &dir{files: map[string]string{}, dirs: map[string]*dir{}}
	for p, c := range files {
		d := root
		parts := splitAll(p)
		for _, name := range parts[:len(parts)-1] {
			if d.dirs[name] == nil {
				d.dirs[name] = &dir{files: map[string]string{}, dirs: map[string]*dir{}}
			}
			d = d.dirs[name]
		}
		d.files[parts[len(parts)-1]] = c
	}
	var store func(d *dir) Digest
	store = func(d *dir) Digest {
		var tr Tree
		for name, c := range d.files {
			e := Entry{Name: name, Mode: 0o100644, Size: int64(len(c))}
			if len(c) > 0 {
				blob, _ := EncodeBlob([]byte(c))
				bd, err := s.Put(ctx, blob)
				if err != nil {
					t.Fatal(err)
				}
				fe, _ := EncodeFile(&File{Size: int64(len(c)), Chunks: []Digest{bd}})
				if e.Object, err = s.Put(ctx, fe); err != nil {
					t.Fatal(err)
				}
			}
			tr.Entries = append(tr.Entries, e)
		}
		for name, sub := range d.dirs {
			tr.Entries = append(tr.Entries, Entry{Name: name, Mode: 0o40755, Object: store(sub)})
		}
		sort.Slice(tr.Entries, func(i, j int) bool { return tr.Entries[i].Name < tr.Entries[j].Name })
		enc, err := EncodeTree(&tr)
		if err != nil {
			t.Fatal(err)
		}
		dg, err := s.Put(ctx, enc)
		if err != nil {
			t.Fatal(err)
		}
		return dg
	}
	return store(root)
}

func splitAll(p string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			out = append(out, p[start:i])
			start = i + 1
		}
	}
	return out
}

func TestWalkDiffVerify(t *testing.T) {
	ctx := context.Background()
	s, _ := OpenDirStore(t.TempDir())
	a := build(t, s, map[string]string{"crawlab_project/spiders/quotes.py": "q", "scrapy.cfg": "cfg", "keep/x": "same"})
	b := build(t, s, map[string]string{"crawlab_project/spiders/quotes.py": "q2", "run.sh": "#!", "keep/x": "same"})
	var paths []string
	if err := Walk(ctx, s, a, func(p string, e *Entry, f *File) error {
		paths = append(paths, p)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"crawlab_project", "crawlab_project/spiders", "crawlab_project/spiders/quotes.py", "keep", "keep/x", "scrapy.cfg"}
	if len(paths) != len(want) {
		t.Fatalf("walk: %v, want %v", paths, want)
	}
	changes, err := Diff(ctx, s, a, b)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]byte{}
	for _, c := range changes {
		got[c.Path] = c.Kind
	}
	if got["crawlab_project/spiders/quotes.py"] != 'M' || got["run.sh"] != '+' || got["scrapy.cfg"] != '-' || len(got) != 3 {
		t.Fatalf("diff: %v", changes)
	}
	if probs, err := Verify(ctx, s, a); err != nil || len(probs) != 0 {
		t.Fatalf("verify of a good tree: %v %v", probs, err)
	}
	// Corrupt the blob of scrapy.cfg: verify names the path.
	blob, _ := EncodeBlob([]byte("cfg"))
	p := s.path(Sum(blob))
	os.Chmod(p, 0o644)
	os.WriteFile(p, []byte("bcfX"), 0o444)
	probs, err := Verify(ctx, s, a)
	if err != nil || len(probs) != 1 || probs[0].Path != "scrapy.cfg" || !errors.Is(probs[0].Err, ErrCorrupt) {
		t.Fatalf("verify of a corrupt blob: %v %v", probs, err)
	}
	set := map[Digest]bool{}
	if err := Reachable(ctx, s, b, set); err != nil {
		t.Fatal(err)
	}
	if !set[b] || len(set) < 8 {
		t.Fatalf("reachable: %d objects", len(set))
	}
}

// mapGetter serves objects from memory.
type mapGetter map[Digest][]byte

func (m mapGetter) Get(_ context.Context, d Digest) ([]byte, error) {
	if b, ok := m[d]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%s: %w", d.Short(), ErrNotFound)
}

// deepChain stores a chain of depth directories named "a", the last
// holding a file "f" whose object is stored only if withFile, and returns
// the root.
func deepChain(t *testing.T, m mapGetter, depth int, withFile bool) Digest {
	t.Helper()
	blob, _ := EncodeBlob([]byte("end"))
	bd := Sum(blob)
	m[bd] = blob
	file, err := EncodeFile(&File{Size: 3, Chunks: []Digest{bd}})
	if err != nil {
		t.Fatal(err)
	}
	fd := Sum(file)
	if withFile {
		m[fd] = file
	}
	tr, err := EncodeTree(&Tree{Entries: []Entry{{Name: "f", Mode: 0o100644, Size: 3, Object: fd}}})
	if err != nil {
		t.Fatal(err)
	}
	d := Sum(tr)
	m[d] = tr
	for range depth {
		tr, err := EncodeTree(&Tree{Entries: []Entry{{Name: "a", Mode: 0o040755, Object: d}}})
		if err != nil {
			t.Fatal(err)
		}
		d = Sum(tr)
		m[d] = tr
	}
	return d
}

// A tree as deep as its objects make it (a hostile master's version) is
// walked in memory in proportion to its depth, not its square, and
// without the goroutine stack: a recursive walk held every directory's
// path at once, 400 MB at this depth, and was killed at ten times it.
// WalkEntries, which makes no paths, allocates in proportion to it too.
func TestWalkDeepChain(t *testing.T) {
	const depth = 20000
	m := mapGetter{}
	root := deepChain(t, m, depth, true)
	ctx := context.Background()
	var peak uint64
	var ms runtime.MemStats
	n := 0
	var last string
	err := Walk(ctx, m, root, func(p string, e *Entry, f *File) error {
		if n++; n%1000 == 0 {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
		}
		last = p
		return nil
	})
	if err != nil || n != depth+1 || last != strings.Repeat("a/", depth)+"f" {
		t.Fatalf("walk: %d entries, last %.20q..., %v", n, last, err)
	}
	if peak > 128<<20 {
		t.Errorf("walk of a chain of %d directories: %d MiB of heap in use", depth, peak>>20)
	}
	// Without paths, what the walk allocates is in proportion to the
	// depth too (Walk makes 400 MB of paths here, one at a time).
	runtime.ReadMemStats(&ms)
	before := ms.TotalAlloc
	n = 0
	if err := WalkEntries(ctx, m, root, func(e *Entry, f *File) error { n++; return nil }); err != nil || n != depth+1 {
		t.Fatalf("walk entries: %d entries, %v", n, err)
	}
	runtime.ReadMemStats(&ms)
	if got := ms.TotalAlloc - before; got > 64<<20 {
		t.Errorf("walk entries of a chain of %d directories: %d MiB allocated", depth, got>>20)
	}
	set := map[Digest]bool{}
	if err := Reachable(ctx, m, root, set); err != nil || len(set) != depth+3 {
		t.Fatalf("reachable: %d objects, %v", len(set), err)
	}
	// A missing object at the bottom: the error names its path once.
	m2 := mapGetter{}
	root2 := deepChain(t, m2, depth, false)
	err = Reachable(ctx, m2, root2, map[Digest]bool{})
	if !errors.Is(err, ErrNotFound) || !strings.HasPrefix(err.Error(), strings.Repeat("a/", depth)+"f: ") {
		t.Fatalf("reachable of a chain lacking its file: %.80v", err)
	}
	if set := (map[Digest]bool{}); ReachablePresent(ctx, m2, root2, set) != nil || len(set) != depth+2 {
		t.Fatalf("reachable present of a chain lacking its file: %d objects", len(set))
	}
}
