package scan

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/fsio"
	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/names"
	"github.com/cowfs/cowfs/cow/object"
)

// Cache remembers what a lower file hashed to, by inode, so that a scan
// re-reads only files whose size, mtime or ctime changed.
type Cache interface {
	Scanned(dev, ino uint64) (Entry, bool)
	PutScanned(dev, ino uint64, e Entry) error
}

// WholeSetter is a Cache that also keeps the set of file objects found
// whole in the store, the object and every chunk of it: a hit on one
// needs no look at the store.
type WholeSetter interface {
	WholeSet() *object.KnownSet
}

// Entry remembers the file object a lower file hashed to, valid while
// the file's size, mtime and ctime are what they were.
type Entry struct {
	Size         int64
	Mtime, Ctime int64
	Object       [32]byte
	// File is the decoded file object, when the cache keeps it
	// (MemCache always; the engine's metadata for files of a few
	// chunks): a hit then needs no read of it to check its chunks.
	// Shared: never changed.
	File *object.File
}

// MemCache is a Cache in memory, for a process that scans the same
// directory again and again (cowfs serve).
type MemCache struct {
	mu    sync.Mutex
	m     map[[2]uint64]Entry
	whole object.KnownSet
}

// WholeSet returns the set of file objects found whole.
func (c *MemCache) WholeSet() *object.KnownSet { return &c.whole }

var (
	_ Cache       = (*MemCache)(nil)
	_ WholeSetter = (*MemCache)(nil)
)

func (c *MemCache) Scanned(dev, ino uint64) (Entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[[2]uint64{dev, ino}]
	return e, ok
}

func (c *MemCache) PutScanned(dev, ino uint64, e Entry) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[[2]uint64]Entry{}
	}
	c.m[[2]uint64{dev, ino}] = e
	return nil
}

// Stats says what a scan found and what it cost.
type Stats struct {
	Dirs, Files int64
	Bytes       int64 // total size of the regular files
	BytesRead   int64 // what had to be read and hashed
}

// ErrChanging reports a file or directory that kept changing while it
// was being read.
var ErrChanging = errors.New("changed while being read")

// Scanner turns files of a lower into objects: Tree, Prepare and the
// engine's capture, which hashes through one what it must read.
type Scanner struct {
	ctx   context.Context
	lo    lower.Layer
	store object.GetPutter
	cache Cache
	// whole is the cache's set of file objects found whole in the
	// store, the object and every chunk of it, if it keeps one: a hit
	// on one needs no look at the store. Looking costs a syscall per
	// object, which was a third of a repeated snapshot's time over a
	// lower of many small files, and of a master's re-scan.
	whole *object.KnownSet
	// buf and blob are reused for every chunk (Chunk): a snapshot's
	// prepare runs in the mount process, and a chunk's worth of
	// garbage per chunk read made the collector stop the mount's
	// requests every few chunks.
	buf, blob []byte
	stats     Stats
	// prep, if set, gets the tree of every directory scanned
	// (Prepare).
	prep *Prep
	// dropXattr, if set, says which xattrs to leave out.
	dropXattr func(string) bool
}

// New returns a Scanner of lo into store, through cache (nil for
// none). Its caller holds the store (object.DirStore.Hold) from here to
// its ref or pin, if the store has a lock.
func New(ctx context.Context, lo lower.Layer, store object.GetPutter, cache Cache) *Scanner {
	s := &Scanner{ctx: ctx, lo: lo, store: store, cache: cache}
	if c, ok := cache.(WholeSetter); ok {
		s.whole = c.WholeSet()
		s.whole.Begin(store)
	}
	return s
}

// Stats returns what the scanner found and read so far.
func (s *Scanner) Stats() Stats { return s.stats }

// Tree turns the lower's tree under path into objects in store and
// returns the entry of path itself (its Object is its tree, or its file
// object). Files whose inode, size, mtime and ctime the cache knows are not
// read again. A directory that is being changed while it is scanned yields a
// tree as it was at some moment per file: a file is re-read until it stays
// the same from before its first byte to after its last, so no file object
// mixes old and new bytes.
func Tree(ctx context.Context, lo lower.Layer, path string, store object.GetPutter, cache Cache) (object.Entry, Stats, error) {
	s := New(ctx, lo, store, cache)
	st, err := lo.Lstat(path)
	if err != nil {
		return object.Entry{}, s.stats, err
	}
	parent, name := fsio.SplitPath(path)
	e, err := s.entry(pathDir{lo, parent}, path, name, &st)
	return e, s.stats, err
}

