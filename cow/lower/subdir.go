package lower

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/fsio"
	"github.com/cowfs/cowfs/cow/names"
)

// Subdir is a directory of a Dir held open, for a scan: its
// listing and every look at an entry go through one descriptor, relative
// to it, one name at a time. That is as safe as resolving each path
// beneath the root with no symlinks (a name is one component, and the
// final one is never followed), and it is one syscall where the strict
// path way (cowfs serve's export) takes three: open the parent beneath the
// root, the call, close. A master's re-scan of an unchanged export does
// little else.
type Subdir struct {
	fd   int
	path string
}

// Subdir opens the directory at path, beneath the root.
func (l *Dir) Subdir(path string) (*Subdir, error) {
	fd, err := fsio.OpenBeneath(l.root, path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "opendir lower", Path: path, Err: err}
	}
	return &Subdir{fd: fd, path: path}, nil
}

// Close releases the descriptor.
func (d *Subdir) Close() error { return unix.Close(d.fd) }

// ReadDir lists the directory, without "." and "..". Once per Subdir:
// it reads from the descriptor's offset.
func (d *Subdir) ReadDir() ([]DirEntry, error) {
	ents, err := fsio.ReadDir(d.fd)
	if err != nil {
		return nil, &os.PathError{Op: "readdir lower", Path: d.path, Err: err}
	}
	return ents, nil
}

func (d *Subdir) Lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return st, &os.PathError{Op: "lstat lower", Path: names.Join(d.path, name), Err: err}
	}
	return st, nil
}

func (d *Subdir) Listxattr(name string) ([]string, error) {
	xs, ok, err := fsio.XattrsAt(d.fd, name)
	if !ok {
		xs, err = fsio.XattrList(d.fd, name)
	}
	if err != nil {
		return nil, &os.PathError{Op: "listxattr lower", Path: names.Join(d.path, name), Err: err}
	}
	return xs, nil
}

func (d *Subdir) Getxattr(name, attr string) ([]byte, error) {
	v, err := fsio.XattrGet(d.fd, name, attr)
	if err != nil {
		return nil, &os.PathError{Op: "getxattr lower", Path: names.Join(d.path, name), Err: err}
	}
	return v, nil
}

func (d *Subdir) Readlink(name string) (string, error) {
	target, err := fsio.Readlink(d.fd, name)
	if err != nil {
		return "", &os.PathError{Op: "readlink lower", Path: names.Join(d.path, name), Err: err}
	}
	return target, nil
}

func (d *Subdir) Open(name string) (File, error) {
	fd, err := fsio.OpenBeneath(d.fd, name, unix.O_RDONLY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open lower", Path: names.Join(d.path, name), Err: err}
	}
	return os.NewFile(uintptr(fd), names.Join(d.path, name)), nil
}
