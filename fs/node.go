package fs

import (
	"context"
	"strings"
	"sync/atomic"
	"syscall"
	"unsafe"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow"
)

// node is a kernel inode: a go-fuse Inode around a cow.Node.
type node struct {
	gofs.Inode
	c  *cow.Node
	m  *mount
	io ioModes
	// regen is the generation offset this kernel inode was made with
	// (see regens); ptLower is set while it is passed through to a
	// lower file. Both are guarded by io.mu where they change.
	regen   uint64
	ptLower bool
	caps    capsCache
	// changed says a directory changed through the mount since it was
	// last listed: OpendirHandle's guess at whether its next listing will
	// be read again before it changes. A change marks it once done, so
	// that a listing read while the change was made is not taken for one
	// that follows it.
	changed atomic.Bool
}

// capsXattr is the attribute the kernel asks for before every write (it
// must drop file capabilities when a file is written): a round trip
// cowfs cannot avoid, because go-fuse does not offer the kernel
// FUSE_HANDLE_KILLPRIV_V2, but can answer without a syscall.
const capsXattr = "security.capability"

// capsCache remembers that a file has no security.capability. Any setxattr
// or removexattr through the mount forgets it, and nothing else changes a
// file's xattrs (cowfs is the only writer of its upper; the lower does not
// change). The low bit is "known absent"; the rest counts changes, so that
// an answer read from the layers while a change was under way is not
// remembered.
type capsCache struct{ state atomic.Uint64 }

func (c *capsCache) absent() bool { return c.state.Load()&1 != 0 }

// snapshot is taken before reading the layers; found records their
// "absent" answer unless something changed since.
func (c *capsCache) snapshot() uint64 { return c.state.Load() }
func (c *capsCache) found(s uint64)   { c.state.CompareAndSwap(s, s|1) }

// changed is called before and after every change of a file's xattrs.
func (c *capsCache) changed() {
	for {
		old := c.state.Load()
		if c.state.CompareAndSwap(old, old&^1+2) {
			return
		}
	}
}

var (
	_ = (gofs.NodeLookuper)((*node)(nil))
	_ = (gofs.NodeGetattrer)((*node)(nil))
	_ = (gofs.NodeSetattrer)((*node)(nil))
	_ = (gofs.NodeOpendirHandler)((*node)(nil))
	_ = (gofs.NodeOpener)((*node)(nil))
	_ = (gofs.NodeCreater)((*node)(nil))
	_ = (gofs.NodeMkdirer)((*node)(nil))
	_ = (gofs.NodeMknoder)((*node)(nil))
	_ = (gofs.NodeSymlinker)((*node)(nil))
	_ = (gofs.NodeLinker)((*node)(nil))
	_ = (gofs.NodeReadlinker)((*node)(nil))
	_ = (gofs.NodeUnlinker)((*node)(nil))
	_ = (gofs.NodeRmdirer)((*node)(nil))
	_ = (gofs.NodeRenamer)((*node)(nil))
	_ = (gofs.NodeGetxattrer)((*node)(nil))
	_ = (gofs.NodeSetxattrer)((*node)(nil))
	_ = (gofs.NodeListxattrer)((*node)(nil))
	_ = (gofs.NodeRemovexattrer)((*node)(nil))
	_ = (gofs.NodeStatfser)((*node)(nil))
)

// withPath runs fn with the node's path, holding the tree lock shared
// (treelock.go), for the few steps of handle requests that need a path.
// A request that took the lock already must use path: a second shared
// hold would deadlock behind a waiting rename.
func (n *node) withPath(fn func(cow.Path) error) error {
	n.m.tree.RLock()
	defer n.m.tree.RUnlock()
	return fn(n.path())
}

