package cow

import (
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/fsio"
)

// SetAttr lists the attribute changes of a setattr; nil fields stay as they
// are. A time with Nsec == unix.UTIME_NOW means now.
type SetAttr struct {
	Mode         *uint32
	Uid, Gid     *uint32
	Size         *int64
	Atime, Mtime *unix.Timespec
}

// Setattr changes attributes of the node at p. A lower node is copied up
// first, as metadata only: changing the mode, owner or times of a lower file
// copies none of its bytes, and truncating it copies at most one chunk.
func (f *FS) Setattr(p Path, a SetAttr) (unix.Stat_t, error) {
	n := p.node()
	if p.detached {
		n.mu.Lock()
		open := n.data != nil && n.data.upper != nil
		n.mu.Unlock()
		if !open {
			return unix.Stat_t{}, errDetached
		}
	}
	if !n.upper {
		if err := f.copyUp(p); err != nil {
			return unix.Stat_t{}, err
		}
	}
	if a.Size != nil {
		if n.Type == unix.S_IFDIR {
			return unix.Stat_t{}, syscall.EISDIR
		}
		if err := f.truncate(p, *a.Size); err != nil {
			return unix.Stat_t{}, err
		}
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	n.mu.Lock()
	fd := -1
	if n.data != nil && n.data.upper != nil {
		fd = int(n.data.upper.Fd())
		// Held to the end: a Release of the last handle would close
		// the descriptor, and its number could then name another file;
		// and a write that keeps the file's mtime
		// (Options.WritesKeepMtime) must not put back an older one over
		// the mtime set here.
		defer n.mu.Unlock()
	} else {
		n.mu.Unlock()
	}
	apply := func(dirfd int, name string) error {
		// An open file may have lost its name; its descriptor still
		// reaches the inode.
		target, tname, flags := dirfd, name, unix.AT_SYMLINK_NOFOLLOW
		if fd >= 0 {
			target, tname, flags = fd, "", unix.AT_EMPTY_PATH
		}
		if a.Uid != nil || a.Gid != nil {
			uid, gid := -1, -1
			if a.Uid != nil {
				uid = int(*a.Uid)
			}
			if a.Gid != nil {
				gid = int(*a.Gid)
			}
			if err := unix.Fchownat(target, tname, uid, gid, flags); err != nil {
				return fmt.Errorf("chown: %w", err)
			}
		}
		if a.Mode != nil {
			if n.Type == unix.S_IFLNK {
				return syscall.EOPNOTSUPP
			}
			var err error
			if fd >= 0 {
				err = unix.Fchmod(fd, *a.Mode&07777)
			} else {
				err = unix.Fchmodat(dirfd, name, *a.Mode&07777, 0)
			}
			if err != nil {
				return fmt.Errorf("chmod: %w", err)
			}
		}
		if a.Atime != nil || a.Mtime != nil {
			ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
			if a.Atime != nil {
				ts[0] = *a.Atime
			}
			if a.Mtime != nil {
				ts[1] = *a.Mtime
			}
			var err error
			if fd >= 0 {
				err = unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH)
			} else {
				err = unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
			}
			if err != nil {
				return fmt.Errorf("utimes: %w", err)
			}
		}
		return nil
	}
	if fd < 0 && len(p.Names) == 0 {
		// The root has no parent to name it from: work on a
		// descriptor of it, as for an open file.
		rfd, err := fsio.OpenBeneath(f.up.root, "", unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return unix.Stat_t{}, fmt.Errorf("setattr of the root: %w", err)
		}
		defer unix.Close(rfd)
		fd = rfd
	}
	var err error
	if fd >= 0 {
		err = apply(-1, "")
	} else {
		err = f.up.at(p.Rel(), apply)
	}
	if err != nil {
		return unix.Stat_t{}, fmt.Errorf("setattr %q: %w", p.Rel(), err)
	}
	if fd >= 0 {
		var st unix.Stat_t
		err := unix.Fstat(fd, &st)
		st.Ino = n.Ino
		return st, err
	}
	return f.attr(p)
}

