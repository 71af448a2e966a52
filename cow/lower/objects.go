package lower

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/names"
	"github.com/cowfs/cowfs/cow/object"
)

// Objects is a lower layer made of tree objects: a snapshot, or a
// version of a served tree. It is immutable by construction, since its root
// is a digest.
type Objects struct {
	store object.Getter
	root  object.Digest
	rootE object.Entry

	mu    sync.Mutex
	trees map[object.Digest]*object.Tree

	// local, while set, is where the lower's reads take objects from
	// instead of store: see ReadLocal.
	local atomic.Pointer[localGetter]
}

// ErrNotLocal is wrapped by a read of an object lower that needed an
// object its local store lacks while it read from there alone (see
// the engine's FS.CaptureLocal).
var ErrNotLocal = errors.New("not in the local store")

// localGetter reads objects from a local store alone: an object missing
// there, or damaged, is ErrNotLocal, for the caller to fetch once it
// holds nothing up.
type localGetter struct{ g object.Getter }

func (l *localGetter) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	b, err := l.g.Get(ctx, d)
	if errors.Is(err, object.ErrNotFound) || errors.Is(err, object.ErrCorrupt) {
		return nil, fmt.Errorf("%s: %w", d.Short(), ErrNotLocal)
	}
	return b, err
}

// ReadLocal makes the lower's reads, until done is called, take objects
// from local alone, never from store: a capture holds every change while
// it reads, and with store a remote's cache, a read could wait on the
// network that long. It covers the files the lower opens meanwhile, not
// those opened before, whose reads keep fetching. It is set only while
// the capture holds the namespace lock, so the capture's reads are the
// only ones it meets: nothing else opens a lower file then, and what else
// reads the lower (a detached file's xattrs) finds the trees it resolved
// before kept decoded.
func (l *Objects) ReadLocal(local object.Getter) (done func()) {
	l.local.Store(&localGetter{local})
	return func() { l.local.Store(nil) }
}

// getter is where the lower's reads take objects from now.
func (l *Objects) getter() object.Getter {
	if g := l.local.Load(); g != nil {
		return g
	}
	return l.store
}

// NewObjects returns the lower whose root directory is the tree root,
// with the root's own attributes taken from rootEntry (a tree holds its
// entries' attributes, not its own).
func NewObjects(store object.Getter, root object.Digest, rootEntry object.Entry) *Objects {
	rootEntry.Object = root
	if rootEntry.Mode&unix.S_IFMT == 0 {
		rootEntry.Mode = unix.S_IFDIR | 0o755
	}
	return &Objects{store: store, root: root, rootE: rootEntry, trees: map[object.Digest]*object.Tree{}}
}

// Root returns the digest of the root tree.
func (l *Objects) Root() object.Digest { return l.root }

// Store returns where the lower fetches its objects from, whatever
// ReadLocal says: a capture's prepare fetches through it what the capture
// will then read locally.
func (l *Objects) Store() object.Getter { return l.store }

// Tree returns the decoded tree d. Trees are small and immutable, so the
// decoded form is kept for the life of the lower.
func (l *Objects) Tree(d object.Digest) (*object.Tree, error) {
	return l.TreeFrom(l.getter(), d)
}

// TreeFrom is Tree, fetching from g.
func (l *Objects) TreeFrom(g object.Getter, d object.Digest) (*object.Tree, error) {
	l.mu.Lock()
	t, ok := l.trees[d]
	l.mu.Unlock()
	if ok {
		return t, nil
	}
	t, err := decodeTreeFrom(g, d)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", d.Short(), err)
	}
	// A tree may come from another machine: a name that could lead out
	// of a directory ("..", "a/b") makes the whole tree unusable.
	for i := range t.Entries {
		if err := names.Valid(t.Entries[i].Name); err != nil {
			return nil, fmt.Errorf("tree %s: %w: %w", d.Short(), err, object.ErrCorrupt)
		}
	}
	l.mu.Lock()
	_, had := l.trees[d]
	l.trees[d] = t
	l.mu.Unlock()
	// The first look into a directory: what a crawl opens next is its
	// files. Not while a capture reads locally (g is then not store).
	if p, ok := g.(object.DirPrefetcher); ok && !had && g == l.store {
		p.PrefetchDir(t)
	}
	return t, nil
}

