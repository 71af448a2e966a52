package fs

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// userNSEnv marks a test binary that runInUserNS started inside a user
// namespace.
const userNSEnv = "COWFS_TEST_USERNS"

// inUserNS reports whether this test binary is the one runInUserNS
// started.
func inUserNS() bool { return os.Getenv(userNSEnv) == "1" }

var userNSCheck struct {
	once sync.Once
	err  error
}

// runInUserNS runs the calling test again, alone, in a new user and mount
// namespace (see userNSAttr), where root has no capability over the host:
// what rootless podman, Docker with userns-remap and Kubernetes'
// hostUsers: false give a mount. env is added to the child's environment.
// The test fails if the child does, or if it cannot be started.
func runInUserNS(t *testing.T, env ...string) {
	t.Helper()
	runTestsInUserNS(t, []string{t.Name()}, "", env...)
}

// userNSIDs is how many user and group ids a test's user namespace maps,
// from 0 up, each to the same id outside: as many as rootless podman and
// Kubernetes' hostUsers: false give a container, so that a chown to
// another owner works there as it does in one. Root inside still has no
// capability over the host: trusted.* xattrs stay refused.
const userNSIDs = 65536

// userNSAttr starts a process in a new user and mount namespace, as
// unshare -Urm does, but with userNSIDs ids mapped instead of root's
// alone. The new mount namespace is less privileged than the one it is
// copied from, so nothing mounted in it propagates out.
func userNSAttr() *syscall.SysProcAttr {
	ids := []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: userNSIDs}}
	return &syscall.SysProcAttr{
		Cloneflags:                 syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings:                ids,
		GidMappings:                ids,
		GidMappingsEnableSetgroups: true,
	}
}

// runTestsInUserNS runs the top-level tests named, less those skip
// matches (go test -skip), in a new user and mount namespace, as
// runInUserNS does.
func runTestsInUserNS(t *testing.T, tests []string, skip string, env ...string) {
	t.Helper()
	userNSCheck.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "true")
		cmd.SysProcAttr = userNSAttr()
		out, err := cmd.CombinedOutput()
		if err != nil {
			clone, _ := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone")
			max, _ := os.ReadFile("/proc/sys/user/max_user_namespaces")
			userNSCheck.err = errors.New("cannot make a user namespace (true in a new user and mount namespace: " + err.Error() + ": " +
				strings.TrimSpace(string(out)) + "); kernel.unprivileged_userns_clone=" + strings.TrimSpace(string(clone)) +
				", user.max_user_namespaces=" + strings.TrimSpace(string(max)))
		}
	})
	if userNSCheck.err != nil {
		t.Fatal(userNSCheck.err)
	}
	timeout := 5 * time.Minute
	if d, ok := t.Deadline(); ok && time.Until(d)-10*time.Second < timeout {
		timeout = time.Until(d) - 10*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := []string{"-test.run", "^(" + strings.Join(tests, "|") + ")$",
		"-test.count=1", "-test.v", "-test.timeout=" + timeout.String()}
	if skip != "" {
		args = append(args, "-test.skip", skip)
	}
	if testing.Short() {
		// The child runs its tests as this binary runs its own: what
		// they leave out under -short, the full suite runs in both.
		args = append(args, "-test.short")
	}
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.SysProcAttr = userNSAttr()
	cmd.Env = append(append(os.Environ(), userNSEnv+"=1"), env...)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in a user namespace: %v\n%s", err, out)
	}
	for _, name := range tests {
		if !bytes.Contains(out, []byte("--- PASS: "+name+" ")) {
			t.Fatalf("in a user namespace: %s did not run:\n%s", name, out)
		}
	}
}

// The overlay, snapshot and restore tests run in a user namespace too,
// every case of them.
func TestUserNSOverlayTests(t *testing.T) {
	runTestsInUserNS(t, []string{"TestOverlay", "TestRootXattrs",
		"TestSnapshotAfterHalfGC", "TestSnapshotsUnderGC", "TestSnapshotFetchesWhatGoesMissing", "TestSnapshotHardLinks"}, "")
}

// checkUserNSChild fails unless the test runs where trusted.* xattrs are
// refused, which is what the namespace tests are about.
func checkUserNSChild(t *testing.T) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "probe")
	writeT(t, p, nil)
	if err := unix.Setxattr(p, "trusted.cowfs-test", []byte("x"), 0); !errors.Is(err, unix.EPERM) {
		t.Fatalf("setxattr trusted.* inside the user namespace: %v, want EPERM", err)
	}
}

