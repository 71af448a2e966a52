package cowfs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/fs"
)

// openT opens s with a deadline and closes the workspace on cleanup.
func openT(t *testing.T, s Spec) *Workspace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ws, err := Open(ctx, s)
	if err != nil {
		t.Fatalf("open %s: %v", s.Mountpoint, err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// A local workspace's snapshot restores, through the same Open, beneath a
// fresh upper.
func TestOpenLocalAndRestore(t *testing.T) {
	base := t.TempDir()
	lower, mnt, rmnt := filepath.Join(base, "lower"), filepath.Join(base, "mnt"), filepath.Join(base, "rmnt")
	for _, d := range []string{lower, mnt, rmnt} {
		os.Mkdir(d, 0o755)
	}
	os.WriteFile(filepath.Join(lower, "a"), []byte("lower"), 0o644)
	state := filepath.Join(base, "state")
	ws := openT(t, Spec{Mountpoint: mnt, State: state, Lower: Lower{Dir: lower}})
	if err := os.WriteFile(filepath.Join(mnt, "a"), []byte("upper"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := ws.Snapshot(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if st := ws.Status(); st.Source != lower || st.Mountpoint != mnt {
		t.Errorf("status %+v: want source %s at %s", st, lower, mnt)
	}
	if _, err := ws.Push(ctx, "s"); err == nil {
		t.Error("a local workspace pushed; want an error, it has no master")
	}
	if err := ws.Close(); err != nil {
		t.Fatal(err)
	}
	openT(t, Spec{Mountpoint: rmnt, State: state, Lower: Lower{Snapshot: "s"}})
	if b, err := os.ReadFile(filepath.Join(rmnt, "a")); err != nil || string(b) != "upper" {
		t.Errorf("restored a: %q, %v; want %q", b, err, "upper")
	}
	if b, _ := os.ReadFile(filepath.Join(lower, "a")); string(b) != "lower" {
		t.Errorf("lower a: %q; the workspace wrote through", b)
	}
}

// Every restore starts from a fresh upper, and one whose previous upper
// cannot be cleared is not opened, leaving nothing mounted.
func TestRestoreStartsAfresh(t *testing.T) {
	base := t.TempDir()
	lower, mnt, rmnt := filepath.Join(base, "lower"), filepath.Join(base, "mnt"), filepath.Join(base, "rmnt")
	for _, d := range []string{lower, mnt, rmnt} {
		os.Mkdir(d, 0o755)
	}
	state := filepath.Join(base, "state")
	ws := openT(t, Spec{Mountpoint: mnt, State: state, Lower: Lower{Dir: lower}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := ws.Snapshot(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	restore := Spec{Mountpoint: rmnt, State: state, Lower: Lower{Snapshot: "s"}}
	r := openT(t, restore)
	os.WriteFile(filepath.Join(rmnt, "left"), []byte("x"), 0o644)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	r = openT(t, restore)
	if _, err := os.Stat(filepath.Join(rmnt, "left")); err == nil {
		t.Error("a second restore shows what the first wrote")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	// A mount inside the previous restore's upper: removing it fails
	// with EBUSY.
	ru, _ := statedir.RestoreDirs(state, rmnt)
	busy := filepath.Join(ru, "busy")
	if err := os.MkdirAll(busy, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", busy, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(busy, unix.MNT_DETACH) })
	if r, err := Open(ctx, restore); err == nil {
		r.Close()
		t.Fatal("restored over an upper it could not clear")
	} else if !strings.Contains(err.Error(), "clear previous restore") {
		t.Errorf("error %q does not say the previous restore was not cleared", err)
	}
	if ok, _ := fs.IsMountpoint(rmnt); ok {
		t.Error("left mounted")
	}
}