// treeBuf is the buffer a tree is read into before it is decoded: room
// for a directory of a few hundred entries; a bigger tree comes in memory
// of its own.
const treeBuf = 16 << 10

// decodeTreeFrom reads tree d from g and decodes it: into a buffer kept
// between trees where g can read into one, since the decoded tree copies
// out all it keeps, so that a mount's first look into each directory
// does not put the tree's bytes in new memory.
func decodeTreeFrom(g object.Getter, d object.Digest) (*object.Tree, error) {
	ig, ok := g.(intoGetter)
	if !ok {
		b, err := g.Get(context.Background(), d)
		if err != nil {
			return nil, err
		}
		return object.DecodeTree(b)
	}
	buf := getChunkBuf(treeBuf)
	defer putChunkBuf(buf)
	b, err := ig.GetInto(context.Background(), d, *buf)
	if err != nil {
		return nil, err
	}
	return object.DecodeTree(b)
}

// Entry walks from the root to path and returns the entry there: a
// snapshot reuses the tree of a directory it did not change, and the
// object of a file, by digest.
func (l *Objects) Entry(path string) (object.Entry, error) {
	return l.EntryFrom(l.getter(), path)
}

// EntryFrom is Entry, fetching from g.
func (l *Objects) EntryFrom(g object.Getter, path string) (object.Entry, error) {
	e := l.rootE
	if path == "" {
		return e, nil
	}
	for _, name := range strings.Split(path, "/") {
		if e.Mode&unix.S_IFMT != unix.S_IFDIR {
			return object.Entry{}, syscall.ENOTDIR
		}
		t, err := l.TreeFrom(g, e.Object)
		if err != nil {
			return object.Entry{}, err
		}
		child, ok := t.Lookup(name)
		if !ok {
			return object.Entry{}, syscall.ENOENT
		}
		e = *child
	}
	return e, nil
}

// inoOf derives a stable inode number from the path: the same snapshot
// restored twice numbers its files the same way. The top bit stays clear
// (upper inodes on another device use it), and 0 and 1 are never used.
func inoOf(path string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(path))
	ino := h.Sum64() &^ (1 << 63)
	if ino < 2 {
		ino += 2
	}
	return ino
}

func (l *Objects) Lstat(path string) (unix.Stat_t, error) {
	e, err := l.Entry(path)
	if err != nil {
		return unix.Stat_t{}, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	return statOf(path, &e), nil
}

// EntryIno is the inode number of entry e at path: a file with hard links
// is numbered by its link group, so that all its names share one.
func EntryIno(path string, e *object.Entry) uint64 {
	if e.Link != 0 {
		// No path holds a NUL, so this never names a path.
		return inoOf("\x00link " + strconv.FormatUint(e.Link, 10))
	}
	return inoOf(path)
}

func statOf(path string, e *object.Entry) unix.Stat_t {
	st := unix.Stat_t{
		Ino:     EntryIno(path, e),
		Nlink:   max(1, uint64(e.Nlink)),
		Mode:    e.Mode,
		Uid:     e.Uid,
		Gid:     e.Gid,
		Rdev:    e.Rdev,
		Size:    e.Size,
		Blksize: 4096,
		Mtim:    unix.NsecToTimespec(e.Mtime),
	}
	st.Atim, st.Ctim = st.Mtim, st.Mtim
	switch e.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		st.Nlink = 2
	case unix.S_IFLNK:
		st.Size = int64(len(e.Target))
	}
	st.Blocks = (st.Size + 511) / 512
	return st
}

func (l *Objects) ReadDir(path string) ([]DirEntry, error) {
	e, err := l.Entry(path)
	if err != nil {
		return nil, &os.PathError{Op: "readdir", Path: path, Err: err}
	}
	if e.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil, &os.PathError{Op: "readdir", Path: path, Err: syscall.ENOTDIR}
	}
	t, err := l.Tree(e.Object)
	if err != nil {
		return nil, err
	}
	out := make([]DirEntry, len(t.Entries))
	for i, c := range t.Entries {
		out[i] = DirEntry{Name: c.Name, Ino: EntryIno(names.Join(path, c.Name), &c), Mode: c.Mode & unix.S_IFMT}
	}
	return out, nil
}

