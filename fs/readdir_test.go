package fs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// readFd reads the rest of the directory open at fd, size bytes a call.
func readFd(t *testing.T, fd, size int) []dirent {
	t.Helper()
	var all []dirent
	for {
		ds := getdents(t, fd, size)
		if len(ds) == 0 {
			return all
		}
		all = append(all, ds...)
	}
}

func direntNames(ds []dirent) []string {
	var out []string
	for _, d := range ds {
		if d.Name != "." && d.Name != ".." {
			out = append(out, d.Name)
		}
	}
	slices.Sort(out)
	return out
}

// TestReaddirRewind: rewinddir on an open directory shows the directory as
// it is now, as a new opendir would (POSIX), whatever was listed through
// that descriptor before; a listing in progress keeps its offsets.
func TestReaddirRewind(t *testing.T) {
	lower := t.TempDir()
	for i := range 20 {
		writeT(t, filepath.Join(lower, "d", fmt.Sprintf("l%02d", i)), nil)
	}
	tm := mountT(t, lower, Options{})
	d := filepath.Join(tm.Dir, "d")
	fd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	first := direntNames(readFd(t, fd, 8192))
	if len(first) != 20 {
		t.Fatalf("first listing: %q", first)
	}
	writeT(t, filepath.Join(d, "new"), nil)
	if err := os.Remove(filepath.Join(d, "l00")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(d, "l01"), filepath.Join(d, "moved")); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got := direntNames(readFd(t, fd, 8192))
	want := direntNames(readDirents(t, d))
	if !slices.Equal(got, want) {
		t.Fatalf("after rewinddir: %q\nwant (a new opendir's): %q", got, want)
	}
	for _, n := range []string{"new", "moved"} {
		if !slices.Contains(got, n) {
			t.Errorf("after rewinddir: %s missing", n)
		}
	}
	for _, n := range []string{"l00", "l01"} {
		if slices.Contains(got, n) {
			t.Errorf("after rewinddir: %s still listed", n)
		}
	}
}

// TestReaddirInodes: every entry's d_ino is the st_ino lstat reports, for
// lower, copied-up, new, renamed and replaced entries, whether the kernel
// knows the entry already or meets it in the listing.
func TestReaddirInodes(t *testing.T) {
	lower := t.TempDir()
	for _, n := range []string{"lower", "copied", "renamed", "replaced", "sub/x"} {
		writeT(t, filepath.Join(lower, "d", n), []byte(n))
	}
	tm := mountT(t, lower, Options{})
	d := filepath.Join(tm.Dir, "d")
	if err := os.Chmod(filepath.Join(d, "copied"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeT(t, filepath.Join(d, "new"), nil)
	if err := os.Mkdir(filepath.Join(d, "newdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(d, "renamed"), filepath.Join(d, "renamed2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(d, "replaced")); err != nil {
		t.Fatal(err)
	}
	writeT(t, filepath.Join(d, "replaced"), nil)
	if err := os.Rename(filepath.Join(d, "new"), filepath.Join(d, "copied")); err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		ds := readDirents(t, d)
		if len(direntNames(ds)) != 6 {
			t.Fatalf("%s: listing %q", when, direntNames(ds))
		}
		for _, e := range ds {
			if e.Name == "." || e.Name == ".." {
				continue
			}
			st := lstatT(t, filepath.Join(d, e.Name))
			if e.Ino != st.Ino {
				t.Errorf("%s: %s: d_ino %d, st_ino %d", when, e.Name, e.Ino, st.Ino)
			}
		}
	}
	check("known to the kernel")
	tm.remount(t)
	check("after a remount, listed first")
	check("listed again")
}

// TestReaddirSeekHeld: a listing whose entries the kernel partly holds
// (files made through the mount, lower files looked up) and partly does
// not, read in small batches so that every READDIRPLUS ends with an entry
// that did not fit, then again from an offset in its middle, gives each
// name once, in the same order, with d_ino equal to st_ino.
func TestReaddirSeekHeld(t *testing.T) {
	lower := t.TempDir()
	const n = 300
	for i := range n {
		writeT(t, filepath.Join(lower, "d", fmt.Sprintf("lower%03d", i)), nil)
	}
	tm := mountT(t, lower, Options{})
	d := filepath.Join(tm.Dir, "d")
	for i := range n {
		writeT(t, filepath.Join(d, fmt.Sprintf("upper%03d", i)), nil)
		if i%2 == 0 {
			lstatT(t, filepath.Join(d, fmt.Sprintf("lower%03d", i)))
		}
	}
	fd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	all := readFd(t, fd, 1024)
	if got := direntNames(all); len(got) != 2*n || len(slices.Compact(got)) != 2*n {
		t.Fatalf("listing has %d names, %d distinct; want %d", len(got), len(slices.Compact(got)), 2*n)
	}
	mid := len(all) / 2
	if _, err := unix.Seek(fd, all[mid].Off, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	rest := readFd(t, fd, 4096)
	if !slices.Equal(rest, all[mid+1:]) {
		t.Errorf("after seekdir to entry %d: %d entries, want the %d after it", mid, len(rest), len(all)-mid-1)
	}
	for _, e := range all {
		if e.Name == "." || e.Name == ".." {
			continue
		}
		if st := lstatT(t, filepath.Join(d, e.Name)); e.Ino != st.Ino {
			t.Errorf("%s: d_ino %d, st_ino %d", e.Name, e.Ino, st.Ino)
		}
	}
}

// TestReaddirKeptAfterForget: a directory only the upper has lists from
// the listing cow keeps, which marks the entries made through the mount
// as held by the kernel. Once the kernel has let go of them (drop_caches),
// they still list with the right inode numbers and stat as before; and
// the listing follows creates, renames and unlinks made after, as the
// upper directory shows them.
func TestReaddirKeptAfterForget(t *testing.T) {
	tm := mountT(t, "", Options{})
	d := filepath.Join(tm.Dir, "d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		writeT(t, filepath.Join(d, fmt.Sprintf("f%02d", i)), nil)
	}
	check := func(when string) {
		t.Helper()
		ds := readDirents(t, d)
		ents, err := os.ReadDir(filepath.Join(tm.Upper, "d"))
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, e := range ents {
			want = append(want, e.Name())
		}
		slices.Sort(want)
		if got := direntNames(ds); !slices.Equal(got, want) {
			t.Fatalf("%s: listing %q, upper %q", when, got, want)
		}
		for _, e := range ds {
			if e.Name == "." || e.Name == ".." {
				continue
			}
			if st := lstatT(t, filepath.Join(d, e.Name)); e.Ino != st.Ino {
				t.Errorf("%s: %s: d_ino %d, st_ino %d", when, e.Name, e.Ino, st.Ino)
			}
		}
	}
	check("made through the mount")
	dropCaches(t)
	check("after the kernel let go")
	writeT(t, filepath.Join(d, "new"), nil)
	if err := os.Rename(filepath.Join(d, "f00"), filepath.Join(d, "renamed")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(d, "f01"), filepath.Join(d, "f02")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(d, "f03")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(d, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(d, "f04"), filepath.Join(d, "sub", "f04")); err != nil {
		t.Fatal(err)
	}
	check("after changes")
	dropCaches(t)
	check("after changes, once the kernel let go")
}
