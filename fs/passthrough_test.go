package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPassthroughLower checks --passthrough-lower: read-only opens of a
// lower file are passed through (no READ reaches cowfs), a writer that
// comes while one is open is not refused, every open made after the
// write sees the new bytes, and the lower is never touched.
func TestPassthroughLower(t *testing.T) {
	t.Parallel()
	lower := t.TempDir()
	old := bytes.Repeat([]byte("lower-bytes-"), 1<<16)
	if err := os.WriteFile(filepath.Join(lower, "data"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	tm := mountT(t, lower, Options{PassthroughLower: true})
	p := filepath.Join(tm.Dir, "data")

	a, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	before := tm.m.ms.reads.Load()
	got := make([]byte, len(old))
	if _, err := a.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, old) {
		t.Fatal("passthrough read: wrong bytes")
	}
	if n := tm.m.ms.reads.Load() - before; n != 0 {
		t.Errorf("%d READ requests reached cowfs for a passed-through file; want 0", n)
	}

	// A writer while the passthrough open is held: the kernel refuses
	// (EIO) any open of that inode but a passthrough one, so cowfs must
	// move the name to a new kernel inode, with the same st_ino.
	b, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatalf("open for writing while a passthrough open is held: %v", err)
	}
	defer b.Close()
	if _, err := b.WriteAt([]byte("NEW"), 0); err != nil {
		t.Fatalf("write: %v", err)
	}
	want := append([]byte("NEW"), old[3:]...)
	readAll := func(f *os.File) []byte {
		t.Helper()
		buf := make([]byte, len(want))
		if _, err := f.ReadAt(buf, 0); err != nil {
			t.Fatal(err)
		}
		return buf
	}
	if !bytes.Equal(readAll(b), want) {
		t.Error("the writer does not read its own write")
	}
	var sa, sb unix.Stat_t
	if err := unix.Fstat(int(a.Fd()), &sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fstat(int(b.Fd()), &sb); err != nil {
		t.Fatal(err)
	}
	if sa.Ino != sb.Ino {
		t.Errorf("st_ino changed from %d to %d", sa.Ino, sb.Ino)
	}
	c, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readAll(c), want) {
		t.Error("a read-only open made after the write reads old bytes")
	}
	// The documented cost of the option: the descriptor that was
	// passed through still reads the lower.
	if !bytes.Equal(readAll(a), old) {
		t.Error("the passed-through descriptor should still read the lower's bytes")
	}
	c.Close()
	b.Close()
	a.Close()

	// All closed: the file is now in the upper, and opens go back to the
	// page cache, which must not hold anything from before the write.
	d, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if !bytes.Equal(readAll(d), want) {
		t.Error("a cached open after the passthrough period reads old bytes")
	}
	m, err := unix.Mmap(int(d.Fd()), 0, len(want), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap: %v", err)
	}
	mapped := copyMapped(t, m, nil)
	unix.Munmap(m)
	if !bytes.Equal(mapped, want) {
		t.Error("mmap after the passthrough period reads old bytes")
	}
	if got, _ := os.ReadFile(filepath.Join(lower, "data")); !bytes.Equal(got, old) {
		t.Error("the lower file changed")
	}
}

// TestPassthroughUpper checks --passthrough on files born in the upper:
// readers and writers share one backing file and see each other's bytes,
// and a later open after they close sees them through the page cache.
func TestPassthroughUpper(t *testing.T) {
	t.Parallel()
	tm := mountT(t, "", Options{Passthrough: true})
	p := filepath.Join(tm.Dir, "born")
	w, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r, err := os.Open(p)
	if err != nil {
		t.Fatalf("read-only open beside a passthrough writer: %v", err)
	}
	defer r.Close()
	before := tm.m.ms.reads.Load()
	if _, err := w.WriteAt([]byte("written through"), 0); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 15)
	if _, err := r.ReadAt(buf, 0); err != nil || string(buf) != "written through" {
		t.Fatalf("reader sees %q, %v", buf, err)
	}
	if n := tm.m.ms.reads.Load() - before; n != 0 {
		t.Errorf("%d READ requests reached cowfs for a passed-through file; want 0", n)
	}
	if st, err := os.Stat(p); err != nil || st.Size() != 15 {
		t.Fatalf("stat: %v %v", st, err)
	}
	w.Close()
	r.Close()
	if got, err := os.ReadFile(p); err != nil || string(got) != "written through" {
		t.Fatalf("reopen: %q %v", got, err)
	}
}

// TestPosixPassthrough runs posixtest with both passthrough options on, in
// a directory whose lower holds files: every open the suite makes, of
// every kind and in every order, must get a mode the kernel accepts.
func TestPosixPassthrough(t *testing.T) {
	t.Parallel()
	runPosixOpts(t, populatePosix, Options{Passthrough: true, PassthroughLower: true})
}

// TestPassthroughLowerProcReopen pins down the one open that
// --passthrough-lower refuses: reopening, through /proc/PID/fd, a
// descriptor that was passed through before a writer retired its kernel
// inode. The old inode can only take passthrough opens of the lower file,
// which would read bytes the write replaced, so cowfs answers ESTALE
// rather than stale data. Opening the path again works and sees the write.
func TestPassthroughLowerProcReopen(t *testing.T) {
	t.Parallel()
	lower := t.TempDir()
	if err := os.WriteFile(filepath.Join(lower, "data"), bytes.Repeat([]byte("L"), 8192), 0o644); err != nil {
		t.Fatal(err)
	}
	tm := mountT(t, lower, Options{PassthroughLower: true})
	p := filepath.Join(tm.Dir, "data")
	a, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt([]byte("W"), 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", a.Fd())); !errors.Is(err, unix.ESTALE) {
		t.Errorf("reopen of the retired descriptor: %v, want ESTALE", err)
	}
	b, err := os.ReadFile(p)
	if err != nil || len(b) != 8192 || b[0] != 'W' {
		t.Errorf("reopen by path: %d bytes, first %q, %v; want the write", len(b), b[:min(1, len(b))], err)
	}
}
