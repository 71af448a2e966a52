package lower

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/fsio"
)

// Dir is a lower layer backed by a local directory. Every access is made
// relative to a descriptor of the root, and opens resolve beneath it without
// following symlinks, so a symlink in the lower can never lead cowfs itself
// outside the directory.
type Dir struct {
	root int
	path string
	// strict resolves the parent of every path beneath the root with no
	// symlinks, also for lstat and readlink. A mount's lower does not
	// change while mounted, and there the plain *at calls are enough; a
	// tree that is served while others change it (cowfs serve) could have
	// a directory swapped for a symlink between a listing and an lstat.
	strict bool
}

// OpenDirStrict opens dir as a layer that may change while it is
// read: no path, however it is raced, resolves outside dir.
func OpenDirStrict(dir string) (*Dir, error) {
	l, err := OpenDir(dir)
	if err == nil {
		l.strict = true
	}
	return l, err
}

// OpenDir opens dir as a lower layer.
func OpenDir(dir string) (*Dir, error) {
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open lower %s: %w", dir, err)
	}
	return &Dir{root: fd, path: dir}, nil
}

// Close releases the root descriptor.
func (l *Dir) Close() error { return unix.Close(l.root) }

// Path returns the directory the layer was opened on.
func (l *Dir) Path() string { return l.path }

func (l *Dir) Lstat(path string) (unix.Stat_t, error) {
	var st unix.Stat_t
	var err error
	switch {
	case path == "":
		err = unix.Fstat(l.root, &st)
	case l.strict || len(path) > fsio.LongPath:
		var dirfd int
		var base string
		var done func()
		if dirfd, base, done, err = fsio.Beneath(l.root, path); err == nil {
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

func (l *Dir) ReadDir(path string) ([]DirEntry, error) {
	fd, err := fsio.OpenBeneath(l.root, path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "opendir lower", Path: path, Err: err}
	}
	defer unix.Close(fd)
	ents, err := fsio.ReadDir(fd)
	if err != nil {
		return nil, &os.PathError{Op: "readdir lower", Path: path, Err: err}
	}
	return ents, nil
}

func (l *Dir) Readlink(path string) (string, error) {
	dirfd, base := l.root, path
	if l.strict || len(path) > fsio.LongPath {
		fd, b, done, err := fsio.Beneath(l.root, path)
		if err != nil {
			return "", &os.PathError{Op: "readlink lower", Path: path, Err: err}
		}
		defer done()
		dirfd, base = fd, b
	}
	target, err := fsio.Readlink(dirfd, base)
	if err != nil {
		return "", &os.PathError{Op: "readlink lower", Path: path, Err: err}
	}
	return target, nil
}

func (l *Dir) Open(path string) (File, error) {
	fd, err := fsio.OpenBeneath(l.root, path, unix.O_RDONLY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open lower", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

func (l *Dir) Listxattr(path string) ([]string, error) {
	if !l.strict && path != "" && len(path) <= fsio.LongPath {
		// Resolved from the root as Lstat is: the lower does not
		// change while mounted.
		if names, ok, err := fsio.XattrsAt(l.root, path); ok {
			if err != nil {
				return nil, &os.PathError{Op: "listxattr lower", Path: path, Err: err}
			}
			return names, nil
		}
	}
	dirfd, base, done, err := fsio.Beneath(l.root, path)
	if err != nil {
		return nil, &os.PathError{Op: "listxattr lower", Path: path, Err: err}
	}
	defer done()
	return fsio.XattrList(dirfd, base)
}

func (l *Dir) Getxattr(path, name string) ([]byte, error) {
	dirfd, base, done, err := fsio.Beneath(l.root, path)
	if err != nil {
		return nil, &os.PathError{Op: "getxattr lower", Path: path, Err: err}
	}
	defer done()
	return fsio.XattrGet(dirfd, base, name)
}
