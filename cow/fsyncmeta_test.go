package cow

import (
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFsyncSyncsMetadataOnlyAfterAChange: fsync makes the chunk records
// durable, so the fsync after a write that marked a chunk syncs the
// metadata; one after writes that recorded nothing has nothing of the
// metadata's to make durable and leaves the database alone (a mapped
// writer's msync is one fsync per page it dirtied).
func TestFsyncSyncsMetadataOnlyAfterAChange(t *testing.T) {
	e := newEngine(t, func(t *testing.T, lower string) {
		writeFile(t, filepath.Join(lower, "f"), randData(3*ChunkSize))
	})
	p := e.path(t, "f")
	h, err := e.f.Open(p, unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			h.Release()
		}
	}()
	withPath := func(fn func(Path) error) error { return fn(p) }
	step := func(what string, off int64, wantSyncs uint64) {
		t.Helper()
		if _, err := h.WriteAt([]byte("cowfs"), off); err != nil {
			t.Fatalf("%s: write: %v", what, err)
		}
		if err := h.Fsync(true, withPath); err != nil {
			t.Fatalf("%s: fsync: %v", what, err)
		}
		if got := e.f.meta.syncs.Load(); got != wantSyncs {
			t.Fatalf("%s: metadata synced %d times in all, want %d", what, got, wantSyncs)
		}
	}
	step("a write that brings chunk 0 up", 10, 1)
	step("a second write to chunk 0", 20, 1)
	step("a third write to chunk 0", 30, 1)
	step("a write that brings chunk 2 up", 2*ChunkSize+5, 2)
	// What the syncs made durable is what a remount reads.
	h.Release()
	released = true
	e.reopen(t)
	got := e.read(t, "f")
	for _, off := range []int{10, 20, 30, 2*ChunkSize + 5} {
		if string(got[off:off+5]) != "cowfs" {
			t.Fatalf("after a remount, %q at %d", got[off:off+5], off)
		}
	}
}
