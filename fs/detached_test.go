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
	t.Parallel()
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

// TestDetachedXattr checks that the f*xattr calls on a file unlinked while
// open reach the file, as on a local filesystem, for a file in the upper
// and for one read from the lower and never copied up.
func TestDetachedXattr(t *testing.T) {
	t.Parallel()
	lower := filepath.Join(t.TempDir(), "lower")
	os.MkdirAll(lower, 0o755)
	for _, n := range []string{"lowerread", "lowerwrite"} {
		p := filepath.Join(lower, n)
		os.WriteFile(p, []byte("lower bytes"), 0o644)
		if err := unix.Setxattr(p, "user.a", []byte("from lower"), 0); err != nil {
			t.Fatal(err)
		}
	}
	tm := mountT(t, lower, Options{})
	get := func(t *testing.T, fd int, name string) (string, error) {
		t.Helper()
		buf := make([]byte, 64)
		n, err := unix.Fgetxattr(fd, name, buf)
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	list := func(t *testing.T, fd int) string {
		t.Helper()
		buf := make([]byte, 256)
		n, err := unix.Flistxattr(fd, buf)
		if err != nil {
			t.Fatalf("flistxattr unlinked: %v", err)
		}
		return string(buf[:n])
	}
	t.Run("lowerread", func(t *testing.T) {
		p := filepath.Join(tm.Dir, "lowerread")
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		fd := int(f.Fd())
		if v, err := get(t, fd, "user.a"); err != nil || v != "from lower" {
			t.Fatalf("fgetxattr unlinked lower file = %q, %v; want %q", v, err, "from lower")
		}
		if l := list(t, fd); l != "user.a\x00" {
			t.Fatalf("flistxattr unlinked lower file = %q", l)
		}
	})
	for _, name := range []string{"upper", "lowerwrite"} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(tm.Dir, name)
			if name == "upper" {
				os.WriteFile(p, []byte("upper bytes"), 0o644)
				if err := unix.Setxattr(p, "user.a", []byte("from lower"), 0); err != nil {
					t.Fatal(err)
				}
			}
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
			fd := int(f.Fd())
			if v, err := get(t, fd, "user.a"); err != nil || v != "from lower" {
				t.Fatalf("fgetxattr unlinked = %q, %v", v, err)
			}
			if err := unix.Fsetxattr(fd, "user.b", []byte("set after unlink"), 0); err != nil {
				t.Fatalf("fsetxattr unlinked: %v", err)
			}
			if err := unix.Fremovexattr(fd, "user.a"); err != nil {
				t.Fatalf("fremovexattr unlinked: %v", err)
			}
			if _, err := get(t, fd, "user.a"); err != unix.ENODATA {
				t.Fatalf("fgetxattr of a removed attribute: %v, want ENODATA", err)
			}
			if v, err := get(t, fd, "user.b"); err != nil || v != "set after unlink" {
				t.Fatalf("fgetxattr unlinked = %q, %v", v, err)
			}
			if l := list(t, fd); l != "user.b\x00" {
				t.Fatalf("flistxattr unlinked = %q, want only user.b", l)
			}
		})
	}
}
