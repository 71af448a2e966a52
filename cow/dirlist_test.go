package cow

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
)

// TestKeptListing: the kept listing of a directory only the upper has
// follows every change made through FS, failed ones included, so that it
// always equals a listing read from the upper anew (names, inode numbers
// and types), and counts what it keeps.
func TestKeptListing(t *testing.T) {
	e := newEngine(t, func(t *testing.T, lower string) {
		if err := os.WriteFile(filepath.Join(lower, "lowerfile"), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	f := e.f
	root := f.rootPath()
	dn, _, err := f.Mkdir(root, "d", 0o755, Cred{})
	if err != nil {
		t.Fatal(err)
	}
	d := root.child("d", dn) // the directory's one Node, as package fs keeps it
	check := func(step string, added ...string) {
		t.Helper()
		// An exchange, and a change that failed (it may have changed
		// the upper part way), drop the listing; any other edits it.
		dropped := step == "exchange" || strings.HasPrefix(step, "failed")
		if got := d.node().list.Load() == nil; got != dropped && step != "empty" {
			t.Errorf("%s: listing dropped %v, want %v", step, got, dropped)
		}
		kept, held, err := f.ReadDirKnown(d, nil)
		if err != nil {
			t.Fatalf("%s: listing: %v", step, err)
		}
		if d.node().list.Load() == nil {
			t.Fatalf("%s: no listing kept", step)
		}
		fresh, err := f.ReadDir(e.path(t, "d")) // a Node of its own: read anew
		if err != nil {
			t.Fatalf("%s: fresh listing: %v", step, err)
		}
		want := map[string][2]uint64{}
		for _, x := range fresh {
			want[x.Name] = [2]uint64{x.Ino, uint64(x.Mode)}
		}
		got := map[string][2]uint64{}
		for _, x := range kept {
			got[x.Name] = [2]uint64{x.Ino, uint64(x.Mode)}
		}
		if len(got) != len(kept) || len(got) != len(want) {
			t.Errorf("%s: kept %d entries (%d names), fresh %d", step, len(kept), len(got), len(want))
		}
		for name, w := range want {
			if g, ok := got[name]; !ok || g != w {
				t.Errorf("%s: %s kept as %v (present %v), fresh %v", step, name, g, ok, w)
			}
		}
		// Listed with nothing known: an entry is marked held once
		// made or moved here through FS.
		if held != nil && len(held) != len(kept) {
			t.Errorf("%s: %d held marks for %d entries", step, len(held), len(kept))
		}
		for _, name := range added {
			i := slices.IndexFunc(kept, func(x lower.DirEntry) bool { return x.Name == name })
			if i < 0 || i >= len(held) || !held[i] {
				t.Errorf("%s: %s, made through FS, not marked held", step, name)
			}
		}
		if n := d.node().list.Load().counted.Load(); n != int64(len(kept)) {
			t.Errorf("%s: counted %d, kept entries %d", step, n, len(kept))
		}
	}
	lookup := func(dir Path, name string) *Node {
		t.Helper()
		n, _, err := f.Lookup(dir, name)
		if err != nil {
			t.Fatalf("lookup %s: %v", name, err)
		}
		return n
	}
	check("empty")

	a, _, h, err := f.Create(d, "a", unix.O_RDWR, 0o644, Cred{})
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	check("create", "a")
	sub, _, err := f.Mkdir(d, "sub", 0o755, Cred{})
	if err != nil {
		t.Fatal(err)
	}
	check("mkdir", "sub")
	if _, _, err := f.Symlink(d, "s", "a", Cred{}); err != nil {
		t.Fatal(err)
	}
	check("symlink", "s")
	if _, _, err := f.Mknod(d, "p", unix.S_IFIFO|0o644, 0, Cred{}); err != nil {
		t.Fatal(err)
	}
	check("mknod", "p")
	if _, err := f.Link(d.child("a", a), d, "a2"); err != nil {
		t.Fatal(err)
	}
	check("link", "a2")
	if err := f.Unlink(d, "a", a); err != nil {
		t.Fatal(err)
	}
	check("unlink")
	if err := f.Rename(d, "a2", a, d, "b", nil, 0); err != nil {
		t.Fatal(err)
	}
	check("rename within", "b")
	if err := f.Rename(d, "b", a, root, "moved", nil, 0); err != nil {
		t.Fatal(err)
	}
	check("rename out")
	if err := f.Rename(root, "lowerfile", lookup(root, "lowerfile"), d, "in", nil, 0); err != nil {
		t.Fatal(err)
	}
	check("rename in from the lower", "in")
	if err := f.Rename(d, "s", lookup(d, "s"), d, "p", lookup(d, "p"), 0); err != nil {
		t.Fatal(err)
	}
	check("rename over", "p")
	if err := f.Rename(d, "in", lookup(d, "in"), d, "p", lookup(d, "p"), unix.RENAME_EXCHANGE); err != nil {
		t.Fatal(err)
	}
	check("exchange")
	if err := f.Rmdir(d, "sub", sub); err != nil {
		t.Fatal(err)
	}
	check("rmdir")

	// Failed changes.
	if _, _, _, err := f.Create(d, "in", unix.O_RDWR, 0o644, Cred{}); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("create over an entry: %v, want EEXIST", err)
	}
	check("failed create")
	full, _, err := f.Mkdir(d, "full", 0o755, Cred{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.Mkdir(d.child("full", full), "x", 0o755, Cred{}); err != nil {
		t.Fatal(err)
	}
	if err := f.Rmdir(d, "full", full); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir of a full directory: %v, want ENOTEMPTY", err)
	}
	check("failed rmdir")
}

// TestKeptListingGivenBack: a directory made through Mkdir keeps its
// listing from birth; a kept listing's share of FS.kept comes back when it
// is dropped, and when its directory's Node is gone.
func TestKeptListingGivenBack(t *testing.T) {
	e := newEngine(t, nil)
	f := e.f
	root := f.rootPath()
	dn, _, err := f.Mkdir(root, "d", 0o755, Cred{})
	if err != nil {
		t.Fatal(err)
	}
	d := root.child("d", dn)
	if dn.list.Load() == nil {
		t.Fatal("a directory made through Mkdir keeps no listing")
	}
	for _, name := range []string{"a", "b", "c"} {
		if _, _, err := f.Mknod(d, name, unix.S_IFREG|0o644, 0, Cred{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := f.ReadDirKnown(d, nil); err != nil {
		t.Fatal(err)
	}
	if n := f.kept.Load(); n != 3 {
		t.Fatalf("kept %d, want 3", n)
	}
	f.mu.Lock()
	f.dropList(dn)
	f.mu.Unlock()
	if n := f.kept.Load(); n != 0 {
		t.Fatalf("kept %d after drop, want 0", n)
	}

	// A Node of its own, kept and then let go, as package fs lets go
	// of a directory the kernel forgot.
	other, _, err := f.Lookup(root, "d")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.ReadDirKnown(root.child("d", other), nil); err != nil {
		t.Fatal(err)
	}
	if n := f.kept.Load(); n != 3 {
		t.Fatalf("kept %d, want 3", n)
	}
	other = nil
	deadline := time.Now().Add(10 * time.Second)
	for f.kept.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("kept %d 10 s after the Node went, want 0", f.kept.Load())
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