// path returns the node's position in the merged tree. A node that lost its
// last name (unlinked while open) has no path; operations on it go through
// its open handles.
func (n *node) path() cow.Path {
	// Room for most paths: a READDIRPLUS takes one per entry.
	nodes := make([]*cow.Node, 0, 8)
	names := make([]string, 0, 8)
	cur := &n.Inode
	for {
		name, parent := cur.Parent()
		if parent == nil {
			break
		}
		nodes = append(nodes, cur.Operations().(*node).c)
		names = append(names, name)
		cur = parent
	}
	if !cur.IsRoot() {
		// The walk ended on a node without a parent that is not the
		// root: n, or an ancestor, was removed while in use.
		return cow.DetachedPath(n.c)
	}
	nodes = append(nodes, n.m.fs.Root())
	for i, j := 0, len(nodes)-1; i < j; i, j = i+1, j-1 {
		nodes[i], nodes[j] = nodes[j], nodes[i]
	}
	for i, j := 0, len(names)-1; i < j; i, j = i+1, j-1 {
		names[i], names[j] = names[j], names[i]
	}
	return cow.Path{Nodes: nodes, Names: names}
}

func (n *node) errno(ctx context.Context, op string, p cow.Path, err error) syscall.Errno {
	return toErrno(ctx, n.m.log, op, p, err)
}

// fillAttr converts attributes from cow into the kernel's form.
func fillAttr(out *fuse.Attr, st *unix.Stat_t) {
	// unix.Stat_t and syscall.Stat_t are the same kernel struct.
	out.FromStat((*syscall.Stat_t)(unsafe.Pointer(st)))
}

// newChild wraps a cow node found or created in n as a kernel inode.
func (n *node) newChild(ctx context.Context, c *cow.Node, st *unix.Stat_t, out *fuse.EntryOut) *gofs.Inode {
	fillAttr(&out.Attr, st)
	rg := n.m.regen.get(c.Ino)
	child := &node{c: c, m: n.m, regen: rg}
	return n.NewInode(ctx, child, gofs.StableAttr{Mode: c.Type, Ino: c.Ino, Gen: c.Gen + rg})
}

// child returns the kernel inode of name in n, looking it up if the tree
// does not hold it.
func (n *node) child(ctx context.Context, name string) (*node, syscall.Errno) {
	if ch := n.GetChild(name); ch != nil {
		return ch.Operations().(*node), 0
	}
	var out fuse.EntryOut
	ch, errno := n.Lookup(ctx, name, &out)
	if errno != 0 {
		return nil, errno
	}
	n.AddChild(name, ch, false)
	return ch.Operations().(*node), 0
}

func caller(ctx context.Context) cow.Cred {
	if c, ok := fuse.FromContext(ctx); ok {
		return cow.Cred{Uid: c.Uid, Gid: c.Gid}
	}
	return cow.Cred{}
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.path()
	c, st, err := n.m.fs.Lookup(p, name)
	if err != nil {
		return nil, n.errno(ctx, "lookup", p, err)
	}
	return n.newChild(ctx, c, &st, out), 0
}

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		return h.Getattr(ctx, out)
	}
	p := n.path()
	st, err := n.m.fs.Attr(p)
	if err != nil {
		return n.errno(ctx, "getattr", p, err)
	}
	fillAttr(&out.Attr, &st)
	return 0
}

func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var a cow.SetAttr
	if m, ok := in.GetMode(); ok {
		a.Mode = &m
	}
	if u, ok := in.GetUID(); ok {
		a.Uid = &u
	}
	if g, ok := in.GetGID(); ok {
		a.Gid = &g
	}
	if s, ok := in.GetSize(); ok {
		sz := int64(s)
		a.Size = &sz
	}
	if in.Valid&fuse.FATTR_ATIME_NOW != 0 {
		a.Atime = &unix.Timespec{Nsec: unix.UTIME_NOW}
	} else if t, ok := in.GetATime(); ok {
		ts := unix.NsecToTimespec(t.UnixNano())
		a.Atime = &ts
	}
	if in.Valid&fuse.FATTR_MTIME_NOW != 0 {
		a.Mtime = &unix.Timespec{Nsec: unix.UTIME_NOW}
	} else if t, ok := in.GetMTime(); ok {
		ts := unix.NsecToTimespec(t.UnixNano())
		a.Mtime = &ts
	}
	p := n.path()
	if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 && a.Mode == nil {
		// A truncate by a caller without CAP_FSETID (killpriv.go).
		if errno := n.dropSetIDForTruncate(ctx, p); errno != 0 {
			return errno
		}
	}
	st, err := n.m.fs.Setattr(p, a)
	if err != nil {
		return n.errno(ctx, "setattr", p, err)
	}
	fillAttr(&out.Attr, &st)
	return 0
}

