package cow

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
)

// A lower directory removed while mounted (the lower must not change, but
// a deployment that replaces a spider's files does it anyway) lists as
// empty under a merged directory, not as an error: the kernel hands
// ENOENT from a listing to glibc, which reads it as the end of the
// directory, so the task's own files in the upper vanished from ls.
func TestLowerDirRemovedWhileMounted(t *testing.T) {
	t.Parallel()
	f := newTestFS(t, map[string][]byte{"spider.py": []byte("x")})
	_, _, h, err := f.Create(f.rootPath(), "items.jl", unix.O_WRONLY, 0o644, Cred{})
	if err != nil {
		t.Fatal(err)
	}
	h.Release()
	if err := os.RemoveAll(f.lo.(*lower.Dir).Path()); err != nil {
		t.Fatal(err)
	}
	ents, err := f.ReadDir(f.rootPath())
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
		lo, err := lower.OpenDir(filepath.Join(d, "lower"))
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
