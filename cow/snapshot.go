package cow

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/names"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/scan"
)

// CaptureStats says what a capture cost.
type CaptureStats struct {
	Dirs, Files int
	// DirsReused and ChunksReused count trees and chunks taken from an
	// object lower by digest, without reading them.
	DirsReused, ChunksReused int
	// BytesRead is what was read and hashed.
	BytesRead int64
}

// Capture turns the merged view into objects at one instant and returns the
// root tree and the root directory's own entry. It holds every change
// (namespace and data) until it returns. What comes from an object lower
// unchanged is referenced by digest, not read: a directory the upper never
// touched is its lower tree, a chunk never copied up is its lower blob.
func (f *FS) Capture(ctx context.Context, store object.GetPutter) (object.Digest, object.Entry, CaptureStats, error) {
	return f.capture(ctx, store, nil, nil)
}

// CaptureLocal is Capture over an object lower whose objects come from
// afar into local (a remote's cache): while it holds every change, it
// takes the lower's objects from local alone, so that no change waits on
// the network, and an object missing there fails it with an error
// wrapping ErrNotLocal. PrepareCapture, run first, fetches what it reads.
func (f *FS) CaptureLocal(ctx context.Context, store object.GetPutter, local object.Getter) (object.Digest, object.Entry, CaptureStats, error) {
	return f.capture(ctx, store, local, nil)
}

func (f *FS) capture(ctx context.Context, store object.GetPutter, local object.Getter, prep *scan.Prep) (object.Digest, object.Entry, CaptureStats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gate.Lock()
	defer f.gate.Unlock()
	if ol, ok := f.lo.(*lower.Objects); ok && local != nil {
		defer ol.ReadLocal(local)()
	}
	view := f.meta.scanView()
	defer view.Discard()
	c := &capture{f: f, store: store, ctx: ctx, sc: scan.New(ctx, f.lo, store, view)}
	if prep != nil {
		c.prep = prep.Still(f.lo)
	}
	var err error
	if c.pending, err = f.meta.pendingLinks(); err != nil {
		return object.Zero, object.Entry{}, c.stats, fmt.Errorf("capture: %w", err)
	}
	root := f.rootPath()
	st, err := f.attr(root)
	if err != nil {
		return object.Zero, object.Entry{}, c.stats, err
	}
	e, err := c.entry(root, &st)
	if err != nil {
		return object.Zero, object.Entry{}, c.stats, fmt.Errorf("capture: %w", err)
	}
	c.stats.BytesRead = c.sc.Stats().BytesRead
	if prep != nil {
		c.stats.BytesRead += prep.BytesRead
	}
	return e.Object, e, c.stats, nil
}

type capture struct {
	f     *FS
	store object.GetPutter
	ctx   context.Context
	stats CaptureStats
	// sc hashes what capture must read: files of a directory lower
	// (through the mount's scan cache) and changed chunks.
	sc *scan.Scanner
	// pending holds the lower inodes with several names that are in
	// the upper under some names and still in the lower under others
	// (the mount links those up when it next looks them up). The
	// capture must show every name as the upper inode.
	pending map[uint64]bool
	// links maps merged inode numbers to link groups (linkID).
	links map[uint64]uint64
	// prep holds the trees of the local lower's directories that did
	// not change since PrepareLower read them, by lower path.
	prep map[string]scan.PreparedDir
}

func (c *capture) entry(p Path, st *unix.Stat_t) (object.Entry, error) {
	if err := c.ctx.Err(); err != nil {
		return object.Entry{}, err
	}
	n := p.node()
	e := object.Entry{
		Name:  p.name(),
		Mode:  st.Mode,
		Uid:   st.Uid,
		Gid:   st.Gid,
		Mtime: st.Mtim.Nano(),
	}
	names, err := c.f.listxattr(p)
	if err != nil {
		return e, fmt.Errorf("xattrs of %q: %w", p.Rel(), err)
	}
	for _, x := range names {
		v, err := c.f.getxattr(p, x)
		if err != nil {
			return e, fmt.Errorf("xattr %s of %q: %w", x, p.Rel(), err)
		}
		if e.Xattrs == nil {
			e.Xattrs = map[string][]byte{}
		}
		e.Xattrs[x] = v
	}
	switch n.Type {
	case unix.S_IFDIR:
		e.Object, err = c.dir(p)
	case unix.S_IFREG:
		e.Size = st.Size
		e.Object, err = c.file(p, st.Size)
	case unix.S_IFLNK:
		e.Target, err = c.f.readlink(p)
	default:
		e.Rdev = st.Rdev
	}
	if n.Type != unix.S_IFDIR && st.Nlink > 1 {
		e.Link, e.Nlink = c.linkID(n, st), uint32(st.Nlink)
	}
	return e, err
}

