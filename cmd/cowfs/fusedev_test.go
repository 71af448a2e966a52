package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A user who may not open /dev/fuse is told so, with what to do, instead
// of "fusermount exited with code 256" and the cause only in mount.log.
func TestMountWithoutFuseAccess(t *testing.T) {
	if st, err := os.Stat("/dev/fuse"); err != nil || st.Mode().Perm()&0o006 == 0o006 {
		t.Skip("/dev/fuse is missing or open to every user here")
	}
	const nobody = 65534
	// A tree the unprivileged user can reach: t.TempDir's parents are
	// private to root.
	base, err := os.MkdirTemp("", "cowfs-nobody")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	unmountOnCleanup(t, filepath.Join(base, "mnt"))
	for _, d := range []string{"lower", "mnt"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	userBin := filepath.Join(base, "cowfs")
	if err := os.WriteFile(userBin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{base, filepath.Join(base, "lower"), filepath.Join(base, "mnt")} {
		if err := os.Chown(p, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, userBin, "--state", filepath.Join(base, "state"), "mount", filepath.Join(base, "mnt"), "--lower", filepath.Join(base, "lower"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("mounted without access to /dev/fuse: %s", out)
	}
	if s := string(out); !strings.Contains(s, "/dev/fuse") || !strings.Contains(s, "permission denied") || strings.Contains(s, "exited with code") {
		t.Errorf("mount without access to /dev/fuse: %v: %q", err, s)
	}
	if mounted(t, filepath.Join(base, "mnt")) {
		t.Error("mounted")
	}
}