// In a user namespace, root may not set trusted.* xattrs; the mount
// keeps its identities in user.* instead, and writes, renames, removals,
// snapshots and restores work as they do on the host. Before, an append
// to a lower file or a rename of a lower directory failed with EPERM.
func TestUserNSOverlaySnapshotRestore(t *testing.T) {
	if !inUserNS() {
		runInUserNS(t)
		return
	}
	checkUserNSChild(t)
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	writeT(t, filepath.Join(lower, "db/log"), []byte("record 1\n"))
	writeT(t, filepath.Join(lower, "spider.py"), []byte("print(1)\n"))
	writeT(t, filepath.Join(lower, "gone"), []byte("removed in the mount\n"))
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	dir := filepath.Join(base, "mnt")
	o := testSpec{Lower: lower, State: state}
	must("mkdir", os.Mkdir(dir, 0o755))
	tm := &testMount{Dir: dir}
	t.Cleanup(func() { tm.unmount(t) })
	mount := func() {
		t.Helper()
		var err error
		if tm.m, err = newT(t, dir, o); err != nil {
			t.Fatalf("mount: %v", err)
		}
	}
	mount()
	p := func(n string) string { return filepath.Join(dir, n) }

	f, err := os.OpenFile(p("db/log"), os.O_APPEND|os.O_WRONLY, 0)
	must("open a lower file to append", err)
	_, err = f.WriteString("record 2\n")
	f.Close()
	must("append", err)
	must("rename a lower directory", os.Rename(p("db"), p("db2")))
	must("chmod", os.Chmod(p("spider.py"), 0o600))
	must("unlink", os.Remove(p("gone")))
	must("mkdir", os.Mkdir(p("new"), 0o755))
	writeT(t, p("new/file"), []byte("new\n"))
	must("setxattr", unix.Setxattr(p("spider.py"), "user.spider", []byte("v"), 0))

	// The identity attribute is hidden and cannot be set, under the
	// namespace in use.
	xs, err := listxattrT(p("db2/log"))
	must("listxattr", err)
	if strings.Contains(xs, "cowfs") {
		t.Errorf("xattrs of a copied-up file show cowfs's own: %q", xs)
	}
	if err := unix.Setxattr(p("spider.py"), "user.cowfs.id", make([]byte, 16), 0); err == nil {
		t.Error("setxattr user.cowfs.id through the mount succeeded")
	}

	want := func(dir string) {
		t.Helper()
		q := func(n string) string { return filepath.Join(dir, n) }
		if b, err := os.ReadFile(q("db2/log")); err != nil || string(b) != "record 1\nrecord 2\n" {
			t.Errorf("%s: db2/log: %q, %v", dir, b, err)
		}
		for _, gone := range []string{"db", "gone"} {
			if _, err := os.Lstat(q(gone)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s: %s: %v, want it gone", dir, gone, err)
			}
		}
		if st, err := os.Stat(q("spider.py")); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: spider.py: %v, %v", dir, st, err)
		}
		if b, err := os.ReadFile(q("new/file")); err != nil || string(b) != "new\n" {
			t.Errorf("%s: new/file: %q, %v", dir, b, err)
		}
		if xs, err := listxattrT(q("spider.py")); err != nil || strings.TrimRight(xs, "\x00") != "user.spider" {
			t.Errorf("%s: xattrs of spider.py: %q, %v", dir, xs, err)
		}
	}
	want(dir)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := tm.m.Snapshot(ctx, "ckpt"); err != nil {
		t.Fatalf("snapshot: %v", err)
	}

	// A later mount of the same upper agrees on the namespace.
	tm.unmount(t)
	mount()
	want(dir)
	f, err = os.OpenFile(p("db2/log"), os.O_APPEND|os.O_WRONLY, 0)
	must("open after the remount", err)
	_, err = f.WriteString("record 3\n")
	f.Close()
	must("append after the remount", err)

	r := mountState(t, filepath.Join(base, "restore"), testSpec{Snapshot: "ckpt", State: state})
	want(r.Dir)
	rp := func(n string) string { return filepath.Join(r.Dir, n) }
	f, err = os.OpenFile(rp("spider.py"), os.O_APPEND|os.O_WRONLY, 0)
	must("open a restored file", err)
	_, err = f.WriteString("print(2)\n")
	f.Close()
	must("append to a restored file", err)
	must("rename a restored directory", os.Rename(rp("db2"), rp("db3")))
	if b, err := os.ReadFile(rp("spider.py")); err != nil || string(b) != "print(1)\nprint(2)\n" {
		t.Errorf("restored spider.py after an append: %q, %v", b, err)
	}
}

