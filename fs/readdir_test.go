package fs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
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

// listingCounter counts the OPENDIRs that let the kernel cache their
// listing and the READDIRPLUS requests that reach the mount.
type listingCounter struct {
	fuse.RawFileSystem
	cacheable, uncached, plus atomic.Int64
}

func (c *listingCounter) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := c.RawFileSystem.OpenDir(cancel, in, out)
	if out.OpenFlags&fuse.FOPEN_CACHE_DIR != 0 {
		c.cacheable.Add(1)
	} else {
		c.uncached.Add(1)
	}
	return st
}

func (c *listingCounter) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	c.plus.Add(1)
	return c.RawFileSystem.ReadDirPlus(cancel, in, out)
}

// TestListingCachedOnceUnchanged: the kernel caches a directory's listing
// only once the directory was listed and did not change since. A lower
// directory lists from the kernel's cache from its second listing on; a
// directory changed through the mount, by any kind of change, is listed
// once without the cache, then cached, and every listing shows the
// directory as it is.
func TestListingCachedOnceUnchanged(t *testing.T) {
	lower := t.TempDir()
	if err := os.Mkdir(filepath.Join(lower, "l"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		writeT(t, filepath.Join(lower, "l", fmt.Sprintf("f%02d", i)), nil)
	}
	c := &listingCounter{}
	tm := mountT(t, lower, Options{Instrument: func(raw fuse.RawFileSystem) fuse.RawFileSystem {
		c.RawFileSystem = raw
		return c
	}})
	names := func(dir string) []string {
		t.Helper()
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		var w []string
		for _, e := range ents {
			w = append(w, e.Name())
		}
		return w
	}
	// expect lists dir, checks its names and whether the opendir let the
	// kernel cache and the listing came from the kernel's cache.
	expect := func(when, dir string, want []string, cacheable, fromCache bool) {
		t.Helper()
		c0, p0 := c.cacheable.Load(), c.plus.Load()
		if got := direntNames(readDirents(t, filepath.Join(tm.Dir, dir))); !slices.Equal(got, want) {
			t.Fatalf("%s: %s lists %q, want %q", when, dir, got, want)
		}
		ca, plus := c.cacheable.Load() > c0, c.plus.Load()-p0
		if ca != cacheable {
			t.Errorf("%s: %s opened cacheable %v, want %v", when, dir, ca, cacheable)
		}
		if fromCache && plus != 0 {
			t.Errorf("%s: %s: %d READDIRPLUS, want the kernel's cache", when, dir, plus)
		}
		if !fromCache && plus == 0 {
			t.Errorf("%s: %s: no READDIRPLUS, want a listing from the mount", when, dir)
		}
	}
	inLower := names(filepath.Join(lower, "l"))
	expect("lower, first", "l", inLower, true, false)
	expect("lower, second", "l", inLower, true, true)

	d := filepath.Join(tm.Dir, "d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	up := filepath.Join(tm.Upper, "d")
	changes := []struct {
		what string
		do   func() error
	}{
		{"create", func() error { return os.WriteFile(filepath.Join(d, "a"), nil, 0o644) }},
		{"mkdir", func() error { return os.Mkdir(filepath.Join(d, "sub"), 0o755) }},
		{"symlink", func() error { return os.Symlink("a", filepath.Join(d, "s")) }},
		{"link", func() error { return os.Link(filepath.Join(d, "a"), filepath.Join(d, "h")) }},
		{"mknod", func() error { return unix.Mkfifo(filepath.Join(d, "p"), 0o644) }},
		{"rename within", func() error { return os.Rename(filepath.Join(d, "h"), filepath.Join(d, "h2")) }},
		{"rename in", func() error { return os.Rename(filepath.Join(tm.Dir, "l", "f00"), filepath.Join(d, "f00")) }},
		{"unlink", func() error { return os.Remove(filepath.Join(d, "s")) }},
		{"rmdir", func() error { return os.Remove(filepath.Join(d, "sub")) }},
	}
	for _, ch := range changes {
		if err := ch.do(); err != nil {
			t.Fatalf("%s: %v", ch.what, err)
		}
		w := names(up)
		expect("after "+ch.what, "d", w, false, false)
		expect("after "+ch.what+", unchanged since", "d", w, true, false)
		expect("after "+ch.what+", cached", "d", w, true, true)
	}
	// The rename out of l changed l too.
	expect("l after a rename out", "l", inLower[1:], false, false)
}
