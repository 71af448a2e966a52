package fs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow"
	cownames "github.com/cowfs/cowfs/cow/names"
	"golang.org/x/sys/unix"
)

// overlayCase is one overlay semantic: it fills a lower directory, then
// works on a mount over it. TestOverlay checks afterwards, for every case,
// that the lower is byte for byte and attribute for attribute what it was.
type overlayCase struct {
	name string
	// lower fills the lower directory before the mount; may be nil.
	lower func(t *testing.T, lower string)
	// upper, when set, fills an upper directory before the mount (files a
	// user put in an upperdir must show in the mount).
	upper func(t *testing.T, upper string)
	run   func(t *testing.T, tm *testMount)
	// dropsCaches marks a case that drops the kernel's caches, for the
	// whole machine: it runs alone, the others in parallel.
	dropsCaches bool
	// slow, when set, says why the case is skipped with -short.
	slow string
}

var overlayCases = []overlayCase{
	{name: "MergeUpperOverLower", lower: mergeLower, upper: mergeUpper, run: testMerge},
	{name: "CopyUp", lower: copyUpLower, run: testCopyUp},
	{name: "Whiteout", lower: whiteoutLower, run: testWhiteout},
	{name: "OpaqueDir", lower: opaqueLower, run: testOpaque},
	{name: "RenameLower", lower: renameLower, run: testRename},
	{name: "RenameLargeLowerDir", lower: largeDirLower, run: testRenameLargeDir, slow: "renames a lower directory of thousands of entries"},
	{name: "Symlink", lower: symlinkLower, run: testSymlink},
	{name: "HardLinkInMount", lower: hardLinkLower, run: testHardLinkInMount},
	{name: "HardLinkInLower", lower: lowerHardLinkLower, run: testLowerHardLink, dropsCaches: true},
	{name: "HardLinkInLowerUnlink", lower: lowerHardLinkLower, run: testLowerHardLinkUnlink},
	{name: "Fifo", lower: fifoLower, run: testFifo},
	{name: "AppendTruncate", lower: appendLower, run: testAppendTruncate},
	{name: "SparseStaysSparse", lower: sparseLower, run: testSparse},
	{name: "Over4GiB", lower: bigLower, run: testOver4GiB},
	{name: "Statfs", lower: statfsLower, run: testStatfs},
	{name: "Locks", lower: locksLower, run: testLocks},
	{name: "SharedMmap", lower: mmapLower, run: testSharedMmap},
	{name: "InodeStable", lower: inoLower, run: testInodeStable, dropsCaches: true},
	{name: "RootInode", lower: inoLower, run: testRootInode},
	{name: "OpenFdSeesCopyUp", lower: staleLower, run: testOpenFdSeesCopyUp, dropsCaches: true},
	{name: "SeekdirWithWhiteouts", lower: seekdirLower, run: testSeekdir},
	{name: "NameMax", lower: nameMaxLower, run: testNameMax},
	{name: "NoEscape", lower: escapeLower, run: testNoEscape},
}

// TestOverlay runs every overlay semantic on its own mount. It is not
// parallel itself, so that its cases that drop caches run while no other
// test does.
func TestOverlay(t *testing.T) {
	for _, c := range overlayCases {
		t.Run(c.name, func(t *testing.T) {
			if c.slow != "" && testing.Short() {
				t.Skip("slow: " + c.slow + " (runs without -short)")
			}
			if !c.dropsCaches {
				t.Parallel()
			}
			base := t.TempDir()
			lower := filepath.Join(base, "lower")
			if err := os.Mkdir(lower, 0o755); err != nil {
				t.Fatal(err)
			}
			if c.lower != nil {
				c.lower(t, lower)
			}
			before := snapshotTree(t, lower)
			var o Options
			if c.upper != nil {
				o.Upper, o.Work = filepath.Join(base, "upper"), filepath.Join(base, "work")
				for _, d := range []string{o.Upper, o.Work} {
					if err := os.Mkdir(d, 0o755); err != nil {
						t.Fatal(err)
					}
				}
				c.upper(t, o.Upper)
			}
			tm := mountT(t, lower, o)
			c.run(t, tm)
			tm.unmount(t)
			assertTreeUnchanged(t, lower, before)
		})
	}
}

// --- merge ------------------------------------------------------------------

func mergeLower(t *testing.T, l string) {
	writeT(t, filepath.Join(l, "d/a"), []byte("lower a"))
	writeT(t, filepath.Join(l, "d/b"), []byte("lower b"))
	writeT(t, filepath.Join(l, "d/sub/c"), []byte("lower c"))
	writeT(t, filepath.Join(l, "top"), []byte("lower top"))
}

func mergeUpper(t *testing.T, u string) {
	writeT(t, filepath.Join(u, "d/b"), []byte("upper b"))
	writeT(t, filepath.Join(u, "d/u"), []byte("upper u"))
	writeT(t, filepath.Join(u, "onlyupper"), []byte("upper only"))
}

func testMerge(t *testing.T, tm *testMount) {
	check := func() {
		wantNames(t, tm.Dir, "d", "onlyupper", "top")
		wantNames(t, filepath.Join(tm.Dir, "d"), "a", "b", "n", "sub", "u")
		wantContent(t, filepath.Join(tm.Dir, "d/a"), []byte("lower a"))
		wantContent(t, filepath.Join(tm.Dir, "d/b"), []byte("upper b"))
		wantContent(t, filepath.Join(tm.Dir, "d/u"), []byte("upper u"))
		wantContent(t, filepath.Join(tm.Dir, "d/n"), []byte("new"))
		wantContent(t, filepath.Join(tm.Dir, "d/sub/c"), []byte("lower c"))
		wantContent(t, filepath.Join(tm.Dir, "top"), []byte("lower top"))
		wantContent(t, filepath.Join(tm.Dir, "onlyupper"), []byte("upper only"))
		wantGone(t, filepath.Join(tm.Dir, "d/nothere"))
	}
	writeT(t, filepath.Join(tm.Dir, "d/n"), []byte("new"))
	check()
	tm.remount(t)
	check()
}

// --- copy-up of data and metadata ------------------------------------------

var copyUpData = map[string][]byte{}

func copyUpLower(t *testing.T, l string) {
	for _, n := range []string{"write", "truncate", "chmod", "chown", "utimes", "setxattr"} {
		copyUpData[n] = randBytes(2<<20 + 77)
		writeT(t, filepath.Join(l, n), copyUpData[n])
		if err := unix.Setxattr(filepath.Join(l, n), "user.keep", []byte("kept"), 0); err != nil {
			t.Fatal(err)
		}
	}
}