// linkID returns the link group of the file n, whose merged attributes
// are st, one per inode for the whole capture. A file that is a link group
// of an object lower keeps that group's id, as do the lower's trees the
// capture takes whole; a file of a local lower that the upper never took
// has the id a scan of the lower gives it (scan.LinkID), as in the trees
// PrepareLower made; any other gets a random one. Not the inode number:
// it is unique only within this mount, and a snapshot of a restore holds
// groups of the mount it came from beside this one's.
func (c *capture) linkID(n *Node, st *unix.Stat_t) uint64 {
	ino := st.Ino
	if _, ok := c.f.lo.(*lower.Objects); !ok && n.hasLower && !n.upper {
		return scan.LinkID(st.Dev, st.Ino)
	}
	if id, ok := c.links[ino]; ok {
		return id
	}
	var id uint64
	if ol, ok := c.f.lo.(*lower.Objects); ok && n.hasLower {
		if le, err := ol.Entry(n.lower); err == nil {
			id = le.Link
		}
	}
	for id == 0 {
		id = rand.Uint64()
	}
	if c.links == nil {
		c.links = map[uint64]uint64{}
	}
	c.links[ino] = id
	return id
}

func (c *capture) dir(p Path) (object.Digest, error) {
	n := p.node()
	if d, ok := c.prepared(n); ok {
		c.stats.Dirs += d.Dirs
		c.stats.Files += d.Files
		c.stats.DirsReused++
		return d.Tree, nil
	}
	c.stats.Dirs++
	if ol, ok := c.f.lo.(*lower.Objects); ok && !n.upper && n.hasLower {
		e, err := ol.Entry(n.lower)
		if err != nil {
			return object.Zero, err
		}
		holds, err := c.holdsPending(ol, e.Object)
		if err != nil {
			return object.Zero, err
		}
		if !holds {
			c.stats.DirsReused++
			return e.Object, nil
		}
	}
	ents, err := c.f.readDir(p)
	if err != nil {
		return object.Zero, err
	}
	pre, err := c.preparedEntries(p)
	if err != nil {
		return object.Zero, err
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	t := &object.Tree{Entries: make([]object.Entry, 0, len(ents))}
	for _, de := range ents {
		if e, ok := pre[de.Name]; ok {
			c.takePrepared(n.lower, &e)
			t.Entries = append(t.Entries, e)
			continue
		}
		child, st, err := c.f.lookup(p, de.Name)
		if err != nil {
			return object.Zero, fmt.Errorf("lookup %q: %w", names.Join(p.Rel(), de.Name), err)
		}
		if !child.upper && child.Type == unix.S_IFREG && c.pending[child.Ino] {
			// Another name of this lower file is in the upper: link
			// this one up too, as a lookup through the mount would.
			if err := c.f.copyUpLocked(p.child(de.Name, child)); err != nil {
				return object.Zero, fmt.Errorf("link up %q: %w", names.Join(p.Rel(), de.Name), err)
			}
			if child, st, err = c.f.lookup(p, de.Name); err != nil {
				return object.Zero, fmt.Errorf("lookup %q: %w", names.Join(p.Rel(), de.Name), err)
			}
		}
		e, err := c.entry(p.child(de.Name, child), &st)
		if err != nil {
			return object.Zero, err
		}
		t.Entries = append(t.Entries, e)
	}
	enc, err := object.EncodeTree(t)
	if err != nil {
		return object.Zero, fmt.Errorf("tree %q: %w", p.Rel(), err)
	}
	return c.store.Put(c.ctx, enc)
}

func (c *capture) file(p Path, size int64) (object.Digest, error) {
	n := p.node()
	c.stats.Files++
	if size == 0 {
		return object.Zero, nil
	}
	ol, objLower := c.f.lo.(*lower.Objects)
	if objLower && !n.upper {
		// Its entry names it; its file object is not read.
		e, err := ol.Entry(n.lower)
		c.stats.ChunksReused += int((size + ChunkSize - 1) / ChunkSize)
		return e.Object, err
	}
	if !objLower && !n.upper {
		d, _, reused, err := c.lowerFile(n.lower, false)
		if reused {
			c.stats.ChunksReused += int((size + ChunkSize - 1) / ChunkSize)
		}
		return d, err
	}
	d, err := c.f.loadData(p)
	if err != nil {
		return object.Zero, err
	}
	defer func() {
		if d.upper != nil {
			d.upper.Close()
		}
		if d.lower != nil {
			d.lower.Close()
		}
	}()
	var origin *object.File
	switch {
	case objLower && d.meta != nil:
		if origin, _, err = ol.FileObject(d.meta.Origin); err != nil {
			return object.Zero, fmt.Errorf("origin of %q: %w", p.Rel(), err)
		}
	case d.meta != nil:
		if _, origin, _, err = c.lowerFile(d.meta.Origin, true); err != nil {
			return object.Zero, fmt.Errorf("origin of %q: %w", p.Rel(), err)
		}
	}
	fo := &object.File{Size: size, Chunks: make([]object.Digest, (size+ChunkSize-1)/ChunkSize)}
	for i := range fo.Chunks {
		// A big file takes a while, and writes are held meanwhile: a
		// caller that gave up must not keep them held.
		if err := c.ctx.Err(); err != nil {
			return object.Zero, err
		}
		cs := int64(i) * ChunkSize
		ce := min(cs+ChunkSize, size)
		if origin != nil && reusable(d.meta, origin, int64(i), cs, ce) {
			fo.Chunks[i] = origin.Chunks[i]
			c.stats.ChunksReused++
			continue
		}
		if fo.Chunks[i], err = c.sc.Chunk(d.readAt, cs, ce); err != nil {
			return object.Zero, fmt.Errorf("read %q: %w", p.Rel(), err)
		}
	}
	enc, err := object.EncodeFile(fo)
	if err != nil {
		return object.Zero, err
	}
	return c.store.Put(c.ctx, enc)
}

// lowerFile returns the file object of a file of a local-directory lower,
// hashing it only when the mount's scan cache has no entry for its inode
// with the same size, mtime and ctime. The lower does not change while
// mounted, so the cache makes every snapshot after the first read only what
// changed.
func (c *capture) lowerFile(path string, needFile bool) (d object.Digest, fo *object.File, cached bool, err error) {
	before := c.sc.Stats().BytesRead
	d, fo, err = c.sc.FileAt(path, needFile)
	return d, fo, err == nil && c.sc.Stats().BytesRead == before, err
}

// reusable reports whether chunk i of a copied-up file is still exactly chunk
// i of its origin: never copied up, wholly below the lower limit, and the
// same length in both.
func reusable(m *fileMeta, origin *object.File, i, cs, ce int64) bool {
	if m.Chunks.Has(i) || ce > m.LowerLimit || i >= int64(len(origin.Chunks)) {
		return false
	}
	return min(cs+ChunkSize, origin.Size) == ce
}

// fromOrigin reports whether a capture reads chunk i of a copied-up file
// from its origin: the chunk is not in the upper, begins below the lower
// limit, and is not reusable by digest (the chunk the lower limit falls
// in, once the file grew past it or was cut inside it).
func fromOrigin(m *fileMeta, origin *object.File, i, cs, ce int64) bool {
	return !m.Chunks.Has(i) && cs < m.LowerLimit && i < int64(len(origin.Chunks)) && !reusable(m, origin, i, cs, ce)
}

// holdsPending reports whether the lower tree d holds, at any depth, a
// name of a file in c.pending: such a tree cannot be taken whole.
func (c *capture) holdsPending(ol *lower.Objects, d object.Digest) (bool, error) {
	if len(c.pending) == 0 {
		return false, nil
	}
	t, err := ol.Tree(d)
	if err != nil {
		return false, err
	}
	for i := range t.Entries {
		e := &t.Entries[i]
		switch {
		case e.Link != 0 && c.pending[lower.EntryIno("", e)]:
			return true, nil
		case e.Mode&unix.S_IFMT == unix.S_IFDIR:
			if holds, err := c.holdsPending(ol, e.Object); err != nil || holds {
				return holds, err
			}
		}
	}
	return false, nil
}
