package fs

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestWriteDropsCaps checks file capabilities through the mount against
// ext4: set, they read back; a write to the file removes them; set again,
// they read back again; a truncate and a chown remove them. cowfs
// remembers that a file has none (node.go) and leaves their removal to
// the upper's filesystem (killpriv.go), so both are checked here.
func TestWriteDropsCaps(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("setting security.capability needs root")
	}
	// A VFS_CAP_REVISION_2 value: cap_net_bind_service, permitted and
	// effective.
	caps := make([]byte, 20)
	binary.LittleEndian.PutUint32(caps[0:], 0x02000001)
	binary.LittleEndian.PutUint32(caps[4:], 1<<unix.CAP_NET_BIND_SERVICE)

	run := func(t *testing.T, dir string) []string {
		t.Helper()
		p := filepath.Join(dir, "tool")
		var got []string
		get := func() {
			buf := make([]byte, 64)
			n, err := unix.Getxattr(p, capsXattr, buf)
			switch {
			case errors.Is(err, unix.ENODATA):
				got = append(got, "none")
			case err != nil:
				t.Fatalf("getxattr: %v", err)
			default:
				got = append(got, string(buf[:n]))
			}
		}
		write := func() {
			f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Write([]byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		write()
		get()
		if err := unix.Setxattr(p, capsXattr, caps, 0); err != nil {
			t.Fatalf("setxattr: %v", err)
		}
		get()
		write()
		get()
		if err := unix.Setxattr(p, capsXattr, caps, 0); err != nil {
			t.Fatalf("setxattr: %v", err)
		}
		get()
		if err := os.Truncate(p, 3); err != nil {
			t.Fatal(err)
		}
		get()
		if err := unix.Setxattr(p, capsXattr, caps, 0); err != nil {
			t.Fatalf("setxattr: %v", err)
		}
		if err := os.Chown(p, 1234, 1234); err != nil {
			t.Fatal(err)
		}
		get()
		return got
	}
	want := run(t, t.TempDir())
	tm := mountT(t, "", Options{})
	got := run(t, tm.Dir)
	if len(got) != len(want) {
		t.Fatalf("got %q, ext4 gives %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("step %d: %q, ext4 gives %q", i, got[i], want[i])
		}
	}
	if want[2] != "none" {
		t.Logf("ext4 kept capabilities across a write: %q", want)
	}
}
