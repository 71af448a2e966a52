package fs

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
)

// TestCopyUpOfOpenFileSurvivesRemount writes to a lower file that another
// descriptor holds open read-only (so its open state predates the copy-up),
// then remounts: the written chunk must come from the upper, not the
// lower. This once lost the write: the open state kept the id it had
// before the copy-up (none), and the chunk marks were recorded under it.
func TestCopyUpOfOpenFileSurvivesRemount(t *testing.T) {
	t.Parallel()
	lower := filepath.Join(t.TempDir(), "lower")
	os.MkdirAll(lower, 0o755)
	orig := make([]byte, 3<<20)
	rand.Read(orig)
	if err := os.WriteFile(filepath.Join(lower, "data"), orig, 0o644); err != nil {
		t.Fatal(err)
	}
	tm := mountT(t, lower, Options{})
	p := filepath.Join(tm.Dir, "data")
	ro, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	w, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	patch := []byte("NEW BYTES AT ONE MIB")
	if _, err := w.WriteAt(patch, 1<<20); err != nil {
		t.Fatal(err)
	}
	w.Close()
	want := append([]byte(nil), orig...)
	copy(want[1<<20:], patch)
	got := make([]byte, len(patch))
	if _, err := ro.ReadAt(got, 1<<20); err != nil || !bytes.Equal(got, patch) {
		t.Fatalf("read-only fd opened before the copy-up reads %q, %v", got, err)
	}
	ro.Close()
	tm.remount(t)
	after, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after, want) {
		t.Fatal("after remount the file is not what was written")
	}
	if l, _ := os.ReadFile(filepath.Join(lower, "data")); !bytes.Equal(l, orig) {
		t.Fatal("lower changed")
	}
}
