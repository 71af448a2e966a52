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

// copyMapped copies between a mapping of a file on a cowfs mount and Go
// memory inside system calls only (pwrite and pread against a memfd): with
// data nil it returns a copy of mapped, otherwise it stores data into
// mapped. A page fault on such a mapping in user code blocks its thread
// outside any system call; the Go runtime, unable to stop that thread for
// a garbage collection, stops every other one, the FUSE server's included,
// and the fault is never served. Faulting the pages in from inside the
// kernel keeps the runtime free.
func copyMapped(t testing.TB, mapped, data []byte) []byte {
	t.Helper()
	fd, err := unix.MemfdCreate("cowfs-test", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatalf("memfd_create: %v", err)
	}
	defer unix.Close(fd)
	full := func(op string, k int, err error) {
		if err != nil || k != len(mapped) {
			t.Fatalf("%s: %d of %d bytes: %v", op, k, len(mapped), err)
		}
	}
	if data == nil {
		k, err := unix.Pwrite(fd, mapped, 0)
		full("pwrite from the mapping", k, err)
		out := make([]byte, len(mapped))
		k, err = unix.Pread(fd, out, 0)
		full("pread back", k, err)
		return out
	}
	k, err := unix.Pwrite(fd, data, 0)
	full("pwrite to memfd", k, err)
	k, err = unix.Pread(fd, mapped, 0)
	full("pread into the mapping", k, err)
	return nil
}
