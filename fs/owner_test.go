package fs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ownerHelperEnv, when set, makes TestOwnerHelper the process that
// creates: as whichever user the parent test started it as.
const ownerHelperEnv = "COWFS_OWNER_HELPER_DIR"

// TestOwnerHelper is not a test: TestCreateOwner runs the test binary as
// another user with ownerHelperEnv set, and this makes one of each kind of
// inode with the exact modes asked for, with umask 0.
func TestOwnerHelper(t *testing.T) {
	dir := os.Getenv(ownerHelperEnv)
	if dir == "" {
		t.Skip("helper process for TestCreateOwner")
	}
	unix.Umask(0)
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	for name, mode := range map[string]uint32{"file": 0o666, "setid": 0o6755, "private": 0o600} {
		fd, err := unix.Open(p(name), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, mode)
		must(err)
		unix.Close(fd)
	}
	must(unix.Mkdir(p("dir"), 0o777))
	must(unix.Mkdir(p("sticky"), 0o1770))
	must(unix.Symlink("target", p("link")))
	must(unix.Mkfifo(p("fifo"), 0o666))
}

// TestCreateOwner checks the owner and mode of what callers create
// through the mount against what ext4 itself gives the same calls: as root
// and as another user, in a plain directory and in a set-group-ID one
// owned by a third group, with set-ID bits and with modes the mount
// process's own umask (022, as the test binary's) would mask. cowfs makes
// every inode as itself on the caller's behalf, so each of these is its
// doing, not the kernel's.
func TestCreateOwner(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as other users")
	}
	if os.Getenv(ownerHelperEnv) != "" {
		t.Skip("in the helper")
	}
	helper := asUser(t)
	as := func(t *testing.T, dir string, uid, gid uint32) {
		t.Helper()
		helper(t, "TestOwnerHelper", ownerHelperEnv, dir, uid, gid)
	}
	who := map[string][2]uint32{"root": {0, 0}, "user": {1234, 5678}}
	// prepare makes, as root, the directories the callers work in:
	// plain/WHO and sgid/WHO (group 777, set-group-ID), open to all.
	prepare := func(t *testing.T, root string) {
		t.Helper()
		openUp(root)
		for _, d := range []string{"plain", "sgid"} {
			for w := range who {
				p := filepath.Join(root, d, w)
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
				mode := uint32(0o777)
				if d == "sgid" {
					if err := os.Chown(p, 0, 777); err != nil {
						t.Fatal(err)
					}
					mode |= unix.S_ISGID
				}
				if err := unix.Chmod(p, mode); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	run := func(t *testing.T, root string) {
		for _, d := range []string{"plain", "sgid"} {
			for w, id := range who {
				as(t, filepath.Join(root, d, w), id[0], id[1])
			}
		}
	}
	native := t.TempDir()
	prepare(t, native)
	run(t, native)

	tm := mountT(t, "", Options{})
	prepare(t, tm.Dir)
	run(t, tm.Dir)

	for _, d := range []string{"plain", "sgid"} {
		for w := range who {
			for _, name := range []string{"file", "setid", "private", "dir", "sticky", "link", "fifo"} {
				rel := filepath.Join(d, w, name)
				want := lstatT(t, filepath.Join(native, rel))
				got := lstatT(t, filepath.Join(tm.Dir, rel))
				if got.Uid != want.Uid || got.Gid != want.Gid || got.Mode != want.Mode {
					t.Errorf("%s: %d:%d mode %o; ext4 gives %d:%d mode %o",
						rel, got.Uid, got.Gid, got.Mode, want.Uid, want.Gid, want.Mode)
				}
			}
		}
	}
}

// openUp lets every user through dir and its parents up to the
// temporary directory: the test's temporary directories are root's alone.
func openUp(dir string) {
	for p := dir; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
}

// asUser returns a function that runs test helper (a Test function that
// acts only when env is set) as uid:gid, with env set to dir, from a copy
// of the test binary other users may run. Each run has a deadline.
func asUser(t *testing.T) func(t *testing.T, helper, env, dir string, uid, gid uint32) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "helper")
	b, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	openUp(filepath.Dir(bin))
	return func(t *testing.T, helper, env, dir string, uid, gid uint32) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "-test.run=^"+helper+"$", "-test.count=1")
		cmd.Env = append(os.Environ(), env+"="+dir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s as %d:%d in %s: %v: %s", helper, uid, gid, dir, err, out)
		}
	}
}
