package fsio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name string
	Ino  uint64
	Mode uint32 // file type bits only (S_IFMT)
}

// LongPath is the length from which a path is resolved in pieces. A
// system call takes at most PATH_MAX bytes, but a layer's paths are as long
// as the mount's, which has no such limit: a process working in a deep
// directory names what is below it relative to it. Shorter paths, nearly
// all of them, stay one call.
const LongPath = 2048

// OpenBeneath opens path under root, refusing to follow any symlink or to
// leave the tree.
func OpenBeneath(root int, path string, flags uint64, mode uint64) (int, error) {
	if path == "" {
		path = "."
	}
	if len(path) > LongPath {
		dirfd, rest, err := descend(root, path)
		if err != nil {
			return -1, err
		}
		defer unix.Close(dirfd)
		return openat2(dirfd, rest, flags, mode)
	}
	return openat2(root, path, flags, mode)
}

// descend opens, beneath root, a directory on a path longer than LongPath,
// in pieces each short enough for one call, and returns it with the rest
// of the path below it, which is at most LongPath bytes.
func descend(root int, path string) (dirfd int, rest string, err error) {
	dirfd = -1
	at := root
	for len(path) > LongPath {
		i := strings.LastIndexByte(path[:LongPath], '/')
		if i <= 0 {
			// Only a name longer than any file system allows
			// has no '/' in LongPath bytes.
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

// Readlink reads the symlink name under dirfd, whatever its length.
func Readlink(dirfd int, name string) (string, error) {
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

// Beneath opens the parent of path beneath root and returns it with the
// final name, for the *xattr calls below.
func Beneath(root int, path string) (dirfd int, base string, done func(), err error) {
	dir, name := SplitPath(path)
	if name == "" {
		return root, "", func() {}, nil
	}
	fd, err := OpenBeneath(root, dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", nil, err
	}
	return fd, name, func() { unix.Close(fd) }, nil
}

// The xattr calls take a path, so they are given /proc/self/fd/DIR/NAME: the
// directory was resolved beneath a layer's root and the l* variants do not
// follow NAME. For the directory itself (NAME empty) the path is the
// descriptor's magic link, which must be followed: the l* variants would act
// on the link.

func XattrList(dirfd int, base string) ([]string, error) {
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

// XattrsAt lists the xattr names of path, resolved from dirfd without
// following its last component, with listxattrat; ok is false on a kernel
// without it, for the caller's other way.
func XattrsAt(dirfd int, path string) (names []string, ok bool, err error) {
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
// One call where the /proc/self/fd/N/NAME path of XattrList takes three
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

func XattrGetInto(dirfd int, base, attr string, buf []byte) (int, error) {
	if base == "" {
		return unix.Getxattr(fdPath(dirfd, ""), attr, buf)
	}
	return unix.Lgetxattr(fdPath(dirfd, base), attr, buf)
}

func XattrGet(dirfd int, base, attr string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := XattrGetInto(dirfd, base, attr, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err2 := XattrGetInto(dirfd, base, attr, nil)
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

func XattrSet(dirfd int, base, attr string, v []byte, flags int) error {
	if base == "" {
		return unix.Setxattr(fdPath(dirfd, ""), attr, v, flags)
	}
	return unix.Lsetxattr(fdPath(dirfd, base), attr, v, flags)
}

func XattrRemove(dirfd int, base, attr string) error {
	if base == "" {
		return unix.Removexattr(fdPath(dirfd, ""), attr)
	}
	return unix.Lremovexattr(fdPath(dirfd, base), attr)
}

// SplitPath splits a relative path into its parent and final name.
func SplitPath(path string) (dir, name string) {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[:i], path[i+1:]
		}
	}
	return "", path
}

// ReadDir reads a whole directory with getdents64, keeping the inode
// numbers and types that os.ReadDir would drop or fetch with extra stats.
func ReadDir(fd int) ([]DirEntry, error) {
	var out []DirEntry
	bp := direntBufs.Get().(*[]byte)
	defer direntBufs.Put(bp)
	buf := *bp
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

// direntBufs keeps getdents buffers between listings: a walk lists a
// directory per READDIR(PLUS) of one the kernel had not seen, and a fresh
// 32 KiB buffer is zeroed each time.
var direntBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

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

// fdPath names name beneath the directory descriptor dirfd through
// /proc/self/fd, or the directory itself when name is empty.
func fdPath(dirfd int, name string) string {
	if name == "" {
		return fmt.Sprintf("/proc/self/fd/%d", dirfd)
	}
	return fmt.Sprintf("/proc/self/fd/%d/%s", dirfd, name)
}

// SyncDir makes the entries of directory dir durable: a file made, renamed
// or linked in it, or removed from it.
func SyncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fsync(fd)
}

// ReadFullAt is r.ReadAt, with io.EOF at the end of the file not an
// error: dest past the end is left as it was.
func ReadFullAt(r io.ReaderAt, dest []byte, off int64) (int, error) {
	n, err := r.ReadAt(dest, off)
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// AllZero reports whether b holds only zero bytes.
func AllZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// getdents64 records are in the machine's byte order; every platform cowfs
// builds for (amd64, arm64) is little-endian.
func nativeUint64(b []byte) uint64 { return binary.LittleEndian.Uint64(b) }
func nativeUint16(b []byte) uint16 { return binary.LittleEndian.Uint16(b) }
