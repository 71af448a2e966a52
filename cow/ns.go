package cow

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/fsio"
	"github.com/cowfs/cowfs/cow/names"
)

// prepareCreate checks that name may be created in dir and copies dir up.
// It returns whether the lower has an entry of that name (hidden by a
// whiteout, or the create would not be allowed). With excl set, the caller
// makes the entry with a call that fails with EEXIST where the upper has
// the name already (open O_EXCL, mkdirat, mknodat, symlinkat), and changes
// nothing before it: the upper is not asked here, a stat saved on every
// create.
func (f *FS) prepareCreate(dir Path, name string, excl bool) (overLower bool, err error) {
	if err := names.Valid(name); err != nil {
		return false, err
	}
	// What lookup would do, but the lower is asked once: its answer is
	// both "does the name exist" (unless whited out) and overLower.
	d := dir.node()
	p := names.Join(dir.Rel(), name)
	if d.upper && !excl {
		if err := f.upperAbsent(p); err != nil {
			return false, err
		}
	}
	if overLower, err = f.lowerHas(d, name); err != nil {
		return false, err
	}
	if overLower {
		wh, err := f.meta.whiteout(d.id, name)
		if err != nil {
			return false, err
		}
		if !wh {
			return false, fmt.Errorf("create %q: %w", p, syscall.EEXIST)
		}
	}
	if err := f.copyUpLocked(dir); err != nil {
		return false, err
	}
	return overLower, nil
}

// upperAbsent returns EEXIST if the upper has an entry at p.
func (f *FS) upperAbsent(p string) error {
	if _, _, err := f.up.stat(p); err == nil {
		return fmt.Errorf("create %q: %w", p, syscall.EEXIST)
	} else if !isNotExist(err) {
		return err
	}
	return nil
}

// newUpperNode builds the node of an entry just created in the upper.
func (f *FS) newUpperNode(p string) (*Node, unix.Stat_t, error) {
	st, gen, err := f.up.stat(p)
	if err != nil {
		return nil, st, err
	}
	return f.newUpperNodeOf(&st, gen), st, nil
}

// newUpperNodeOf builds the node of an entry just created in the upper
// from its attributes, and puts its merged inode number in st.
func (f *FS) newUpperNodeOf(st *unix.Stat_t, gen uint64) *Node {
	n := &Node{Type: st.Mode & unix.S_IFMT, Ino: f.upperIno(st.Ino), Gen: gen, upper: true}
	st.Ino = n.Ino
	return n
}

// owner returns the owner of a new inode in directory dirfd: the caller,
// with the directory's group where the directory is set-group-ID.
func owner(dirfd int, c Cred) (int, int) {
	var st unix.Stat_t
	if unix.Fstat(dirfd, &st) == nil && st.Mode&unix.S_ISGID != 0 {
		return int(c.Uid), int(st.Gid)
	}
	return int(c.Uid), int(c.Gid)
}

// chowns reports whether own changes the owner of an inode made for c.
// With the caller's own uid and gid, the kernel already gave the inode the
// owner owner() would: two syscalls saved on every create by root, the
// common case in worker containers.
func (f *FS) chowns(c Cred) bool {
	return f.euid == 0 && (int(c.Uid) != f.euid || int(c.Gid) != f.egid)
}

// own gives an inode just made in the upper, dirfd/name, the owner and
// permission bits (perm, with set-ID bits) the caller asked for. cowfs
// makes inodes as itself, so two things can differ from what the kernel
// would have made for the caller: the process umask may have masked perm
// (a Go program that mounts cowfs keeps its own umask; the cowfs command
// runs with 0), and a chown to another user clears the set-ID bits of a
// non-directory. The kernel already stripped from perm what the caller
// may not have. Symlinks have no mode: pass perm 0.
func (f *FS) own(dirfd int, name string, c Cred, perm uint32, isDir bool) error {
	chowned := false
	if f.chowns(c) {
		uid, gid := owner(dirfd, c)
		if err := unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		chowned = true
	}
	lost := perm & f.umask
	if chowned && !isDir {
		lost |= perm & (unix.S_ISUID | unix.S_ISGID)
	}
	if lost == 0 {
		return nil
	}
	if isDir {
		// Keep the set-group-ID bit a directory inherits from its
		// parent.
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		perm |= st.Mode & unix.S_ISGID
	}
	return unix.Fchmodat(dirfd, name, perm, 0)
}