func (l *Objects) Readlink(path string) (string, error) {
	e, err := l.Entry(path)
	if err != nil {
		return "", &os.PathError{Op: "readlink", Path: path, Err: err}
	}
	if e.Mode&unix.S_IFMT != unix.S_IFLNK {
		return "", &os.PathError{Op: "readlink", Path: path, Err: syscall.EINVAL}
	}
	return e.Target, nil
}

func (l *Objects) Listxattr(path string) ([]string, error) {
	e, err := l.Entry(path)
	if err != nil {
		return nil, &os.PathError{Op: "listxattr", Path: path, Err: err}
	}
	xs := make([]string, 0, len(e.Xattrs))
	for k := range e.Xattrs {
		xs = append(xs, k)
	}
	return xs, nil
}

func (l *Objects) Getxattr(path, name string) ([]byte, error) {
	e, err := l.Entry(path)
	if err != nil {
		return nil, &os.PathError{Op: "getxattr", Path: path, Err: err}
	}
	v, ok := e.Xattrs[name]
	if !ok {
		return nil, syscall.ENODATA
	}
	return v, nil
}

// A readGetter fetches a file object for a reader that opened the file
// and reads it next: a remote store may bring the file's first bytes
// with it, in the same round trip (remote.Cache).
type readGetter interface {
	GetForRead(ctx context.Context, d object.Digest) ([]byte, error)
}

func (l *Objects) Open(path string) (File, error) {
	e, err := l.Entry(path)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	if e.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, &os.PathError{Op: "open", Path: path, Err: syscall.EINVAL}
	}
	of := &objectFile{store: l.getter(), path: path}
	if e.Size == 0 {
		of.f = &object.File{}
		return of, nil
	}
	g := l.getter()
	get := g.Get
	if r, ok := g.(readGetter); ok {
		get = r.GetForRead
	}
	b, err := get(context.Background(), e.Object)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if of.f, err = object.DecodeFile(b); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return of, nil
}

// FileObject returns the file object of the regular file at path, so that a
// snapshot can reuse the digests of chunks it did not change.
func (l *Objects) FileObject(path string) (*object.File, object.Entry, error) {
	return l.FileObjectFrom(l.getter(), path)
}

// FileObjectFrom is FileObject, fetching from g.
func (l *Objects) FileObjectFrom(g object.Getter, path string) (*object.File, object.Entry, error) {
	e, err := l.EntryFrom(g, path)
	if err != nil {
		return nil, e, err
	}
	if e.Size == 0 {
		return &object.File{}, e, nil
	}
	b, err := g.Get(context.Background(), e.Object)
	if err != nil {
		return nil, e, err
	}
	f, err := object.DecodeFile(b)
	return f, e, err
}

// readAhead is how many chunks past a sequential read are kept in flight,
// asked for in batches of whole chunk groups (object.ChunkGroup, half of
// it), unless the store says otherwise (aheadSizer): a remote chunk costs
// a round trip, and 8 MiB in flight keeps a loopback or LAN link busy
// without fetching much a reader will not use.
const readAhead = 2 * object.ChunkGroup

// An aheadSizer is a Prefetcher that says how many chunks past a
// sequential read to keep in flight: remote.Cache, which keeps more in
// flight from a bucket than from a master.
type aheadSizer interface {
	ReadAhead() int64
}

// An aheadBatcher is a Prefetcher that wants a sequential read's chunks
// asked for this many at a time (0: as they come, a group or more),
// each batch ending at a multiple of it: remote.Cache over a bucket,
// whose packs hold that many chunks side by side and send each batch
// with one GET.
type aheadBatcher interface {
	AheadBatch() int64
}

// objectFile reads a file object chunk by chunk, keeping the last chunk
// read at each of up to maxStreams places.
type objectFile struct {
	store object.Getter
	path  string
	f     *object.File

	// mu is held across a read, the copy out of its chunks and the
	// references to them handed out (ReadSlices), but not while a
	// stream's chunk is read from the store (stream.fill): a read at
	// another place goes on meanwhile.
	mu      sync.Mutex
	streams [maxStreams]stream
	tick    uint64 // counts reads: stream.used
}

