package cow

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
)

// newTestFS opens an FS over a fresh lower holding files, with fresh
// upper, work and metadata directories.
func newTestFS(t *testing.T, files map[string][]byte) *FS {
	t.Helper()
	d := t.TempDir()
	for _, s := range []string{"lower", "upper", "work", "meta"} {
		if err := os.Mkdir(filepath.Join(d, s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(d, "lower", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	lo, err := lower.OpenDir(filepath.Join(d, "lower"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(Options{Lower: lo, UpperDir: filepath.Join(d, "upper"), WorkDir: filepath.Join(d, "work"), MetaDir: filepath.Join(d, "meta")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// lookupT looks name up in the root.
func lookupT(t *testing.T, f *FS, name string) Path {
	t.Helper()
	n, _, err := f.Lookup(f.rootPath(), name)
	if err != nil {
		t.Fatal(err)
	}
	return f.rootPath().child(name, n)
}

// writeUp opens the lower file name, writes one byte into it (a chunk
// copy-up that records the file's chunk layout) and returns the handle
// and the file's metadata id.
func writeUp(t *testing.T, f *FS, name string) (*Handle, uint64) {
	h, p := writeUpPath(t, f, name)
	return h, p.node().id
}

// writeUpPath is writeUp, returning the file's path (and node) instead of
// its id: the mount keeps one node per file, and so must a test that
// unlinks a file it holds open.
func writeUpPath(t *testing.T, f *FS, name string) (*Handle, Path) {
	t.Helper()
	p := lookupT(t, f, name)
	h, err := f.Open(p, unix.O_RDWR)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt([]byte("w"), 1); err != nil {
		t.Fatal(err)
	}
	if fm, err := f.meta.file(p.node().id); err != nil || fm == nil {
		t.Fatalf("no file metadata after a copy-up: %v %v", fm, err)
	}
	return h, p
}

func fileMetaGone(t *testing.T, f *FS, id uint64) bool {
	t.Helper()
	fm, err := f.meta.file(id)
	if isNotExist(err) {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return fm == nil
}

// The chunk layout of a copied-up file is dropped once no name and no
// open handle reaches the file, and not before.
func TestFileMetaDropped(t *testing.T) {
	t.Parallel()
	data := bytes.Repeat([]byte("x"), 3<<20)
	t.Run("unlink", func(t *testing.T) {
		f := newTestFS(t, map[string][]byte{"a": data})
		h, id := writeUp(t, f, "a")
		h.Release()
		p := lookupT(t, f, "a")
		if err := f.Unlink(f.rootPath(), "a", p.node()); err != nil {
			t.Fatal(err)
		}
		if !fileMetaGone(t, f, id) {
			t.Error("metadata of an unlinked file kept")
		}
	})
	t.Run("unlink while open", func(t *testing.T) {
		f := newTestFS(t, map[string][]byte{"a": data})
		h, p := writeUpPath(t, f, "a")
		id := p.node().id
		if err := f.Unlink(f.rootPath(), "a", p.node()); err != nil {
			t.Fatal(err)
		}
		if fileMetaGone(t, f, id) {
			t.Fatal("metadata dropped while the file is open")
		}
		// The open file still reads its bytes: the lower's beyond the
		// write.
		b := make([]byte, 4)
		if n, err := h.ReadAt(b, 0); err != nil || n != 4 || string(b) != "xwxx" {
			t.Fatalf("read after unlink: %q %d %v", b, n, err)
		}
		h.Release()
		if !fileMetaGone(t, f, id) {
			t.Error("metadata kept after the last handle closed")
		}
	})
	t.Run("other name left", func(t *testing.T) {
		f := newTestFS(t, map[string][]byte{"a": data})
		h, id := writeUp(t, f, "a")
		h.Release()
		if _, err := f.Link(lookupT(t, f, "a"), f.rootPath(), "b"); err != nil {
			t.Fatal(err)
		}
		if err := f.Unlink(f.rootPath(), "a", lookupT(t, f, "a").node()); err != nil {
			t.Fatal(err)
		}
		if fileMetaGone(t, f, id) {
			t.Fatal("metadata dropped while another name is left")
		}
		if err := f.Unlink(f.rootPath(), "b", lookupT(t, f, "b").node()); err != nil {
			t.Fatal(err)
		}
		if !fileMetaGone(t, f, id) {
			t.Error("metadata kept after the last name went")
		}
	})
	t.Run("renamed over", func(t *testing.T) {
		f := newTestFS(t, map[string][]byte{"a": data, "c": []byte("c")})
		h, id := writeUp(t, f, "a")
		h.Release()
		c := lookupT(t, f, "c")
		if err := f.Rename(f.rootPath(), "c", c.node(), f.rootPath(), "a", lookupT(t, f, "a").node(), 0); err != nil {
			t.Fatal(err)
		}
		if !fileMetaGone(t, f, id) {
			t.Error("metadata of a file renamed over kept")
		}
	})
}