// FileAt returns the file object of the regular file at path, read once
// (a file that changes meanwhile is ErrChanging, not read again), through
// the cache. The file object comes back decoded when needFile, and may be
// nil otherwise.
func (s *Scanner) FileAt(path string, needFile bool) (object.Digest, *object.File, error) {
	parent, name := fsio.SplitPath(path)
	d, _, fo, err := s.fileOnce(pathDir{s.lo, parent}, path, name, needFile)
	return d, fo, err
}

// entry describes the entry name of directory d, at path, whose lstat is
// st.
func (s *Scanner) entry(d scanDir, path, name string, st *unix.Stat_t) (object.Entry, error) {
	if err := s.ctx.Err(); err != nil {
		return object.Entry{}, err
	}
	e := object.Entry{Name: name, Mode: st.Mode, Uid: st.Uid, Gid: st.Gid, Mtime: st.Mtim.Nano()}
	xs, err := d.Listxattr(name)
	if err != nil {
		return e, fmt.Errorf("xattrs of %q: %w", path, err)
	}
	for _, x := range xs {
		if s.dropXattr != nil && s.dropXattr(x) {
			continue
		}
		v, err := d.Getxattr(name, x)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return e, fmt.Errorf("xattr %s of %q: %w", x, path, err)
		}
		if e.Xattrs == nil {
			e.Xattrs = map[string][]byte{}
		}
		e.Xattrs[x] = v
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		e.Object, err = s.dir(path)
	case unix.S_IFREG:
		var fst unix.Stat_t
		e.Object, fst, err = s.file(d, path, name)
		// The attributes the bytes were read under.
		e.Size, e.Mode, e.Mtime = fst.Size, fst.Mode, fst.Mtim.Nano()
	case unix.S_IFLNK:
		e.Target, err = d.Readlink(name)
	default:
		e.Rdev = st.Rdev
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR && st.Nlink > 1 {
		// Names of one inode stay one file in a mount of the version,
		// as in a mount of the directory itself.
		e.Link, e.Nlink = LinkID(st.Dev, st.Ino), uint32(st.Nlink)
	}
	return e, err
}

// LinkID is the link group of a scanned inode. It is derived from the
// inode, not drawn at random as a snapshot's are, so that scanning an
// unchanged tree again gives the same version; hashed, so that it does not
// meet the random groups of a snapshot that holds this version's files
// beside others.
func LinkID(dev, ino uint64) uint64 {
	var b [24]byte
	copy(b[:8], "cowfs-ln")
	binary.LittleEndian.PutUint64(b[8:], dev)
	binary.LittleEndian.PutUint64(b[16:], ino)
	sum := sha256.Sum256(b[:])
	if id := binary.LittleEndian.Uint64(sum[:8]); id != 0 {
		return id
	}
	return 1
}

// scanTries is how often a directory or file that changed while it was
// read is read again before the scan gives up with ErrChanging; the
// waits between tries double from scanBackoff.
const (
	scanTries   = 6
	scanBackoff = 10 * time.Millisecond
)

// dir returns the tree of the directory at path, read again while the
// directory changed meanwhile.
//
// The scan goes by path, so a directory renamed while it is read makes
// its children vanish (ENOENT) mid-listing, and one renamed back makes
// them reappear: a scan that took those ENOENTs as removals stored a
// directory with some or none of its files, and a worker then ran its
// task without its code. A rename, create or removal in a directory
// changes its ctime and mtime (and a rename of the directory itself its
// ctime): so a listing whose directory has the same inode and times
// after as before saw no such change, and the ENOENTs in it are real
// removals. Otherwise its errors, whatever they were, tell nothing and
// it is read again.
func (s *Scanner) dir(path string) (object.Digest, error) {
	s.stats.Dirs++
	var d object.Digest
	var pd PreparedDir
	err := s.settle("directory", path, func() (bool, error) {
		before, err := s.lo.Lstat(path)
		if err != nil {
			return true, err
		}
		d, pd, err = s.dirOnce(path)
		if cerr := s.ctx.Err(); cerr != nil {
			return true, cerr
		}
		pd.ino, pd.mtime, pd.ctime = before.Ino, before.Mtim, before.Ctim
		after, aerr := s.lo.Lstat(path)
		return aerr == nil && after.Ino == before.Ino && after.Mtim == before.Mtim && after.Ctim == before.Ctim, err
	})
	if err != nil {
		return object.Zero, err
	}
	if s.prep != nil {
		pd.Tree = d
		s.prep.dirs[path] = pd
	}
	return d, nil
}

