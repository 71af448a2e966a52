package cow

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
)

// workOptions are the options of an FS over an empty lower in d, whose
// upper is not made yet.
func workOptions(t *testing.T, d string) Options {
	t.Helper()
	for _, s := range []string{"lower", "work"} {
		if err := os.MkdirAll(filepath.Join(d, s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lo, err := lower.OpenDir(filepath.Join(d, "lower"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lo.Close() })
	return Options{Lower: lo, UpperDir: filepath.Join(d, "upper"), WorkDir: filepath.Join(d, "work"), MetaDir: filepath.Join(d, "work", "meta")}
}

// An FS opened from a Work keeps what it writes across a remount, as one
// opened whole does, and holds the work directory as that one does.
func TestOpenWorkTakenOver(t *testing.T) {
	t.Parallel()
	d := t.TempDir()
	o := workOptions(t, d)
	if err := os.Mkdir(o.UpperDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if o.Work, _ = OpenWork(o); o.Work == nil {
		t.Fatal("OpenWork failed")
	}
	f, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenWork(o); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("OpenWork of a work dir in use: %v, want EWOULDBLOCK", err)
	}
	if err := f.meta.setWhiteout(42, "gone"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	o.Work, err = OpenWork(o)
	if err != nil {
		t.Fatal(err)
	}
	g, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if ok, err := g.meta.whiteout(42, "gone"); err != nil || !ok {
		t.Fatalf("whiteout after the remount: %v %v", ok, err)
	}
}

// A Work whose mount never came (the master did not answer, the process
// was stopped) leaves an upper that is new to the next mount: its xattr
// namespace is chosen afresh, not guessed as for an upper mounted before
// cowfs recorded the namespace. Before, metadata without a record meant
// such an upper, and a user namespace's root was refused its own upper.
func TestOpenWorkAbandonedUpperStaysNew(t *testing.T) {
	t.Parallel()
	d := t.TempDir()
	o := workOptions(t, d)
	w, err := OpenWork(o)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := os.Stat(o.MetaDir); err != nil {
		t.Fatalf("the metadata OpenWork made: %v", err)
	}
	// As fs.New does: the upper is made once the lower is open.
	if o.Work, err = OpenWork(o); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(o.UpperDir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if want := "new upper; "; len(f.up.prefixFrom) < len(want) || f.up.prefixFrom[:len(want)] != want {
		t.Fatalf("namespace chosen as %q, want a new upper's", f.up.prefixFrom)
	}
}

// A lock held only by a child's copy of the descriptor (as a child that
// another thread forked holds it until it execs) is waited out; one held
// past lockWait is another upper's, EWOULDBLOCK.
func TestLockDirWaitsOutAChildsCopy(t *testing.T) {
	dir := t.TempDir()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	child := exec.CommandContext(ctx, "sleep", "0.2")
	child.ExtraFiles = []*os.File{f}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close() // the child's copy holds the lock now, until it exits
	fd, err := lockDir(dir)
	if werr := child.Wait(); werr != nil {
		t.Fatal(werr)
	}
	if err != nil {
		t.Fatalf("lock held by a child's copy for a moment: %v; want it taken once the child let go", err)
	}
	unix.Close(fd)

	held, err := lockDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(held)
	if _, err := lockDir(dir); !errors.Is(err, unix.EWOULDBLOCK) {
		t.Fatalf("lock held by another open upper: %v; want EWOULDBLOCK", err)
	}
}