// Create creates and opens a regular file.
func (f *FS) Create(dir Path, name string, flags int, mode uint32, c Cred) (*Node, unix.Stat_t, *Handle, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, st, h, err := f.create(dir, name, flags, mode, c)
	f.editList(dir.node(), err, func(l *dirList) { l.add(name, n) })
	return n, st, h, err
}

func (f *FS) create(dir Path, name string, flags int, mode uint32, c Cred) (*Node, unix.Stat_t, *Handle, error) {
	if _, err := f.prepareCreate(dir, name, true); err != nil {
		return nil, unix.Stat_t{}, nil, err
	}
	if err := f.space.need(0); err != nil {
		return nil, unix.Stat_t{}, nil, err
	}
	p := names.Join(dir.Rel(), name)
	perm := mode & 07777
	const oflags = unix.O_CREAT | unix.O_EXCL | unix.O_RDWR | unix.O_CLOEXEC | unix.O_NOFOLLOW
	fd := -1
	var err error
	if f.chowns(c) {
		// own needs the parent's descriptor: the owner is set by name
		// and the parent's set-group-ID bit decides the group.
		err = f.up.at(p, func(dirfd int, name string) error {
			var err error
			fd, err = unix.Openat(dirfd, name, oflags, perm)
			if err != nil {
				return err
			}
			if err := f.own(dirfd, name, c, perm, false); err != nil {
				unix.Close(fd)
				unix.Unlinkat(dirfd, name, 0)
				return err
			}
			return nil
		})
	} else {
		// One call instead of opening the parent, creating in it and
		// closing it; what own would do is a chmod of the new file's
		// descriptor, and only when the process umask masked a bit.
		fd, err = fsio.OpenBeneath(f.up.root, p, oflags, uint64(perm))
		if err == nil && perm&f.umask != 0 {
			if err = unix.Fchmod(fd, perm); err != nil {
				unix.Close(fd)
				f.up.at(p, func(dirfd int, name string) error { return unix.Unlinkat(dirfd, name, 0) })
			}
		}
	}
	if err != nil {
		return nil, unix.Stat_t{}, nil, fmt.Errorf("create %q: %w", p, err)
	}
	st, gen, err := statx(fd, "")
	if err != nil {
		unix.Close(fd)
		return nil, st, nil, fmt.Errorf("stat new %q: %w", p, err)
	}
	n := f.newUpperNodeOf(&st, gen)
	n.data = &fileData{upper: os.NewFile(uintptr(fd), p), refs: 1}
	return n, st, &Handle{n: n, fs: f, flags: flags}, nil
}

// Mkdir creates a directory. A directory made where the lower has an entry
// of the same name (one that was removed) is opaque: the lower's old
// contents must not show through it.
func (f *FS) Mkdir(dir Path, name string, mode uint32, c Cred) (*Node, unix.Stat_t, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, st, err := f.mkdir(dir, name, mode, c)
	f.editList(dir.node(), err, func(l *dirList) { l.add(name, n) })
	if err == nil && n.upper && !n.hasLower {
		// Kept from birth: its first listing reads nothing either.
		f.keepList(n, nil, nil)
	}
	return n, st, err
}

func (f *FS) mkdir(dir Path, name string, mode uint32, c Cred) (*Node, unix.Stat_t, error) {
	overLower, err := f.prepareCreate(dir, name, true)
	if err != nil {
		return nil, unix.Stat_t{}, err
	}
	p := names.Join(dir.Rel(), name)
	if overLower && dir.node().upper {
		// Made in the work directory and renamed into place, with
		// records written before the rename fails on a name the upper
		// has: ask first.
		if err := f.upperAbsent(p); err != nil {
			return nil, unix.Stat_t{}, err
		}
	}
	if !overLower {
		err = f.up.at(p, func(dirfd int, name string) error {
			if err := unix.Mkdirat(dirfd, name, mode&07777); err != nil {
				return err
			}
			return f.own(dirfd, name, c, mode&07777, true)
		})
		if err != nil {
			return nil, unix.Stat_t{}, fmt.Errorf("mkdir %q: %w", p, err)
		}
		return f.newUpperNode(p)
	}
	tmp := tmpName()
	if err := unix.Mkdirat(f.up.work, tmp, mode&07777); err != nil {
		return nil, unix.Stat_t{}, fmt.Errorf("mkdir %q: %w", p, err)
	}
	id := newID()
	err = func() error {
		parent, err := f.up.dir(dir.Rel())
		if err != nil {
			return err
		}
		uid, gid := owner(parent, c)
		var pst unix.Stat_t
		err = unix.Fstat(parent, &pst)
		unix.Close(parent)
		if err != nil {
			return err
		}
		if f.euid == 0 {
			if err := unix.Fchownat(f.up.work, tmp, uid, gid, 0); err != nil {
				return err
			}
		}
		// Made in the work directory: neither the umask nor the
		// parent's set-group-ID bit is the one the caller's mkdir
		// would have met.
		if err := unix.Fchmodat(f.up.work, tmp, mode&07777|pst.Mode&unix.S_ISGID, 0); err != nil {
			return err
		}
		if err := f.up.setIdentityAt(f.up.work, tmp, identity{ID: id}); err != nil {
			return err
		}
		if err := f.meta.putDir(id, dirMeta{Opaque: true}); err != nil {
			return err
		}
		return f.up.install(tmp, p)
	}()
	if err != nil {
		f.up.discard(tmp, true)
		return nil, unix.Stat_t{}, fmt.Errorf("mkdir %q: %w", p, err)
	}
	n, st, err := f.newUpperNode(p)
	if n != nil {
		n.id = id
	}
	return n, st, err
}