// Getxattr reads attribute name of the node at p.
func (f *FS) Getxattr(p Path, name string) ([]byte, error) {
	if f.up.ownXattr(name) {
		return nil, syscall.ENODATA
	}
	if p.detached {
		var v []byte
		err := f.detached(p.node(), func(fd int) (err error) {
			v, err = fsio.XattrGet(fd, "", name)
			return err
		}, func(lower string) (err error) {
			v, err = f.lo.Getxattr(lower, name)
			return err
		})
		return v, err
	}
	f.mu.RLock()
	v, err := f.getxattr(p, name)
	f.mu.RUnlock()
	if f.retryLinked(p, err) {
		f.mu.RLock()
		v, err = f.getxattr(p, name)
		f.mu.RUnlock()
	}
	return v, err
}

func (f *FS) getxattr(p Path, name string) ([]byte, error) {
	n := p.node()
	if !n.upper {
		return f.lo.Getxattr(n.lower, name)
	}
	var v []byte
	err := f.up.at(p.Rel(), func(dirfd int, base string) (err error) {
		v, err = fsio.XattrGet(dirfd, base, name)
		return err
	})
	return v, err
}

// Listxattr lists the attributes of the node at p, without cowfs's own.
func (f *FS) Listxattr(p Path) ([]string, error) {
	if p.detached {
		var names []string
		err := f.detached(p.node(), func(fd int) (err error) {
			names, err = fsio.XattrList(fd, "")
			return err
		}, func(lower string) (err error) {
			names, err = f.lo.Listxattr(lower)
			return err
		})
		return f.withoutOwn(names), err
	}
	f.mu.RLock()
	names, err := f.listxattr(p)
	f.mu.RUnlock()
	if f.retryLinked(p, err) {
		f.mu.RLock()
		names, err = f.listxattr(p)
		f.mu.RUnlock()
	}
	return names, err
}

func (f *FS) listxattr(p Path) ([]string, error) {
	n := p.node()
	var names []string
	var err error
	if !n.upper {
		names, err = f.lo.Listxattr(n.lower)
	} else {
		err = f.up.at(p.Rel(), func(dirfd int, base string) (err error) {
			names, err = fsio.XattrList(dirfd, base)
			return err
		})
	}
	return f.withoutOwn(names), err
}

// withoutOwn drops cowfs's own attributes from names, in place.
func (f *FS) withoutOwn(names []string) []string {
	out := names[:0]
	for _, x := range names {
		if !f.up.ownXattr(x) {
			out = append(out, x)
		}
	}
	return out
}

// Setxattr sets attribute name of the node at p, copying the node up first.
func (f *FS) Setxattr(p Path, name string, value []byte, flags int) error {
	if f.up.ownXattr(name) {
		return syscall.EPERM
	}
	if err := f.space.need(int64(len(name) + len(value))); err != nil {
		return err
	}
	if p.detached {
		return f.detached(p.node(), func(fd int) error {
			return fsio.XattrSet(fd, "", name, value, flags)
		}, nil)
	}
	if err := f.copyUp(p); err != nil {
		return err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.up.at(p.Rel(), func(dirfd int, base string) error {
		return fsio.XattrSet(dirfd, base, name, value, flags)
	})
}

// Removexattr removes attribute name of the node at p.
func (f *FS) Removexattr(p Path, name string) error {
	if f.up.ownXattr(name) {
		return syscall.ENODATA
	}
	if p.detached {
		return f.detached(p.node(), func(fd int) error {
			return fsio.XattrRemove(fd, "", name)
		}, nil)
	}
	if _, err := f.Getxattr(p, name); err != nil {
		return err
	}
	if err := f.copyUp(p); err != nil {
		return err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.up.at(p.Rel(), func(dirfd int, base string) error {
		return fsio.XattrRemove(dirfd, base, name)
	})
}

// detached runs an attribute operation on a node that has lost its last
// name while still open. On any filesystem f*xattr reaches such a file
// through its descriptor; here that is the upper file the node holds
// open (upper), or, for a node never copied up, its lower entry, which
// no unlink changes (lower, nil for a change). Anything else has no
// file left to reach: ENOENT.
func (f *FS) detached(n *Node, upper func(fd int) error, lower func(string) error) error {
	n.mu.Lock()
	if n.data != nil && n.data.upper != nil {
		// Held while fd is used: a Release of the last handle closes it.
		defer n.mu.Unlock()
		return upper(int(n.data.upper.Fd()))
	}
	n.mu.Unlock()
	f.mu.RLock()
	onlyLower := !n.upper && n.hasLower
	f.mu.RUnlock()
	if lower != nil && onlyLower {
		return lower(n.lower)
	}
	return errDetached
}
