package cow

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
	plain, err := OpenDirLower(d)
	must(err)
	defer plain.Close()
	strict, err := OpenDirLowerStrict(d)
	must(err)
	defer strict.Close()
	want := map[string][]string{"a/b/f": {"user.one", "user.two"}, "a/b": {"user.dir"}, "a/b/link": nil}
	if trusted {
		want["a/b/link"] = []string{"trusted.link"}
	}
	for path, names := range want {
		for _, l := range []*DirLower{plain, strict} {
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
	for _, l := range []*DirLower{plain, strict} {
		if _, err := l.Listxattr("a/missing"); !errors.Is(err, unix.ENOENT) {
			t.Errorf("missing path (strict %v): %v, want ENOENT", l.strict, err)
		}
	}
}

// A lower directory removed while mounted (the lower must not change, but
// a deployment that replaces a spider's files does it anyway) lists as
// empty under a merged directory, not as an error: the kernel hands
// ENOENT from a listing to glibc, which reads it as the end of the
// directory, so the task's own files in the upper vanished from ls.
func TestLowerDirRemovedWhileMounted(t *testing.T) {
	t.Parallel()
	f := newTestFS(t, map[string][]byte{"spider.py": []byte("x")})
	_, _, h, err := f.Create(f.RootPath(), "items.jl", unix.O_WRONLY, 0o644, Cred{})
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if err := os.RemoveAll(f.lo.(*DirLower).path); err != nil {
		t.Fatal(err)
	}
	ents, err := f.ReadDir(f.RootPath())
	if err != nil {
		t.Fatalf("listing after the lower went: %v", err)
	}
	if len(ents) != 1 || ents[0].Name != "items.jl" {
		t.Fatalf("listing after the lower went: %v, want items.jl alone", ents)
	}
}

// A second FS over an upper that is in use is refused before it touches
// anything: it used to clear the work directory's temporary files, which
// may be a live mount's copy-up in progress, and only then fail on the
// metadata's lock (two cowfs mount at one place at once, a retry racing
// the first try, could do it).
func TestUpperInUseUntouched(t *testing.T) {
	t.Parallel()
	d := t.TempDir()
	for _, s := range []string{"lower", "upper", "work", "meta"} {
		if err := os.Mkdir(filepath.Join(d, s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	open := func() (*FS, error) {
		lo, err := OpenDirLower(filepath.Join(d, "lower"))
		if err != nil {
			t.Fatal(err)
		}
		return New(Options{Lower: lo, UpperDir: filepath.Join(d, "upper"), WorkDir: filepath.Join(d, "work"), MetaDir: filepath.Join(d, "meta")})
	}
	f, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inFlight := filepath.Join(d, "work", "tmp.copyup-in-progress")
	if err := os.WriteFile(inFlight, []byte("half a copy-up"), 0o600); err != nil {
		t.Fatal(err)
	}
	if g, err := open(); err == nil {
		g.Close()
		t.Fatal("a second FS opened over an upper in use")
	} else if !errors.Is(err, unix.EWOULDBLOCK) {
		t.Errorf("second open: %v, want EWOULDBLOCK", err)
	}
	if _, err := os.Stat(inFlight); err != nil {
		t.Fatalf("the live FS's temporary file: %v", err)
	}
	f.Close()
	g, err := open()
	if err != nil {
		t.Fatalf("open after the first closed: %v", err)
	}
	g.Close()
}
