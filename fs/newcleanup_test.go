package fs

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	cowlower "github.com/cowfs/cowfs/cow/lower"
)

// openFiles lists what this process's descriptors are open on beneath
// base, and counts those open on /dev/fuse (one per live FUSE server).
func openFiles(t *testing.T, base string) (under []string, fuses int) {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		switch {
		case err != nil:
			// The descriptor ReadDir itself used, now closed.
		case target == "/dev/fuse":
			fuses++
		case target == base || strings.HasPrefix(target, base+"/"):
			under = append(under, target)
		}
	}
	slices.Sort(under)
	return under, fuses
}

// added returns what now holds beyond was, both sorted.
func added(was, now []string) []string {
	var out []string
	for _, p := range now {
		if i, ok := slices.BinarySearch(was, p); ok {
			was = slices.Delete(slices.Clone(was), i, i+1)
			continue
		}
		out = append(out, p)
	}
	return out
}

// failNew checks that New(dir, o) fails with an error saying want and
// leaves nothing behind: no descriptor beneath base (the metadata
// database's, the upper's locks), no FUSE server, no mount at dir.
func failNew(t *testing.T, base, dir string, o Options, want string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Only if New left its mount: a test must not leave one.
		if mounted, _ := IsMountpoint(dir); mounted {
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	files, fuses := openFiles(t, base)
	m, err := New(dir, o)
	if err == nil {
		(&testMount{Dir: dir, m: m}).unmount(t)
		t.Fatalf("mount %s succeeded; want an error saying %q", dir, want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("mount %s: %v; want an error saying %q", dir, err, want)
	}
	if mounted, err := IsMountpoint(dir); err != nil || mounted {
		t.Errorf("%s is left a mountpoint (%v)", dir, err)
	}
	// An unmounted server closes /dev/fuse as its loops stop.
	deadline := time.Now().Add(30 * time.Second)
	for {
		nowFiles, nowFuses := openFiles(t, base)
		if slices.Equal(nowFiles, files) && nowFuses == fuses {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("descriptors left open: beneath %s %q; on /dev/fuse %d, was %d", base, added(files, nowFiles), nowFuses, fuses)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A mount that fails part way releases everything it had set up: the
// upper's lock and metadata database, the kernel mount and its server,
// whichever step failed. The lower is its caller's (cowfs.Open's, whose
// test TestOpenFailureReleases checks the pins and the lower's
// descriptor): it stays open.
func TestNewFailureReleases(t *testing.T) {
	base := t.TempDir()
	lowerDir := filepath.Join(base, "lower")
	if err := os.Mkdir(lowerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeT(t, filepath.Join(lowerDir, "f"), []byte("lower\n"))
	mnt := func(name string) string { return filepath.Join(base, name) }
	lower, err := cowlower.OpenDir(lowerDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lower.Close() })

	// A live mount holds this upper: every New below that uses it
	// fails when the engine takes the upper's lock.
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	mountState(t, mnt("holder"), testSpec{Lower: lowerDir, Upper: upper, Work: work})

	t.Run("UpperInUse", func(t *testing.T) {
		failNew(t, base, mnt("a"), Options{Lower: lower, Upper: upper, Work: work}, "in use")
	})
	t.Run("UpperNotMade", func(t *testing.T) {
		failNew(t, base, mnt("d"), Options{Lower: lower, Upper: "/proc/cowfs-none/upper",
			Work: "/proc/cowfs-none/work"}, "create")
	})
	t.Run("KernelMountNotReady", func(t *testing.T) {
		// Nothing makes the kernel's mount fail on demand after it
		// is made; the real wait runs, then fails.
		defer func(f func(*fuse.Server) error) { waitMount = f }(waitMount)
		waitMount = func(s *fuse.Server) error {
			if err := s.WaitMount(); err != nil {
				return err
			}
			return errors.New("not ready")
		}
		failNew(t, base, mnt("g"), Options{Lower: lower, Upper: mnt("g-upper"), Work: mnt("g-work")}, "not ready")
	})
}