// maxStreams is how many places in one file keep their last chunk and
// their own read-ahead. Every process that opens a file reads the same
// objectFile (the node's), so readers of one file at several places at
// once (parallel downloads, a database's connections, a reader that goes
// back and forth between two places) would otherwise each find the chunk
// another just replaced, read it from the store and hash it again, and
// none would read in order, so none would get read-ahead.
const maxStreams = 4

// A stream is one place a file is read at: the last chunk read there.
type stream struct {
	last int64
	// data is chunk last; nil when the stream holds none.
	data []byte
	// mem is the memory data is in when it goes back to someone once
	// nobody reads it (chunkMem); nil when data is memory nobody
	// writes (fetched, or held and handed over).
	mem *chunkMem
	// ahead is the last chunk read-ahead asked for.
	ahead int64
	// used is the file's tick when the stream was last read: the
	// least recently read one is the one a new place takes.
	used uint64
	// fill, while chunk last is read from the store into the stream
	// outside o.mu, is closed once it is in (or the read failed).
	fill chan struct{}
}

// chunkMem is the memory a stream's last chunk is in, when it goes back to
// someone once read no more: the file's chunk buffer (chunkBufs), or
// memory the store pinned for it (pinGetter). The file holds a reference
// while the chunk is a stream's last, and each view of it handed out
// (ReadSlices) one until it is released; the last reference gives the
// memory back. A reference never released only keeps the memory from
// being used again: the collector takes it.
type chunkMem struct {
	refs atomic.Int32
	// buf is the chunk buffer the chunk was read into; release lets go
	// of the store's pin. One or the other.
	buf     *[]byte
	release func()
}

func newChunkMem(buf *[]byte, release func()) *chunkMem {
	m := &chunkMem{buf: buf, release: release}
	m.refs.Store(1)
	return m
}

func (m *chunkMem) unref() {
	if m.refs.Add(-1) != 0 {
		return
	}
	if m.buf != nil {
		putChunkBuf(m.buf)
	}
	if m.release != nil {
		m.release()
	}
}

// An intoGetter reads an object the caller owns a buffer for into that
// buffer: remote.Cache, object.DirStore. What it returns is either in
// buf or bytes nobody writes.
type intoGetter interface {
	GetInto(ctx context.Context, d object.Digest, buf []byte) ([]byte, error)
}

// A pinGetter is an intoGetter that may hand over an object it holds in
// memory as it is, not copied into buf, pinned there until the caller
// calls release (once): remote.Cache, whose read-ahead holds the chunks
// a sequential reader reads next.
type pinGetter interface {
	GetPinned(ctx context.Context, d object.Digest, buf []byte) (_ []byte, release func(), _ error)
}

// dropLocked drops the stream's last chunk; o.mu is held. It returns the
// chunk buffer the chunk was in if nobody else reads it, for the next
// chunk: nil if there is none.
func (s *stream) dropLocked() *[]byte {
	s.data = nil
	m := s.mem
	s.mem = nil
	switch {
	case m == nil:
		return nil
	case m.buf != nil && m.refs.Load() == 1:
		// Only this file's reference: views are handed out under
		// o.mu, so none can be taken now.
		return m.buf
	}
	m.unref()
	return nil
}

// streamFor returns the stream that reads chunk i next, and whether it
// read chunk i-1 last: the stream holding i or i-1, else the one read
// least recently (or one holding nothing), which moves to i. If a stream
// is reading i or i-1 from the store, or every stream is, it returns
// that stream's fill to wait for instead. o.mu is held.
func (o *objectFile) streamFor(i int64) (_ *stream, inOrder bool, wait <-chan struct{}) {
	var after, free, lru *stream
	for k := range o.streams {
		s := &o.streams[k]
		switch {
		case s.fill != nil:
			if s.last == i || s.last == i-1 {
				return nil, false, s.fill
			}
			wait = s.fill
			continue
		case s.data == nil:
			if free == nil {
				free = s
			}
		case s.last == i:
			return s, false, nil
		case s.last == i-1 && after == nil:
			after = s
		}
		if s.data != nil && (lru == nil || s.used < lru.used) {
			lru = s
		}
	}
	switch {
	case after != nil:
		return after, true, nil
	case free != nil:
		lru = free
	case lru == nil:
		return nil, false, wait
	}
	// A new place: read-ahead starts from it.
	lru.ahead = i
	return lru, false, nil
}

