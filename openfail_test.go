package cowfs_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/fs"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
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

// pinKeys returns the keys of state's pins.
func pinKeys(t *testing.T, state string) []string {
	t.Helper()
	d, err := refs.Open(statedir.RefsDir(state))
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

// failOpen checks that Open(s) fails with an error saying want and leaves
// nothing behind: no descriptor beneath base (the lower's above all), no
// FUSE server, no mount, no pin in s.State.
func failOpen(t *testing.T, base string, s cowfs.Spec, want string) {
	t.Helper()
	if err := os.MkdirAll(s.Mountpoint, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Only if Open left its mount: a test must not leave one.
		if mounted, _ := fs.IsMountpoint(s.Mountpoint); mounted {
			unix.Unmount(s.Mountpoint, unix.MNT_DETACH)
		}
	})
	files, fuses := openFiles(t, base)
	pins := pinKeys(t, s.State)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, err := cowfs.Open(ctx, s)
	if err == nil {
		ws.Close()
		t.Fatalf("open %s succeeded; want an error saying %q", s.Mountpoint, want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("open %s: %v; want an error saying %q", s.Mountpoint, err, want)
	}
	if mounted, err := fs.IsMountpoint(s.Mountpoint); err != nil || mounted {
		t.Errorf("%s is left a mountpoint (%v)", s.Mountpoint, err)
	}
	// An unmounted server closes /dev/fuse as its loops stop.
	deadline := time.Now().Add(30 * time.Second)
	for {
		nowFiles, nowFuses := openFiles(t, base)
		if slices.Equal(nowFiles, files) && nowFuses == fuses {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("descriptors left open: beneath %s %q, was %q; on /dev/fuse %d, was %d", base, nowFiles, files, nowFuses, fuses)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := pinKeys(t, s.State); !slices.Equal(got, pins) {
		t.Errorf("pins %q, was %q: the failed open left a pin", got, pins)
	}
}

// A workspace that fails to open once its lower is open releases all
// Open set up beneath the mount: the lower directory's descriptor, a
// restore's pin, a remote version's pin, whichever kind of lower. fs's
// TestNewFailureReleases checks what the mount itself sets up.
func TestOpenFailureReleases(t *testing.T) {
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	writeFile(t, filepath.Join(lower, "f"), []byte("lower\n"), 0o644)
	mnt := func(name string) string { return filepath.Join(base, name) }
	ms := remotetest.StartMaster(t, lower, remote.ServerConfig{})

	// A live workspace holds this upper: every Open below that uses it
	// fails when the engine takes the upper's lock.
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	if err := os.Mkdir(mnt("holder"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	holder, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt("holder"), Lower: cowfs.Lower{Dir: lower},
		Upper: upper, Work: work, State: state})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close() })
	if _, err := holder.Snapshot(ctx, "s"); err != nil {
		t.Fatal(err)
	}

	at := func(name string, l cowfs.Lower) cowfs.Spec {
		return cowfs.Spec{Mountpoint: mnt(name), Lower: l, Upper: upper, Work: work, State: state}
	}
	t.Run("LowerDirUpperInUse", func(t *testing.T) {
		failOpen(t, base, at("a", cowfs.Lower{Dir: lower}), "in use")
	})
	t.Run("RestoreUpperInUse", func(t *testing.T) {
		failOpen(t, base, at("b", cowfs.Lower{Snapshot: "s"}), "in use")
	})
	t.Run("RemoteUpperInUse", func(t *testing.T) {
		failOpen(t, base, at("c", cowfs.Lower{Remote: &cowfs.Remote{Addr: ms.Addr}}), "in use")
	})
	t.Run("UpperNotMade", func(t *testing.T) {
		s := at("d", cowfs.Lower{Dir: lower})
		s.Upper, s.Work = "/proc/cowfs-none/upper", "/proc/cowfs-none/work"
		failOpen(t, base, s, "create")
	})
}
