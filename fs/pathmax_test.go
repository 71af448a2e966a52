package fs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// deepNames returns the directory names of a chain whose path, joined
// with a final name of 255 bytes, is PATH_MAX-1 bytes long: the longest
// path a system call takes, as pjdfstest's 03.t cases make.
func deepNames(c byte) (dirs []string, last string) {
	for i := 0; i < 15; i++ {
		dirs = append(dirs, strings.Repeat(string(c), 254)+string(rune('a'+i)))
	}
	return dirs, strings.Repeat("z", 255)
}

// mkdeep makes the directories names under the directory fd root, one
// level at a time (their full path is longer than a system call takes),
// and returns a descriptor of the deepest.
func mkdeep(t *testing.T, root int, names []string) int {
	t.Helper()
	fd, err := unix.Dup(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if err := unix.Mkdirat(fd, n, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			unix.Close(fd)
			t.Fatalf("mkdir %.20s...: %v", n, err)
		}
		next, err := unix.Openat(fd, n, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("open %.20s...: %v", n, err)
		}
		fd = next
	}
	return fd
}

func openDirT(t *testing.T, path string) int {
	t.Helper()
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// TestPathMax works on paths of PATH_MAX-1 bytes inside a mount, in
// directories made through the mount and in ones of the lower, as
// pjdfstest's 03.t cases do: each operation must succeed as on ext4 and
// on kernel overlayfs, though the upper's and the lower's own paths in
// front of such a path make it longer than a system call takes.
func TestPathMax(t *testing.T) {
	// The lower and upper sit a few levels down, so their paths are not
	// short either.
	base := filepath.Join(t.TempDir(), "state", "of", "a", "mount")
	lower := filepath.Join(base, "lower")
	lowerDirs, last := deepNames('l')
	// The operations run in a directory of the mount, as pjdfstest's do in
	// its working directory: their path from the mount's root is longer
	// than PATH_MAX.
	prefix := strings.Repeat("p", 255)
	makeDeepLower(t, lower, append([]string{prefix}, lowerDirs...), last)
	tm := mountT(t, lower, Options{Upper: filepath.Join(base, "upper"), Work: filepath.Join(base, "work")})
	mfd, err := unix.Open(tm.Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	cwd := mkdeep(t, mfd, []string{prefix})
	unix.Close(mfd)

	check := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	// The operations at depth, with a path of PATH_MAX-1 bytes relative
	// to the working directory where it fits in one call, else from the
	// parent's descriptor.
	work := func(where string, dirs []string, lowerFile bool) {
		rel := strings.Join(append(append([]string(nil), dirs...), last), "/")
		if len(rel) != unix.PathMax-1 {
			t.Fatalf("path of %d bytes", len(rel))
		}
		d := mkdeep(t, cwd, dirs)
		defer unix.Close(d)
		if !lowerFile {
			fd, err := unix.Openat(cwd, rel, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			check(where+": create", err)
			if err == nil {
				unix.Write(fd, []byte("upper data"))
				unix.Close(fd)
			}
		}
		check(where+": chmod", unix.Fchmodat(cwd, rel, 0o600, 0))
		check(where+": chown", unix.Fchownat(cwd, rel, 65534, 65534, unix.AT_SYMLINK_NOFOLLOW))
		var st unix.Stat_t
		if err := unix.Fstatat(cwd, rel, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			t.Errorf("%s: stat: %v", where, err)
		} else if st.Mode&0o7777 != 0o600 || st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s: after chmod and chown: mode %o uid %d gid %d", where, st.Mode, st.Uid, st.Gid)
		}
		fd, err := unix.Openat(cwd, rel, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		check(where+": open for writing", err)
		if err == nil {
			check(where+": ftruncate", unix.Ftruncate(fd, 3))
			unix.Close(fd)
		}
		check(where+": truncate", unix.Truncate(fdPathT(d, last), 2))
		if err := unix.Fstatat(cwd, rel, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil && st.Size != 2 {
			t.Errorf("%s: size %d after truncate to 2", where, st.Size)
		}
		check(where+": link", unix.Linkat(d, last, d, "hard", 0))
		check(where+": rename", unix.Renameat(cwd, rel, d, "renamed"))
		check(where+": rename back", unix.Renameat(d, "renamed", cwd, rel))
		check(where+": unlink", unix.Unlinkat(cwd, rel, 0))
		check(where+": unlink link", unix.Unlinkat(d, "hard", 0))
		check(where+": mkdir", unix.Mkdirat(cwd, rel, 0o755))
		check(where+": chmod dir", unix.Fchmodat(cwd, rel, 0o700, 0))
		check(where+": rmdir", unix.Unlinkat(cwd, rel, unix.AT_REMOVEDIR))
		check(where+": mkfifo", unix.Mkfifoat(cwd, rel, 0o644))
		check(where+": unlink fifo", unix.Unlinkat(cwd, rel, 0))
		check(where+": mknod", unix.Mknodat(cwd, rel, unix.S_IFCHR|0o644, int(unix.Mkdev(1, 3))))
		check(where+": unlink node", unix.Unlinkat(cwd, rel, 0))
		check(where+": symlink", unix.Symlinkat("test", cwd, rel))
		var buf [16]byte
		if n, err := unix.Readlinkat(cwd, rel, buf[:]); err != nil {
			t.Errorf("%s: readlink: %v", where, err)
		} else if string(buf[:n]) != "test" {
			t.Errorf("%s: readlink: %q", where, buf[:n])
		}
		check(where+": unlink symlink", unix.Unlinkat(cwd, rel, 0))
		if lowerFile {
			check(where+": unlink lower file", unix.Unlinkat(d, "gone", 0))
			check(where+": rename lower file", unix.Renameat(d, "moved", d, "moved2"))
			check(where+": link lower file", unix.Linkat(d, "linked", d, "linked2", 0))
			check(where+": rmdir lower dir", unix.Unlinkat(d, "dir", unix.AT_REMOVEDIR))
		}
	}
	work("upper", func() []string { ds, _ := deepNames('u'); return ds }(), false)
	work("lower", lowerDirs, true)
	unix.Close(cwd)
	t.Run("remount", func(t *testing.T) {
		tm.remount(t)
		mfd := openDirT(t, tm.Dir)
		d := mkdeep(t, mfd, append([]string{prefix}, lowerDirs...))
		defer unix.Close(d)
		for n, want := range map[string]error{last: unix.ENOENT, "gone": unix.ENOENT, "moved": unix.ENOENT, "moved2": nil, "linked2": nil, "dir": unix.ENOENT} {
			var st unix.Stat_t
			if err := unix.Fstatat(d, n, &st, unix.AT_SYMLINK_NOFOLLOW); !errors.Is(err, want) && err != want {
				t.Errorf("after remount: stat %.20s: %v, want %v", n, err, want)
			}
		}
	})
}

// makeDeepLower makes the directories dirs beneath lower, step by step
// since their path is longer than PATH_MAX, and in the deepest the files
// last, gone, moved and linked, and the directory dir.
func makeDeepLower(t *testing.T, lower string, dirs []string, last string) {
	t.Helper()
	if err := os.MkdirAll(lower, 0o755); err != nil {
		t.Fatal(err)
	}
	lfd := openDirT(t, lower)
	d := mkdeep(t, lfd, dirs)
	defer unix.Close(d)
	for _, n := range []string{last, "gone", "moved", "linked"} {
		fd, err := unix.Openat(d, n, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatalf("lower file: %v", err)
		}
		unix.Write(fd, []byte("lower data"))
		unix.Close(fd)
	}
	if err := unix.Mkdirat(d, "dir", 0o755); err != nil {
		t.Fatal(err)
	}
}

// fdPathT names dirfd's name through procfs, for the calls that take a
// path only.
func fdPathT(dirfd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
}

// TestFlushWritersDeep: a file open for writing deeper in the mount than
// PATH_MAX is flushed before a snapshot like any other.
func TestFlushWritersDeep(t *testing.T) {
	tm := mountT(t, "", Options{WritebackCache: true})
	mfd, err := unix.Open(tm.Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	dirs, last := deepNames('w')
	d := mkdeep(t, mfd, append([]string{strings.Repeat("p", 255)}, dirs...))
	unix.Close(mfd)
	defer unix.Close(d)
	fd, err := unix.Openat(d, last, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if _, err := unix.Write(fd, []byte("a line\n")); err != nil {
		t.Fatal(err)
	}
	if n := tm.m.flushWriters(); n != 1 {
		t.Errorf("flushWriters flushed %d files, want the 1 open for writing", n)
	}
}

// TestSnapshotDeep: a snapshot holds, and a restore shows, files of the
// lower and of the upper deeper than PATH_MAX.
func TestSnapshotDeep(t *testing.T) {
	base := filepath.Join(t.TempDir(), "state", "of", "a", "mount")
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	if err := os.MkdirAll(lower, 0o755); err != nil {
		t.Fatal(err)
	}
	dirs, last := deepNames('s')
	dirs = append([]string{strings.Repeat("p", 255)}, dirs...)
	put := func(root, name, data string) {
		t.Helper()
		rfd := openDirT(t, root)
		d := mkdeep(t, rfd, dirs)
		defer unix.Close(d)
		fd, err := unix.Openat(d, name, unix.O_CREAT|unix.O_WRONLY|unix.O_TRUNC|unix.O_CLOEXEC, 0o644)
		if err != nil {
			t.Fatalf("create %.20s: %v", name, err)
		}
		defer unix.Close(fd)
		if _, err := unix.Write(fd, []byte(data)); err != nil {
			t.Fatal(err)
		}
	}
	get := func(root, name string) string {
		t.Helper()
		rfd := openDirT(t, root)
		d := mkdeep(t, rfd, dirs)
		defer unix.Close(d)
		fd, err := unix.Openat(d, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Errorf("open %.20s: %v", name, err)
			return ""
		}
		defer unix.Close(fd)
		var buf [64]byte
		n, _ := unix.Read(fd, buf[:])
		return string(buf[:max(n, 0)])
	}
	put(lower, last, "from the lower")
	put(lower, "kept", "kept from the lower")
	m := mountState(t, filepath.Join(base, "mnt"), testSpec{Lower: lower, State: state})
	put(m.Dir, last, "from the upper")
	put(m.Dir, "new", "new in the upper")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := m.Snapshot(ctx, "deep"); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	r := mountState(t, filepath.Join(base, "r"), testSpec{Snapshot: "deep", State: state})
	for name, want := range map[string]string{last: "from the upper", "kept": "kept from the lower", "new": "new in the upper"} {
		if got := get(r.Dir, name); got != want {
			t.Errorf("restored %.20s: %q, want %q", name, got, want)
		}
	}
}
