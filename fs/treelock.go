package fs

import (
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// treeLocked makes a rename one step for every request that names a node
// by its path.
//
// Package cow works on paths, and a node's path comes from go-fuse's
// inode tree (node.path). go-fuse moves a renamed entry in that tree only
// after the rename returned, outside cow's namespace lock, and a path can
// also be taken just before a rename and used just after. The kernel does
// not keep the two apart: it locks a rename's parents, not what lies below
// the directory moved. So a request working below a directory being
// renamed used a stale path: unlinks, creates and truncates through a
// descriptor of one directory landed in another one that took its place,
// or failed with ENOENT (TestRenameUnderWork). Here a rename, in cow and
// in go-fuse's tree, holds the lock exclusively, and every request that
// takes a path holds it shared from before the path is taken until it is
// done with it. Requests that go through an open handle (reads, writes,
// fsync, locks, lseek) do not take it here: a write or an fsync can take
// long (a remote chunk fetched, a disk flush), and a rename waiting for
// it would hold up every request behind it. The little of them that
// needs a path takes the lock itself (node.withPath).
type treeLocked struct {
	fuse.RawFileSystem
	mu *sync.RWMutex // mount.tree
}

func (t *treeLocked) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.RawFileSystem.Rename(cancel, in, oldName, newName)
}

func (t *treeLocked) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.Lookup(cancel, h, name, out)
}

func (t *treeLocked) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.GetAttr(cancel, in, out)
}

func (t *treeLocked) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.Statx(cancel, in, out)
}

func (t *treeLocked) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.SetAttr(cancel, in, out)
}

func (t *treeLocked) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.Mknod(cancel, in, name, out)
}

func (t *treeLocked) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (t *treeLocked) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.Unlink(cancel, h, name)
}

func (t *treeLocked) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.Rmdir(cancel, h, name)
}

func (t *treeLocked) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.Link(cancel, in, name, out)
}

func (t *treeLocked) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.Symlink(cancel, h, target, name, out)
}

func (t *treeLocked) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.Readlink(cancel, h)
}

func (t *treeLocked) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.GetXAttr(cancel, h, attr, dest)
}

func (t *treeLocked) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.ListXAttr(cancel, h, dest)
}

func (t *treeLocked) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.SetXAttr(cancel, in, attr, data)
}

func (t *treeLocked) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.RemoveXAttr(cancel, h, attr)
}

func (t *treeLocked) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.Create(cancel, in, name, out)
}

func (t *treeLocked) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.Open(cancel, in, out)
}

func (t *treeLocked) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.OpenDir(cancel, in, out)
}

func (t *treeLocked) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.ReadDir(cancel, in, out)
}

func (t *treeLocked) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.ReadDirPlus(cancel, in, out)
}

func (t *treeLocked) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.RawFileSystem.FsyncDir(cancel, in)
}
