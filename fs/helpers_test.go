package fs

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	cowlower "github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
)

// testMount is a live mount made for one test.
type testMount struct {
	Dir, Lower, Upper, Work string
	m                       *Mount
}

// testSpec is what a test mounts: a lower directory, or a snapshot kept in
// State, opened by open as the workspace (cowfs.Open) opens them, without
// its pins; or, with neither, Options.Lower as given. Options carries the
// rest; Upper and Work, when empty, are Options' or State's.
type testSpec struct {
	Lower, State, Snapshot, Upper, Work string
	Options
}

// open returns New's options for s at dir and what closes the lower.
func (s testSpec) open(dir string) (o Options, closeLower func(), err error) {
	o, closeLower = s.Options, func() {}
	if s.Upper != "" {
		o.Upper, o.Work = s.Upper, s.Work
	}
	if s.State != "" {
		if o.Store, err = object.OpenDirStore(statedir.ObjectsDir(s.State)); err != nil {
			return o, nil, err
		}
		if o.Refs, err = refs.Open(statedir.RefsDir(s.State)); err != nil {
			return o, nil, err
		}
		if o.Upper == "" && s.Snapshot != "" {
			o.Upper, o.Work = statedir.RestoreDirs(s.State, dir)
		} else if o.Upper == "" {
			o.Upper, o.Work = statedir.MountDirs(s.State, dir)
		}
	}
	switch {
	case s.Snapshot != "":
		if o.Refs == nil {
			return o, nil, errors.New("a restore needs State")
		}
		snap, err := o.Refs.Get(s.Snapshot)
		if err != nil {
			return o, nil, err
		}
		o.Lower = cowlower.NewObjects(o.Store, snap.Root.Object, snap.Root)
		o.Parent = snap.Name
	case s.Lower != "":
		dl, err := cowlower.OpenDir(s.Lower)
		if err != nil {
			return o, nil, err
		}
		o.Lower, o.LowerDir = dl, s.Lower
		closeLower = func() { dl.Close() }
	}
	return o, closeLower, nil
}

// newT mounts s at dir with New; the lower it opened is closed on
// cleanup, after the unmount a caller registers.
func newT(t testing.TB, dir string, s testSpec) (*Mount, error) {
	t.Helper()
	o, closeLower, err := s.open(dir)
	if err != nil {
		return nil, err
	}
	m, err := New(dir, o)
	if err != nil {
		closeLower()
		return nil, err
	}
	t.Cleanup(closeLower)
	return m, nil
}

