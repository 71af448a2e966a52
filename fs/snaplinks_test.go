package fs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A snapshot keeps hard links: names that were one file in the mount are
// one file in every restore of it (one inode number, the link count, a
// write through one name seen through the others), both for links made
// in the mount and for lower files with several names. A snapshot of
// such a restore keeps them too, and the first snapshot stays as it was.
func TestSnapshotHardLinks(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	if err := os.MkdirAll(lower, 0o755); err != nil {
		t.Fatal(err)
	}
	writeT(t, filepath.Join(lower, "lh1"), []byte("lower, two names\n"))
	if err := os.Link(filepath.Join(lower, "lh1"), filepath.Join(lower, "lh2")); err != nil {
		t.Fatal(err)
	}
	// A lower file written through one name, the other name in a
	// directory nothing touches: the snapshot must show the new bytes
	// under both.
	if err := os.Mkdir(filepath.Join(lower, "far"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeT(t, filepath.Join(lower, "lw1"), []byte("lower, written\n"))
	if err := os.Link(filepath.Join(lower, "lw1"), filepath.Join(lower, "far/lw2")); err != nil {
		t.Fatal(err)
	}
	m := mountState(t, filepath.Join(base, "mnt"), testSpec{Lower: lower, State: state})
	writeT(t, filepath.Join(m.Dir, "a"), []byte("made in the mount\n"))
	if err := os.Mkdir(filepath.Join(m.Dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"b", "d/c"} {
		if err := os.Link(filepath.Join(m.Dir, "a"), filepath.Join(m.Dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	appendT(t, filepath.Join(m.Dir, "lw1"))
	// In the restores g/x and e/y are written through one name: then
	// whichever of g and e the write did not bring up is a directory of
	// the snapshot that the upper never touched.
	for _, d := range []string{"e", "g"} {
		if err := os.Mkdir(filepath.Join(m.Dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeT(t, filepath.Join(m.Dir, "g/x"), []byte("x and e/y\n"))
	if err := os.Link(filepath.Join(m.Dir, "g/x"), filepath.Join(m.Dir, "e/y")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := m.Snapshot(ctx, "s1"); err != nil {
		t.Fatal(err)
	}

	groups := [][]string{{"a", "b", "d/c"}, {"lh1", "lh2"}, {"lw1", "far/lw2"}, {"g/x", "e/y"}}
	// linked checks that each group is one file holding want[i].
	linked := func(t *testing.T, dir string, want [][]byte) {
		t.Helper()
		for i, g := range groups {
			st0 := lstatT(t, filepath.Join(dir, g[0]))
			for _, name := range g {
				st := lstatT(t, filepath.Join(dir, name))
				if st.Ino != st0.Ino || st.Nlink != uint64(len(g)) {
					t.Errorf("%s in %s: ino %d nlink %d; %s has ino %d, want one file with %d names",
						name, dir, st.Ino, st.Nlink, g[0], st0.Ino, len(g))
				}
				if b := readT(t, filepath.Join(dir, name)); !bytes.Equal(b, want[i]) {
					t.Errorf("%s in %s holds %q, want %q", name, dir, b, want[i])
				}
			}
		}
	}
	old := [][]byte{[]byte("made in the mount\n"), []byte("lower, two names\n"), []byte("lower, written\nmore\n"), []byte("x and e/y\n")}
	r := mountState(t, filepath.Join(base, "r1"), testSpec{Snapshot: "s1", State: state})
	linked(t, r.Dir, old)

	// Write through one name of some groups in the restore.
	for _, name := range []string{"d/c", "lh2", "g/x"} {
		appendT(t, filepath.Join(r.Dir, name))
	}
	changed := [][]byte{[]byte("made in the mount\nmore\n"), []byte("lower, two names\nmore\n"), old[2], []byte("x and e/y\nmore\n")}
	// Before anything looks the other names up again, so the mount has
	// not linked them up yet.
	if _, err := r.Snapshot(ctx, "s2"); err != nil {
		t.Fatal(err)
	}
	linked(t, r.Dir, changed)
	linked(t, mountState(t, filepath.Join(base, "r2"), testSpec{Snapshot: "s2", State: state}).Dir, changed)
	linked(t, mountState(t, filepath.Join(base, "r3"), testSpec{Snapshot: "s1", State: state}).Dir, old)
}