// chunkLocked returns the data of chunk i, and the memory it is in (nil:
// memory nobody writes), valid until the next chunkLocked or Close; o.mu
// is held, and let go while the chunk is read from the store.
func (o *objectFile) chunkLocked(ctx context.Context, i int64) ([]byte, *chunkMem, error) {
	s, inOrder, wait := o.streamFor(i)
	for s == nil {
		o.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			o.mu.Lock()
			return nil, nil, fmt.Errorf("%s chunk %d: %w", o.path, i, ctx.Err())
		}
		o.mu.Lock()
		s, inOrder, wait = o.streamFor(i)
	}
	o.tick++
	s.used = o.tick
	if s.data != nil && s.last == i {
		return s.data, s.mem, nil
	}
	if p, ok := o.store.(object.Prefetcher); ok && inOrder {
		// Reads in order: keep the next chunks coming while these are
		// used. Random reads fetch only what they read. A batch ends
		// where a chunk group does, or the store's batch (aheadBatcher):
		// a store that keeps a group, or a batch of them, together (a
		// bucket's packs) sends each in one request, where a batch
		// across them would split two.
		n, batch := int64(readAhead), int64(0)
		if a, ok := p.(aheadSizer); ok {
			n = max(a.ReadAhead(), object.ChunkGroup)
		}
		if b, ok := p.(aheadBatcher); ok {
			batch = min(b.AheadBatch()/object.ChunkGroup*object.ChunkGroup, n)
		}
		unit := max(batch, object.ChunkGroup)
		last := int64(len(o.f.Chunks)) - 1
		start := max(i+1, s.ahead+1)
		end := min((i+n)/unit*unit, last)
		if end-start+1 >= object.ChunkGroup || (end == last && start <= end) {
			o.prefetchLocked(p, start, end, batch)
			s.ahead = end
		}
	}
	d := o.f.Chunks[i]
	if d.IsZero() {
		return nil, nil, nil // a hole
	}
	// The data about to be replaced: its buffer is used again if
	// nobody reads it.
	buf := s.dropLocked()
	fill := make(chan struct{})
	s.last, s.fill = i, fill
	o.mu.Unlock()
	data, mem, err := o.read(ctx, i, d, buf)
	o.mu.Lock()
	s.fill = nil
	close(fill)
	if err != nil {
		return nil, nil, err
	}
	s.data, s.mem = data, mem
	return data, mem, nil
}

// prefetchLocked asks p for chunks start to end, in batches that end at
// multiples of batch, as chunk groups do past chunk 0 (one batch if 0);
// o.mu is held.
func (o *objectFile) prefetchLocked(p object.Prefetcher, start, end, batch int64) {
	for start <= end {
		stop := end
		if batch > 0 {
			stop = min(((start-1)/batch+1)*batch, end)
		}
		var ds []object.Digest
		for j := start; j <= stop; j++ {
			if d := o.f.Chunks[j]; !d.IsZero() {
				ds = append(ds, d)
			}
		}
		if len(ds) > 0 {
			p.Prefetch(ds)
		}
		start = stop + 1
	}
}

// read reads chunk i, object d, from the store, into buf if the store
// reads into a buffer (the chunk buffer it hands back otherwise), and
// returns its data and the memory it is in (chunkLocked); o.mu is not
// held.
func (o *objectFile) read(ctx context.Context, i int64, d object.Digest, buf *[]byte) ([]byte, *chunkMem, error) {
	var b []byte
	var err error
	var mem *chunkMem
	if g, ok := o.store.(intoGetter); ok {
		// Room for the chunk as the file's size says it is; one that
		// is bigger (a damaged file object) gets memory of its own.
		n := 2 + min(object.ChunkSize, o.f.Size-i*object.ChunkSize)
		if buf == nil || int64(cap(*buf)) < n {
			if buf != nil {
				putChunkBuf(buf)
			}
			buf = getChunkBuf(int(n))
		}
		var release func()
		if pg, ok := g.(pinGetter); ok {
			b, release, err = pg.GetPinned(ctx, d, *buf)
		} else {
			b, err = g.GetInto(ctx, d, *buf)
		}
		if err == nil && len(b) > 0 && &b[0] == &(*buf)[0] {
			mem = newChunkMem(buf, nil)
		} else {
			// Not read into the buffer (fetched, or held in memory):
			// handed back, not held beside what came instead.
			putChunkBuf(buf)
			if release != nil {
				mem = newChunkMem(nil, release)
			}
		}
	} else {
		if buf != nil {
			putChunkBuf(buf)
		}
		b, err = o.store.Get(ctx, d)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%s chunk %d: %w", o.path, i, err)
	}
	data, err := object.DecodeBlob(b)
	if err != nil {
		if mem != nil {
			mem.unref()
		}
		return nil, nil, fmt.Errorf("%s chunk %d: %w", o.path, i, err)
	}
	return data, mem, nil
}