// list builds the listing of n. An entry whose inode the kernel holds is
// marked held; the tree follows every change made through the mount, and
// nothing else changes the upper. An entry the kernel has let go of since
// cow marked it may stay marked: it then goes out without attributes all
// the same, and a stat of it costs a LOOKUP.
func (n *node) list(ctx context.Context) (*listing, syscall.Errno) {
	p := n.path()
	ents, held, err := n.m.fs.ReadDirKnown(p, n.knownIno)
	if err != nil {
		return nil, n.errno(ctx, "readdir", p, err)
	}
	l := &listing{
		ents: make([]fuse.DirEntry, 0, len(ents)+2),
		held: make([]bool, 0, len(ents)+2),
	}
	parentIno := n.StableAttr().Ino
	if _, parent := n.Parent(); parent != nil {
		parentIno = parent.StableAttr().Ino
	}
	l.ents = append(l.ents,
		fuse.DirEntry{Name: ".", Ino: n.StableAttr().Ino, Mode: fuse.S_IFDIR},
		fuse.DirEntry{Name: "..", Ino: parentIno, Mode: fuse.S_IFDIR})
	l.held = append(l.held, false, false)
	for i, e := range ents {
		// An entry cow marks held is taken at its word (a tree lookup
		// for each entry of a large directory costs a quarter of its
		// listing), unless a generation was ever retired; any other is
		// looked for in the tree.
		h := i < len(held) && held[i]
		if !h || !n.m.regen.none() {
			ch := n.GetChild(e.Name)
			h = ch != nil && n.m.regen.current(ch)
		}
		l.ents = append(l.ents, fuse.DirEntry{Name: e.Name, Ino: e.Ino, Mode: e.Mode})
		l.held = append(l.held, h)
	}
	return l, 0
}

// knownIno returns the inode number of the entry name of n if the kernel
// has its inode.
func (n *node) knownIno(name string) (uint64, bool) {
	if ch := n.GetChild(name); ch != nil {
		return ch.StableAttr().Ino, true
	}
	return 0, false
}

// listing is a directory handle's entries, fixed at its first read so
// that offsets stay valid for seekdir and telldir. held[i] says that the
// kernel had entry i's inode, of the current generation, as far as cow
// and the tree could tell when the listing was built: READDIRPLUS answers
// it without a lookup.
type listing struct {
	ents []fuse.DirEntry
	held []bool
	next int
}

var (
	_ = (gofs.FileReaddirenter)((*listing)(nil))
	_ = (gofs.FileSeekdirer)((*listing)(nil))
)

// Readdirent returns the next entry in place: go-fuse copies what it
// keeps, and a copy on the heap for each entry of a large listing costs
// more than the rest of the listing.
func (l *listing) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if l.next == len(l.ents) {
		return nil, 0
	}
	e := &l.ents[l.next]
	l.next++
	e.Off = uint64(l.next)
	return e, 0
}

func (l *listing) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off > uint64(len(l.ents)) {
		return syscall.EINVAL
	}
	l.next = int(off)
	return 0
}

// lastHeld reports whether the entry Readdirent returned last is name and
// was held: go-fuse answers READDIRPLUS by asking Lookup about each entry
// right after reading it.
func (l *listing) lastHeld(name string) bool {
	i := l.next - 1
	return i >= 0 && l.held[i] && l.ents[i].Name == name
}

