package refs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
)

func TestRefs(t *testing.T) {
	d, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root := object.Sum([]byte("t"))
	s := Snapshot{Name: "s1", Root: root, Created: time.Now(), RootEntry: object.Entry{Mode: 0o40755}}
	if err := d.Create(s); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(s); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	got, err := d.Get("s1")
	if err != nil || got.Root != root || got.RootEntry.Mode != 0o40755 {
		t.Fatalf("get: %+v %v", got, err)
	}
	for _, bad := range []string{"", ".", "..", ".hidden", "a/b", string(make([]byte, 256))} {
		if err := d.Create(Snapshot{Name: bad, Root: root}); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	if _, err := d.Get("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	list, err := d.List()
	if err != nil || len(list) != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	// A file that is no ref stops the listing (gc must not run without
	// it) with a message that names it and says what to do.
	stray := filepath.Join(d.dir, "notes.txt")
	if err := os.WriteFile(stray, []byte("todo\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.List(); err == nil || !strings.Contains(err.Error(), stray) || !strings.Contains(err.Error(), "move it out") {
		t.Fatalf("list with a stray file: %v", err)
	}
	os.Remove(stray)
	if err := d.Remove("s1"); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove("s1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	store, _ := object.OpenDirStore(filepath.Join(base, "objects"))
	d, _ := Open(filepath.Join(base, "refs"))
	put := func(files ...string) object.Digest {
		var tr object.Tree
		for _, name := range files {
			blob, _ := object.EncodeBlob([]byte("content of " + name))
			bd, _ := store.Put(ctx, blob)
			fe, _ := object.EncodeFile(&object.File{Size: int64(len("content of " + name)), Chunks: []object.Digest{bd}})
			fd, _ := store.Put(ctx, fe)
			tr.Entries = append(tr.Entries, object.Entry{Name: name, Mode: 0o100644, Size: int64(len("content of " + name)), Object: fd})
		}
		enc, _ := object.EncodeTree(&tr)
		r, _ := store.Put(ctx, enc)
		return r
	}
	kept := put("a", "shared")
	gone := put("b", "shared")
	pinned := put("c")
	d.Create(Snapshot{Name: "kept", Root: kept})
	d.Pin("restore-x", pinned)
	count := func() int {
		n := 0
		store.Each(func(object.StoredObject) error { n++; return nil })
		return n
	}
	before := count()
	// Everything is young: a gc with a grace period removes nothing.
	if st, err := GC(ctx, store, d, time.Hour, false); err != nil || st.Removed != 0 || st.Young == 0 {
		t.Fatalf("gc within grace: %+v %v", st, err)
	}
	st, err := GC(ctx, store, d, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	// gone's tree, b's file object and blob go; "shared" stays.
	if st.Removed != 3 || count() != before-3 {
		t.Fatalf("gc: %+v, %d -> %d objects", st, before, count())
	}
	for _, r := range []object.Digest{kept, pinned} {
		if probs, err := object.Verify(ctx, store, r); err != nil || len(probs) > 0 {
			t.Fatalf("live root damaged by gc: %v %v", probs, err)
		}
	}
	if ok, _ := store.Has(ctx, gone); ok {
		t.Fatal("unreachable root kept")
	}
	d.Unpin("restore-x")
	if st, _ := GC(ctx, store, d, 0, false); st.Removed != 3 {
		t.Fatalf("gc after unpin removed %d", st.Removed)
	}
	if ents, _ := os.ReadDir(filepath.Join(base, "refs", ".pins")); len(ents) != 0 {
		t.Fatalf("pins left: %v", ents)
	}
}
