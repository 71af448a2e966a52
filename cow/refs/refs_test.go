package refs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	s := Snapshot{Name: "s1", Root: object.Entry{Mode: 0o40755, Object: root}, Created: time.Now()}
	if err := d.Create(s); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(s); !errors.Is(err, ErrExists) {
		t.Fatalf("second create: %v", err)
	}
	got, err := d.Get("s1")
	if err != nil || got.Root.Object != root || got.Root.Mode != 0o40755 {
		t.Fatalf("get: %+v %v", got, err)
	}
	for _, bad := range []string{"", ".", "..", ".hidden", "a/b", string(make([]byte, 256))} {
		if err := d.Create(Snapshot{Name: bad, Root: object.Entry{Object: root}}); err == nil {
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

// putTree stores a tree of one-chunk files named files, each holding
// "content of NAME", and returns its digest.
func putTree(t *testing.T, store *object.DirStore, files ...string) object.Digest {
	t.Helper()
	ctx := context.Background()
	put := func(enc []byte, err error) object.Digest {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		d, err := store.Put(ctx, enc)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	var tr object.Tree
	for _, name := range files {
		content := []byte("content of " + name)
		bd := put(object.EncodeBlob(content))
		fd := put(object.EncodeFile(&object.File{Size: int64(len(content)), Chunks: []object.Digest{bd}}))
		tr.Entries = append(tr.Entries, object.Entry{Name: name, Mode: 0o100644, Size: int64(len(content)), Object: fd})
	}
	return put(object.EncodeTree(&tr))
}

// ageStore dates every object in store back by age, as if stored then.
func ageStore(t *testing.T, store *object.DirStore, age time.Duration) {
	t.Helper()
	then := time.Now().Add(-age)
	err := store.Each(func(o object.StoredObject) error {
		h := strings.TrimPrefix(o.Digest.String(), "sha256-")
		return os.Chtimes(filepath.Join(store.Dir(), h[:2], h[2:]), then, then)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// gcFixture is a store with three trees of two files each: kept is named by
// a snapshot, pinned by a restore's pin, and gone by nothing.
type gcFixture struct {
	store              *object.DirStore
	d                  *Dir
	kept, gone, pinned object.Digest
}

func newGCFixture(t *testing.T) *gcFixture {
	base := t.TempDir()
	store, err := object.OpenDirStore(filepath.Join(base, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := Open(filepath.Join(base, "refs"))
	if err != nil {
		t.Fatal(err)
	}
	put := func(files ...string) object.Digest { return putTree(t, store, files...) }
	f := &gcFixture{store: store, d: d, kept: put("a", "shared"), gone: put("b", "shared2"), pinned: put("c")}
	if err := d.Create(Snapshot{Name: "kept", Root: object.Entry{Object: f.kept}}); err != nil {
		t.Fatal(err)
	}
	if err := d.Pin("restore-x", f.pinned); err != nil {
		t.Fatal(err)
	}
	ageStore(t, store, time.Hour)
	return f
}

// verify fails t unless every object under root is stored and whole.
func (f *gcFixture) verify(t *testing.T, what string, root object.Digest) {
	t.Helper()
	probs, err := object.Verify(context.Background(), f.store, root)
	if err != nil || len(probs) > 0 {
		t.Fatalf("%s: damaged by gc: %v %v", what, probs, err)
	}
}

// A snapshot that takes objects nothing reaches (gone's, stored long ago)
// and writes its ref between gc's listing of what to remove and the
// removal keeps them: gc looks at each object's age again under the
// store's lock, and the snapshot freshened them under its hold.
func TestGCSnapshotFinishesDuringSweep(t *testing.T) {
	f := newGCFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	beforeSweep = func() {
		release, err := f.store.Hold(ctx)
		if err != nil {
			t.Error(err)
			return
		}
		defer release()
		set := map[object.Digest]bool{}
		if err := object.Reachable(ctx, f.store, f.gone, set); err != nil {
			t.Error(err)
		}
		for dg := range set {
			if !f.store.Freshen(dg) {
				t.Errorf("%s missing before the sweep", dg.Short())
			}
		}
		if err := f.d.Create(Snapshot{Name: "late", Root: object.Entry{Object: f.gone}}); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { beforeSweep = nil })
	st, err := GC(ctx, f.store, f.d, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != 0 {
		t.Errorf("gc removed %d objects; all were in use", st.Removed)
	}
	f.verify(t, "late snapshot", f.gone)
	f.verify(t, "snapshot", f.kept)
	f.verify(t, "pinned", f.pinned)
}

// A restore that read a snapshot's ref just before "snapshots rm" pins
// its root without freshening anything: a pin written after gc read the
// pins is read again under the store's lock.
func TestGCPinDuringSweep(t *testing.T) {
	f := newGCFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	beforeSweep = func() {
		if err := f.d.Pin("restore-late", f.gone); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { beforeSweep = nil })
	if _, err := GC(ctx, f.store, f.d, 0, false); err != nil {
		t.Fatal(err)
	}
	f.verify(t, "pinned during the sweep", f.gone)
}

// gc waits for a writer that holds the store, then reads the ref that
// writer wrote: objects the writer stored before gc began are kept.
func TestGCWaitsForHolder(t *testing.T) {
	f := newGCFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	release, err := f.store.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		st  GCStats
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := GC(ctx, f.store, f.d, 0, false)
		done <- result{st, err}
	}()
	select {
	case r := <-done:
		release()
		t.Fatalf("gc ran while the store was held: %+v %v", r.st, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	// The writer's ref, to objects stored an hour ago and not freshened:
	// gc must read it, as it began only now.
	if err := f.d.Create(Snapshot{Name: "held", Root: object.Entry{Object: f.gone}}); err != nil {
		t.Fatal(err)
	}
	release()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	f.verify(t, "snapshot written while gc waited", f.gone)
	// A gc with nothing holding the store does not wait: the context's
	// deadline would end the test otherwise.
	if err := f.d.Remove("held"); err != nil {
		t.Fatal(err)
	}
	st, err := GC(ctx, f.store, f.d, 0, false)
	if err != nil || st.Removed != 5 { // gone's tree, two files, two blobs
		t.Fatalf("gc after the ref's removal: %+v %v", st, err)
	}
}

func TestGC(t *testing.T) {
	ctx := context.Background()
	base := t.TempDir()
	store, _ := object.OpenDirStore(filepath.Join(base, "objects"))
	d, _ := Open(filepath.Join(base, "refs"))
	put := func(files ...string) object.Digest { return putTree(t, store, files...) }
	kept := put("a", "shared")
	gone := put("b", "shared")
	pinned := put("c")
	d.Create(Snapshot{Name: "kept", Root: object.Entry{Object: kept}})
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
	// Nor does one without: what was stored just now may be a writer's
	// (object.DirStore.Quiesce dates its start back a little).
	ageStore(t, store, time.Hour)
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
	ageStore(t, store, time.Hour)
	if st, _ := GC(ctx, store, d, 0, false); st.Removed != 3 {
		t.Fatalf("gc after unpin removed %d", st.Removed)
	}
	if ents, _ := os.ReadDir(filepath.Join(base, "refs", ".pins")); len(ents) != 0 {
		t.Fatalf("pins left: %v", ents)
	}
}

// gc removes a temporary file whose writer is gone, and leaves one a live
// process may still be writing unless it is very old, whatever the grace.
func TestGCTemps(t *testing.T) {
	f := newGCFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(f.store.Dir(), "tmp")
	minute := time.Now().Add(-time.Minute)
	files := map[string]time.Time{
		fmt.Sprintf("put-%d-1", dead.Process.Pid): minute,
		fmt.Sprintf("put-%d-2", os.Getpid()):      minute,
		fmt.Sprintf("put-%d-3", os.Getpid()):      time.Now().Add(-time.Hour),
	}
	for name, at := range files {
		p := filepath.Join(tmp, name)
		if err := os.WriteFile(p, []byte("half"), 0o444); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := GC(ctx, f.store, f.d, 0, false); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(tmp)
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if want := []string{fmt.Sprintf("put-%d-2", os.Getpid())}; !slices.Equal(left, want) {
		t.Fatalf("left %v; want %v", left, want)
	}
}

// A snapshot that reuses objects without freshening them (a scan-cache
// hit the mount knows is whole) and writes its ref between gc's listing
// and the removal keeps them: gc reads the refs written since under the
// store's lock.
func TestGCRefDuringSweep(t *testing.T) {
	f := newGCFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	beforeSweep = func() {
		if err := f.d.Create(Snapshot{Name: "late", Root: object.Entry{Object: f.gone}}); err != nil {
			t.Error(err)
		}
	}
	t.Cleanup(func() { beforeSweep = nil })
	if _, err := GC(ctx, f.store, f.d, 0, false); err != nil {
		t.Fatal(err)
	}
	f.verify(t, "snapshot written during the sweep", f.gone)
}

// Pushed snapshots are a namespace apart: one name in each is two
// snapshots, the state's own List leaves pushed ones out, "pushed/NAME"
// reaches them, and gc keeps what they reach.
func TestPushedNamespace(t *testing.T) {
	ctx := context.Background()
	f := newGCFixture(t)
	pushedRoot := putTree(t, f.store, "p")
	ageStore(t, f.store, time.Hour)
	p := f.d.Pushed()
	if err := p.Create(Snapshot{Name: "kept", Root: object.Entry{Object: pushedRoot}}); err != nil {
		t.Fatalf("pushed name that the state's own snapshot holds: %v", err)
	}
	if err := p.Create(Snapshot{Name: "kept", Root: object.Entry{Object: pushedRoot}}); !errors.Is(err, ErrExists) {
		t.Fatalf("second pushed create: %v", err)
	}
	if s, err := f.d.Get("kept"); err != nil || s.Root.Object != f.kept {
		t.Fatalf("own kept: %v %v", s.Root.Object, err)
	}
	if s, err := f.d.Get(PushedPrefix + "kept"); err != nil || s.Root.Object != pushedRoot || s.Name != "pushed/kept" {
		t.Fatalf("pushed/kept: %+v %v", s, err)
	}
	if _, err := f.d.Get(PushedPrefix + "nope"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "pushed/nope") {
		t.Fatalf("pushed/nope: %v", err)
	}
	for _, bad := range []string{PushedPrefix + "a/b", PushedPrefix + PushedPrefix + "kept", PushedPrefix + ".tmp"} {
		if _, err := f.d.Get(bad); err == nil || errors.Is(err, ErrNotFound) {
			t.Errorf("get %q: %v, want an invalid name", bad, err)
		}
	}
	if err := f.d.Create(Snapshot{Name: PushedPrefix + "x", Root: object.Entry{Object: pushedRoot}}); err == nil {
		t.Error("own snapshot named pushed/x created")
	}
	if list, err := f.d.List(); err != nil || len(list) != 1 || list[0].Root.Object != f.kept {
		t.Fatalf("own list: %v %v", list, err)
	}
	if list, err := p.List(); err != nil || len(list) != 1 || list[0].Root.Object != pushedRoot {
		t.Fatalf("pushed list: %v %v", list, err)
	}
	if _, err := GC(ctx, f.store, f.d, 0, false); err != nil {
		t.Fatal(err)
	}
	f.verify(t, "pushed snapshot", pushedRoot)
	f.verify(t, "own snapshot", f.kept)
	if err := f.d.Remove(PushedPrefix + "kept"); err != nil {
		t.Fatal(err)
	}
	if err := f.d.Remove(PushedPrefix + "kept"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second remove of pushed/kept: %v", err)
	}
	if _, err := f.d.Get("kept"); err != nil {
		t.Fatalf("own kept after removing pushed/kept: %v", err)
	}
	ageStore(t, f.store, time.Hour)
	if _, err := GC(ctx, f.store, f.d, 0, false); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.store.Has(ctx, pushedRoot); ok {
		t.Error("a removed pushed snapshot's root kept by gc")
	}
}

// Refs of pushed snapshots that a cowfs without the pushed namespace kept
// among the state's own move to the pushed namespace, but for one whose
// name is pushed already; the state's own stay.
func TestAdoptPushed(t *testing.T) {
	d, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root := object.Sum([]byte("t"))
	for _, s := range []Snapshot{{Name: "old", Source: PushedSource}, {Name: "own", Source: "/mnt/x"}, {Name: "both", Source: PushedSource}} {
		s.Root.Object = root
		if err := d.Create(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Pushed().Create(Snapshot{Name: "both", Root: object.Entry{Object: object.Sum([]byte("u"))}, Source: PushedSource}); err != nil {
		t.Fatal(err)
	}
	moved, err := d.AdoptPushed()
	if err != nil || !slices.Equal(moved, []string{"old"}) {
		t.Fatalf("adopt: %v, %v; want [old]", moved, err)
	}
	if s, err := d.Get(PushedPrefix + "old"); err != nil || s.Root.Object != root {
		t.Errorf("pushed/old: %v, %v", s.Root.Object, err)
	}
	if _, err := d.Get("old"); !errors.Is(err, ErrNotFound) {
		t.Errorf("old left among the state's own: %v", err)
	}
	for _, name := range []string{"own", "both"} {
		if s, err := d.Get(name); err != nil || s.Root.Object != root {
			t.Errorf("%s: %v, %v", name, s.Root.Object, err)
		}
	}
	if moved, err := d.AdoptPushed(); err != nil || len(moved) != 0 {
		t.Errorf("second adopt: %v, %v", moved, err)
	}
}

// A ref keeps the root tree's digest as "root", the form every cowfs
// reads it from, and the root directory's entry as "root_entry": a ref
// whose entry does not carry the tree reads with the tree from "root",
// and a ref written now has both, as refs always had.
func TestRefOnDiskFormat(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	root := object.Sum([]byte("t"))
	old, err := json.Marshal(map[string]any{"name": "old", "root": root.String(), "created": time.Now(),
		"root_entry": object.Entry{Mode: 0o40755, Uid: 7}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "old"), old, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := d.Get("old")
	if err != nil || s.Root.Object != root || s.Root.Mode != 0o40755 || s.Root.Uid != 7 {
		t.Fatalf("old ref: %+v, %v", s, err)
	}

	if err := d.Create(Snapshot{Name: "new", Root: object.Entry{Mode: 0o40700, Object: root}, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "new"))
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Root      string       `json:"root"`
		RootEntry object.Entry `json:"root_entry"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if raw.Root != root.String() || raw.RootEntry.Object != root || raw.RootEntry.Mode != 0o40700 {
		t.Fatalf("new ref on disk: %s", b)
	}
}