// Mknod creates a special file (fifo, socket, device) or an empty regular file.
func (f *FS) Mknod(dir Path, name string, mode, rdev uint32, c Cred) (*Node, unix.Stat_t, error) {
	return f.createWith(dir, name, c, mode&07777, func(dirfd int, name string) error {
		return unix.Mknodat(dirfd, name, mode, int(rdev))
	})
}

// Symlink creates a symbolic link to target.
func (f *FS) Symlink(dir Path, name, target string, c Cred) (*Node, unix.Stat_t, error) {
	if len(target) >= unix.PathMax {
		return nil, unix.Stat_t{}, syscall.ENAMETOOLONG
	}
	return f.createWith(dir, name, c, 0, func(dirfd int, name string) error {
		return unix.Symlinkat(target, dirfd, name)
	})
}

func (f *FS) createWith(dir Path, name string, c Cred, perm uint32, mk func(dirfd int, name string) error) (*Node, unix.Stat_t, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n, st, err := f.createWithLocked(dir, name, c, perm, mk)
	f.editList(dir.node(), err, func(l *dirList) { l.add(name, n) })
	return n, st, err
}

func (f *FS) createWithLocked(dir Path, name string, c Cred, perm uint32, mk func(dirfd int, name string) error) (*Node, unix.Stat_t, error) {
	if _, err := f.prepareCreate(dir, name, true); err != nil {
		return nil, unix.Stat_t{}, err
	}
	if err := f.space.need(0); err != nil {
		return nil, unix.Stat_t{}, err
	}
	p := names.Join(dir.Rel(), name)
	err := f.up.at(p, func(dirfd int, name string) error {
		if err := mk(dirfd, name); err != nil {
			return err
		}
		return f.own(dirfd, name, c, perm, false)
	})
	if err != nil {
		return nil, unix.Stat_t{}, fmt.Errorf("create %q: %w", p, err)
	}
	return f.newUpperNode(p)
}

// Link makes name in dir a new name of the node at target.
func (f *FS) Link(target Path, dir Path, name string) (unix.Stat_t, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, err := f.link(target, dir, name)
	f.editList(dir.node(), err, func(l *dirList) { l.add(name, target.node()) })
	return st, err
}

func (f *FS) link(target Path, dir Path, name string) (unix.Stat_t, error) {
	if target.node().Type == unix.S_IFDIR {
		return unix.Stat_t{}, syscall.EPERM
	}
	// Not excl: the target's copy-up comes before the linkat that
	// would find the name taken.
	if _, err := f.prepareCreate(dir, name, false); err != nil {
		return unix.Stat_t{}, err
	}
	if err := f.copyUpLocked(target); err != nil {
		return unix.Stat_t{}, err
	}
	p := names.Join(dir.Rel(), name)
	err := f.up.at(target.Rel(), func(odir int, oname string) error {
		return f.up.at(p, func(ndir int, nname string) error {
			return unix.Linkat(odir, oname, ndir, nname, 0)
		})
	})
	if err != nil {
		return unix.Stat_t{}, fmt.Errorf("link %q to %q: %w", p, target.Rel(), err)
	}
	return f.attr(dir.child(name, target.node()))
}

