package cow

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
)

// engine is an FS over a real lower and upper directory, with no mount:
// the overlay's semantics checked here are the engine's own, and a
// mount adds only the kernel's caches and errno mapping on top of them.
type engine struct {
	f                        *FS
	lower, upper, work, meta string
}

// newEngine fills a fresh lower directory with fill, then opens an FS
// over it with fresh upper, work and metadata directories.
func newEngine(t *testing.T, fill func(t *testing.T, lower string)) *engine {
	t.Helper()
	d := t.TempDir()
	e := &engine{lower: filepath.Join(d, "lower"), upper: filepath.Join(d, "upper"), work: filepath.Join(d, "work"), meta: filepath.Join(d, "meta")}
	for _, s := range []string{e.lower, e.upper, e.work, e.meta} {
		if err := os.Mkdir(s, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if fill != nil {
		fill(t, e.lower)
	}
	e.open(t)
	return e
}

func (e *engine) open(t *testing.T) {
	t.Helper()
	lo, err := lower.OpenDir(e.lower)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Options{Lower: lo, UpperDir: e.upper, WorkDir: e.work, MetaDir: e.meta})
	if err != nil {
		lo.Close()
		t.Fatal(err)
	}
	e.f = f
	t.Cleanup(func() {
		if e.f == f {
			f.Close()
		}
		lo.Close()
	})
}

// reopen closes the FS and opens a new one over the same layers, as a
// remount does: what a case checks must hold from the upper and the
// metadata alone.
func (e *engine) reopen(t *testing.T) {
	t.Helper()
	if err := e.f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	e.f = nil
	e.open(t)
}

// path looks rel up from the root, one name at a time.
func (e *engine) path(t *testing.T, rel string) Path {
	t.Helper()
	p, err := e.lookup(rel)
	if err != nil {
		t.Fatalf("lookup %q: %v", rel, err)
	}
	return p
}

func (e *engine) lookup(rel string) (Path, error) {
	p := e.f.rootPath()
	if rel == "" {
		return p, nil
	}
	for _, name := range splitRel(rel) {
		n, _, err := e.f.Lookup(p, name)
		if err != nil {
			return Path{}, err
		}
		p = p.child(name, n)
	}
	return p, nil
}

func splitRel(rel string) []string {
	var out []string
	for rel != "" {
		dir, name := filepath.Split(rel)
		out = append([]string{name}, out...)
		rel = filepath.Clean(dir)
		if rel == "." || rel == "/" {
			break
		}
	}
	return out
}

func (e *engine) wantGone(t *testing.T, rel string) {
	t.Helper()
	if _, err := e.lookup(rel); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("lookup %q: got %v, want ENOENT", rel, err)
	}
}