// mountT mounts a cowfs over lower (a fresh empty one when "") and
// registers an unmount that runs even when the test fails.
func mountT(t testing.TB, lower string, o Options) *testMount {
	t.Helper()
	base := t.TempDir()
	if lower == "" {
		lower = filepath.Join(base, "lower")
		if err := os.Mkdir(lower, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tm := &testMount{Dir: filepath.Join(base, "mnt"), Lower: lower}
	if o.Upper == "" {
		o.Upper, o.Work = filepath.Join(base, "upper"), filepath.Join(base, "work")
	}
	tm.Upper, tm.Work = o.Upper, o.Work
	if err := os.Mkdir(tm.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := newT(t, tm.Dir, testSpec{Lower: lower, Options: o})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	tm.m = m
	t.Cleanup(func() { tm.unmount(t) })
	return tm
}

// unmount unmounts, with a deadline: a hung unmount is detached and
// reported rather than left to hang the test binary.
func (tm *testMount) unmount(t testing.TB) {
	if tm.m == nil {
		return
	}
	m := tm.m
	tm.m = nil
	done := make(chan error, 1)
	go func() { done <- m.Unmount() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("unmount %s: %v", tm.Dir, err)
		}
	case <-time.After(30 * time.Second):
		unix.Unmount(tm.Dir, unix.MNT_DETACH)
		t.Errorf("unmount %s: timed out; detached", tm.Dir)
	}
}

// mountState mounts s (with a state directory, as snapshots need one)
// and unmounts on cleanup.
func mountState(t *testing.T, dir string, s testSpec) *Mount {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := newT(t, dir, s)
	if err != nil {
		t.Fatalf("mount %s: %v", dir, err)
	}
	tm := &testMount{Dir: dir, m: m}
	t.Cleanup(func() { tm.unmount(t) })
	return m
}

// remount unmounts and mounts the same upper again.
func (tm *testMount) remount(t testing.TB) {
	t.Helper()
	tm.unmount(t)
	m, err := newT(t, tm.Dir, testSpec{Lower: tm.Lower, Upper: tm.Upper, Work: tm.Work})
	if err != nil {
		t.Fatalf("remount: %v", err)
	}
	tm.m = m
}

// copyMapped copies between a mapping of a file on a cowfs mount and Go
// memory inside system calls only (pwrite and pread against a memfd): with
// data nil it returns a copy of mapped, otherwise it stores data into
// mapped. A page fault on such a mapping in user code blocks its thread
// outside any system call; the Go runtime, unable to stop that thread for
// a garbage collection, stops every other one, the FUSE server's included,
// and the fault is never served. Faulting the pages in from inside the
// kernel keeps the runtime free.
func copyMapped(t testing.TB, mapped, data []byte) []byte {
	t.Helper()
	fd, err := unix.MemfdCreate("cowfs-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatalf("memfd_create: %v", err)
	}
	defer unix.Close(fd)
	full := func(op string, k int, err error) {
		if err != nil || k != len(mapped) {
			t.Fatalf("%s: %d of %d bytes: %v", op, k, len(mapped), err)
		}
	}
	if data == nil {
		k, err := unix.Pwrite(fd, mapped, 0)
		full("pwrite from the mapping", k, err)
		out := make([]byte, len(mapped))
		k, err = unix.Pread(fd, out, 0)
		full("pread back", k, err)
		return out
	}
	k, err := unix.Pwrite(fd, data, 0)
	full("pwrite to memfd", k, err)
	k, err = unix.Pread(fd, mapped, 0)
	full("pread into the mapping", k, err)
	return nil
}

// --- lower tree snapshots ---------------------------------------------------

// entryState is everything about one entry of a tree that must not change:
// its attributes but atime, a digest of its data (or its symlink target),
// and its extended attributes.
type entryState struct {
	Mode, Uid, Gid uint32
	Size, Blocks   int64
	Nlink, Ino     uint64
	Rdev           uint64
	Mtime, Ctime   unix.Timespec
	Content        string
	Xattrs         map[string]string
}

// snapshotTree records every entry under dir, without following symlinks.
// File contents are digested by data extent (SEEK_DATA/SEEK_HOLE), so a
// sparse file of gigabytes costs only what it holds.
func snapshotTree(t testing.TB, dir string) map[string]entryState {
	t.Helper()
	tree := map[string]entryState{}
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		e := entryState{
			Mode: st.Mode, Uid: st.Uid, Gid: st.Gid, Size: st.Size, Blocks: st.Blocks,
			Nlink: st.Nlink, Ino: st.Ino, Rdev: st.Rdev, Mtime: st.Mtim, Ctime: st.Ctim,
			Xattrs: lxattrs(t, p),
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.Content = digestExtents(t, p)
		case unix.S_IFLNK:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e.Content = target
		}
		tree[rel] = e
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	return tree
}

func digestExtents(t testing.TB, p string) string {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOATIME, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	fd := int(f.Fd())
	var off int64
	for {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "@%d:", data)
		if _, err := io.Copy(h, io.NewSectionReader(f, data, hole-data)); err != nil {
			t.Fatal(err)
		}
		off = hole
	}
	return hex.EncodeToString(h.Sum(nil))
}

func lxattrs(t testing.TB, p string) map[string]string {
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		if errors.Is(err, unix.ENOTSUP) {
			return nil
		}
		t.Fatalf("llistxattr %s: %v", p, err)
	}
	m := map[string]string{}
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		vn, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("lgetxattr %s %s: %v", p, name, err)
		}
		m[name] = string(v[:vn])
	}
	return m
}

