package cow

import (
	"os"

	"golang.org/x/sys/unix"
)

// scanDir is how a scan reaches the entries of one directory, by name.
type scanDir interface {
	Lstat(name string) (unix.Stat_t, error)
	Listxattr(name string) ([]string, error)
	Getxattr(name, attr string) ([]byte, error)
	Readlink(name string) (string, error)
	Open(name string) (LowerFile, error)
}

// pathDir reaches the entries of directory dir of any Lower by their paths
// from the layer's root.
type pathDir struct {
	lo  Lower
	dir string
}

func (d pathDir) Lstat(name string) (unix.Stat_t, error)  { return d.lo.Lstat(Join(d.dir, name)) }
func (d pathDir) Listxattr(name string) ([]string, error) { return d.lo.Listxattr(Join(d.dir, name)) }
func (d pathDir) Getxattr(name, x string) ([]byte, error) { return d.lo.Getxattr(Join(d.dir, name), x) }
func (d pathDir) Readlink(name string) (string, error)    { return d.lo.Readlink(Join(d.dir, name)) }
func (d pathDir) Open(name string) (LowerFile, error)     { return d.lo.Open(Join(d.dir, name)) }

// LowerDir is a directory of a DirLower held open, for a scan: its
// listing and every look at an entry go through one descriptor, relative
// to it, one name at a time. That is as safe as resolving each path
// beneath the root with no symlinks (a name is one component, and the
// final one is never followed), and it is one syscall where the strict
// path way (cowfs serve's export) takes three: open the parent beneath the
// root, the call, close. A master's re-scan of an unchanged export does
// little else.
type LowerDir struct {
	fd   int
	path string
}

// OpenDir opens the directory at path, beneath the root.
func (l *DirLower) OpenDir(path string) (*LowerDir, error) {
	fd, err := openBeneath(l.root, path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "opendir lower", Path: path, Err: err}
	}
	return &LowerDir{fd: fd, path: path}, nil
}

// Close releases the descriptor.
func (d *LowerDir) Close() error { return unix.Close(d.fd) }

// ReadDir lists the directory, without "." and "..". Once per LowerDir:
// it reads from the descriptor's offset.
func (d *LowerDir) ReadDir() ([]DirEntry, error) {
	ents, err := readDirFd(d.fd)
	if err != nil {
		return nil, &os.PathError{Op: "readdir lower", Path: d.path, Err: err}
	}
	return ents, nil
}

func (d *LowerDir) Lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "lstat lower", Path: Join(d.path, name), Err: err}
	}
	return st, nil
}

func (d *LowerDir) Listxattr(name string) ([]string, error) {
	names, ok, err := xattrsAt(d.fd, name)
	if !ok {
		names, err = xattrList(d.fd, name)
	}
	if err != nil {
		return nil, &os.PathError{Op: "listxattr lower", Path: Join(d.path, name), Err: err}
	}
	return names, nil
}

func (d *LowerDir) Getxattr(name, attr string) ([]byte, error) {
	v, err := xattrGet(d.fd, name, attr)
	if err != nil {
		return nil, &os.PathError{Op: "getxattr lower", Path: Join(d.path, name), Err: err}
	}
	return v, nil
}

func (d *LowerDir) Readlink(name string) (string, error) {
	target, err := readlinkAt(d.fd, name)
	if err != nil {
		return "", &os.PathError{Op: "readlink lower", Path: Join(d.path, name), Err: err}
	}
	return target, nil
}

func (d *LowerDir) Open(name string) (LowerFile, error) {
	fd, err := openBeneath(d.fd, name, unix.O_RDONLY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open lower", Path: Join(d.path, name), Err: err}
	}
	return os.NewFile(uintptr(fd), Join(d.path, name)), nil
}
