package fs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/object"
)

// A snapshot of a mount over a local lower, which takes the lower in
// before it holds writes and then takes the directories the upper never
// touched whole, records the same tree as a capture that walks the whole
// merged view while holding them: nested lower directories, xattrs,
// symlinks, a fifo, empty and sparse files, hard links (one written
// through a name, the other name in a directory nothing touched), and
// every kind of change through the mount.
func TestSnapshotPreparedSameAsHeld(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	lower := filepath.Join(base, "lower")
	for i := range 3 {
		for j := range 3 {
			writeT(t, filepath.Join(lower, fmt.Sprintf("d%d/e%d/f", i, j)), []byte(fmt.Sprintf("file %d %d\n", i, j)))
		}
	}
	writeT(t, filepath.Join(lower, "top"), []byte("top\n"))
	writeT(t, filepath.Join(lower, "empty/none"), nil)
	writeT(t, filepath.Join(lower, "x/attr"), []byte("with xattrs\n"))
	for _, p := range []string{"x/attr", "x"} {
		if err := unix.Lsetxattr(filepath.Join(lower, p), "user.spider", []byte("v1"), 0); err != nil {
			t.Fatal(err)
		}
	}
	// cowfs's own xattrs on a lower file (a lower that was once an
	// upper) are not part of the merged view.
	own := "user.cowfs.old"
	if os.Geteuid() == 0 {
		own = "trusted.cowfs.old"
	}
	for _, p := range []string{"d1/e1/f", "d1/e1"} {
		if err := unix.Lsetxattr(filepath.Join(lower, p), own, []byte("stale"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("../top", filepath.Join(lower, "x/link")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(lower, "x/fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	sparse, err := os.Create(filepath.Join(lower, "x/sparse"))
	if err != nil {
		t.Fatal(err)
	}
	sparse.WriteAt([]byte("end"), 5<<20)
	sparse.Close()
	// Two names of one lower file in directories nothing touches, and
	// two of one written through the mount, its other name far away.
	// And one with a name in the root, which the capture walks.
	writeT(t, filepath.Join(lower, "h1/a"), []byte("linked\n"))
	writeT(t, filepath.Join(lower, "w1/a"), []byte("written\n"))
	for _, l := range [][2]string{{"h1/a", "h2/b"}, {"w1/a", "w2/deep/b"}, {"top", "h2/top"}} {
		os.MkdirAll(filepath.Dir(filepath.Join(lower, l[1])), 0o755)
		if err := os.Link(filepath.Join(lower, l[0]), filepath.Join(lower, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	m := mountState(t, filepath.Join(base, "mnt"), testSpec{Lower: lower, State: filepath.Join(base, "state")})
	mnt := func(p string) string { return filepath.Join(m.Dir, p) }
	appendT(t, mnt("d0/e1/f"))
	appendT(t, mnt("w1/a"))
	writeT(t, mnt("d1/new"), []byte("new\n"))
	if err := os.Rename(mnt("d2/e0"), mnt("d1/moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(mnt("d2/e1/f")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(mnt("d2/e2"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(mnt("x/attr"), "user.spider", []byte("v2"), 0); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// The first with a written lower file's other name still to link
	// up; the second after the first linked it up.
	for _, name := range []string{"s1", "s2"} {
		res, err := m.Snapshot(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if res.DirsReused == 0 {
			t.Errorf("%s took no lower directory whole: %+v", name, res)
		}
		prepared, err := object.ParseDigest(res.Root)
		if err != nil {
			t.Fatal(err)
		}
		held, _, _, err := m.fs.Capture(ctx, m.store)
		if err != nil {
			t.Fatal(err)
		}
		sameTree(t, m.store, name+":/", prepared, held, map[uint64]uint64{}, map[uint64]uint64{})
	}
}

// sameTree fails t where trees a and b of store differ, but for the ids
// of link groups, which may differ as long as they group the same names
// (ab maps a's ids to b's, ba b's to a's).
func sameTree(t *testing.T, store *object.DirStore, path string, a, b object.Digest, ab, ba map[uint64]uint64) {
	t.Helper()
	ta, tb := decodeTreeT(t, store, a), decodeTreeT(t, store, b)
	if len(ta.Entries) != len(tb.Entries) {
		t.Errorf("%s: %d entries against %d", path, len(ta.Entries), len(tb.Entries))
		return
	}
	for i := range ta.Entries {
		ea, eb := ta.Entries[i], tb.Entries[i]
		p := filepath.Join(path, ea.Name)
		if ea.Link != 0 || eb.Link != 0 {
			idb, okb := ab[ea.Link]
			ida, oka := ba[eb.Link]
			if okb && idb != eb.Link || oka && ida != ea.Link || ea.Link == 0 || eb.Link == 0 {
				t.Errorf("%s: link group %x against %x: not the same names in each", p, ea.Link, eb.Link)
			}
			ab[ea.Link], ba[eb.Link] = eb.Link, ea.Link
			ea.Link, eb.Link = 0, 0
		}
		if ea.Mode&unix.S_IFMT == unix.S_IFDIR {
			sameTree(t, store, p, ea.Object, eb.Object, ab, ba)
			ea.Object, eb.Object = object.Zero, object.Zero
		}
		if !reflect.DeepEqual(ea, eb) {
			t.Errorf("%s: %+v against %+v", p, ea, eb)
		}
	}
}

func decodeTreeT(t *testing.T, store *object.DirStore, d object.Digest) *object.Tree {
	t.Helper()
	b, err := store.Get(context.Background(), d)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := object.DecodeTree(b)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}