// assertTreeUnchanged compares dir with a snapshot taken before.
func assertTreeUnchanged(t testing.TB, dir string, before map[string]entryState) {
	t.Helper()
	after := snapshotTree(t, dir)
	var diffs []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("%s: removed", p))
		case !reflect.DeepEqual(a, b):
			diffs = append(diffs, fmt.Sprintf("%s: was %+v, now %+v", p, b, a))
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, fmt.Sprintf("%s: added", p))
		}
	}
	sort.Strings(diffs)
	if len(diffs) > 10 {
		diffs = append(diffs[:10], fmt.Sprintf("... and %d more", len(diffs)-10))
	}
	if len(diffs) > 0 {
		t.Errorf("%s changed:\n%s", dir, strings.Join(diffs, "\n"))
	}
}

// --- small helpers ----------------------------------------------------------

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func writeT(t testing.TB, p string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func readT(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func wantContent(t testing.TB, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("read %s: %v", p, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: %d bytes differ from the %d expected (first difference at %d)", p, len(got), len(want), diffOffset(got, want))
	}
}

func diffOffset(a, b []byte) int {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func lstatT(t testing.TB, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return st
}

func wantErrno(t testing.TB, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

func wantGone(t testing.TB, p string) {
	t.Helper()
	var st unix.Stat_t
	wantErrno(t, "lstat "+p, unix.Lstat(p, &st), unix.ENOENT)
}

// names lists a directory's entries, sorted.
func names(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func wantNames(t testing.TB, dir string, want ...string) {
	t.Helper()
	sort.Strings(want)
	if got := names(t, dir); !slices.Equal(got, want) {
		t.Errorf("readdir %s = %q, want %q", dir, got, want)
	}
}

// within runs fn, failing the test if it does not return in d. fn is left
// running on timeout (the test's cleanup unmount then unblocks it).
func within(t testing.TB, d time.Duration, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not return within %v", what, d)
	}
}

// diskUsage is the bytes allocated and the entry count of a tree.
func diskUsage(t testing.TB, dir string) (bytes int64, entries int) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		var st unix.Stat_t
		if unix.Lstat(p, &st) == nil {
			bytes += st.Blocks * 512
			entries++
		}
		return nil
	})
	return bytes, entries
}

// fileUsage is the bytes allocated to one file.
func fileUsage(t testing.TB, p string) int64 {
	t.Helper()
	st := lstatT(t, p)
	return st.Blocks * 512
}

// dropCaches makes the kernel forget clean pages, dentries and inodes, so
// later reads and lookups reach the filesystem again.
func dropCaches(t testing.TB) {
	t.Helper()
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
		t.Logf("drop caches: %v (continuing with fadvise only)", err)
	}
}

// dirent is one linux_dirent64 record.
type dirent struct {
	Ino  uint64
	Off  int64
	Type uint8
	Name string
}

// getdents makes one getdents64 call with a buffer of size bytes.
func getdents(t testing.TB, fd, size int) []dirent {
	t.Helper()
	buf := make([]byte, size)
	n, err := unix.Getdents(fd, buf)
	if err != nil {
		t.Fatalf("getdents: %v", err)
	}
	var out []dirent
	for b := buf[:n]; len(b) > 0; {
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		name := b[19:reclen]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		out = append(out, dirent{
			Ino:  binary.NativeEndian.Uint64(b[0:8]),
			Off:  int64(binary.NativeEndian.Uint64(b[8:16])),
			Type: b[18],
			Name: string(name),
		})
		b = b[reclen:]
	}
	return out
}

// readDirents reads a whole directory with getdents64.
func readDirents(t testing.TB, dir string) []dirent {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var all []dirent
	for {
		ds := getdents(t, fd, 4096)
		if len(ds) == 0 {
			return all
		}
		all = append(all, ds...)
	}
}

func writeAtT(t testing.TB, p string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func readAtT(t testing.TB, p string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

// appendT appends "more\n" to the file at p.
func appendT(t *testing.T, p string) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("more\n"); err != nil {
		t.Fatal(err)
	}
}