// settle runs once until it reports that what it read held still (with
// the result of that read), waiting between tries, doubling from
// scanBackoff; after scanTries it gives up with ErrChanging.
func (s *Scanner) settle(kind, path string, once func() (still bool, err error)) error {
	wait := scanBackoff
	for try := 0; ; try++ {
		still, err := once()
		if still {
			return err
		}
		if try == scanTries-1 {
			return fmt.Errorf("%s %q: %w", kind, path, ErrChanging)
		}
		if err := sleepCtx(s.ctx, wait); err != nil {
			return err
		}
		wait *= 2
	}
}

// sleepCtx waits for d, or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// dirOnce reads the directory at path once: through one descriptor of it
// where the lower can give one (lower.Subdir), so that its listing and the
// looks at its entries see one directory. With s.prep, it also tallies
// what is beneath it.
func (s *Scanner) dirOnce(path string) (object.Digest, PreparedDir, error) {
	pd := PreparedDir{Dirs: 1}
	var d scanDir
	var ents []lower.DirEntry
	if o, ok := s.lo.(*lower.Dir); ok {
		ld, err := o.Subdir(path)
		if err != nil {
			return object.Zero, pd, err
		}
		defer ld.Close()
		if ents, err = ld.ReadDir(); err != nil {
			return object.Zero, pd, err
		}
		d = ld
	} else {
		var err error
		if ents, err = s.lo.ReadDir(path); err != nil {
			return object.Zero, pd, err
		}
		d = pathDir{s.lo, path}
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	t := &object.Tree{Entries: make([]object.Entry, 0, len(ents))}
	for _, de := range ents {
		p := names.Join(path, de.Name)
		st, err := d.Lstat(de.Name)
		if errors.Is(err, unix.ENOENT) {
			continue // removed since the listing
		}
		if err != nil {
			return object.Zero, pd, err
		}
		e, err := s.entry(d, p, de.Name, &st)
		if err != nil {
			return object.Zero, pd, err
		}
		t.Entries = append(t.Entries, e)
		if s.prep != nil {
			pd.tally(e, s.prep.dirs[p])
		}
	}
	enc, err := object.EncodeTree(t)
	if err != nil {
		return object.Zero, pd, fmt.Errorf("tree %q: %w", path, err)
	}
	dg, err := s.store.Put(s.ctx, enc)
	return dg, pd, err
}

// file returns the file object of the regular file name of d, at path,
// and the attributes it had while it was read.
func (s *Scanner) file(d scanDir, path, name string) (object.Digest, unix.Stat_t, error) {
	s.stats.Files++
	var dg object.Digest
	var st unix.Stat_t
	// A writer in the middle of a burst is often done a moment later.
	err := s.settle("file", path, func() (bool, error) {
		var err error
		dg, st, _, err = s.fileOnce(d, path, name, false)
		return !errors.Is(err, ErrChanging), err
	})
	if err != nil {
		return object.Zero, unix.Stat_t{}, err
	}
	s.stats.Bytes += st.Size
	return dg, st, nil
}

// fileOnce reads the file name of d, at path, into objects once. The file
// object comes back decoded when needFile, and may be nil otherwise.
func (s *Scanner) fileOnce(dir scanDir, path, name string, needFile bool) (object.Digest, unix.Stat_t, *object.File, error) {
	st, err := dir.Lstat(name)
	if err != nil {
		return object.Zero, st, nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return object.Zero, st, nil, ErrChanging
	}
	if st.Size == 0 {
		return object.Zero, st, &object.File{}, nil
	}
	if s.cache != nil {
		if e, ok := s.cache.Scanned(st.Dev, st.Ino); ok && e.Size == st.Size && e.Mtime == st.Mtim.Nano() && e.Ctime == st.Ctim.Nano() {
			d := object.Digest(e.Object)
			if s.whole != nil && s.whole.Has(d) {
				if !needFile || e.File != nil {
					return d, st, e.File, nil
				}
				if fo, err := s.decodeFile(d); err == nil {
					return d, st, fo, nil
				}
			}
			if fo, ok := s.stored(d, e.File); ok {
				if s.whole != nil {
					s.whole.Add(d)
				}
				return d, st, fo, nil
			}
			// Gone from the store (gc), damaged, or missing a chunk:
			// hash again.
		}
	}
	lf, err := dir.Open(name)
	if err != nil {
		return object.Zero, st, nil, err
	}
	defer lf.Close()
	fo := &object.File{Size: st.Size, Chunks: make([]object.Digest, (st.Size+object.ChunkSize-1)/object.ChunkSize)}
	// Holes are asked for, not read: a sparse file of terabytes would
	// otherwise be read as zeros for hours, holding up every worker.
	fd := -1
	if f, ok := lf.(interface{ Fd() uintptr }); ok {
		fd = int(f.Fd())
	}
	data := int64(-1) // where the next data at or after cs starts
	for i := range fo.Chunks {
		if err := s.ctx.Err(); err != nil {
			return object.Zero, st, nil, err
		}
		cs := int64(i) * object.ChunkSize
		if fd >= 0 && data < cs {
			data = nextData(fd, cs, st.Size)
		}
		if data >= min(cs+object.ChunkSize, st.Size) {
			continue // all hole: the zero digest
		}
		if fo.Chunks[i], err = s.Chunk(func(b []byte, off int64) (int, error) { return fsio.ReadFullAt(lf, b, off) }, cs, min(cs+object.ChunkSize, st.Size)); err != nil {
			return object.Zero, st, nil, fmt.Errorf("read lower %q: %w", path, err)
		}
	}
	// A file written while it was read would give an object that mixes
	// old and new bytes; its ctime moves with every write.
	after, err := dir.Lstat(name)
	if err != nil {
		return object.Zero, st, nil, err
	}
	if after.Ino != st.Ino || after.Size != st.Size || after.Mtim != st.Mtim || after.Ctim != st.Ctim {
		return object.Zero, st, nil, ErrChanging
	}
	enc, err := object.EncodeFile(fo)
	if err != nil {
		return object.Zero, st, nil, err
	}
	d, err := s.store.Put(s.ctx, enc)
	if err != nil {
		return object.Zero, st, nil, err
	}
	if s.cache != nil {
		if err := s.cache.PutScanned(st.Dev, st.Ino, Entry{Size: st.Size, Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(), Object: d, File: fo}); err != nil {
			return object.Zero, st, nil, fmt.Errorf("scan cache: %w", err)
		}
		if s.whole != nil {
			s.whole.Add(d) // just stored, with every chunk
		}
	}
	return d, st, fo, nil
}

// nextData returns where the first data at or after off starts in the
// file fd of the given size: size if none, off if the filesystem cannot
// tell (then every byte is read, as without holes).
func nextData(fd int, off, size int64) int64 {
	d, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case errors.Is(err, unix.ENXIO):
		return size
	case err != nil:
		return off
	}
	return d
}