// userNSBaseEnv passes a directory of the parent test to the one it runs
// in a user namespace.
const userNSBaseEnv = "COWFS_TEST_USERNS_BASE"

// xattrRecordOf reads the record of the xattr namespace kept in work.
func xattrRecordOf(t *testing.T, work string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(work, "xattrs"))
	if err != nil {
		t.Fatalf("xattr namespace record: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// An upper made inside a user namespace keeps its identities in user.*,
// and a later mount of it by the host's root reads them there rather
// than in trusted.*: a renamed lower directory stays renamed.
func TestUserNSUpperMountedOnHost(t *testing.T) {
	if inUserNS() {
		checkUserNSChild(t)
		base := os.Getenv(userNSBaseEnv)
		tm := mountT(t, filepath.Join(base, "lower"), Options{Upper: filepath.Join(base, "upper"), Work: filepath.Join(base, "work")})
		f, err := os.OpenFile(filepath.Join(tm.Dir, "db/log"), os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteString("record 2\n")
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(tm.Dir, "db"), filepath.Join(tm.Dir, "db2")); err != nil {
			t.Fatal(err)
		}
		return
	}
	base := t.TempDir()
	lower := filepath.Join(base, "lower")
	writeT(t, filepath.Join(lower, "db/log"), []byte("record 1\n"))
	runInUserNS(t, userNSBaseEnv+"="+base)

	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	if got := xattrRecordOf(t, work); got != "user.cowfs." {
		t.Errorf("record of an upper made in a user namespace: %q", got)
	}
	tm := mountT(t, lower, Options{Upper: upper, Work: work})
	if b, err := os.ReadFile(filepath.Join(tm.Dir, "db2/log")); err != nil || string(b) != "record 1\nrecord 2\n" {
		t.Errorf("db2/log on the host: %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(tm.Dir, "db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("db on the host: %v, want it renamed away", err)
	}
	if err := os.WriteFile(filepath.Join(tm.Dir, "db2/more"), []byte("x"), 0o644); err != nil {
		t.Errorf("write on the host: %v", err)
	}
	tm.unmount(t)
	if got := xattrRecordOf(t, work); got != "user.cowfs." {
		t.Errorf("record after a mount on the host: %q", got)
	}

	// Without the record (an upper made before there was one), the
	// identities found in user.* decide, not the rule that root uses
	// trusted.*.
	if err := os.Remove(filepath.Join(work, "xattrs")); err != nil {
		t.Fatal(err)
	}
	tm.remount(t)
	if _, err := os.Lstat(filepath.Join(tm.Dir, "db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("db on the host without the record: %v, want it renamed away", err)
	}
	tm.unmount(t)
	if got := xattrRecordOf(t, work); got != "user.cowfs." {
		t.Errorf("record inferred from the identities: %q", got)
	}
}

// An upper whose identities are in trusted.* cannot be mounted inside a
// user namespace, where they are unreadable: the mount is refused with
// the reason, and nothing changes, with the record or without it (an
// upper made before there was one).
func TestUserNSRefusesTrustedUpper(t *testing.T) {
	if inUserNS() {
		checkUserNSChild(t)
		base := os.Getenv(userNSBaseEnv)
		o := testSpec{Lower: filepath.Join(base, "lower"), Upper: filepath.Join(base, "upper"), Work: filepath.Join(base, "work")}
		for _, record := range []bool{true, false} {
			if !record {
				if err := os.Remove(filepath.Join(o.Work, "xattrs")); err != nil {
					t.Fatal(err)
				}
			}
			dir := filepath.Join(t.TempDir(), "mnt")
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			m, err := newT(t, dir, o)
			if err == nil {
				m.Unmount()
				t.Fatalf("record %v: a trusted.* upper mounted in a user namespace", record)
			}
			if msg := err.Error(); !strings.Contains(msg, "trusted.*") || !strings.Contains(msg, "user namespace") {
				t.Errorf("record %v: refused with %q, which does not say why", record, msg)
			}
			if _, err := os.Stat(filepath.Join(o.Work, "xattrs")); record != (err == nil) {
				t.Errorf("record %v: the refused mount changed the record: %v", record, err)
			}
		}
		return
	}
	base := t.TempDir()
	lower := filepath.Join(base, "lower")
	writeT(t, filepath.Join(lower, "f"), []byte("lower\n"))
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	tm := mountT(t, lower, Options{Upper: upper, Work: work})
	if err := os.WriteFile(filepath.Join(tm.Dir, "f"), []byte("upper\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tm.unmount(t)
	if got := xattrRecordOf(t, work); got != "trusted.cowfs." {
		t.Fatalf("record of an upper made by root: %q", got)
	}
	runInUserNS(t, userNSBaseEnv+"="+base)
}

// An upper without a record keeps the namespace its identities are in,
// and gets the record; a record that names neither namespace is refused.
func TestXattrRecordOfOlderUpper(t *testing.T) {
	lower := t.TempDir()
	writeT(t, filepath.Join(lower, "db/log"), []byte("record 1\n"))
	tm := mountT(t, lower, Options{})
	if err := os.Rename(filepath.Join(tm.Dir, "db"), filepath.Join(tm.Dir, "db2")); err != nil {
		t.Fatal(err)
	}
	tm.unmount(t)
	rec := filepath.Join(tm.Work, "xattrs")
	if err := os.Remove(rec); err != nil {
		t.Fatal(err)
	}
	tm.remount(t)
	if _, err := os.Lstat(filepath.Join(tm.Dir, "db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("db after a remount without the record: %v, want it renamed away", err)
	}
	tm.unmount(t)
	if got := xattrRecordOf(t, tm.Work); got != "trusted.cowfs." {
		t.Errorf("record written for an older upper: %q", got)
	}

	if err := os.WriteFile(rec, []byte("security.cowfs.\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := newT(t, tm.Dir, testSpec{Lower: tm.Lower, Upper: tm.Upper, Work: tm.Work})
	if err == nil {
		m.Unmount()
		t.Fatal("mounted with a record naming neither namespace")
	}
	if !strings.Contains(err.Error(), "xattrs") || !strings.Contains(err.Error(), "security.cowfs.") {
		t.Errorf("refused with %q, which does not name the record", err)
	}
}

// In a user namespace, lower symlinks and fifos copy up as on the host:
// chown -h, touch -h, chmod, rename, link and unlink work, each keeps its
// inode number, and all of it survives a remount, a snapshot and a
// restore, where they copy up again. Before, each of those copy-ups failed
// with EPERM: the kernel keeps user.* xattrs off symlinks and fifos.
func TestUserNSSymlinkFifo(t *testing.T) {
	if !inUserNS() {
		runInUserNS(t)
		return
	}
	checkUserNSChild(t)
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := symlinkFifoLower(t, filepath.Join(base, "lower"))
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	dir := filepath.Join(base, "mnt")
	must("mkdir", os.Mkdir(dir, 0o755))
	tm := &testMount{Dir: dir}
	t.Cleanup(func() { tm.unmount(t) })
	o := testSpec{Lower: lower, State: state}
	mount := func() {
		t.Helper()
		var err error
		if tm.m, err = newT(t, dir, o); err != nil {
			t.Fatalf("mount: %v", err)
		}
	}
	mount()
	p := func(n string) string { return filepath.Join(dir, n) }
	ino := map[string]uint64{}
	for _, n := range []string{"link", "touched", "dir/moved", "fifo"} {
		ino[n] = lstatT(t, p(n)).Ino
	}
	mtime := unix.Timespec{Sec: 1234567890}

	ops := func(p func(string) string) {
		t.Helper()
		must("chown -h", os.Lchown(p("link"), 1000, 1001))
		must("touch -h", unix.UtimesNanoAt(unix.AT_FDCWD, p("touched"), []unix.Timespec{mtime, mtime}, unix.AT_SYMLINK_NOFOLLOW))
		must("chmod a fifo", os.Chmod(p("fifo"), 0o600))
		must("rename a symlink", os.Rename(p("dir/moved"), p("moved")))
		must("link a symlink", unix.Linkat(unix.AT_FDCWD, p("link"), unix.AT_FDCWD, p("link2"), 0))
		must("touch -h before unlink", unix.UtimesNanoAt(unix.AT_FDCWD, p("gone"), []unix.Timespec{mtime, mtime}, unix.AT_SYMLINK_NOFOLLOW))
		must("unlink a symlink", os.Remove(p("gone")))
		must("chmod a fifo before unlink", os.Chmod(p("gonefifo"), 0o600))
		must("unlink a fifo", os.Remove(p("gonefifo")))
	}
	want := func(where string, p func(string) string, inos bool) {
		t.Helper()
		for n, target := range map[string]string{"link": "spider.py", "link2": "spider.py", "touched": "x", "moved": "../spider.py"} {
			if got, err := os.Readlink(p(n)); err != nil || got != target {
				t.Errorf("%s: readlink %s = %q, %v; want %q", where, n, got, err, target)
			}
		}
		if st := lstatT(t, p("link")); st.Uid != 1000 || st.Gid != 1001 || st.Nlink != 2 {
			t.Errorf("%s: link owner %d:%d, %d links; want 1000:1001, 2", where, st.Uid, st.Gid, st.Nlink)
		}
		if a, b := lstatT(t, p("link")), lstatT(t, p("link2")); a.Ino != b.Ino {
			t.Errorf("%s: link and link2 are inodes %d and %d, want one", where, a.Ino, b.Ino)
		}
		if st := lstatT(t, p("touched")); st.Mtim != mtime {
			t.Errorf("%s: touched mtime %v, want %v", where, st.Mtim, mtime)
		}
		if st := lstatT(t, p("fifo")); st.Mode != unix.S_IFIFO|0o600 {
			t.Errorf("%s: fifo mode %o", where, st.Mode)
		}
		pipeThrough(t, p("fifo"))
		for _, n := range []string{"gone", "gonefifo", "dir/moved"} {
			wantGone(t, p(n))
		}
		if !inos {
			return
		}
		for n, i := range map[string]uint64{"link": ino["link"], "link2": ino["link"], "touched": ino["touched"], "moved": ino["dir/moved"], "fifo": ino["fifo"]} {
			if got := lstatT(t, p(n)).Ino; got != i {
				t.Errorf("%s: %s is inode %d, was %d in the lower", where, n, got, i)
			}
		}
	}
	ops(p)
	want("mount", p, true)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := tm.m.Snapshot(ctx, "ckpt"); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	tm.unmount(t)
	mount()
	want("remount", p, true)

	// A restore shows the snapshot, and its lower symlinks and fifos
	// copy up into the restore's own user.* upper.
	r := mountState(t, filepath.Join(base, "restore"), testSpec{Snapshot: "ckpt", State: state})
	rp := func(n string) string { return filepath.Join(r.Dir, n) }
	want("restore", rp, false)
	must("rename a restored symlink", os.Rename(rp("moved"), rp("moved2")))
	must("touch -h a restored symlink", unix.UtimesNanoAt(unix.AT_FDCWD, rp("moved2"), []unix.Timespec{{Sec: 1}, {Sec: 1}}, unix.AT_SYMLINK_NOFOLLOW))
	must("chmod a restored fifo", os.Chmod(rp("fifo"), 0o640))
	must("unlink a restored symlink", os.Remove(rp("touched")))
	if got, err := os.Readlink(rp("moved2")); err != nil || got != "../spider.py" {
		t.Errorf("restore: readlink moved2 = %q, %v", got, err)
	}
	if st := lstatT(t, rp("moved2")); st.Mtim.Sec != 1 {
		t.Errorf("restore: moved2 mtime %v after touch -h", st.Mtim)
	}
	if st := lstatT(t, rp("fifo")); st.Mode != unix.S_IFIFO|0o640 {
		t.Errorf("restore: fifo mode %o", st.Mode)
	}
	wantGone(t, rp("touched"))
}

// symlinkFifoLower makes the lower TestUserNSSymlinkFifo copies up from:
// a file, symlinks to it and to nothing, one in a subdirectory, and two
// fifos.
func symlinkFifoLower(t *testing.T, lower string) string {
	t.Helper()
	writeT(t, filepath.Join(lower, "spider.py"), []byte("print(1)\n"))
	for name, target := range map[string]string{"link": "spider.py", "touched": "x", "dir/moved": "../spider.py", "gone": "y"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(lower, name)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(target, filepath.Join(lower, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"fifo", "gonefifo"} {
		if err := unix.Mkfifo(filepath.Join(lower, name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return lower
}