// Unlink removes the non-directory name, node n, from dir.
func (f *FS) Unlink(dir Path, name string, n *Node) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.unlink(dir, name, n)
	f.editList(dir.node(), err, func(l *dirList) { l.remove(name) })
	return err
}

func (f *FS) unlink(dir Path, name string, n *Node) error {
	if n.Type == unix.S_IFDIR {
		return syscall.EISDIR
	}
	if err := f.upLinked(dir.child(name, n)); err != nil {
		return err
	}
	if err := f.copyUpLocked(dir); err != nil {
		return err
	}
	// Whiteout first: a crash between the two steps leaves the upper
	// entry, which shadows the whiteout, so the name is still there.
	if err := f.whiteout(dir, name); err != nil {
		return fmt.Errorf("unlink %q: %w", names.Join(dir.Rel(), name), err)
	}
	if !n.upper {
		return nil
	}
	p := names.Join(dir.Rel(), name)
	var last bool
	var recorded uint64
	err := f.up.at(p, func(dirfd int, name string) error {
		last = f.lastName(dirfd, name, n)
		recorded = f.recordedLastName(dirfd, name, n)
		if err := unix.Unlinkat(dirfd, name, 0); err != nil {
			return fmt.Errorf("unlink %q: %w", p, err)
		}
		return nil
	})
	if err == nil && last {
		f.dropFileMeta(n)
	}
	if err == nil {
		f.dropIdentity(recorded)
	}
	return err
}

// lastName reports whether dirfd/name is the last name of node n, a file
// with metadata (an id): once it goes, so may the metadata. Files born in
// the upper have none and cost no stat here.
func (f *FS) lastName(dirfd int, name string, n *Node) bool {
	if n == nil || n.id == 0 || n.Type != unix.S_IFREG {
		return false
	}
	var st unix.Stat_t
	return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Nlink == 1
}

// dropFileMeta removes the chunk layout of file n, whose last name is
// gone, unless it is open: then the last Release drops it. A crash in
// between leaves the record behind (a few bytes). Dropping it while some
// other node of the same file is open would be harmless too: an open
// file keeps its layout in memory, and its last Release drops the record
// again.
func (f *FS) dropFileMeta(n *Node) {
	n.mu.Lock()
	open := n.data != nil
	n.mu.Unlock()
	if open {
		return
	}
	f.dropFileID(n.id)
}

func (f *FS) dropFileID(id uint64) {
	// Most files with an id have a record; asking first saves a
	// write for those that do not.
	fm, err := f.meta.file(id)
	if err != nil && !isNotExist(err) {
		f.log.Warn("metadata of a removed file", "id", id, "err", err)
	}
	if fm == nil {
		return
	}
	if err := f.meta.dropFile(id); err != nil {
		f.log.Warn("drop metadata of a removed file", "id", id, "err", err)
	}
}

// upLinked brings up the name p of a lower file with several names before
// the name goes (unlink, rename over it): with its inode indexed, the other
// names' link count drops. The node may be up through another name only;
// copyUp links this one then.
func (f *FS) upLinked(p Path) error {
	n := p.node()
	if n.Type != unix.S_IFREG || !n.hasLower {
		return nil
	}
	if st, err := f.lo.Lstat(n.lower); err != nil || st.Nlink < 2 {
		return nil
	}
	return f.copyUpLocked(p)
}

// Rmdir removes the empty directory name, node n, from dir.
func (f *FS) Rmdir(dir Path, name string, n *Node) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.rmdir(dir, name, n)
	f.editList(dir.node(), err, func(l *dirList) { l.remove(name) })
	if err == nil {
		f.dropList(n)
	}
	return err
}

func (f *FS) rmdir(dir Path, name string, n *Node) error {
	if n.Type != unix.S_IFDIR {
		return syscall.ENOTDIR
	}
	child := dir.child(name, n)
	ents, err := f.readDir(child)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("rmdir %q: %w", child.Rel(), syscall.ENOTEMPTY)
	}
	if err := f.copyUpLocked(dir); err != nil {
		return err
	}
	if err := f.whiteout(dir, name); err != nil {
		return err
	}
	if n.upper {
		err := f.up.at(child.Rel(), func(dirfd int, name string) error {
			return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
		})
		if err != nil {
			return fmt.Errorf("rmdir %q: %w", child.Rel(), err)
		}
		if err := f.meta.dropDir(n.id); err != nil {
			f.log.Warn("drop metadata of removed directory", "path", child.Rel(), "err", err)
		}
	}
	return nil
}

