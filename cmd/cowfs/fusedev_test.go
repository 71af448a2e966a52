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

// --uid, --gid and --umask choose the owner and mode bits every file is
// shown with; --allow-other=false keeps other users out even for root's
// mount. Bad values are refused before anything is mounted.
func TestMountOwnerFlags(t *testing.T) {
	e := newEnv(t)
	for _, bad := range [][]string{{"--umask", "999"}, {"--umask", "01000"}, {"--uid", "-1"}} {
		args := append([]string{"--state", e.state, "mount", e.mnt, "--lower", e.lower}, bad...)
		if out, code := run(t, args...); code == 0 || !strings.Contains(out, bad[0]) || mounted(t, e.mnt) {
			t.Errorf("mount %v: exit %d, %q", bad, code, out)
		}
	}
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower, "--uid", "1234", "--gid", "5678", "--umask", "027", "--allow-other=false"); code != 0 {
		t.Fatalf("mount: exit %d: %s", code, out)
	}
	if err := os.WriteFile(filepath.Join(e.mnt, "new"), []byte("n"), 0o666); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(e.mnt)
	if err != nil || len(ents) < 3 {
		t.Fatalf("readdir: %v %v", ents, err)
	}
	for name, want := range map[string]os.FileMode{"run.sh": 0o750, "new": 0o640, "crawlab_project": os.ModeDir | 0o750} {
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(e.mnt, name), &st); err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Lstat(filepath.Join(e.mnt, name))
		if st.Uid != 1234 || st.Gid != 5678 || fi.Mode() != want {
			t.Errorf("%s shown as %d:%d %v, want 1234:5678 %v", name, st.Uid, st.Gid, fi.Mode(), want)
		}
	}
	if opts := mountOptions(t, e.mnt); strings.Contains(opts, "allow_other") {
		t.Errorf("--allow-other=false, mounted with %s", opts)
	}
	unmountCLI(t, e.mnt)
	if out, code := run(t, "--state", e.state, "mount", e.mnt, "--lower", e.lower); code != 0 {
		t.Fatalf("mount: exit %d: %s", code, out)
	}
	if opts := mountOptions(t, e.mnt); !strings.Contains(opts, "allow_other") {
		t.Errorf("root's mount without allow_other: %s", opts)
	}
	unmountCLI(t, e.mnt)
}

// mountOptions returns the options /proc/mounts shows for mnt.
func mountOptions(t *testing.T, mnt string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 3 && f[1] == mnt {
			return f[3]
		}
	}
	t.Fatalf("%s is not in /proc/mounts", mnt)
	return ""
}
