package cow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Lower is a read-only layer. Paths are relative ("" is the root, "a/b" a
// descendant) and are only ever built from names the layer itself returned,
// so a layer need not accept "..". A lower never changes while a mount uses
// it; that is what lets the kernel cache its entries without limit.
type Lower interface {
	// Lstat describes the entry at path without following a final symlink.
	// St.Ino must be stable for the life of the layer and unique within it.
	Lstat(path string) (unix.Stat_t, error)
	// ReadDir lists a directory, without "." and "..".
	ReadDir(path string) ([]DirEntry, error)
	Readlink(path string) (string, error)
	// Open opens a regular file for reading.
	Open(path string) (LowerFile, error)
	Listxattr(path string) ([]string, error)
	Getxattr(path, name string) ([]byte, error)
}

// LowerFile is an open lower file.
type LowerFile interface {
	io.ReaderAt
	io.Closer
}

// ContextReaderAt is a LowerFile whose reads wait on something that can
// take long (a master across the network): ReadAtContext gives up, with an
// error, once ctx is done.
type ContextReaderAt interface {
	ReadAtContext(ctx context.Context, p []byte, off int64) (int, error)
}

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name string
	Ino  uint64
	Mode uint32 // file type bits only (S_IFMT)
}

// DirLower is a lower layer backed by a local directory. Every access is made
// relative to a descriptor of the root, and opens resolve beneath it without
// following symlinks, so a symlink in the lower can never lead cowfs itself
// outside the directory.
type DirLower struct {
	root int
	path string
	// strict resolves the parent of every path beneath the root with no
	// symlinks, also for lstat and readlink. A mount's lower does not
	// change while mounted, and there the plain *at calls are enough; a
	// tree that is served while others change it (cowfs serve) could have
	// a directory swapped for a symlink between a listing and an lstat.
	strict bool
}

// OpenDirLowerStrict opens dir as a layer that may change while it is
// read: no path, however it is raced, resolves outside dir.
func OpenDirLowerStrict(dir string) (*DirLower, error) {
	l, err := OpenDirLower(dir)
	if err == nil {
		l.strict = true
	}
	return l, err
}

// OpenDirLower opens dir as a lower layer.
func OpenDirLower(dir string) (*DirLower, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open lower %s: %w", dir, err)
	}
	return &DirLower{root: fd, path: dir}, nil
}

// Close releases the root descriptor.
func (l *DirLower) Close() error { return unix.Close(l.root) }

// Path returns the directory the layer was opened on.
func (l *DirLower) Path() string { return l.path }

// Dev returns the device the root of the layer lives on.
func (l *DirLower) Dev() (uint64, error) {
	st, err := l.Lstat("")
	return st.Dev, err
}

