package fs

import (
	"context"
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
	"github.com/cowfs/cowfs/cow/refs"
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

// pinKeys returns the keys of state's pins.
func pinKeys(t *testing.T, state string) []string {
	t.Helper()
	d, err := refs.Open(RefsDir(state))
	if err != nil {
		t.Fatal(err)
	}
	pins, err := d.Pins()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range pins {
		keys = append(keys, p.Key)
	}
	slices.Sort(keys)
	return keys
}

// failNew checks that New(dir, o) fails with an error saying want and
// leaves nothing behind: no descriptor beneath base (the lower's above
// all), no FUSE server, no mount at dir, no pin in state.
func failNew(t *testing.T, base, state, dir string, o Options, want string) {
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
	pins := pinKeys(t, state)
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
	deadline := time.Now().Add(10 * time.Second)
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
	if got := pinKeys(t, state); !slices.Equal(got, pins) {
		t.Errorf("pins %q, was %q: the failed mount left a pin", got, pins)
	}
}

// A mount that fails part way releases everything it had set up: the
// lower's descriptor, a restore's or a remote version's pin, the upper's
// lock, the kernel mount and its server, whichever step failed.
func TestNewFailureReleases(t *testing.T) {
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	if err := os.Mkdir(lower, 0o755); err != nil {
		t.Fatal(err)
	}
	writeT(t, filepath.Join(lower, "f"), []byte("lower\n"))
	mnt := func(name string) string { return filepath.Join(base, name) }
	first := &testMount{Dir: mnt("first")}
	if err := os.Mkdir(first.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := New(first.Dir, Options{Lower: lower, State: state})
	if err != nil {
		t.Fatal(err)
	}
	first.m = m
	t.Cleanup(func() { first.unmount(t) })
	store := m.store
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := m.Snapshot(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	first.unmount(t)
	d, err := refs.Open(RefsDir(state))
	if err != nil {
		t.Fatal(err)
	}
	snap, err := d.Get("s")
	if err != nil {
		t.Fatal(err)
	}

	// A live mount holds this upper: every New below that uses it
	// fails when the engine takes the upper's lock.
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	mountState(t, mnt("holder"), Options{Lower: lower, Upper: upper, Work: work})

	t.Run("LowerDirUpperInUse", func(t *testing.T) {
		failNew(t, base, state, mnt("a"), Options{Lower: lower, Upper: upper, Work: work, State: state}, "in use")
	})
	t.Run("RestoreUpperInUse", func(t *testing.T) {
		failNew(t, base, state, mnt("b"), Options{Snapshot: "s", Upper: upper, Work: work, State: state}, "in use")
	})
	t.Run("RemoteUpperInUse", func(t *testing.T) {
		layer := cowlower.NewObjects(store, snap.Root.Object, snap.Root)
		failNew(t, base, state, mnt("c"), Options{Layer: layer, LayerRoot: snap.Root.Object, Source: "far",
			Upper: upper, Work: work, State: state}, "in use")
	})
	t.Run("UpperNotMade", func(t *testing.T) {
		failNew(t, base, state, mnt("d"), Options{Lower: lower, Upper: "/proc/cowfs-none/upper",
			Work: "/proc/cowfs-none/work", State: state}, "create")
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
		layer := cowlower.NewObjects(store, snap.Root.Object, snap.Root)
		failNew(t, base, state, mnt("g"), Options{Layer: layer, LayerRoot: snap.Root.Object, Source: "far", State: state}, "not ready")
		failNew(t, base, state, mnt("h"), Options{Lower: lower, State: state}, "not ready")
	})
}
