package fs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFsync checks fsync and fdatasync on every kind of open: a lower file
// copied up by the open, a new file, read-only and append-only opens, and
// a directory. A failing fsync tells a database its acknowledged write may
// be lost.
func TestFsync(t *testing.T) {
	t.Parallel()
	lower := filepath.Join(t.TempDir(), "lower")
	os.MkdirAll(filepath.Join(lower, "dir"), 0o755)
	os.WriteFile(filepath.Join(lower, "dir", "log"), []byte("lower\n"), 0o644)
	tm := mountT(t, lower, Options{})
	cases := []struct {
		name  string
		flags int
	}{
		{"dir/log", os.O_WRONLY | os.O_APPEND},
		{"dir/log", os.O_RDWR},
		{"dir/log", os.O_RDONLY},
		{"dir/new", os.O_CREATE | os.O_WRONLY},
		{"new", os.O_CREATE | os.O_RDWR},
	}
	for _, c := range cases {
		f, err := os.OpenFile(filepath.Join(tm.Dir, c.name), c.flags, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if c.flags&(os.O_WRONLY|os.O_RDWR) != 0 {
			if _, err := f.Write([]byte("record\n")); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Sync(); err != nil {
			t.Errorf("fsync %s (flags %#x): %v", c.name, c.flags, err)
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			t.Errorf("fdatasync %s (flags %#x): %v", c.name, c.flags, err)
		}
		f.Close()
	}
	d, err := os.Open(filepath.Join(tm.Dir, "dir"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		t.Errorf("fsync of a directory: %v", err)
	}
}