// OpendirHandle lets the kernel cache the listing (FOPEN_CACHE_DIR) of a
// directory that has not changed since it was last listed: a warm walk
// then costs no READDIR at all. The kernel fills its cache by copying each
// entry as it goes out, a cost on the listing that pays only if the
// directory is listed again before it changes, and a directory being
// written (a crawl's output) changes first. So a listing that follows a
// change goes uncached, with neither flag (go-fuse turns FOPEN_KEEP_CACHE
// alone into both), and the next one, if nothing changed between, fills
// the cache. The kernel drops its cache when the directory changes
// through the mount (every change does: cowfs is the only writer of its
// upper, and the lower does not change while mounted), so after a change
// there is nothing worth keeping; changed is only the guess of what comes
// next. The listing is built on the first read, so an opendir the kernel
// answers from its cache builds nothing.
func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if n.changed.Load() {
		return &dirHandle{n: n}, 0, 0
	}
	return &dirHandle{n: n}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// dirHandle is an open directory; its listing is fixed at the first read,
// so offsets stay valid for seekdir and telldir, until a rewinddir.
type dirHandle struct {
	n    *node
	list *listing
}

var (
	_ = (gofs.FileReaddirenter)((*dirHandle)(nil))
	_ = (gofs.FileSeekdirer)((*dirHandle)(nil))
	_ = (gofs.FileLookuper)((*dirHandle)(nil))
	_ = (gofs.FileFsyncdirer)((*dirHandle)(nil))
)

func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	p := d.n.path()
	return d.n.errno(ctx, "fsyncdir", p, d.n.m.fs.SyncDir(p))
}

func (d *dirHandle) load(ctx context.Context) syscall.Errno {
	if d.list != nil {
		return 0
	}
	// Before the listing is read, so that a change made while it is
	// read marks it again.
	d.n.changed.Store(false)
	l, errno := d.n.list(ctx)
	if errno != 0 {
		return errno
	}
	d.list = l
	return 0
}

func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if errno := d.load(ctx); errno != 0 {
		return nil, errno
	}
	return d.list.Readdirent(ctx)
}

// Seekdir to 0 is rewinddir, which must show the directory as it is now,
// as a new opendir would: the listing is built again.
// Lookup answers READDIRPLUS for one entry. An entry whose inode the
// kernel has, with attributes it keeps for an hour (every change through
// the mount refreshes them), goes out without attributes (node ID 0, which
// the kernel takes as "nothing to add", not as ENOENT): a listing of a
// directory whose files were just written or looked at costs no lookup, no
// stat and no new kernel inode per entry. An entry the kernel does not have
// is looked up, so that a walk that stats what it lists asks nothing more.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if d.list != nil && d.list.lastHeld(name) {
		return nil, syscall.EEXIST
	}
	if ch := d.n.GetChild(name); ch != nil && d.n.m.regen.current(ch) {
		return nil, syscall.EEXIST
	}
	return d.n.Lookup(ctx, name, out)
}

func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 {
		d.list = nil
	}
	if errno := d.load(ctx); errno != 0 {
		return errno
	}
	return d.list.Seekdir(ctx, off)
}

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if n.stale(isWrite(flags)) {
		return nil, 0, syscall.ESTALE
	}
	p := n.path()
	h, err := n.m.fs.Open(p, int(flags))
	if err != nil {
		return nil, 0, n.errno(ctx, "open", p, err)
	}
	fh, fl, errno := n.newHandle(h, flags)
	if errno != 0 {
		h.Release()
		return nil, 0, errno
	}
	if pt, ok := fh.(*ptHandle); ok && isWrite(flags) {
		if errno := pt.dropSetIDAtOpen(ctx); errno != 0 {
			pt.Release(ctx)
			return nil, 0, errno
		}
	}
	return fh, fl, 0
}

func (n *node) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	p := n.path()
	defer n.changed.Store(true)
	c, st, h, err := n.m.fs.Create(p, name, int(flags), mode, caller(ctx))
	if err != nil {
		return nil, nil, 0, n.errno(ctx, "create", p, err)
	}
	ch := n.newChild(ctx, c, &st, out)
	// A new file has no other opens: newHandle cannot refuse it.
	fh, fl, _ := ch.Operations().(*node).newHandle(h, flags)
	if pt, ok := fh.(*ptHandle); ok {
		// A set-ID file its creator writes through a passed-through
		// open: the entry the kernel gets must show the mode after.
		if dropped, _ := pt.dropSetID(ctx, true); dropped {
			if st, err := h.Stat(); err == nil {
				fillAttr(&out.Attr, &st)
			}
		}
	}
	return ch, fh, fl, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.path()
	defer n.changed.Store(true)
	c, st, err := n.m.fs.Mkdir(p, name, mode, caller(ctx))
	if err != nil {
		return nil, n.errno(ctx, "mkdir", p, err)
	}
	return n.newChild(ctx, c, &st, out), 0
}

