package cow

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/fsio"
)

// copyUp makes sure the node at p and every directory above it exist in the
// upper layer. A regular file is copied up as metadata only: a sparse upper
// file of the same size whose chunks are all still read from the lower.
func (f *FS) copyUp(p Path) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.copyUpLocked(p)
}

// copyUpLocked is copyUp with f.mu held.
func (f *FS) copyUpLocked(p Path) error {
	for i := 1; i < len(p.Nodes); i++ {
		if p.Nodes[i].upper {
			if i == len(p.Nodes)-1 {
				// The kernel shares one node among the names of
				// a lower file with several: that the node is up
				// does not mean this name is.
				return f.linkUpIfMissing(p)
			}
			continue
		}
		q := Path{Nodes: p.Nodes[:i+1], Names: p.Names[:i]}
		if err := f.copyUpOne(q); err != nil {
			return fmt.Errorf("copy-up %q: %w", q.Rel(), err)
		}
	}
	return nil
}

// copyUpOne copies up the node at p, whose parent is already in the upper.
// The new inode is prepared in the work directory, complete with owner,
// mode, times, xattrs and identity, and renamed into place, so a crash
// leaves either no upper entry or a whole one.
func (f *FS) copyUpOne(p Path) error {
	n := p.node()
	st, err := f.lo.Lstat(n.lower)
	if err != nil {
		return err
	}
	linked := n.Type == unix.S_IFREG && st.Nlink > 1
	if linked {
		li, ok, err := f.meta.index(n.Ino)
		if err != nil {
			return err
		}
		if ok {
			return f.linkUp(p, li)
		}
	}
	tmp := tmpName()
	id := newID()
	isDir := n.Type == unix.S_IFDIR
	mode := st.Mode & 07777
	fm, err := f.makeCopy(n, st, tmp)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	ok := false
	var recorded uint64
	defer func() {
		if !ok {
			f.up.discard(tmp, isDir)
			f.dropIdentity(recorded)
		}
	}()
	if err := unix.Fchownat(f.up.work, tmp, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil && os.Geteuid() == 0 {
		return fmt.Errorf("chown: %w", err)
	}
	if n.Type != unix.S_IFLNK {
		// After chown, which clears set-id bits.
		if err := unix.Fchmodat(f.up.work, tmp, mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if err := f.copyXattrs(n.lower, tmp); err != nil {
		return err
	}
	if recorded, err = f.setIdentity(f.up.work, tmp, n.Type, identity{Ino: n.Ino, ID: id}); err != nil {
		return fmt.Errorf("set identity: %w", err)
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	if err := unix.UtimesNanoAt(f.up.work, tmp, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set times: %w", err)
	}
	if fm != nil {
		if err := f.meta.putFile(id, fm); err != nil {
			return err
		}
	}
	if linked {
		// The inode's other names will be links to it: keep it in
		// the index, under the lower inode's number. A leftover of a
		// crash before the index record goes first.
		ix := indexName(n.Ino)
		unix.Unlinkat(f.up.work, ix, 0)
		if err := unix.Linkat(f.up.work, tmp, f.up.work, ix, 0); err != nil {
			return fmt.Errorf("index: %w", err)
		}
	}
	// Installing adds an entry to the upper parent, which would change
	// its mtime; a copy-up is not a change of the directory, so put its
	// times back, as kernel overlayfs does.
	parentRel := p.parent().Rel()
	pst, _, perr := f.up.stat(parentRel)
	if err := f.up.install(tmp, p.Rel()); err != nil {
		return err
	}
	ok = true
	f.copyUps.Add(1)
	if perr == nil {
		f.up.restoreTimes(parentRel, &pst)
	}
	if linked {
		// Recorded once the name is in place: a crash before leaves the
		// file as a copy of its own, as without an index.
		if err := f.meta.putIndex(n.Ino, linkIndex{ID: id, LowerLeft: int64(st.Nlink) - 1}); err != nil {
			return err
		}
	}
	n.upper, n.id = true, id
	if n.Type == unix.S_IFREG {
		n.mu.Lock()
		defer n.mu.Unlock()
		if n.data != nil {
			if err := n.data.attachUpper(f, p.Rel(), id, fm); err != nil {
				return err
			}
		}
	}
	return nil
}

// makeCopy creates tmp in the work directory as an upper copy of n's
// lower inode st, without its owner, mode, xattrs or times yet; a
// regular file's copy is a hole of the lower's size, and its metadata
// (returned, nil for an empty file) says where its bytes still are.
func (f *FS) makeCopy(n *Node, st unix.Stat_t, tmp string) (*fileMeta, error) {
	var fm *fileMeta
	var err error
	switch n.Type {
	case unix.S_IFDIR:
		err = unix.Mkdirat(f.up.work, tmp, 0700)
	case unix.S_IFREG:
		var fd int
		fd, err = unix.Openat(f.up.work, tmp, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0600)
		if err == nil {
			// The upper file is a hole the size of the lower one;
			// chunks get bytes only when they are written.
			err = unix.Ftruncate(fd, st.Size)
			unix.Close(fd)
		}
		if st.Size > 0 {
			fm = &fileMeta{Origin: n.lower, LowerLimit: st.Size}
		}
	case unix.S_IFLNK:
		var target string
		target, err = f.lo.Readlink(n.lower)
		if err == nil {
			err = unix.Symlinkat(target, f.up.work, tmp)
		}
	default:
		err = unix.Mknodat(f.up.work, tmp, st.Mode, int(st.Rdev))
	}
	return fm, err
}

// indexName is the index entry, under the work directory, of the upper
// inode of lower inode ino.
func indexName(ino uint64) string { return fmt.Sprintf("index/%016x", ino) }

// linkUp copies up a name of a lower file whose inode another name already
// brought up: a hard link to the indexed inode, no data and no new id.
func (f *FS) linkUp(p Path, li linkIndex) error {
	n := p.node()
	parentRel := p.parent().Rel()
	pst, _, perr := f.up.stat(parentRel)
	err := f.up.at(p.Rel(), func(dirfd int, name string) error {
		return unix.Linkat(f.up.work, indexName(n.Ino), dirfd, name, 0)
	})
	if err != nil {
		return fmt.Errorf("link to index: %w", err)
	}
	if perr == nil {
		f.up.restoreTimes(parentRel, &pst)
	}
	li.LowerLeft--
	if err := f.meta.putIndex(n.Ino, li); err != nil {
		return err
	}
	n.upper, n.id = true, li.ID
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.data != nil {
		fm, err := f.meta.file(li.ID)
		if errors.Is(err, errNotFound) {
			fm, err = nil, nil // every chunk is in the upper
		}
		if err != nil {
			return err
		}
		return n.data.attachUpper(f, p.Rel(), li.ID, fm)
	}
	return nil
}

// linkUpIfMissing links the name p of an indexed inode into the upper if
// only another of its names is there.
func (f *FS) linkUpIfMissing(p Path) error {
	n := p.node()
	if n.Type != unix.S_IFREG || !n.hasLower || p.detached {
		return nil
	}
	li, ok, err := f.meta.index(n.Ino)
	if err != nil || !ok || li.ID != n.id {
		return err
	}
	if _, _, err := f.up.stat(p.Rel()); !isNotExist(err) {
		return err
	}
	return f.linkUp(p, li)
}

// indexed reports whether n is the indexed inode of a lower file with
// several names.
func (f *FS) indexed(n *Node) bool {
	li, ok, err := f.meta.index(n.Ino)
	return err == nil && ok && li.ID == n.id
}

// retryLinked reports whether an operation that failed with err on p
// should run again: p may be a name of a lower file with several names
// whose shared node another name brought up, and it is now linked up too.
// The caller must not hold f.mu.
func (f *FS) retryLinked(p Path, err error) bool {
	n := p.node()
	if !isNotExist(err) || p.detached || !n.upper || n.Type != unix.S_IFREG || !n.hasLower {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// copyUp brings up the parents too, then links the name.
	return f.copyUpLocked(p) == nil
}

// linkCount corrects the link count of an upper file that is a lower
// file's indexed inode: its upper links, less the index's, plus the lower
// names not yet brought up.
func (f *FS) linkCount(n *Node, st *unix.Stat_t) {
	if n.Type != unix.S_IFREG || !n.upper || st.Nlink < 2 {
		return
	}
	if li, ok, err := f.meta.index(n.Ino); err == nil && ok && li.ID == n.id {
		st.Nlink = st.Nlink - 1 + uint64(li.LowerLeft)
	}
}

func (f *FS) copyXattrs(lowerPath, tmp string) error {
	names, err := f.lo.Listxattr(lowerPath)
	if err != nil {
		return fmt.Errorf("list xattrs: %w", err)
	}
	for _, name := range names {
		if f.up.ownXattr(name) {
			continue
		}
		v, err := f.lo.Getxattr(lowerPath, name)
		if err != nil {
			return fmt.Errorf("get xattr %s: %w", name, err)
		}
		if err := fsio.XattrSet(f.up.work, tmp, name, v, 0); err != nil {
			return fmt.Errorf("set xattr %s: %w", name, err)
		}
	}
	return nil
}
