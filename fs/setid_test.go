package fs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

const setIDHelperEnv = "COWFS_SETID_HELPER_DIR"

// TestSetIDHelper is not a test: TestWriteDropsSetID runs the test binary
// as uid 1234, gid 5678 with setIDHelperEnv set, and this writes,
// truncates and opens with O_TRUNC files of that user.
func TestSetIDHelper(t *testing.T) {
	dir := os.Getenv(setIDHelperEnv)
	if dir == "" {
		t.Skip("helper process for TestWriteDropsSetID")
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	for _, name := range []string{"write-ug", "write-g-nox"} {
		f, err := os.OpenFile(p(name), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("more")); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	// A set-user-ID file of the user's own, made and written by them.
	f, err := os.OpenFile(p("new-u"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, os.ModeSetuid|0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("#!/bin/sh\n")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Truncate(p("truncate-ug"), 1); err != nil {
		t.Fatal(err)
	}
	f, err = os.OpenFile(p("otrunc-ug"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
}

// TestWriteDropsSetID checks, against ext4, which set-ID bits a write, a
// truncate and an O_TRUNC open remove: a user's write removes set-user-ID
// and set-group-ID (with group execute) but keeps set-group-ID without
// group execute in the user's own group; root's write keeps both. cowfs
// writes as root and takes FUSE_HANDLE_KILLPRIV_V2, so each of these is
// its doing (killpriv.go).
func TestWriteDropsSetID(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another user")
	}
	if os.Getenv(setIDHelperEnv) != "" {
		t.Skip("in the helper")
	}
	as := asUser(t)
	files := map[string]uint32{
		"write-ug": 0o6755, "write-g-nox": 0o2644, "truncate-ug": 0o6755,
		"otrunc-ug": 0o6755, "root-write-ug": 0o6755,
	}
	run := func(t *testing.T, dir string) map[string]uint32 {
		t.Helper()
		openUp(dir)
		// The user makes a file of their own here too.
		if err := os.Chmod(dir, 0o1777); err != nil {
			t.Fatal(err)
		}
		for name, mode := range files {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if name != "root-write-ug" {
				if err := os.Chown(p, 1234, 5678); err != nil {
					t.Fatal(err)
				}
			}
			if err := unix.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
		}
		as(t, "TestSetIDHelper", setIDHelperEnv, dir, 1234, 5678)
		f, err := os.OpenFile(filepath.Join(dir, "root-write-ug"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write([]byte("more")); err != nil {
			t.Fatal(err)
		}
		f.Close()
		modes := map[string]uint32{}
		for name := range files {
			modes[name] = lstatT(t, filepath.Join(dir, name)).Mode & 07777
		}
		modes["new-u"] = lstatT(t, filepath.Join(dir, "new-u")).Mode & 07777
		return modes
	}
	want := run(t, t.TempDir())
	t.Logf("ext4: %v", want)
	// With --passthrough the kernel writes these files (born in the
	// upper) without asking cowfs; with the writeback cache it writes
	// back later, as root.
	for _, v := range []struct {
		name string
		o    Options
	}{{"default", Options{}}, {"passthrough", Options{Passthrough: true}}, {"writeback", Options{WritebackCache: true}}} {
		t.Run(v.name, func(t *testing.T) {
			tm := mountT(t, "", v.o)
			got := run(t, tm.Dir)
			for name := range want {
				if got[name] != want[name] {
					t.Errorf("%s: mode %o after the operation; ext4 gives %o", name, got[name], want[name])
				}
			}
		})
	}
}