func testCopyUp(t *testing.T, tm *testMount) {
	p := func(n string) string { return filepath.Join(tm.Dir, n) }
	mtime := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	wantWrite := append([]byte(nil), copyUpData["write"]...)
	copy(wantWrite[1<<20+10:], "patched")

	ops := []struct {
		name string
		do   func() error
		// check runs after the op and again after a remount.
		check func(t *testing.T)
		// metaOnly ops copy no data to the upper.
		metaOnly bool
	}{
		{"write", func() error {
			f, err := os.OpenFile(p("write"), os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte("patched"), 1<<20+10)
			return err
		}, func(t *testing.T) {
			wantContent(t, p("write"), wantWrite)
		}, false},
		{"truncate", func() error { return os.Truncate(p("truncate"), 1000) }, func(t *testing.T) {
			wantContent(t, p("truncate"), copyUpData["truncate"][:1000])
		}, true},
		{"chmod", func() error { return os.Chmod(p("chmod"), 0o600) }, func(t *testing.T) {
			if m := lstatT(t, p("chmod")).Mode; m != unix.S_IFREG|0o600 {
				t.Errorf("mode %o, want %o", m, unix.S_IFREG|0o600)
			}
			wantContent(t, p("chmod"), copyUpData["chmod"])
		}, true},
		{"chown", func() error { return os.Lchown(p("chown"), 1234, 5678) }, func(t *testing.T) {
			if st := lstatT(t, p("chown")); st.Uid != 1234 || st.Gid != 5678 {
				t.Errorf("owner %d:%d, want 1234:5678", st.Uid, st.Gid)
			}
			wantContent(t, p("chown"), copyUpData["chown"])
		}, true},
		{"utimes", func() error { return os.Chtimes(p("utimes"), mtime, mtime) }, func(t *testing.T) {
			st := lstatT(t, p("utimes"))
			if got := time.Unix(st.Mtim.Unix()); !got.Equal(mtime) {
				t.Errorf("mtime %v, want %v", got, mtime)
			}
			wantContent(t, p("utimes"), copyUpData["utimes"])
		}, true},
		{"setxattr", func() error { return unix.Setxattr(p("setxattr"), "user.new", []byte("value"), 0) }, func(t *testing.T) {
			x := lxattrs(t, p("setxattr"))
			if x["user.new"] != "value" || x["user.keep"] != "kept" {
				t.Errorf("xattrs %q, want user.new=value and user.keep=kept", x)
			}
			wantContent(t, p("setxattr"), copyUpData["setxattr"])
		}, true},
	}
	for _, op := range ops {
		// A lower xattr shows before the copy-up.
		if x := lxattrs(t, p(op.name)); x["user.keep"] != "kept" {
			t.Errorf("%s: lower xattr not visible: %q", op.name, x)
		}
		if err := op.do(); err != nil {
			t.Fatalf("%s: %v", op.name, err)
		}
		t.Run(op.name, op.check)
		for name := range lxattrs(t, p(op.name)) {
			if strings.Contains(name, "cowfs") {
				t.Errorf("%s: internal xattr %q visible in the mount", op.name, name)
			}
		}
		up := fileUsage(t, filepath.Join(tm.Upper, op.name))
		if op.metaOnly && up > 64<<10 {
			t.Errorf("%s copied %d bytes of data to the upper", op.name, up)
		}
		if !op.metaOnly && up > 2*cow.ChunkSize {
			t.Errorf("%s: a 7-byte write copied %d bytes to the upper", op.name, up)
		}
	}
	tm.remount(t)
	for _, op := range ops {
		t.Run(op.name+"AfterRemount", op.check)
	}
}

// --- whiteouts --------------------------------------------------------------

func whiteoutLower(t *testing.T, l string) {
	writeT(t, filepath.Join(l, "f1"), []byte("one"))
	writeT(t, filepath.Join(l, "f2"), []byte("two"))
	writeT(t, filepath.Join(l, "keep"), []byte("keep"))
	writeT(t, filepath.Join(l, "d2/x"), []byte("x"))
	writeT(t, filepath.Join(l, "d2/y"), []byte("y"))
	os.Mkdir(filepath.Join(l, "d1"), 0o755)
}

func testWhiteout(t *testing.T, tm *testMount) {
	p := func(n string) string { return filepath.Join(tm.Dir, n) }
	if err := os.Remove(p("f1")); err != nil {
		t.Fatal(err)
	}
	wantGone(t, p("f1"))
	wantErrno(t, "unlink again", os.Remove(p("f1")), unix.ENOENT)
	if err := unix.Rmdir(p("d1")); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "rmdir of a non-empty lower dir", unix.Rmdir(p("d2")), unix.ENOTEMPTY)
	for _, n := range []string{"d2/x", "d2/y"} {
		if err := os.Remove(p(n)); err != nil {
			t.Fatal(err)
		}
	}
	wantNames(t, p("d2"))
	if err := unix.Rmdir(p("d2")); err != nil {
		t.Fatal(err)
	}
	wantNames(t, tm.Dir, "f2", "keep")
	wantGone(t, p("d1"))
	wantGone(t, p("d2"))
	wantGone(t, p("d2/x"))
	// A new file of a whited-out name holds only its own bytes.
	writeT(t, p("f1"), []byte("new"))
	wantContent(t, p("f1"), []byte("new"))
	tm.remount(t)
	wantNames(t, tm.Dir, "f1", "f2", "keep")
	wantContent(t, p("f1"), []byte("new"))
	wantGone(t, p("d1"))
	wantGone(t, p("d2"))
	// A whited-out dir made again is empty.
	if err := os.Mkdir(p("d2"), 0o755); err != nil {
		t.Fatal(err)
	}
	wantNames(t, p("d2"))
}

// --- opaque directories -----------------------------------------------------

func opaqueLower(t *testing.T, l string) {
	writeT(t, filepath.Join(l, "d/a"), []byte("a"))
	writeT(t, filepath.Join(l, "d/b"), []byte("b"))
	writeT(t, filepath.Join(l, "d/sub/c"), []byte("c"))
	writeT(t, filepath.Join(l, "e/f"), []byte("f"))
}

func testOpaque(t *testing.T, tm *testMount) {
	d := filepath.Join(tm.Dir, "d")
	if err := os.RemoveAll(d); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	check := func() {
		wantNames(t, d, "new")
		wantGone(t, filepath.Join(d, "a"))
		wantGone(t, filepath.Join(d, "sub"))
		wantGone(t, filepath.Join(d, "sub/c"))
	}
	wantNames(t, d)
	writeT(t, filepath.Join(d, "new"), []byte("new"))
	check()
	// A lower dir replaced by a file.
	e := filepath.Join(tm.Dir, "e")
	if err := os.RemoveAll(e); err != nil {
		t.Fatal(err)
	}
	writeT(t, e, []byte("now a file"))
	tm.remount(t)
	check()
	wantContent(t, e, []byte("now a file"))
	wantNames(t, tm.Dir, "d", "e")
}

// --- rename -----------------------------------------------------------------

func renameLower(t *testing.T, l string) {
	writeT(t, filepath.Join(l, "f"), []byte("F"))
	writeT(t, filepath.Join(l, "g"), []byte("G"))
	writeT(t, filepath.Join(l, "over"), []byte("OVER"))
	writeT(t, filepath.Join(l, "dir/a"), []byte("A"))
	writeT(t, filepath.Join(l, "dir/sub/b"), []byte("B"))
	writeT(t, filepath.Join(l, "dir/sub/deep/c"), []byte("C"))
	writeT(t, filepath.Join(l, "other/o"), []byte("O"))
}

