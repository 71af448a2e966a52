package fs

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDetachedNode checks that operations on a file unlinked while open
// reach that file through its descriptor and never the mount's root, whose
// path a nameless node must not fall back to.
func TestDetachedNode(t *testing.T) {
	lower := filepath.Join(t.TempDir(), "lower")
	os.MkdirAll(lower, 0o755)
	os.WriteFile(filepath.Join(lower, "lowerfile"), []byte("lower bytes"), 0o644)
	tm := mountT(t, lower, Options{})
	var rootBefore unix.Stat_t
	if err := unix.Stat(tm.Dir, &rootBefore); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"upperfile", "lowerfile"} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(tm.Dir, name)
			if name == "upperfile" {
				os.WriteFile(p, []byte("upper bytes"), 0o644)
			}
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			if err := f.Chmod(0o600); err != nil {
				t.Fatalf("fchmod unlinked: %v", err)
			}
			if err := f.Truncate(4); err != nil {
				t.Fatalf("ftruncate unlinked: %v", err)
			}
			fi, err := f.Stat()
			if err != nil || fi.Size() != 4 || fi.Mode().Perm() != 0o600 {
				t.Fatalf("fstat unlinked: %v %v", fi, err)
			}
			buf := make([]byte, 16)
			k, _ := f.ReadAt(buf, 0)
			if string(buf[:k]) != name[:4] && string(buf[:k]) != "lowe" && string(buf[:k]) != "uppe" {
				t.Fatalf("read unlinked: %q", buf[:k])
			}
			// Reopen through /proc: the open state still reaches it.
			g, err := os.Open("/proc/self/fd/" + strconv.Itoa(int(f.Fd())))
			if err != nil {
				t.Fatalf("reopen through /proc: %v", err)
			}
			g.Close()
		})
	}
	var rootAfter unix.Stat_t
	if err := unix.Stat(tm.Dir, &rootAfter); err != nil {
		t.Fatal(err)
	}
	if rootAfter.Mode != rootBefore.Mode {
		t.Fatalf("root mode changed from %o to %o", rootBefore.Mode, rootAfter.Mode)
	}
}
