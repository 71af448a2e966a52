package cow

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// newUserEngine is newEngine over an upper whose record says its own
// xattrs are user.*, as for an upper a mount in a user namespace or by a
// user other than root made: the kernel keeps user.* off symlinks and
// special files, for root on the host too.
func newUserEngine(t *testing.T, fill func(t *testing.T, lower string)) *engine {
	t.Helper()
	d := t.TempDir()
	e := &engine{lower: filepath.Join(d, "lower"), upper: filepath.Join(d, "upper"), work: filepath.Join(d, "work"), meta: filepath.Join(d, "meta")}
	for _, s := range []string{e.lower, e.upper, e.work} {
		if err := os.Mkdir(s, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if fill != nil {
		fill(t, e.lower)
	}
	if err := os.WriteFile(filepath.Join(e.work, xattrRecord), []byte(userPrefix+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.open(t)
	if e.f.up.prefix != userPrefix {
		t.Fatalf("upper prefix %q, want %q", e.f.up.prefix, userPrefix)
	}
	return e
}

// inodeRecords counts the identities kept in the metadata for upper
// inodes that cannot carry the identity xattr.
func (e *engine) inodeRecords(t *testing.T) int {
	t.Helper()
	n := 0
	err := e.f.meta.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'i'}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func lowerIno(t *testing.T, lower, rel string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(lower, rel), &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// wantIno checks the merged inode number of rel, from a lookup and from
// its directory's listing.
func (e *engine) wantIno(t *testing.T, rel string, want uint64) {
	t.Helper()
	p := e.path(t, rel)
	if p.node().Ino != want {
		t.Errorf("%s: lookup ino %d, want %d", rel, p.node().Ino, want)
	}
	if st, err := e.f.Attr(p); err != nil || st.Ino != want {
		t.Errorf("%s: attr ino %d, %v; want %d", rel, st.Ino, err, want)
	}
	ents, err := e.f.ReadDir(e.path(t, parentRel(rel)))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ents {
		if d.Name == filepath.Base(rel) && d.Ino != want {
			t.Errorf("%s: d_ino %d, want %d", rel, d.Ino, want)
		}
	}
}

// parentRel is the path of rel's directory, "" for the root.
func parentRel(rel string) string {
	if d := filepath.Dir(rel); d != "." {
		return d
	}
	return ""
}

func specialLower(t *testing.T, l string) {
	writeFile(t, filepath.Join(l, "t"), []byte("T"))
	for name, target := range map[string]string{"l": "t", "d/l2": "x", "gone": "y", "over": "o", "mv": "m"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(l, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(l, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"p", "gonefifo"} {
		if err := unix.Mkfifo(filepath.Join(l, name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Under a user.* upper, symlinks and fifos copy up (a chown, a touch -h,
// a rename, a link) and keep the lower's inode number across a reopen;
// their identity lives in the metadata, keyed by the upper inode, and
// goes with its last name. Before, every such copy-up failed with EPERM.
func TestUserXattrSpecialCopyUp(t *testing.T) {
	e := newUserEngine(t, specialLower)
	ino := map[string]uint64{}
	for _, n := range []string{"l", "p", "d/l2", "mv"} {
		ino[n] = lowerIno(t, e.lower, n)
	}
	mtime := unix.Timespec{Sec: 1000000000}
	mode := uint32(0o600)
	uid := uint32(4242)
	setattr := func(rel string, a SetAttr) {
		t.Helper()
		if _, err := e.f.Setattr(e.path(t, rel), a); err != nil {
			t.Fatalf("setattr %s: %v", rel, err)
		}
	}
	setattr("l", SetAttr{Mtime: &mtime})
	setattr("p", SetAttr{Mode: &mode})
	setattr("gone", SetAttr{Uid: &uid})
	setattr("gonefifo", SetAttr{Mode: &mode})
	setattr("over", SetAttr{Mtime: &mtime})
	root := e.f.rootPath()
	rename := func(from, to string) {
		t.Helper()
		fp, tp := e.path(t, from), e.path(t, parentRel(to))
		var target *Node
		if q, err := e.lookup(to); err == nil {
			target = q.node()
		}
		if err := e.f.Rename(fp.parent(), filepath.Base(from), fp.node(), tp, filepath.Base(to), target, 0); err != nil {
			t.Fatalf("rename %s %s: %v", from, to, err)
		}
	}
	rename("d/l2", "l3")
	rename("mv", "over")
	if _, err := e.f.Link(e.path(t, "l"), root, "lhard"); err != nil {
		t.Fatalf("link: %v", err)
	}
	for _, n := range []string{"gone", "gonefifo"} {
		if err := e.f.Unlink(root, n, e.path(t, n).node()); err != nil {
			t.Fatalf("unlink %s: %v", n, err)
		}
	}

	check := func(when string) {
		t.Helper()
		e.wantIno(t, "l", ino["l"])
		e.wantIno(t, "lhard", ino["l"])
		e.wantIno(t, "p", ino["p"])
		e.wantIno(t, "l3", ino["d/l2"])
		e.wantIno(t, "over", ino["mv"])
		for rel, want := range map[string]string{"l": "t", "lhard": "t", "l3": "x", "over": "m"} {
			if got, err := e.f.Readlink(e.path(t, rel)); err != nil || got != want {
				t.Errorf("%s: readlink %s = %q, %v; want %q", when, rel, got, err, want)
			}
		}
		if st, err := e.f.Attr(e.path(t, "p")); err != nil || st.Mode != unix.S_IFIFO|0o600 {
			t.Errorf("%s: p mode %o, %v", when, st.Mode, err)
		}
		if st, err := e.f.Attr(e.path(t, "l")); err != nil || st.Mtim != mtime || st.Nlink != 2 {
			t.Errorf("%s: l mtime %v nlink %d, %v", when, st.Mtim, st.Nlink, err)
		}
		for _, n := range []string{"gone", "gonefifo", "mv", "d/l2"} {
			e.wantGone(t, n)
		}
		// l and lhard, p, l3, over: the records of gone, gonefifo and
		// the over that mv replaced went with their inodes.
		if n := e.inodeRecords(t); n != 4 {
			t.Errorf("%s: %d inode records, want 4", when, n)
		}
	}
	check("before a reopen")
	e.reopen(t)
	check("after a reopen")
}

// A record whose birth time is not the inode's, left by an inode that
// is gone and whose number was given again, is not taken for the new
// inode's identity.
func TestUserXattrStaleRecord(t *testing.T) {
	e := newUserEngine(t, nil)
	if _, _, err := e.f.Symlink(e.f.rootPath(), "n", "t", Cred{}); err != nil {
		t.Fatal(err)
	}
	st, gen, err := e.f.up.stat("n")
	if err != nil {
		t.Fatal(err)
	}
	own := e.f.upperIno(st.Ino)
	for _, c := range []struct {
		gen  uint64
		want uint64
	}{{gen + 1, own}, {gen, 12345}} {
		if err := e.f.meta.putInodeIdentity(st.Ino, c.gen, identity{Ino: 12345, ID: 1}); err != nil {
			t.Fatal(err)
		}
		e.reopen(t)
		e.wantIno(t, "n", c.want)
	}
}

// Renames, links and unlinks of copied-up symlinks and fifos racing with
// lookups and listings leave each surviving inode its identity and no
// record behind for a removed one.
func TestUserXattrSpecialRace(t *testing.T) {
	const n = 16
	e := newUserEngine(t, func(t *testing.T, l string) {
		for i := range n {
			if err := os.Symlink(fmt.Sprint("target", i), filepath.Join(l, fmt.Sprint("s", i))); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mkfifo(filepath.Join(l, fmt.Sprint("f", i)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Mkdir(filepath.Join(l, "d"), 0o755); err != nil {
			t.Fatal(err)
		}
	})
	ino := map[string]uint64{}
	for i := range n {
		for _, k := range []string{"s", "f"} {
			ino[fmt.Sprint(k, i)] = lowerIno(t, e.lower, fmt.Sprint(k, i))
		}
	}
	root := e.f.rootPath()
	d := e.path(t, "d")
	var wg sync.WaitGroup
	errs := make(chan error, 4*n)
	for i := range n {
		for _, k := range []string{"s", "f"} {
			name := fmt.Sprint(k, i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- func() error {
					nd, _, err := e.f.Lookup(root, name)
					if err != nil {
						return err
					}
					// Moved into d, linked back as name2, the
					// name in d removed: name2 is what is left.
					if err := e.f.Rename(root, name, nd, d, name, nil, 0); err != nil {
						return fmt.Errorf("rename %s: %w", name, err)
					}
					if _, err := e.f.Link(d.child(name, nd), root, name+"-2"); err != nil {
						return fmt.Errorf("link %s: %w", name, err)
					}
					if err := e.f.Unlink(d, name, nd); err != nil {
						return fmt.Errorf("unlink %s: %w", name, err)
					}
					return nil
				}()
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 4 {
				if _, err := e.f.ReadDir(root); err != nil {
					errs <- err
					return
				}
				if _, err := e.f.ReadDir(d); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	check := func() {
		t.Helper()
		for name, want := range ino {
			e.wantIno(t, name+"-2", want)
			e.wantGone(t, name)
			e.wantGone(t, "d/"+name)
		}
		if got := e.inodeRecords(t); got != 2*n {
			t.Errorf("%d inode records, want %d", got, 2*n)
		}
	}
	check()
	e.reopen(t)
	check()
}