func testRename(t *testing.T, tm *testMount) {
	p := func(n string) string { return filepath.Join(tm.Dir, n) }
	mv := func(a, b string) {
		t.Helper()
		if err := unix.Rename(p(a), p(b)); err != nil {
			t.Fatalf("rename %s %s: %v", a, b, err)
		}
	}
	mv("f", "f2")
	mv("g", "over")
	mv("dir", "dir2")
	writeT(t, p("dir2/sub/b"), []byte("B2"))
	writeT(t, p("dir2/new"), []byte("NEW"))
	// A renamed lower dir moved again, into another lower dir.
	mv("dir2/sub", "other/sub")
	// The old name made again is a fresh, empty directory.
	if err := os.Mkdir(p("dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	check := func() {
		wantNames(t, tm.Dir, "dir", "dir2", "f2", "other", "over")
		wantGone(t, p("f"))
		wantGone(t, p("g"))
		wantContent(t, p("f2"), []byte("F"))
		wantContent(t, p("over"), []byte("G"))
		wantNames(t, p("dir"))
		wantNames(t, p("dir2"), "a", "new")
		wantContent(t, p("dir2/a"), []byte("A"))
		wantContent(t, p("dir2/new"), []byte("NEW"))
		wantNames(t, p("other"), "o", "sub")
		wantNames(t, p("other/sub"), "b", "deep")
		wantContent(t, p("other/sub/b"), []byte("B2"))
		wantContent(t, p("other/sub/deep/c"), []byte("C"))
	}
	check()
	tm.remount(t)
	check()
	// Renaming back over the empty dir works and brings the contents back.
	mv("dir2", "dir")
	wantNames(t, p("dir"), "a", "new")
	wantContent(t, p("dir/a"), []byte("A"))
}

const largeDirEntries = 20000

var largeDirData = [][]byte{randBytes(1 << 20), randBytes(1 << 20), randBytes(1 << 20), randBytes(1 << 20)}

func largeDirLower(t *testing.T, l string) {
	d := filepath.Join(l, "big")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range largeDirEntries {
		fd, err := unix.Open(filepath.Join(d, fmt.Sprintf("f%05d", i)), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}
	for i, b := range largeDirData {
		writeT(t, filepath.Join(d, fmt.Sprintf("data%d", i)), b)
	}
}

// testRenameLargeDir renames a lower directory of 20k entries and checks
// that it was a metadata operation: the upper gains a handful of entries
// and no data, whatever the time taken.
func testRenameLargeDir(t *testing.T, tm *testMount) {
	beforeBytes, beforeN := diskUsage(t, tm.Upper)
	if err := os.Rename(filepath.Join(tm.Dir, "big"), filepath.Join(tm.Dir, "moved")); err != nil {
		t.Fatalf("rename of a large lower dir: %v", err)
	}
	afterBytes, afterN := diskUsage(t, tm.Upper)
	if afterN-beforeN > 10 || afterBytes-beforeBytes > 256<<10 {
		t.Errorf("rename grew the upper by %d entries and %d bytes; it copied the tree", afterN-beforeN, afterBytes-beforeBytes)
	}
	wantGone(t, filepath.Join(tm.Dir, "big"))
	ents, err := os.ReadDir(filepath.Join(tm.Dir, "moved"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != largeDirEntries+len(largeDirData) {
		t.Errorf("renamed dir has %d entries, want %d", len(ents), largeDirEntries+len(largeDirData))
	}
	for i, b := range largeDirData {
		wantContent(t, filepath.Join(tm.Dir, fmt.Sprintf("moved/data%d", i)), b)
	}
	lstatT(t, filepath.Join(tm.Dir, fmt.Sprintf("moved/f%05d", largeDirEntries-1)))
	tm.remount(t)
	wantNames(t, tm.Dir, "moved")
	wantContent(t, filepath.Join(tm.Dir, "moved/data3"), largeDirData[3])
	if _, n := diskUsage(t, tm.Upper); n-beforeN > 10 {
		t.Errorf("upper has %d new entries after the remount", n-beforeN)
	}
}

// --- symlinks ---------------------------------------------------------------

func symlinkLower(t *testing.T, l string) {
	writeT(t, filepath.Join(l, "t"), []byte("T"))
	writeT(t, filepath.Join(l, "dir/x"), []byte("X"))
	for target, name := range map[string]string{"t": "rel", "/nonexistent/abs": "abs", "nope": "dangling", "../t": "dir/dl", "dir": "dirlink"} {
		if err := os.Symlink(target, filepath.Join(l, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func testSymlink(t *testing.T, tm *testMount) {
	p := func(n string) string { return filepath.Join(tm.Dir, n) }
	wantLink := func(name, target string) {
		t.Helper()
		if st := lstatT(t, p(name)); st.Mode&unix.S_IFMT != unix.S_IFLNK {
			t.Errorf("%s: mode %o, not a symlink", name, st.Mode)
		}
		if got, err := os.Readlink(p(name)); err != nil || got != target {
			t.Errorf("readlink %s = %q, %v; want %q", name, got, err, target)
		}
	}
	wantLink("rel", "t")
	wantLink("abs", "/nonexistent/abs")
	wantLink("dangling", "nope")
	wantLink("dir/dl", "../t")
	wantContent(t, p("rel"), []byte("T"))
	wantContent(t, p("dir/dl"), []byte("T"))
	wantContent(t, p("dirlink/x"), []byte("X"))
	if err := os.Symlink("t", p("new")); err != nil {
		t.Fatal(err)
	}
	wantLink("new", "t")
	// chown -h changes the link, not its target.
	if err := os.Lchown(p("rel"), 42, 43); err != nil {
		t.Fatal(err)
	}
	if st := lstatT(t, p("rel")); st.Uid != 42 || st.Gid != 43 {
		t.Errorf("lchown: owner %d:%d", st.Uid, st.Gid)
	}
	if st := lstatT(t, p("t")); st.Uid != 0 {
		t.Errorf("lchown of a link changed its target's owner to %d", st.Uid)
	}
	if err := os.Rename(p("rel"), p("rel2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p("dangling")); err != nil {
		t.Fatal(err)
	}
	// Writing through a link copies up its target.
	f, err := os.OpenFile(p("rel2"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("+"))
	f.Close()
	// A write under a symlinked lower dir lands in the dir.
	writeT(t, p("dirlink/y"), []byte("Y"))
	check := func() {
		wantLink("rel2", "t")
		wantLink("new", "t")
		wantLink("dirlink", "dir")
		wantGone(t, p("rel"))
		wantGone(t, p("dangling"))
		wantContent(t, p("t"), []byte("T+"))
		wantContent(t, p("rel2"), []byte("T+"))
		wantNames(t, p("dir"), "dl", "x", "y")
		if st := lstatT(t, p("rel2")); st.Uid != 42 {
			t.Errorf("link owner %d after rename", st.Uid)
		}
	}
	check()
	tm.remount(t)
	check()
}

// --- hard links -------------------------------------------------------------

func hardLinkLower(t *testing.T, l string) {
	writeT(t, filepath.Join(l, "lf"), []byte("lower file"))
}

func testHardLinkInMount(t *testing.T, tm *testMount) {
	p := func(n string) string { return filepath.Join(tm.Dir, n) }
	writeT(t, p("a"), []byte("a"))
	if err := os.Link(p("a"), p("b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(p("lf"), p("lf2")); err != nil {
		t.Fatalf("link of a lower file: %v", err)
	}
	writeT(t, p("b"), []byte("through b"))
	f, err := os.OpenFile(p("lf2"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte(" + lf2"))
	f.Close()
	sameFile := func(x, y string, nlink uint64) {
		t.Helper()
		a, b := lstatT(t, p(x)), lstatT(t, p(y))
		if a.Ino != b.Ino {
			t.Errorf("%s and %s: inodes %d and %d", x, y, a.Ino, b.Ino)
		}
		if a.Nlink != nlink || b.Nlink != nlink {
			t.Errorf("%s and %s: nlink %d and %d, want %d", x, y, a.Nlink, b.Nlink, nlink)
		}
	}
	check := func() {
		sameFile("a", "b", 2)
		sameFile("lf", "lf2", 2)
		wantContent(t, p("a"), []byte("through b"))
		wantContent(t, p("lf"), []byte("lower file + lf2"))
	}
	check()
	tm.remount(t)
	check()
	if err := os.Remove(p("a")); err != nil {
		t.Fatal(err)
	}
	if st := lstatT(t, p("b")); st.Nlink != 1 {
		t.Errorf("nlink %d after unlinking one of two names", st.Nlink)
	}
	if err := os.Remove(p("lf")); err != nil {
		t.Fatal(err)
	}
	wantContent(t, p("lf2"), []byte("lower file + lf2"))
	if st := lstatT(t, p("lf2")); st.Nlink != 1 {
		t.Errorf("nlink %d after unlinking one of two names", st.Nlink)
	}
}

var lowerLinkData = randBytes(2<<20 + 5)

func lowerHardLinkLower(t *testing.T, l string) {
	writeT(t, filepath.Join(l, "h1"), lowerLinkData)
	os.Mkdir(filepath.Join(l, "sub"), 0o755)
	for _, n := range []string{"h2", "sub/h3"} {
		if err := os.Link(filepath.Join(l, "h1"), filepath.Join(l, n)); err != nil {
			t.Fatal(err)
		}
	}
}

// testLowerHardLink: names that share one lower inode are one file in the
// mount, before and after a copy-up through any of them.
func testLowerHardLink(t *testing.T, tm *testMount) {
	p := func(n string) string { return filepath.Join(tm.Dir, n) }
	all := []string{"h1", "h2", "sub/h3"}
	oneFile := func(when string) {
		t.Helper()
		first := lstatT(t, p(all[0]))
		for _, n := range all {
			st := lstatT(t, p(n))
			if st.Ino != first.Ino || st.Nlink != 3 {
				t.Errorf("%s: %s has ino %d nlink %d; %s has ino %d; want one inode with nlink 3", when, n, st.Ino, st.Nlink, all[0], first.Ino)
			}
		}
	}
	oneFile("before copy-up")
	f, err := os.OpenFile(p("h2"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("through h2"), 1<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	want := append([]byte(nil), lowerLinkData...)
	copy(want[1<<20:], "through h2")
	check := func(when string) {
		t.Helper()
		for _, n := range all {
			got, err := os.ReadFile(p(n))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s: %s does not show the write made through h2 (%v)", when, n, err)
			}
		}
		oneFile(when)
	}
	check("after copy-up")
	dropCaches(t)
	check("after dropping caches")
	tm.remount(t)
	check("after remount")

	// Link counts follow unlinks and new links, across a remount.
	nlinks := func(when string, want uint64, names ...string) {
		t.Helper()
		for _, n := range names {
			if st := lstatT(t, p(n)); st.Nlink != want {
				t.Errorf("%s: %s has nlink %d, want %d", when, n, st.Nlink, want)
			}
		}
	}
	if err := os.Remove(p("sub/h3")); err != nil {
		t.Fatal(err)
	}
	nlinks("after unlinking sub/h3", 2, "h1", "h2")
	if err := os.Link(p("h1"), p("h4")); err != nil {
		t.Fatal(err)
	}
	nlinks("after linking h4", 3, "h1", "h2", "h4")
	tm.remount(t)
	nlinks("after remount", 3, "h1", "h2", "h4")
	if got, err := os.ReadFile(p("h4")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("h4: %v", err)
	}
}

// testLowerHardLinkUnlink removes one name of a lower file with three
// before anything was copied up: the others count two links, and still
// share one inode once written.
func testLowerHardLinkUnlink(t *testing.T, tm *testMount) {
	p := func(n string) string { return filepath.Join(tm.Dir, n) }
	if err := os.Remove(p("h1")); err != nil {
		t.Fatal(err)
	}
	for _, when := range []string{"after unlink", "after remount"} {
		for _, n := range []string{"h2", "sub/h3"} {
			if st := lstatT(t, p(n)); st.Nlink != 2 {
				t.Errorf("%s: %s has nlink %d, want 2", when, n, st.Nlink)
			}
		}
		if when == "after unlink" {
			if err := os.WriteFile(p("h2"), []byte("new"), 0o644); err != nil {
				t.Fatal(err)
			}
			tm.remount(t)
		}
	}
	if b, err := os.ReadFile(p("sub/h3")); err != nil || string(b) != "new" {
		t.Errorf("sub/h3 after a write through h2: %q, %v", b, err)
	}
	if _, err := os.Lstat(p("h1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("h1 after unlink: %v", err)
	}
}

// --- fifos ------------------------------------------------------------------

func fifoLower(t *testing.T, l string) {
	if err := unix.Mkfifo(filepath.Join(l, "lfifo"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// pipeThrough sends bytes through the fifo at p, with a deadline on every
// step: a fifo open that blocks would hang the test.
func pipeThrough(t *testing.T, p string) {
	t.Helper()
	within(t, 30*time.Second, "fifo round trip "+p, func() {
		r, err := unix.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Errorf("open fifo for reading: %v", err)
			return
		}
		defer unix.Close(r)
		w, err := unix.Open(p, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Errorf("open fifo for writing: %v", err)
			return
		}
		defer unix.Close(w)
		if _, err := unix.Write(w, []byte("hello")); err != nil {
			t.Errorf("write fifo: %v", err)
			return
		}
		fds := []unix.PollFd{{Fd: int32(r), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 5000); err != nil {
			t.Errorf("poll fifo: %v", err)
			return
		}
		buf := make([]byte, 16)
		n, err := unix.Read(r, buf)
		if err != nil || string(buf[:n]) != "hello" {
			t.Errorf("read fifo: %q, %v", buf[:n], err)
		}
	})
}

func testFifo(t *testing.T, tm *testMount) {
	p := func(n string) string { return filepath.Join(tm.Dir, n) }
	if err := unix.Mkfifo(p("mfifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p("lfifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	check := func() {
		for n, mode := range map[string]uint32{"lfifo": 0o600, "mfifo": 0o640} {
			if st := lstatT(t, p(n)); st.Mode != unix.S_IFIFO|mode {
				t.Errorf("%s: mode %o, want %o", n, st.Mode, unix.S_IFIFO|mode)
			}
			pipeThrough(t, p(n))
		}
	}
	check()
	tm.remount(t)
	check()
}

// --- O_APPEND, O_TRUNC, truncate on lower files holding data ---------------

var appendData = map[string][]byte{}

func appendLower(t *testing.T, l string) {
	for _, n := range []string{"append", "middle", "shrink", "grow", "otrunc"} {
		appendData[n] = randBytes(3<<20 + 123)
		writeT(t, filepath.Join(l, n), appendData[n])
	}
}

func testAppendTruncate(t *testing.T, tm *testMount) {
	p := func(n string) string { return filepath.Join(tm.Dir, n) }
	want := map[string][]byte{}

	// O_APPEND, twice: the bytes before each append survive.
	add1, add2 := randBytes(1000), randBytes(cow.ChunkSize+3)
	for _, add := range [][]byte{add1, add2} {
		f, err := os.OpenFile(p("append"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(add); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	want["append"] = append(append(append([]byte(nil), appendData["append"]...), add1...), add2...)

	// Overwrites in the middle, one across a chunk boundary.
	w := append([]byte(nil), appendData["middle"]...)
	f, err := os.OpenFile(p("middle"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{cow.ChunkSize - 50, 2*cow.ChunkSize + 4096} {
		patch := randBytes(100)
		if _, err := f.WriteAt(patch, off); err != nil {
			t.Fatal(err)
		}
		copy(w[off:], patch)
	}
	f.Close()
	want["middle"] = w

	// Truncate down into a chunk, then up past the old end: the tail reads
	// as zeros, not as the lower's old bytes.
	if err := os.Truncate(p("shrink"), cow.ChunkSize+cow.ChunkSize/2); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p("shrink"), 4<<20); err != nil {
		t.Fatal(err)
	}
	w = make([]byte, 4<<20)
	copy(w, appendData["shrink"][:cow.ChunkSize+cow.ChunkSize/2])
	want["shrink"] = w

	// Truncate up: the old bytes stay, zeros follow.
	if err := os.Truncate(p("grow"), 5<<20); err != nil {
		t.Fatal(err)
	}
	w = make([]byte, 5<<20)
	copy(w, appendData["grow"])
	want["grow"] = w

	// O_TRUNC copies nothing and leaves only what is written after it.
	f, err = os.OpenFile(p("otrunc"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := f.Stat(); st.Size() != 0 {
		t.Errorf("size %d after O_TRUNC", st.Size())
	}
	f.Write([]byte("short"))
	f.Close()
	want["otrunc"] = []byte("short")
	if u := fileUsage(t, filepath.Join(tm.Upper, "otrunc")); u > 64<<10 {
		t.Errorf("O_TRUNC of a lower file put %d bytes in the upper", u)
	}

	check := func() {
		for n, w := range want {
			wantContent(t, p(n), w)
		}
	}
	check()
	tm.remount(t)
	check()
}

// --- sparse and large files -------------------------------------------------

const sparseSize = 256 << 20

var sparseMarks = map[int64][]byte{0: randBytes(4096), 200 << 20: randBytes(4096)}

func sparseLower(t *testing.T, l string) {
	p := filepath.Join(l, "sparse")
	for off, b := range sparseMarks {
		writeAtT(t, p, off, b)
	}
	if err := os.Truncate(p, sparseSize); err != nil {
		t.Fatal(err)
	}
}

func testSparse(t *testing.T, tm *testMount) {
	p := filepath.Join(tm.Dir, "sparse")
	patch := randBytes(4096)
	writeAtT(t, p, 100<<20, patch)
	check := func() {
		st := lstatT(t, p)
		if st.Size != sparseSize {
			t.Errorf("size %d, want %d", st.Size, sparseSize)
		}
		if st.Blocks*512 > 8<<20 {
			t.Errorf("a %d-byte sparse file holding 12 KiB shows st_blocks %d (%d bytes)", st.Size, st.Blocks, st.Blocks*512)
		}
		for off, b := range sparseMarks {
			if got := readAtT(t, p, off, len(b)); !bytes.Equal(got, b) {
				t.Errorf("lower bytes at %d lost", off)
			}
		}
		got := readAtT(t, p, 100<<20-4096, 3*4096)
		w := make([]byte, 3*4096)
		copy(w[4096:], patch)
		if !bytes.Equal(got, w) {
			t.Errorf("bytes around the write at 100 MiB differ (first at %d)", diffOffset(got, w))
		}
		if u := fileUsage(t, filepath.Join(tm.Upper, "sparse")); u > 4<<20 {
			t.Errorf("upper copy of the sparse file uses %d bytes", u)
		}
	}
	check()
	tm.remount(t)
	check()
}

const (
	gib      = int64(1) << 30
	bigSize  = 4*gib + gib/4
	bigMark  = 4*gib + 4096
	bigWrite = 4*gib + gib/2 + 3
)

var bigMarkData, bigWriteData = randBytes(8192), randBytes(5000)

func bigLower(t *testing.T, l string) {
	p := filepath.Join(l, "big")
	writeAtT(t, p, bigMark, bigMarkData)
	if err := os.Truncate(p, bigSize); err != nil {
		t.Fatal(err)
	}
}

func testOver4GiB(t *testing.T, tm *testMount) {
	p := func(n string) string { return filepath.Join(tm.Dir, n) }
	// A lower file over 4 GiB, written past its end near 4.5 GiB.
	writeAtT(t, p("big"), bigWrite, bigWriteData)
	// A file made in the mount, written near 4.5 GiB.
	writeAtT(t, p("new"), bigWrite, bigWriteData)
	check := func() {
		if got := readAtT(t, p("big"), bigMark, len(bigMarkData)); !bytes.Equal(got, bigMarkData) {
			t.Errorf("lower bytes past 4 GiB lost")
		}
		if got := readAtT(t, p("big"), bigSize-100, 200); !bytes.Equal(got, make([]byte, 200)) {
			t.Errorf("the gap between the old and new end is not zeros")
		}
		for _, n := range []string{"big", "new"} {
			if got := readAtT(t, p(n), bigWrite, len(bigWriteData)); !bytes.Equal(got, bigWriteData) {
				t.Errorf("%s: bytes written at %d read back differently", n, bigWrite)
			}
			st := lstatT(t, p(n))
			if st.Size != bigWrite+int64(len(bigWriteData)) {
				t.Errorf("%s: size %d, want %d", n, st.Size, bigWrite+int64(len(bigWriteData)))
			}
			if st.Blocks*512 > 8<<20 {
				t.Errorf("%s: st_blocks %d, the file is not sparse", n, st.Blocks)
			}
		}
		if got := readAtT(t, p("new"), 4*gib, 4096); !bytes.Equal(got, make([]byte, 4096)) {
			t.Errorf("hole at 4 GiB of the new file is not zeros")
		}
	}
	check()
	tm.remount(t)
	check()
	if err := os.Truncate(p("new"), 4*gib+1); err != nil {
		t.Fatal(err)
	}
	if st := lstatT(t, p("new")); st.Size != 4*gib+1 {
		t.Errorf("size %d after truncate to 4 GiB + 1", st.Size)
	}
}

// --- statfs -----------------------------------------------------------------

func statfsLower(t *testing.T, l string) {
	writeT(t, filepath.Join(l, "d/f"), []byte("f"))
}

func testStatfs(t *testing.T, tm *testMount) {
	var up unix.Statfs_t
	if err := unix.Statfs(tm.Upper, &up); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{tm.Dir, filepath.Join(tm.Dir, "d"), filepath.Join(tm.Dir, "d/f")} {
		var st unix.Statfs_t
		if err := unix.Statfs(p, &st); err != nil {
			t.Fatalf("statfs %s: %v", p, err)
		}
		if st.Namelen != cownames.Max {
			t.Errorf("statfs %s: namelen %d, want %d", p, st.Namelen, cownames.Max)
		}
		if st.Bsize <= 0 || st.Blocks == 0 || st.Bfree > st.Blocks || st.Bavail > st.Bfree {
			t.Errorf("statfs %s: implausible %+v", p, st)
		}
		// Space is the upper's: that is where writes go.
		if st.Blocks*uint64(st.Bsize) != up.Blocks*uint64(up.Bsize) {
			t.Errorf("statfs %s: %d bytes total, the upper has %d", p, st.Blocks*uint64(st.Bsize), up.Blocks*uint64(up.Bsize))
		}
	}
	var fst unix.Statfs_t
	wantErrno(t, "statfs of a missing path", unix.Statfs(filepath.Join(tm.Dir, "missing"), &fst), unix.ENOENT)
}

// --- locks ------------------------------------------------------------------

func locksLower(t *testing.T, l string) {
	writeT(t, filepath.Join(l, "lk"), randBytes(10000))
}

func testLocks(t *testing.T, tm *testMount) {
	p := filepath.Join(tm.Dir, "lk")
	var fds []int
	defer func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}()
	open := func(flags int) int {
		t.Helper()
		fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		fds = append(fds, fd)
		return fd
	}
	// flock on a lower file, before and across a copy-up.
	a, b := open(unix.O_RDONLY), open(unix.O_RDONLY)
	if err := unix.Flock(a, unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatalf("flock: %v", err)
	}
	wantErrno(t, "second exclusive flock", unix.Flock(b, unix.LOCK_EX|unix.LOCK_NB), unix.EWOULDBLOCK)
	writeAtT(t, p, 5000, []byte("copy-up while locked"))
	wantErrno(t, "flock after copy-up", unix.Flock(b, unix.LOCK_SH|unix.LOCK_NB), unix.EWOULDBLOCK)
	// A blocking flock waits for the holder, with a deadline.
	got := make(chan error, 1)
	go func() { got <- unix.Flock(b, unix.LOCK_EX) }()
	select {
	case err := <-got:
		t.Fatalf("blocking flock returned %v while the lock was held", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := unix.Flock(a, unix.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-got:
		if err != nil {
			t.Errorf("blocking flock: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocking flock not granted within 10s of the unlock")
	}
	unix.Flock(b, unix.LOCK_UN)

	// fcntl record locks. Open file description locks conflict between two
	// descriptors of one process, so one test process can see a conflict.
	c, d := open(unix.O_RDWR), open(unix.O_RDWR)
	lk := func(typ int16, start, n int64) *unix.Flock_t {
		return &unix.Flock_t{Type: typ, Whence: io.SeekStart, Start: start, Len: n}
	}
	if err := unix.FcntlFlock(uintptr(c), unix.F_OFD_SETLK, lk(unix.F_WRLCK, 0, 100)); err != nil {
		t.Fatalf("F_OFD_SETLK: %v", err)
	}
	wantErrno(t, "conflicting F_OFD_SETLK", unix.FcntlFlock(uintptr(d), unix.F_OFD_SETLK, lk(unix.F_RDLCK, 50, 10)), unix.EAGAIN)
	q := lk(unix.F_WRLCK, 50, 10)
	if err := unix.FcntlFlock(uintptr(d), unix.F_OFD_GETLK, q); err != nil || q.Type != unix.F_WRLCK {
		t.Errorf("F_OFD_GETLK: type %d, %v; want the write lock held", q.Type, err)
	}
	if err := unix.FcntlFlock(uintptr(d), unix.F_OFD_SETLK, lk(unix.F_WRLCK, 200, 10)); err != nil {
		t.Errorf("non-overlapping F_OFD_SETLK: %v", err)
	}
	if err := unix.FcntlFlock(uintptr(c), unix.F_OFD_SETLK, lk(unix.F_UNLCK, 0, 100)); err != nil {
		t.Fatal(err)
	}
	if err := unix.FcntlFlock(uintptr(d), unix.F_OFD_SETLK, lk(unix.F_WRLCK, 50, 10)); err != nil {
		t.Errorf("F_OFD_SETLK after unlock: %v", err)
	}
	// Classic POSIX locks: set, query, release.
	if err := unix.FcntlFlock(uintptr(c), unix.F_SETLK, lk(unix.F_WRLCK, 1000, 10)); err != nil {
		t.Errorf("F_SETLK: %v", err)
	}
	within(t, 30*time.Second, "F_SETLKW", func() {
		if err := unix.FcntlFlock(uintptr(c), unix.F_SETLKW, lk(unix.F_UNLCK, 1000, 10)); err != nil {
			t.Errorf("F_SETLKW unlock: %v", err)
		}
	})
}

// --- shared writable mmap ---------------------------------------------------

var mmapData = randBytes(2<<20 + 100)

func mmapLower(t *testing.T, l string) {
	writeT(t, filepath.Join(l, "mm"), mmapData)
}

func testSharedMmap(t *testing.T, tm *testMount) {
	mapAndWrite := func(p string, want []byte) {
		t.Helper()
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		m, err := unix.Mmap(int(f.Fd()), 0, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatalf("mmap %s: %v", p, err)
		}
		// Never touch the mapping from Go code: see copyMapped.
		if got := copyMapped(t, m, nil); !bytes.Equal(got, want) {
			t.Errorf("%s: mapping shows other bytes than the file (first difference at %d)", p, diffOffset(got, want))
		}
		for _, off := range []int{10, cow.ChunkSize + 5, len(want) - 3} {
			copyMapped(t, m[off:off+2], []byte("MM"))
			copy(want[off:], "MM")
		}
		if err := unix.Msync(m, unix.MS_SYNC); err != nil {
			t.Errorf("msync: %v", err)
		}
		if err := unix.Munmap(m); err != nil {
			t.Fatal(err)
		}
	}
	lowerWant := append([]byte(nil), mmapData...)
	mapAndWrite(filepath.Join(tm.Dir, "mm"), lowerWant)
	newWant := randBytes(cow.ChunkSize + 10)
	writeT(t, filepath.Join(tm.Dir, "new"), newWant)
	mapAndWrite(filepath.Join(tm.Dir, "new"), newWant)
	check := func() {
		wantContent(t, filepath.Join(tm.Dir, "mm"), lowerWant)
		wantContent(t, filepath.Join(tm.Dir, "new"), newWant)
	}
	check()
	tm.remount(t)
	check()
}

// --- inode numbers ----------------------------------------------------------

func inoLower(t *testing.T, l string) {
	writeT(t, filepath.Join(l, "d/data"), randBytes(100000))
	writeT(t, filepath.Join(l, "d/meta"), []byte("meta"))
	writeT(t, filepath.Join(l, "d/sub/x"), []byte("x"))
	writeT(t, filepath.Join(l, "d/untouched"), []byte("u"))
}

func testInodeStable(t *testing.T, tm *testMount) {
	d := filepath.Join(tm.Dir, "d")
	inos := func() map[string]uint64 {
		t.Helper()
		m := map[string]uint64{}
		for _, e := range readDirents(t, d) {
			if e.Name == "." || e.Name == ".." {
				continue
			}
			st := lstatT(t, filepath.Join(d, e.Name))
			if st.Ino != e.Ino {
				t.Errorf("%s: st_ino %d, d_ino %d", e.Name, st.Ino, e.Ino)
			}
			m[e.Name] = st.Ino
		}
		m["."] = lstatT(t, d).Ino
		return m
	}
	before := inos()
	writeAtT(t, filepath.Join(d, "data"), 50000, []byte("copy-up"))
	if err := os.Chmod(filepath.Join(d, "meta"), 0o600); err != nil {
		t.Fatal(err)
	}
	writeT(t, filepath.Join(d, "sub/y"), []byte("copies up the dir"))
	writeT(t, filepath.Join(d, "new"), []byte("new"))
	same := func(when string) {
		t.Helper()
		now := inos()
		for n, ino := range before {
			if now[n] != ino {
				t.Errorf("%s: %s has st_ino %d, %d before the copy-up", when, n, now[n], ino)
			}
		}
		if _, ok := now["new"]; !ok {
			t.Errorf("%s: new file missing", when)
		}
	}
	same("after copy-up")
	dropCaches(t)
	same("after dropping caches")
	tm.remount(t)
	same("after remount")
}

// testRootInode: the root is an inode like any other. Its st_ino is not 0
// and matches the d_ino of "." in it and of ".." in its subdirectories.
func testRootInode(t *testing.T, tm *testMount) {
	// The root keeps its attributes across remounts, and a chmod of it
	// persists like any other.
	first := lstatT(t, tm.Dir)
	tm.remount(t)
	if st := lstatT(t, tm.Dir); st.Mode != first.Mode || st.Uid != first.Uid || st.Gid != first.Gid {
		t.Errorf("after remount the root is mode %o owner %d:%d, was %o %d:%d", st.Mode, st.Uid, st.Gid, first.Mode, first.Uid, first.Gid)
	}
	mtime := time.Date(2002, 3, 4, 5, 6, 7, 0, time.UTC)
	if err := os.Chmod(tm.Dir, 0o751); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(tm.Dir, 11, 12); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tm.Dir, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(tm.Dir, "user.root", []byte("r"), 0); err != nil {
		t.Fatal(err)
	}
	for _, when := range []string{"before", "after"} {
		st := lstatT(t, tm.Dir)
		if st.Mode != unix.S_IFDIR|0o751 || st.Uid != 11 || st.Gid != 12 || !time.Unix(st.Mtim.Unix()).Equal(mtime) {
			t.Errorf("%s a remount the root is mode %o owner %d:%d mtime %v; want 751 11:12 %v", when, st.Mode, st.Uid, st.Gid, time.Unix(st.Mtim.Unix()), mtime)
		}
		if x := lxattrs(t, tm.Dir); x["user.root"] != "r" {
			t.Errorf("%s a remount the root's xattrs are %q", when, x)
		}
		if when == "before" {
			tm.remount(t)
		}
	}
	root := lstatT(t, tm.Dir)
	if root.Ino == 0 {
		t.Errorf("the mount root has st_ino 0")
	}
	for dir, name := range map[string]string{tm.Dir: ".", filepath.Join(tm.Dir, "d"): ".."} {
		for _, e := range readDirents(t, dir) {
			if e.Name == name && e.Ino != root.Ino {
				t.Errorf("%s in %s: d_ino %d, the root's st_ino is %d", name, dir, e.Ino, root.Ino)
			}
		}
	}
}

// --- a descriptor opened before a copy-up ----------------------------------

var staleData = randBytes(3 << 20)

func staleLower(t *testing.T, l string) {
	writeT(t, filepath.Join(l, "st"), staleData)
}

func testOpenFdSeesCopyUp(t *testing.T, tm *testMount) {
	p := filepath.Join(tm.Dir, "st")
	ro, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	// Read it all first, so the page cache holds the lower bytes.
	if b, err := io.ReadAll(ro); err != nil || !bytes.Equal(b, staleData) {
		t.Fatalf("first read: %v", err)
	}
	want := append([]byte(nil), staleData...)
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 2<<20 + 5} {
		patch := randBytes(300)
		if _, err := w.WriteAt(patch, off); err != nil {
			t.Fatal(err)
		}
		copy(want[off:], patch)
	}
	w.Close()
	readAll := func(when string) {
		t.Helper()
		got := make([]byte, len(want))
		if _, err := ro.ReadAt(got, 0); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the fd opened before the copy-up reads stale bytes at %d", when, diffOffset(got, want))
		}
	}
	readAll("page cache warm")
	if err := unix.Fadvise(int(ro.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	readAll("after fadvise DONTNEED")
	dropCaches(t)
	readAll("after drop_caches")
	wantContent(t, p, want)
}

// --- seekdir/telldir on a merged dir with whiteouts ------------------------

func seekdirLower(t *testing.T, l string) {
	for i := range 300 {
		writeT(t, filepath.Join(l, fmt.Sprintf("m/f%03d", i)), []byte{byte(i)})
	}
}

func testSeekdir(t *testing.T, tm *testMount) {
	d := filepath.Join(tm.Dir, "m")
	want := map[string]bool{".": true, "..": true}
	for i := range 300 {
		n := fmt.Sprintf("f%03d", i)
		switch i % 3 {
		case 0:
			if err := os.Remove(filepath.Join(d, n)); err != nil {
				t.Fatal(err)
			}
			continue
		case 1:
			writeT(t, filepath.Join(d, n), []byte("copied up"))
		}
		want[n] = true
	}
	for i := range 50 {
		n := fmt.Sprintf("u%02d", i)
		writeT(t, filepath.Join(d, n), nil)
		want[n] = true
	}

	fd, err := unix.Open(d, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	// Small reads, so the listing comes in many pieces.
	var seq []dirent
	for {
		ds := getdents(t, fd, 256)
		if len(ds) == 0 {
			break
		}
		seq = append(seq, ds...)
	}
	got := map[string]bool{}
	for _, e := range seq {
		if got[e.Name] {
			t.Errorf("%s listed twice", e.Name)
		}
		got[e.Name] = true
	}
	if !reflect.DeepEqual(got, want) {
		var extra, missing []string
		for n := range got {
			if !want[n] {
				extra = append(extra, n)
			}
		}
		for n := range want {
			if !got[n] {
				missing = append(missing, n)
			}
		}
		t.Fatalf("listing: extra %q, missing %q", extra, missing)
	}
	// seekdir to every telldir position (the d_off of an entry) resumes
	// right after that entry.
	for i := 0; i < len(seq); i += 7 {
		if _, err := unix.Seek(fd, seq[i].Off, io.SeekStart); err != nil {
			t.Fatalf("seekdir %d: %v", seq[i].Off, err)
		}
		ds := getdents(t, fd, 256)
		if i+1 == len(seq) {
			if len(ds) != 0 {
				t.Errorf("seek to the last offset lists %q", ds[0].Name)
			}
			continue
		}
		if len(ds) == 0 || ds[0].Name != seq[i+1].Name {
			t.Errorf("seek to the offset after %s: got %v, want %s", seq[i].Name, ds, seq[i+1].Name)
		}
	}
	// Back to the start: the same sequence again.
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	var again []dirent
	for {
		ds := getdents(t, fd, 1024)
		if len(ds) == 0 {
			break
		}
		again = append(again, ds...)
	}
	if !reflect.DeepEqual(again, seq) {
		t.Errorf("rewound listing differs from the first")
	}
}

// --- name length ------------------------------------------------------------

var (
	name255 = strings.Repeat("n", 255)
	name256 = strings.Repeat("x", 256)
)

func nameMaxLower(t *testing.T, l string) {
	writeT(t, filepath.Join(l, name255), []byte("lower"))
	writeT(t, filepath.Join(l, "d"+name255[1:], name255), []byte("deep"))
}

func testNameMax(t *testing.T, tm *testMount) {
	p := func(n ...string) string { return filepath.Join(append([]string{tm.Dir}, n...)...) }
	long := "d" + name255[1:]
	wantContent(t, p(name255), []byte("lower"))
	wantContent(t, p(long, name255), []byte("deep"))
	// Copy-ups under long names.
	writeT(t, p(name255), []byte("upper"))
	writeAtT(t, p(long, name255), 0, []byte("DE"))
	c255 := strings.Repeat("c", 255)
	writeT(t, p(c255), []byte("created"))
	if err := os.Mkdir(p("m"+c255[1:]), 0o755); err != nil {
		t.Errorf("mkdir of 255 bytes: %v", err)
	}
	if err := os.Symlink(name255, p("s"+c255[1:])); err != nil {
		t.Errorf("symlink of 255 bytes: %v", err)
	}
	if err := os.Rename(p(c255), p("r"+c255[1:])); err != nil {
		t.Errorf("rename to 255 bytes: %v", err)
	}

	var st unix.Stat_t
	wantErrno(t, "lstat 256", unix.Lstat(p(name256), &st), unix.ENAMETOOLONG)
	_, err := os.OpenFile(p(name256), os.O_CREATE|os.O_WRONLY, 0o644)
	wantErrno(t, "create 256", err, unix.ENAMETOOLONG)
	wantErrno(t, "mkdir 256", os.Mkdir(p(name256), 0o755), unix.ENAMETOOLONG)
	wantErrno(t, "symlink 256", os.Symlink("x", p(name256)), unix.ENAMETOOLONG)
	wantErrno(t, "mknod 256", unix.Mkfifo(p(name256), 0o644), unix.ENAMETOOLONG)
	wantErrno(t, "link 256", os.Link(p(name255), p(name256)), unix.ENAMETOOLONG)
	wantErrno(t, "rename to 256", os.Rename(p(name255), p(name256)), unix.ENAMETOOLONG)
	wantErrno(t, "lstat 256 in a lower dir", unix.Lstat(p(long, name256), &st), unix.ENAMETOOLONG)

	check := func() {
		wantNames(t, tm.Dir, long, "m"+c255[1:], name255, "r"+c255[1:], "s"+c255[1:])
		wantContent(t, p(name255), []byte("upper"))
		wantContent(t, p(long, name255), []byte("DEep"))
		wantContent(t, p("r"+c255[1:]), []byte("created"))
		wantContent(t, p("s"+c255[1:]), []byte("upper"))
	}
	check()
	tm.remount(t)
	check()
}

// --- no escape into the lower, the upper or beyond -------------------------

// escapeOutside is a directory outside every layer that lower symlinks
// point at; set by escapeLower.
var escapeOutside string

func escapeLower(t *testing.T, l string) {
	escapeOutside = filepath.Join(filepath.Dir(l), "outside")
	writeT(t, filepath.Join(escapeOutside, "secret"), []byte("secret"))
	links := map[string]string{
		"abs":    escapeOutside,
		"rel":    strings.Repeat("../", 32) + escapeOutside[1:],
		"d/up":   "..",
		"d/root": "/",
	}
	os.Mkdir(filepath.Join(l, "d"), 0o755)
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(l, name)); err != nil {
			t.Fatal(err)
		}
	}
	writeT(t, filepath.Join(l, "x/f"), []byte("lower x/f"))
}

func testNoEscape(t *testing.T, tm *testMount) {
	p := func(n string) string { return filepath.Join(tm.Dir, n) }
	outsideBefore := snapshotTree(t, escapeOutside)
	upperBefore := map[string]bool{}
	for _, n := range names(t, filepath.Dir(tm.Upper)) {
		upperBefore[n] = true
	}

	// Lower symlinks are symlinks in the mount, whatever they point at.
	for _, n := range []string{"abs", "rel", "d/up", "d/root"} {
		if st := lstatT(t, p(n)); st.Mode&unix.S_IFMT != unix.S_IFLNK {
			t.Errorf("%s: mode %o, not a symlink", n, st.Mode)
		}
		_, err := unix.Open(p(n), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		wantErrno(t, "open O_NOFOLLOW "+n, err, unix.ELOOP)
	}
	for _, e := range readDirents(t, tm.Dir) {
		if e.Name == "abs" && e.Type != unix.DT_LNK {
			t.Errorf("readdir: abs has d_type %d, not DT_LNK", e.Type)
		}
	}
	// ".." through a link in a lower dir lands in the mount's root, not in
	// the lower's.
	if a, b := lstatT(t, tm.Dir+"/d/up/"), lstatT(t, tm.Dir); a.Ino != b.Ino || a.Dev != b.Dev {
		t.Errorf("d/up/ is dev %d ino %d, the mount root is dev %d ino %d", a.Dev, a.Ino, b.Dev, b.Ino)
	}
	if a, b := lstatT(t, p("..")), lstatT(t, filepath.Dir(tm.Dir)); a.Ino != b.Ino || a.Dev != b.Dev {
		t.Errorf("the mount's .. is not its parent directory")
	}
	// Operations on links act on the links.
	if err := os.Lchown(p("abs"), 7, 7); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lutimes(p("rel"), []unix.Timeval{{Sec: 1}, {Sec: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(p("abs"), p("abs2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p("abs2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p("rel")); err != nil {
		t.Fatal(err)
	}
	// A lower dir renamed away and its name taken by a link to the outside:
	// copy-ups of the renamed dir's files stay in the upper.
	if err := os.Rename(p("x"), p("y")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(escapeOutside, p("x")); err != nil {
		t.Fatal(err)
	}
	writeT(t, p("y/f"), []byte("upper y/f"))
	wantContent(t, p("y/f"), []byte("upper y/f"))
	wantContent(t, p("x/secret"), []byte("secret"))
	// The same after a remount, when nothing is cached.
	tm.remount(t)
	writeAtT(t, p("y/f"), 0, []byte("UPPER"))
	wantContent(t, p("y/f"), []byte("UPPER y/f"))
	wantNames(t, tm.Dir, "d", "x", "y")

	assertTreeUnchanged(t, escapeOutside, outsideBefore)
	for _, n := range names(t, filepath.Dir(tm.Upper)) {
		if !upperBefore[n] {
			t.Errorf("%s appeared beside the upper directory", n)
		}
	}
	if _, err := os.Lstat(filepath.Join(tm.Upper, "y/f")); err != nil {
		t.Errorf("the copy-up of y/f is not in the upper: %v", err)
	}
}