// stored returns file object d (fo, if the caller has it decoded) if the
// store holds it and every chunk of it, and marks them all as just used,
// so that a gc running now keeps them: they are about to be referenced
// again without being stored again. A scan cache hit must not be taken on the file object alone: a
// gc interrupted (or racing) could remove a file's chunks and not yet
// the file object, and every snapshot after would then reference chunks
// that are gone, and fail to verify or read.
func (s *Scanner) stored(d object.Digest, fo *object.File) (*object.File, bool) {
	fr, ok := s.store.(object.Freshener)
	if !ok {
		return nil, false
	}
	if fo == nil {
		var err error
		if fo, err = s.decodeFile(d); err != nil {
			return nil, false
		}
	}
	if !fr.Freshen(d) {
		return nil, false
	}
	for _, c := range fo.Chunks {
		if !c.IsZero() && !fr.Freshen(c) {
			return nil, false
		}
	}
	return fo, true
}

// decodeFile reads file object d from the store.
func (s *Scanner) decodeFile(d object.Digest) (*object.File, error) {
	b, err := s.store.Get(s.ctx, d)
	if err != nil {
		return nil, err
	}
	return object.DecodeFile(b)
}

// Chunk reads [cs, ce) with read and stores it as a blob; an all-zero chunk
// is a hole, the zero digest.
func (s *Scanner) Chunk(read func([]byte, int64) (int, error), cs, ce int64) (object.Digest, error) {
	if s.buf == nil {
		s.buf = make([]byte, object.ChunkSize)
	}
	buf := s.buf[:ce-cs]
	k, err := read(buf, cs)
	if err != nil && err != io.EOF {
		return object.Zero, err
	}
	clear(buf[k:])
	s.stats.BytesRead += int64(len(buf))
	if fsio.AllZero(buf) {
		return object.Zero, nil
	}
	blob, err := object.AppendBlob(s.blob[:0], buf)
	if err != nil {
		return object.Zero, err
	}
	s.blob = blob
	return s.store.Put(s.ctx, blob)
}
