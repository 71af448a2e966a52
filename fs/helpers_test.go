package fs

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testMount is a live mount made for one test.
type testMount struct {
	Dir, Lower, Upper, Work string
	m                       *Mount
}

// mountT mounts a cowfs over lower (a fresh empty one when "") and
// registers an unmount that runs even when the test fails.
func mountT(t testing.TB, lower string, o Options) *testMount {
	t.Helper()
	base := t.TempDir()
	if lower == "" {
		lower = filepath.Join(base, "lower")
		if err := os.Mkdir(lower, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	tm := &testMount{Dir: filepath.Join(base, "mnt"), Lower: lower}
	if o.Upper == "" {
		o.Upper, o.Work = filepath.Join(base, "upper"), filepath.Join(base, "work")
	}
	tm.Upper, tm.Work = o.Upper, o.Work
	o.Lower = lower
	if err := os.Mkdir(tm.Dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := New(tm.Dir, o)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	tm.m = m
	t.Cleanup(func() { tm.unmount(t) })
	return tm
}

// unmount unmounts, with a deadline: a hung unmount is detached and
// reported rather than left to hang the test binary.
func (tm *testMount) unmount(t testing.TB) {
	if tm.m == nil {
		return
	}
	m := tm.m
	tm.m = nil
	done := make(chan error, 1)
	go func() { done <- m.Unmount() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("unmount %s: %v", tm.Dir, err)
		}
	case <-time.After(30 * time.Second):
		unix.Unmount(tm.Dir, unix.MNT_DETACH)
		t.Errorf("unmount %s: timed out; detached", tm.Dir)
	}
}

// remount unmounts and mounts the same upper again.
func (tm *testMount) remount(t testing.TB) {
	t.Helper()
	tm.unmount(t)
	m, err := New(tm.Dir, Options{Lower: tm.Lower, Upper: tm.Upper, Work: tm.Work})
	if err != nil {
		t.Fatalf("remount: %v", err)
	}
	tm.m = m
}