func (l *DirLower) Lstat(path string) (unix.Stat_t, error) {
	var st unix.Stat_t
	var err error
	switch {
	case path == "":
		err = unix.Fstat(l.root, &st)
	case l.strict || len(path) > longPath:
		var dirfd int
		var base string
		var done func()
		if dirfd, base, done, err = beneath(l.root, path); err == nil {
			err = unix.Fstatat(dirfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
			done()
		}
	default:
		err = unix.Fstatat(l.root, path, &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	if err != nil {
		return st, &os.PathError{Op: "lstat lower", Path: path, Err: err}
	}
	return st, nil
}

// longPath is the length from which a path is resolved in pieces. A
// system call takes at most PATH_MAX bytes, but a layer's paths are as long
// as the mount's, which has no such limit: a process working in a deep
// directory names what is below it relative to it. Shorter paths, nearly
// all of them, stay one call.
const longPath = 2048

// openBeneath opens path under root, refusing to follow any symlink or to
// leave the tree.
func openBeneath(root int, path string, flags uint64, mode uint64) (int, error) {
	if path == "" {
		path = "."
	}
	if len(path) > longPath {
		dirfd, rest, err := descend(root, path)
		if err != nil {
			return -1, err
		}
		defer unix.Close(dirfd)
		return openat2(dirfd, rest, flags, mode)
	}
	return openat2(root, path, flags, mode)
}

// descend opens, beneath root, a directory on a path longer than longPath,
// in pieces each short enough for one call, and returns it with the rest
// of the path below it, which is at most longPath bytes.
func descend(root int, path string) (dirfd int, rest string, err error) {
	dirfd = -1
	at := root
	for len(path) > longPath {
		i := strings.LastIndexByte(path[:longPath], '/')
		if i <= 0 {
			// Only a name longer than any file system allows
			// has no '/' in longPath bytes.
			err = unix.ENAMETOOLONG
		} else {
			var fd int
			fd, err = openat2(at, path[:i], unix.O_PATH|unix.O_DIRECTORY, 0)
			if dirfd >= 0 {
				unix.Close(dirfd)
			}
			dirfd, at = fd, fd
			path = path[i+1:]
		}
		if err != nil {
			if dirfd >= 0 {
				unix.Close(dirfd)
			}
			return -1, "", err
		}
	}
	return dirfd, path, nil
}

func openat2(root int, path string, flags uint64, mode uint64) (int, error) {
	how := unix.OpenHow{
		Flags:   flags | unix.O_CLOEXEC | unix.O_NOFOLLOW,
		Mode:    mode,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for {
		fd, err := unix.Openat2(root, path, &how)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		return fd, err
	}
}

func (l *DirLower) ReadDir(path string) ([]DirEntry, error) {
	fd, err := openBeneath(l.root, path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "opendir lower", Path: path, Err: err}
	}
	defer unix.Close(fd)
	ents, err := readDirFd(fd)
	if err != nil {
		return nil, &os.PathError{Op: "readdir lower", Path: path, Err: err}
	}
	return ents, nil
}

func (l *DirLower) Readlink(path string) (string, error) {
	dirfd, base := l.root, path
	if l.strict || len(path) > longPath {
		fd, b, done, err := beneath(l.root, path)
		if err != nil {
			return "", &os.PathError{Op: "readlink lower", Path: path, Err: err}
		}
		defer done()
		dirfd, base = fd, b
	}
	target, err := readlinkAt(dirfd, base)
	if err != nil {
		return "", &os.PathError{Op: "readlink lower", Path: path, Err: err}
	}
	return target, nil
}

// readlinkAt reads the symlink name under dirfd, whatever its length.
func readlinkAt(dirfd int, name string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

func (l *DirLower) Open(path string) (LowerFile, error) {
	fd, err := openBeneath(l.root, path, unix.O_RDONLY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open lower", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// beneath opens the parent of path beneath root and returns it with the
// final name, for the *xattr calls below.
func beneath(root int, path string) (dirfd int, base string, done func(), err error) {
	dir, name := splitPath(path)
	if name == "" {
		return root, "", func() {}, nil
	}
	fd, err := openBeneath(root, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", nil, err
	}
	return fd, name, func() { unix.Close(fd) }, nil
}

func (l *DirLower) Listxattr(path string) ([]string, error) {
	if !l.strict && path != "" && len(path) <= longPath {
		// Resolved from the root as Lstat is: the lower does not
		// change while mounted.
		if names, ok, err := xattrsAt(l.root, path); ok {
			if err != nil {
				return nil, &os.PathError{Op: "listxattr lower", Path: path, Err: err}
			}
			return names, nil
		}
	}
	dirfd, base, done, err := beneath(l.root, path)
	if err != nil {
		return nil, &os.PathError{Op: "listxattr lower", Path: path, Err: err}
	}
	defer done()
	return xattrList(dirfd, base)
}

func (l *DirLower) Getxattr(path, name string) ([]byte, error) {
	dirfd, base, done, err := beneath(l.root, path)
	if err != nil {
		return nil, &os.PathError{Op: "getxattr lower", Path: path, Err: err}
	}
	defer done()
	return xattrGet(dirfd, base, name)
}

// The xattr calls take a path, so they are given /proc/self/fd/DIR/NAME: the
// directory was resolved beneath a layer's root and the l* variants do not
// follow NAME. For the directory itself (NAME empty) the path is the
// descriptor's magic link, which must be followed: the l* variants would act
// on the link.

func xattrList(dirfd int, base string) ([]string, error) {
	p := fdPath(dirfd, base)
	return xattrNames(func(buf []byte) (int, error) {
		if base == "" {
			return unix.Listxattr(p, buf)
		}
		return unix.Llistxattr(p, buf)
	})
}

// noListxattrat is set once listxattrat is found missing (Linux before
// 6.13).
var noListxattrat atomic.Bool

// xattrsAt lists the xattr names of path, resolved from dirfd without
// following its last component, with listxattrat; ok is false on a kernel
// without it, for the caller's other way.
func xattrsAt(dirfd int, path string) (names []string, ok bool, err error) {
	if noListxattrat.Load() {
		return nil, false, nil
	}
	names, err = xattrNames(func(buf []byte) (int, error) { return listxattrat(dirfd, path, buf) })
	if errors.Is(err, unix.ENOSYS) {
		noListxattrat.Store(true)
		return nil, false, nil
	}
	return names, true, err
}

// listxattrat is listxattrat(2) of Linux 6.13, which x/sys does not wrap:
// path's xattr names, resolved from dirfd, not following a final symlink.
// One call where the /proc/self/fd/N/NAME path of xattrList takes three
// (open the parent, the call, close), and a walk through procfs: a third
// of a repeated snapshot's time per lower file.
func listxattrat(dirfd int, path string, buf []byte) (int, error) {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return 0, err
	}
	var b unsafe.Pointer
	if len(buf) > 0 {
		b = unsafe.Pointer(&buf[0])
	}
	n, _, errno := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(b), uintptr(len(buf)), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// xattrNames calls list with a buffer big enough and splits what it
// returns into names.
func xattrNames(list func([]byte) (int, error)) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := list(buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, 2*len(buf))
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var names []string
		start := 0
		for i := 0; i < n; i++ {
			if buf[i] == 0 {
				if i > start {
					names = append(names, string(buf[start:i]))
				}
				start = i + 1
			}
		}
		return names, nil
	}
}

func xattrGetInto(dirfd int, base, attr string, buf []byte) (int, error) {
	if base == "" {
		return unix.Getxattr(fdPath(dirfd, ""), attr, buf)
	}
	return unix.Lgetxattr(fdPath(dirfd, base), attr, buf)
}

func xattrGet(dirfd int, base, attr string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := xattrGetInto(dirfd, base, attr, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err2 := xattrGetInto(dirfd, base, attr, nil)
			if err2 != nil {
				return nil, err2
			}
			buf = make([]byte, sz+64)
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

func xattrSet(dirfd int, base, attr string, v []byte, flags int) error {
	if base == "" {
		return unix.Setxattr(fdPath(dirfd, ""), attr, v, flags)
	}
	return unix.Lsetxattr(fdPath(dirfd, base), attr, v, flags)
}

func xattrRemove(dirfd int, base, attr string) error {
	if base == "" {
		return unix.Removexattr(fdPath(dirfd, ""), attr)
	}
	return unix.Lremovexattr(fdPath(dirfd, base), attr)
}

// splitPath splits a relative path into its parent and final name.
func splitPath(path string) (dir, name string) {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[:i], path[i+1:]
		}
	}
	return "", path
}

// readDirFd reads a whole directory with getdents64, keeping the inode
// numbers and types that os.ReadDir would drop or fetch with extra stats.
func readDirFd(fd int) ([]DirEntry, error) {
	var out []DirEntry
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return out, nil
		}
		for b := buf[:n]; len(b) >= 19; {
			ino := nativeUint64(b[0:8])
			reclen := int(nativeUint16(b[16:18]))
			typ := b[18]
			if reclen < 19 || reclen > len(b) {
				return nil, fmt.Errorf("getdents: bad record length %d", reclen)
			}
			nameb := b[19:reclen]
			for i, c := range nameb {
				if c == 0 {
					nameb = nameb[:i]
					break
				}
			}
			name := string(nameb)
			b = b[reclen:]
			if name == "." || name == ".." {
				continue
			}
			out = append(out, DirEntry{Name: name, Ino: ino, Mode: dtToMode(typ)})
		}
	}
}

func dtToMode(t uint8) uint32 {
	switch t {
	case unix.DT_DIR:
		return unix.S_IFDIR
	case unix.DT_LNK:
		return unix.S_IFLNK
	case unix.DT_FIFO:
		return unix.S_IFIFO
	case unix.DT_SOCK:
		return unix.S_IFSOCK
	case unix.DT_CHR:
		return unix.S_IFCHR
	case unix.DT_BLK:
		return unix.S_IFBLK
	}
	return unix.S_IFREG
}