func (e *engine) wantNames(t *testing.T, rel string, want ...string) {
	t.Helper()
	ents, err := e.f.ReadDir(e.path(t, rel))
	if err != nil {
		t.Fatalf("readdir %q: %v", rel, err)
	}
	var got []string
	for _, d := range ents {
		if d.Name != "." && d.Name != ".." {
			got = append(got, d.Name)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("readdir %q = %q, want %q", rel, got, want)
	}
}

// read reads the whole file at rel through the engine.
func (e *engine) read(t *testing.T, rel string) []byte {
	t.Helper()
	p := e.path(t, rel)
	st, err := e.f.Attr(p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := e.f.Open(p, unix.O_RDONLY)
	if err != nil {
		t.Fatalf("open %q: %v", rel, err)
	}
	defer h.Release()
	b := make([]byte, st.Size)
	for off := 0; off < len(b); {
		k, err := h.ReadAt(b[off:], int64(off))
		if err != nil {
			t.Fatalf("read %q at %d: %v", rel, off, err)
		}
		if k == 0 {
			t.Fatalf("read %q: short at %d of %d", rel, off, len(b))
		}
		off += k
	}
	return b
}

func (e *engine) wantContent(t *testing.T, rel string, want []byte) {
	t.Helper()
	if got := e.read(t, rel); !bytes.Equal(got, want) {
		t.Errorf("%q: %d bytes differ from the %d expected", rel, len(got), len(want))
	}
}

func (e *engine) write(t *testing.T, rel string, off int64, b []byte) {
	t.Helper()
	h, err := e.f.Open(e.path(t, rel), unix.O_RDWR)
	if err != nil {
		t.Fatalf("open %q for writing: %v", rel, err)
	}
	defer h.Release()
	if _, err := h.WriteAt(b, off); err != nil {
		t.Fatalf("write %q at %d: %v", rel, off, err)
	}
}

// fileMeta is the copy-up record of the file at rel.
func (e *engine) fileMeta(t *testing.T, rel string) *fileMeta {
	t.Helper()
	fm, err := e.f.meta.file(e.path(t, rel).node().id)
	if err != nil {
		t.Fatalf("file metadata of %q: %v", rel, err)
	}
	return fm
}

func (e *engine) dirMeta(t *testing.T, rel string) dirMeta {
	t.Helper()
	dm, err := e.f.meta.dir(e.path(t, rel).node().id)
	if err != nil {
		t.Fatalf("directory metadata of %q: %v", rel, err)
	}
	return dm
}

// upperUsage is the bytes allocated to the upper file at rel.
func (e *engine) upperUsage(t *testing.T, rel string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(e.upper, rel), &st); err != nil {
		t.Fatalf("upper %q: %v", rel, err)
	}
	return st.Blocks * 512
}

func randData(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// lowerState records each entry of a lower tree: type, mode, size,
// mtime, a digest of its data, and its user xattrs.
func lowerState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		s := fmt.Sprintf("mode %o size %d nlink %d mtime %d.%d", st.Mode, st.Size, st.Nlink, st.Mtim.Sec, st.Mtim.Nsec)
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			s += " data " + hex.EncodeToString(sum[:])
		}
		buf := make([]byte, 4096)
		if k, err := unix.Lgetxattr(p, "user.lo", buf); err == nil {
			s += " user.lo=" + string(buf[:k])
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = s
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

var (
	bigData    = randData(3*ChunkSize + 100)
	smallData  = []byte("lower bytes\n")
	otherData  = []byte("other lower bytes\n")
	childData  = []byte("child\n")
	nestedData = []byte("nested child\n")
)

// engineCases are overlay semantics checked on the engine alone. Each
// runs in parallel on its own layers; afterwards the lower must be
// exactly as it was.
var engineCases = []struct {
	name  string
	lower func(t *testing.T, lower string)
	run   func(t *testing.T, e *engine)
}{
	{"WhiteoutHidesLowerFile", func(t *testing.T, l string) {
		writeFile(t, filepath.Join(l, "d", "a"), smallData)
		writeFile(t, filepath.Join(l, "d", "b"), otherData)
	}, func(t *testing.T, e *engine) {
		d := e.path(t, "d")
		a := e.path(t, "d/a")
		if err := e.f.Unlink(d, "a", a.node()); err != nil {
			t.Fatalf("unlink: %v", err)
		}
		check := func(when string) {
			t.Helper()
			e.wantGone(t, "d/a")
			e.wantNames(t, "d", "b")
			e.wantContent(t, "d/b", otherData)
			if wh, err := e.f.meta.whiteout(e.path(t, "d").node().id, "a"); err != nil || !wh {
				t.Errorf("%s: whiteout of d/a recorded = %v, %v; want true", when, wh, err)
			}
			if _, err := os.Lstat(filepath.Join(e.upper, "d", "a")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: upper holds d/a (%v); a whiteout is metadata only", when, err)
			}
		}
		check("before reopen")
		e.reopen(t)
		check("after reopen")
	}},
	{"MetadataMadeAtFirstRecord", func(t *testing.T, l string) {
		writeFile(t, filepath.Join(l, "d", "a"), smallData)
		writeFile(t, filepath.Join(l, "d", "b"), otherData)
	}, func(t *testing.T, e *engine) {
		made := func() bool {
			_, err := os.Stat(filepath.Join(e.meta, "MANIFEST"))
			return err == nil
		}
		// A workspace only read has no record to keep, and no database.
		e.wantNames(t, "d", "a", "b")
		e.wantContent(t, "d/a", smallData)
		e.reopen(t)
		e.wantContent(t, "d/b", otherData)
		if made() {
			t.Fatal("the metadata database was made for a workspace only read")
		}
		// The first record makes it, and it outlives the mount.
		d := e.path(t, "d")
		if err := e.f.Unlink(d, "a", e.path(t, "d/a").node()); err != nil {
			t.Fatalf("unlink: %v", err)
		}
		if !made() {
			t.Fatal("no metadata database after a whiteout was recorded")
		}
		if err := e.f.Sync(); err != nil {
			t.Fatalf("sync: %v", err)
		}
		e.reopen(t)
		e.wantGone(t, "d/a")
		e.wantNames(t, "d", "b")
	}},
	{"RenameLowerDirKeepsChildren", func(t *testing.T, l string) {
		writeFile(t, filepath.Join(l, "src", "x"), childData)
		writeFile(t, filepath.Join(l, "src", "sub", "y"), nestedData)
	}, func(t *testing.T, e *engine) {
		root := e.f.rootPath()
		src := e.path(t, "src")
		if err := e.f.Rename(root, "src", src.node(), root, "dst", nil, 0); err != nil {
			t.Fatalf("rename: %v", err)
		}
		check := func(when string) {
			t.Helper()
			e.wantGone(t, "src")
			e.wantNames(t, "", "dst")
			e.wantNames(t, "dst", "x", "sub")
			e.wantContent(t, "dst/x", childData)
			e.wantContent(t, "dst/sub/y", nestedData)
			if dm := e.dirMeta(t, "dst"); dm.Redirect != "src" {
				t.Errorf("%s: dst redirects to %q, want src", when, dm.Redirect)
			}
			// The children stay in the lower: only the directory was
			// recreated in the upper.
			if _, err := os.Lstat(filepath.Join(e.upper, "dst", "x")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: upper holds dst/x (%v); a renamed lower directory copies up no child", when, err)
			}
		}
		check("before reopen")
		e.reopen(t)
		check("after reopen")
	}},
	{"OpaqueAfterRmdirMkdir", func(t *testing.T, l string) {
		writeFile(t, filepath.Join(l, "d", "f"), smallData)
	}, func(t *testing.T, e *engine) {
		root := e.f.rootPath()
		d := e.path(t, "d")
		if err := e.f.Unlink(d, "f", e.path(t, "d/f").node()); err != nil {
			t.Fatalf("unlink: %v", err)
		}
		if err := e.f.Rmdir(root, "d", d.node()); err != nil {
			t.Fatalf("rmdir: %v", err)
		}
		e.wantGone(t, "d")
		if _, _, err := e.f.Mkdir(root, "d", 0o755, Cred{}); err != nil {
			t.Fatalf("mkdir: %v", err)
		}
		_, _, h, err := e.f.Create(e.path(t, "d"), "new", unix.O_RDWR, 0o644, Cred{})
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		h.Release()
		check := func(when string) {
			t.Helper()
			e.wantNames(t, "d", "new")
			e.wantGone(t, "d/f")
			if dm := e.dirMeta(t, "d"); !dm.Opaque {
				t.Errorf("%s: d recreated over a removed lower directory is not opaque", when)
			}
		}
		check("before reopen")
		e.reopen(t)
		check("after reopen")
	}},
	{"CopyUpOneChunk", func(t *testing.T, l string) {
		writeFile(t, filepath.Join(l, "big"), bigData)
	}, func(t *testing.T, e *engine) {
		e.write(t, "big", ChunkSize+5, []byte("X"))
		want := bytes.Clone(bigData)
		want[ChunkSize+5] = 'X'
		check := func(when string) {
			t.Helper()
			e.wantContent(t, "big", want)
			fm := e.fileMeta(t, "big")
			for c := int64(0); c <= 3; c++ {
				if fm.Chunks.Has(c) != (c == 1) {
					t.Errorf("%s: chunk %d present in the upper = %v; only chunk 1 was written", when, c, fm.Chunks.Has(c))
				}
			}
			if fm.LowerLimit != int64(len(bigData)) {
				t.Errorf("%s: lower limit %d, want the lower's size %d", when, fm.LowerLimit, len(bigData))
			}
			// The upper file is sparse but for the written chunk.
			if u := e.upperUsage(t, "big"); u > ChunkSize+64<<10 {
				t.Errorf("%s: upper file uses %d bytes; one chunk is %d", when, u, ChunkSize)
			}
		}
		check("before reopen")
		e.reopen(t)
		check("after reopen")
	}},
	{"TruncateBelowLowerLimit", func(t *testing.T, l string) {
		writeFile(t, filepath.Join(l, "big"), bigData)
	}, func(t *testing.T, e *engine) {
		short, long := int64(ChunkSize/2), int64(2*ChunkSize)
		if _, err := e.f.Setattr(e.path(t, "big"), SetAttr{Size: &short}); err != nil {
			t.Fatalf("truncate down: %v", err)
		}
		if got := e.fileMeta(t, "big").LowerLimit; got != short {
			t.Errorf("lower limit after truncating to %d is %d", short, got)
		}
		// Growing again must show zeros past the cut, not the lower's
		// old bytes.
		if _, err := e.f.Setattr(e.path(t, "big"), SetAttr{Size: &long}); err != nil {
			t.Fatalf("truncate up: %v", err)
		}
		want := make([]byte, long)
		copy(want, bigData[:short])
		e.wantContent(t, "big", want)
		e.reopen(t)
		e.wantContent(t, "big", want)
	}},
	{"ChmodUtimesCopyNoData", func(t *testing.T, l string) {
		writeFile(t, filepath.Join(l, "big"), bigData)
	}, func(t *testing.T, e *engine) {
		mode := uint32(0o600)
		mtime := unix.Timespec{Sec: 1_000_000_000, Nsec: 5}
		st, err := e.f.Setattr(e.path(t, "big"), SetAttr{Mode: &mode, Atime: &mtime, Mtime: &mtime})
		if err != nil {
			t.Fatalf("setattr: %v", err)
		}
		check := func(when string, st unix.Stat_t) {
			t.Helper()
			if st.Mode&0o7777 != mode || st.Mtim != mtime || st.Size != int64(len(bigData)) {
				t.Errorf("%s: mode %o mtime %v size %d, want %o %v %d", when, st.Mode&0o7777, st.Mtim, st.Size, mode, mtime, len(bigData))
			}
			if n := e.fileMeta(t, "big").Chunks.Count(); n != 0 {
				t.Errorf("%s: %d chunks copied up by chmod and utimes", when, n)
			}
			if u := e.upperUsage(t, "big"); u != 0 {
				t.Errorf("%s: upper file uses %d bytes after chmod and utimes", when, u)
			}
			e.wantContent(t, "big", bigData)
		}
		check("before reopen", st)
		e.reopen(t)
		st, err = e.f.Attr(e.path(t, "big"))
		if err != nil {
			t.Fatal(err)
		}
		check("after reopen", st)
	}},
	{"HardLinkOfLowerFile", func(t *testing.T, l string) {
		writeFile(t, filepath.Join(l, "a"), smallData)
	}, func(t *testing.T, e *engine) {
		st, err := e.f.Link(e.path(t, "a"), e.f.rootPath(), "b")
		if err != nil {
			t.Fatalf("link: %v", err)
		}
		if st.Nlink != 2 {
			t.Errorf("link count after link = %d, want 2", st.Nlink)
		}
		e.write(t, "b", 0, []byte("L"))
		want := bytes.Clone(smallData)
		want[0] = 'L'
		check := func(when string) {
			t.Helper()
			e.wantNames(t, "", "a", "b")
			e.wantContent(t, "a", want)
			e.wantContent(t, "b", want)
			sa, err := e.f.Attr(e.path(t, "a"))
			if err != nil {
				t.Fatal(err)
			}
			sb, err := e.f.Attr(e.path(t, "b"))
			if err != nil {
				t.Fatal(err)
			}
			if sa.Ino != sb.Ino || sa.Nlink != 2 || sb.Nlink != 2 {
				t.Errorf("%s: a is inode %d with %d links, b inode %d with %d; want one inode with 2", when, sa.Ino, sa.Nlink, sb.Ino, sb.Nlink)
			}
		}
		check("before reopen")
		e.reopen(t)
		check("after reopen")
	}},
	{"XattrOnLowerFile", func(t *testing.T, l string) {
		p := filepath.Join(l, "a")
		writeFile(t, p, bigData)
		if err := unix.Lsetxattr(p, "user.lo", []byte("lower"), 0); err != nil {
			t.Skipf("user xattrs unsupported on the test filesystem: %v", err)
		}
	}, func(t *testing.T, e *engine) {
		a := e.path(t, "a")
		if v, err := e.f.Getxattr(a, "user.lo"); err != nil || string(v) != "lower" {
			t.Fatalf("lower xattr through the engine = %q, %v", v, err)
		}
		if err := e.f.Setxattr(a, "user.up", []byte("upper"), 0); err != nil {
			t.Fatalf("setxattr: %v", err)
		}
		if err := e.f.Removexattr(e.path(t, "a"), "user.lo"); err != nil {
			t.Fatalf("removexattr: %v", err)
		}
		check := func(when string) {
			t.Helper()
			a := e.path(t, "a")
			names, err := e.f.Listxattr(a)
			if err != nil {
				t.Fatal(err)
			}
			var user []string
			for _, n := range names {
				if len(n) > 5 && n[:5] == "user." {
					user = append(user, n)
				}
			}
			if !reflect.DeepEqual(user, []string{"user.up"}) {
				t.Errorf("%s: user xattrs %q, want [user.up]", when, user)
			}
			if _, err := e.f.Getxattr(a, "user.lo"); !errors.Is(err, unix.ENODATA) {
				t.Errorf("%s: removed xattr reads back: %v", when, err)
			}
			if v, err := e.f.Getxattr(a, "user.up"); err != nil || string(v) != "upper" {
				t.Errorf("%s: user.up = %q, %v", when, v, err)
			}
			// Not the upper file's allocation: xattrs that do not fit
			// in its inode take a block of their own.
			if n := e.fileMeta(t, "a").Chunks.Count(); n != 0 {
				t.Errorf("%s: xattr changes copied up %d chunks", when, n)
			}
			e.wantContent(t, "a", bigData)
		}
		check("before reopen")
		e.reopen(t)
		check("after reopen")
	}},
	{"CreateOverTakenName", func(t *testing.T, l string) {
		writeFile(t, filepath.Join(l, "d", "low"), smallData)
		writeFile(t, filepath.Join(l, "d", "gone"), otherData)
	}, func(t *testing.T, e *engine) {
		// A name the upper has (new, and made again over a whiteout)
		// or the lower shows: every kind of create refuses it with
		// EEXIST and changes nothing, also where the engine leaves
		// the check to the create call itself.
		d := e.path(t, "d")
		if err := e.f.Unlink(d, "gone", e.path(t, "d/gone").node()); err != nil {
			t.Fatalf("unlink: %v", err)
		}
		for _, name := range []string{"up", "gone"} {
			_, _, h, err := e.f.Create(d, name, unix.O_RDWR, 0o644, Cred{})
			if err != nil {
				t.Fatalf("create %s: %v", name, err)
			}
			h.Release()
		}
		e.write(t, "d/up", 0, childData)
		e.write(t, "d/gone", 0, nestedData)
		check := func(when string) {
			t.Helper()
			d := e.path(t, "d")
			low := e.path(t, "d/low")
			for _, name := range []string{"up", "gone", "low"} {
				for op, err := range map[string]error{
					"create": func() error {
						_, _, h, err := e.f.Create(d, name, unix.O_RDWR, 0o644, Cred{})
						if err == nil {
							h.Release()
						}
						return err
					}(),
					"mkdir":   second(e.f.Mkdir(d, name, 0o755, Cred{})),
					"mknod":   second(e.f.Mknod(d, name, unix.S_IFIFO|0o644, 0, Cred{})),
					"symlink": second(e.f.Symlink(d, name, "target", Cred{})),
					"link":    func() error { _, err := e.f.Link(low, d, name); return err }(),
				} {
					if !errors.Is(err, syscall.EEXIST) {
						t.Errorf("%s: %s of taken name %q: got %v, want EEXIST", when, op, name, err)
					}
				}
			}
			e.wantNames(t, "d", "gone", "low", "up")
			e.wantContent(t, "d/up", childData)
			e.wantContent(t, "d/gone", nestedData)
			e.wantContent(t, "d/low", smallData)
			if _, err := os.Lstat(filepath.Join(e.upper, "d", "low")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: a refused link copied its target up: %v", when, err)
			}
			if tmps, err := filepath.Glob(filepath.Join(e.work, "tmp.*")); err != nil || len(tmps) != 0 {
				t.Errorf("%s: work directory holds %v (%v), want no inode in preparation", when, tmps, err)
			}
		}
		check("before reopen")
		e.reopen(t)
		check("after reopen")
	}},
}

// second returns the error of a call that returns a node, attributes and
// an error.
func second(_ *Node, _ unix.Stat_t, err error) error { return err }

// TestEngineOverlay runs each overlay semantic on the engine, with no
// mount, in parallel.
func TestEngineOverlay(t *testing.T) {
	t.Parallel()
	for _, c := range engineCases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var before map[string]string
			e := newEngine(t, func(t *testing.T, l string) {
				c.lower(t, l)
				before = lowerState(t, l)
			})
			c.run(t, e)
			if after := lowerState(t, e.lower); !reflect.DeepEqual(before, after) {
				t.Errorf("the lower changed:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}