func (n *node) Mknod(ctx context.Context, name string, mode, rdev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.path()
	defer n.changed.Store(true)
	c, st, err := n.m.fs.Mknod(p, name, mode, rdev, caller(ctx))
	if err != nil {
		return nil, n.errno(ctx, "mknod", p, err)
	}
	return n.newChild(ctx, c, &st, out), 0
}

func (n *node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	p := n.path()
	defer n.changed.Store(true)
	c, st, err := n.m.fs.Symlink(p, name, target, caller(ctx))
	if err != nil {
		return nil, n.errno(ctx, "symlink", p, err)
	}
	return n.newChild(ctx, c, &st, out), 0
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	t := target.(*node)
	p := n.path()
	defer n.changed.Store(true)
	st, err := n.m.fs.Link(t.path(), p, name)
	if err != nil {
		return nil, n.errno(ctx, "link", p, err)
	}
	fillAttr(&out.Attr, &st)
	return &t.Inode, 0
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	p := n.path()
	t, err := n.m.fs.Readlink(p)
	if err != nil {
		return nil, n.errno(ctx, "readlink", p, err)
	}
	return []byte(t), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	ch, errno := n.child(ctx, name)
	if errno != 0 {
		return errno
	}
	p := n.path()
	defer n.changed.Store(true)
	return n.errno(ctx, "unlink", p, n.m.fs.Unlink(p, name, ch.c))
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	ch, errno := n.child(ctx, name)
	if errno != 0 {
		return errno
	}
	p := n.path()
	defer n.changed.Store(true)
	return n.errno(ctx, "rmdir", p, n.m.fs.Rmdir(p, name, ch.c))
}

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	src, errno := n.child(ctx, name)
	if errno != 0 {
		return errno
	}
	np := newParent.(*node)
	var target *cow.Node
	if t := np.GetChild(newName); t != nil {
		target = t.Operations().(*node).c
	}
	defer n.changed.Store(true)
	defer np.changed.Store(true)
	p := n.path()
	return n.errno(ctx, "rename", p, n.m.fs.Rename(p, name, src.c, np.path(), newName, target, flags))
}

func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if attr == capsXattr && n.caps.absent() {
		return 0, syscall.ENODATA
	}
	snap := n.caps.snapshot()
	p := n.path()
	v, err := n.m.fs.Getxattr(p, attr)
	if err != nil {
		errno := n.errno(ctx, "getxattr", p, err)
		if attr == capsXattr && errno == syscall.ENODATA {
			n.caps.found(snap)
		}
		return 0, errno
	}
	if len(dest) == 0 {
		return uint32(len(v)), 0
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	p := n.path()
	names, err := n.m.fs.Listxattr(p)
	if err != nil {
		return 0, n.errno(ctx, "listxattr", p, err)
	}
	var b strings.Builder
	for _, x := range names {
		b.WriteString(x)
		b.WriteByte(0)
	}
	if len(dest) == 0 {
		return uint32(b.Len()), 0
	}
	if len(dest) < b.Len() {
		return uint32(b.Len()), syscall.ERANGE
	}
	return uint32(copy(dest, b.String())), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	n.caps.changed()
	defer n.caps.changed()
	p := n.path()
	return n.errno(ctx, "setxattr", p, n.m.fs.Setxattr(p, attr, data, int(flags)))
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	n.caps.changed()
	defer n.caps.changed()
	p := n.path()
	return n.errno(ctx, "removexattr", p, n.m.fs.Removexattr(p, attr))
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st, err := n.m.fs.Statfs()
	if err != nil {
		return n.errno(ctx, "statfs", cow.Path{}, err)
	}
	out.FromStatfsT((*syscall.Statfs_t)(unsafe.Pointer(&st)))
	return 0
}