func (o *objectFile) ReadAt(p []byte, off int64) (int, error) {
	return o.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt that waits for a chunk no longer than ctx allows.
func (o *objectFile) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if off >= o.f.Size {
		return 0, io.EOF
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	end := min(off+int64(len(p)), o.f.Size)
	if pos, err := o.spansLocked(ctx, off, end, func(pos, ce int64, data []byte, _ *chunkMem) {
		dst := p[pos-off : ce-off]
		clear(dst[copy(dst, data):])
	}); err != nil {
		return int(pos - off), err
	}
	n := int(end - off)
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// spansLocked calls span for each chunk that bytes [off, end) of the file
// fall in, in order, with the part of them in it, [pos, ce), the chunk's
// data from pos on (shorter than that part, or nil, where the chunk was
// stored short or is a hole), and the memory it is in (chunkLocked); o.mu
// is held. It returns where it stopped if a chunk could not be read.
func (o *objectFile) spansLocked(ctx context.Context, off, end int64, span func(pos, ce int64, data []byte, mem *chunkMem)) (int64, error) {
	for pos := off; pos < end; {
		i := pos / object.ChunkSize
		cs := i * object.ChunkSize
		ce := min(cs+object.ChunkSize, end)
		data, mem, err := o.chunkLocked(ctx, i)
		if err != nil {
			return pos, err
		}
		if int64(len(data)) > pos-cs {
			data = data[pos-cs : min(int64(len(data)), ce-cs)]
		} else {
			data = nil
		}
		span(pos, ce, data, mem)
		pos = ce
	}
	return end, nil
}

// zeros is what ReadSlices hands for a hole, or the end of a chunk stored
// short: nobody writes it.
var zeros = make([]byte, object.ChunkSize)

// ReadSlices implements SliceReader.
func (o *objectFile) ReadSlices(ctx context.Context, off int64, n int) (_ [][]byte, release func(), _ error) {
	if off >= o.f.Size || n <= 0 {
		return nil, nil, nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	var vecs [][]byte
	var refs []*chunkMem
	end := min(off+int64(n), o.f.Size)
	if _, err := o.spansLocked(ctx, off, end, func(pos, ce int64, data []byte, mem *chunkMem) {
		if len(data) > 0 {
			vecs = append(vecs, data)
			if mem != nil {
				mem.refs.Add(1)
				refs = append(refs, mem)
			}
		}
		if k := int64(len(data)); k < ce-pos {
			vecs = append(vecs, zeros[:ce-pos-k])
		}
	}); err != nil {
		for _, m := range refs {
			m.unref()
		}
		return nil, nil, err
	}
	if len(refs) == 0 {
		return vecs, nil, nil
	}
	return vecs, func() {
		for _, m := range refs {
			m.unref()
		}
	}, nil
}

// Close gives the file's chunk buffers back for another file to read
// into. A read after Close reads as before, into a buffer of its own.
// Close does not wait for a read under way (its fetch may wait on the
// network for a while): that read keeps the buffer, and the collector
// takes it.
func (o *objectFile) Close() error {
	if !o.mu.TryLock() {
		return nil
	}
	defer o.mu.Unlock()
	for k := range o.streams {
		if buf := o.streams[k].dropLocked(); buf != nil {
			putChunkBuf(buf)
		}
	}
	return nil
}

// Size is the file's size.
func (o *objectFile) Size() int64 { return o.f.Size }
