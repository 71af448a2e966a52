package lower

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// Listxattr of a directory lower gives the same names by listxattrat (a
// mount's lower) and through the parent's descriptor (an export's, which
// must not follow symlinks on the way): for a file, a directory, a
// symlink (its own xattrs, not its target's) and a path that is missing.
func TestDirLowerListxattr(t *testing.T) {
	t.Parallel()
	d := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(d, "a/b"), 0o755))
	must(os.WriteFile(filepath.Join(d, "a/b/f"), []byte("x"), 0o644))
	must(os.Symlink("f", filepath.Join(d, "a/b/link")))
	must(unix.Lsetxattr(filepath.Join(d, "a/b/f"), "user.one", []byte("1"), 0))
	must(unix.Lsetxattr(filepath.Join(d, "a/b/f"), "user.two", []byte("2"), 0))
	must(unix.Lsetxattr(filepath.Join(d, "a/b"), "user.dir", []byte("d"), 0))
	trusted := unix.Lsetxattr(filepath.Join(d, "a/b/link"), "trusted.link", []byte("l"), 0) == nil
	plain, err := OpenDir(d)
	must(err)
	defer plain.Close()
	strict, err := OpenDirStrict(d)
	must(err)
	defer strict.Close()
	want := map[string][]string{"a/b/f": {"user.one", "user.two"}, "a/b": {"user.dir"}, "a/b/link": nil}
	if trusted {
		want["a/b/link"] = []string{"trusted.link"}
	}
	for path, names := range want {
		for _, l := range []*Dir{plain, strict} {
			got, err := l.Listxattr(path)
			if err != nil {
				t.Fatalf("%s (strict %v): %v", path, l.strict, err)
			}
			var filtered []string
			for _, n := range got {
				if n != "security.selinux" {
					filtered = append(filtered, n)
				}
			}
			slices.Sort(filtered)
			if !slices.Equal(filtered, names) {
				t.Errorf("%s (strict %v): %q, want %q", path, l.strict, filtered, names)
			}
		}
	}
	for _, l := range []*Dir{plain, strict} {
		if _, err := l.Listxattr("a/missing"); !errors.Is(err, unix.ENOENT) {
			t.Errorf("missing path (strict %v): %v, want ENOENT", l.strict, err)
		}
	}
}
