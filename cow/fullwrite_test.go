package cow

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
)

// A write into a chunk still in the lower copies the chunk's other bytes
// up first and writes the range itself; if that write fails for lack of
// space, the chunk must not count as copied up, or the range would read
// as a hole where the file had bytes. The upper is a 16 MiB tmpfs left
// with about 100 KiB free; the metadata database is elsewhere, and there
// is no reserve, so the write itself meets ENOSPC.
func TestFailedWriteKeepsLowerBytes(t *testing.T) {
	orig := make([]byte, 3*ChunkSize)
	rand.New(rand.NewSource(3)).Read(orig)
	h, small := smallUpper(t, orig)

	// Leave about 100 KiB free beside the upper.
	var st unix.Statfs_t
	if err := unix.Statfs(small, &st); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(small, "filler"), make([]byte, int64(st.Bfree)*st.Bsize-100<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	// All of chunk 1 but 4 KiB at each end: those 8 KiB fit, the rest
	// does not.
	off := int64(ChunkSize + 4096)
	data := bytes.Repeat([]byte{'w'}, ChunkSize-8192)
	if _, err := h.WriteAt(data, off); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write on a full upper: %v, want ENOSPC", err)
	}
	got := make([]byte, len(orig))
	if k, err := h.ReadAt(got, 0); err != nil || k != len(orig) {
		t.Fatalf("read back: %d bytes, %v", k, err)
	}
	if i := firstDiffAt(got, orig); i >= 0 {
		t.Fatalf("after the failed write the file differs from the lower at %d", i)
	}

	// With space again the same write lands, and only it.
	if err := os.Remove(filepath.Join(small, "filler")); err != nil {
		t.Fatal(err)
	}
	if k, err := h.WriteAt(data, off); err != nil || k != len(data) {
		t.Fatalf("write after space was freed: %d, %v", k, err)
	}
	copy(orig[off:], data)
	if k, err := h.ReadAt(got, 0); err != nil || k != len(orig) {
		t.Fatalf("read back: %d bytes, %v", k, err)
	}
	if i := firstDiffAt(got, orig); i >= 0 {
		t.Fatalf("after the write the file differs from what was written at %d", i)
	}
}

// smallUpper makes an FS whose upper and work directories are on a 16 MiB
// tmpfs (returned, unmounted in cleanup) and whose metadata database is
// elsewhere, with no reserve, over a lower holding one file "f" of orig;
// it returns a read-write handle of f.
func smallUpper(t *testing.T, orig []byte) (*Handle, string) {
	t.Helper()
	d := t.TempDir()
	small := filepath.Join(d, "small")
	for _, s := range []string{"lower", "meta", "small"} {
		if err := os.Mkdir(filepath.Join(d, s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", small, "tmpfs", 0, "size=16m"); err != nil {
		t.Fatalf("a small tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(small, unix.MNT_DETACH) })
	for _, s := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(small, s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(d, "lower", "f"), orig, 0o644); err != nil {
		t.Fatal(err)
	}
	lo, err := lower.OpenDir(filepath.Join(d, "lower"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Options{Lower: lo, UpperDir: filepath.Join(small, "upper"), WorkDir: filepath.Join(small, "work"), MetaDir: filepath.Join(d, "meta"), Reserve: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	h, err := f.Open(lookupT(t, f, "f"), os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Release)
	return h, small
}

// firstDiffAt returns the first offset where a and b differ, or -1.
func firstDiffAt(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// A fallocate that zeroes or punches part of a chunk still in the lower
// copies the chunk's other bytes up first; if the upper then refuses the
// call (tmpfs has no FALLOC_FL_ZERO_RANGE), the chunk must stay in the
// lower, or the range would read as zeros the call never made.
func TestFailedFallocateKeepsLowerBytes(t *testing.T) {
	orig := make([]byte, 2*ChunkSize)
	rand.New(rand.NewSource(4)).Read(orig)
	h, _ := smallUpper(t, orig)
	err := h.Allocate(ChunkSize+4096, 8192, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE)
	if !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Fatalf("zero range on a tmpfs upper: %v, want EOPNOTSUPP", err)
	}
	got := make([]byte, len(orig))
	if k, err := h.ReadAt(got, 0); err != nil || k != len(orig) {
		t.Fatalf("read back: %d bytes, %v", k, err)
	}
	if i := firstDiffAt(got, orig); i >= 0 {
		t.Fatalf("after the refused fallocate the file differs from the lower at %d", i)
	}
}

// FALLOC_FL_COLLAPSE_RANGE and FALLOC_FL_INSERT_RANGE move bytes across
// chunks, so every chunk of a lower file must be in the upper, with its
// bytes, before the call.
func TestCollapseLowerFile(t *testing.T) {
	t.Parallel()
	orig := make([]byte, 3*ChunkSize)
	rand.New(rand.NewSource(5)).Read(orig)
	f := newTestFS(t, map[string][]byte{"f": orig})
	h, err := f.Open(lookupT(t, f, "f"), os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	if err := h.Allocate(4096, 8192, unix.FALLOC_FL_COLLAPSE_RANGE); err != nil {
		if errors.Is(err, syscall.EOPNOTSUPP) {
			t.Skipf("the upper's filesystem has no collapse: %v", err)
		}
		t.Fatal(err)
	}
	want := append(append([]byte(nil), orig[:4096]...), orig[4096+8192:]...)
	got := make([]byte, len(orig))
	k, err := h.ReadAt(got, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	if i := firstDiffAt(got[:k], want); i >= 0 {
		t.Fatalf("after collapsing 8 KiB at 4 KiB the file differs at %d (%d bytes, want %d)", i, k, len(want))
	}
}

// A write into a chunk still in the lower whose record the metadata store
// refuses (it is out of room) fails, and the file must read as the store
// has it, as a remount would show it: the lower's bytes, not the write's.
func TestUnrecordedWriteKeepsLowerBytes(t *testing.T) {
	t.Parallel()
	orig := make([]byte, 2*ChunkSize)
	rand.New(rand.NewSource(6)).Read(orig)
	f := newTestFS(t, map[string][]byte{"f": orig})
	h, err := f.Open(lookupT(t, f, "f"), os.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	// No filesystem has this much free.
	if err := f.meta.keepFree(t.TempDir(), 1<<62); err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{'w'}, 4096)
	if _, err := h.WriteAt(data, ChunkSize+100); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write whose record is refused: %v, want ENOSPC", err)
	}
	got := make([]byte, len(orig))
	if k, err := h.ReadAt(got, 0); err != nil || k != len(orig) {
		t.Fatalf("read back: %d bytes, %v", k, err)
	}
	if i := firstDiffAt(got, orig); i >= 0 {
		t.Fatalf("after the unrecorded write the file differs from the lower at %d", i)
	}

	if err := f.meta.keepFree(t.TempDir(), 0); err != nil {
		t.Fatal(err)
	}
	if k, err := h.WriteAt(data, ChunkSize+100); err != nil || k != len(data) {
		t.Fatalf("write with room again: %d, %v", k, err)
	}
	copy(orig[ChunkSize+100:], data)
	if k, err := h.ReadAt(got, 0); err != nil || k != len(orig) {
		t.Fatalf("read back: %d bytes, %v", k, err)
	}
	if i := firstDiffAt(got, orig); i >= 0 {
		t.Fatalf("after the write the file differs from what was written at %d", i)
	}
}