// Rename moves name (node n) of oldDir to newName of newDir, replacing
// target (nil when newName does not exist). Renaming something that comes
// from the lower copies up only its metadata: a directory is recreated empty
// in the upper with a redirect to its lower path, so its lower contents stay
// where they are and keep showing through it.
func (f *FS) Rename(oldDir Path, name string, n *Node, newDir Path, newName string, target *Node, flags uint32) error {
	if err := names.Valid(newName); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	err := f.rename(oldDir, name, n, newDir, newName, target, flags)
	if flags&unix.RENAME_EXCHANGE != 0 || (target != nil && target == n) {
		// Rare enough to read both directories again. (A rename
		// between two names of one file leaves both, as POSIX says.)
		f.dropList(oldDir.node())
		f.dropList(newDir.node())
		return err
	}
	f.editList(oldDir.node(), err, func(l *dirList) { l.remove(name) })
	f.editList(newDir.node(), err, func(l *dirList) { l.add(newName, n) })
	return err
}

func (f *FS) rename(oldDir Path, name string, n *Node, newDir Path, newName string, target *Node, flags uint32) error {
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return syscall.EINVAL
	}
	exchange := flags&unix.RENAME_EXCHANGE != 0
	if target == nil {
		if t, _, err := f.lookup(newDir, newName); err == nil {
			target = t
		} else if !isNotExist(err) {
			return err
		}
	}
	src := oldDir.child(name, n)
	switch {
	case exchange && target == nil:
		return syscall.ENOENT
	case target != nil && flags&unix.RENAME_NOREPLACE != 0:
		return syscall.EEXIST
	case target != nil && !exchange:
		if n.Type == unix.S_IFDIR && target.Type != unix.S_IFDIR {
			return syscall.ENOTDIR
		}
		if n.Type != unix.S_IFDIR && target.Type == unix.S_IFDIR {
			return syscall.EISDIR
		}
		if target.Type == unix.S_IFDIR {
			ents, err := f.readDir(newDir.child(newName, target))
			if err != nil {
				return err
			}
			if len(ents) > 0 {
				return syscall.ENOTEMPTY
			}
		}
	}
	if err := f.copyUpLocked(src); err != nil {
		return err
	}
	if err := f.copyUpLocked(newDir); err != nil {
		return err
	}
	dst := newDir.child(newName, target)
	if target != nil && !exchange {
		// Replacing one name of a lower file with several: as for
		// unlink, its inode comes up first so the others' count drops.
		if err := f.upLinked(dst); err != nil {
			return err
		}
	}
	if exchange {
		if err := f.copyUpLocked(dst); err != nil {
			return err
		}
		if err := f.pinLower(dst); err != nil {
			return err
		}
	}
	if err := f.pinLower(src); err != nil {
		return err
	}
	if !exchange {
		if err := f.whiteout(oldDir, name); err != nil {
			return err
		}
	}
	renameFlags := uint(flags & (unix.RENAME_NOREPLACE | unix.RENAME_EXCHANGE))
	var last bool
	var recorded uint64
	err := f.up.at(src.Rel(), func(odir int, oname string) error {
		return f.up.at(dst.Rel(), func(ndir int, nname string) error {
			if !exchange && target != nil && target.upper {
				last = f.lastName(ndir, nname, target)
				recorded = f.recordedLastName(ndir, nname, target)
			}
			return unix.Renameat2(odir, oname, ndir, nname, renameFlags)
		})
	})
	if err != nil {
		return fmt.Errorf("rename %q to %q: %w", src.Rel(), dst.Rel(), err)
	}
	if last {
		f.dropFileMeta(target)
	}
	f.dropIdentity(recorded)
	if target != nil && !exchange && target.Type == unix.S_IFDIR && target.upper {
		if err := f.meta.dropDir(target.id); err != nil {
			f.log.Warn("drop metadata of replaced directory", "path", dst.Rel(), "err", err)
		}
	}
	return nil
}

// pinLower makes the upper directory at p keep merging with the lower
// directory it merges with now, wherever it is moved: a redirect when it has
// one, opaque when it has none.
func (f *FS) pinLower(p Path) error {
	n := p.node()
	if n.Type != unix.S_IFDIR {
		return nil
	}
	if err := f.ensureID(p); err != nil {
		return err
	}
	dm := dirMeta{Opaque: !n.hasLower}
	if n.hasLower {
		dm.Redirect = n.lower
	}
	return f.meta.putDir(n.id, dm)
}
