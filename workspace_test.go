package cowfs

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
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
