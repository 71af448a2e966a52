package object

import (
	"cmp"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Packs hold the objects a cache fetched (PutCachedAs): appended to a few
// large files instead of a file each, which cost a cold read a third of
// its CPU. Under the store's directory (docs/decisions/0056):
//
//	packs/<name>.pack  the objects' bytes, back to back, appended by the
//	                   one process that holds flock on it (its writer)
//	packs/<name>.idx   an entry per object (digest, offset, length, crc),
//	                   appended after the object's bytes; an entry with
//	                   the zero digest seals the pack: nothing follows
//	packs/<name>.dead  entries of the same form for copies that left the
//	                   store (swept, evicted, found damaged)
//
// Every process reads every pack: it loads the indexes once, and again
// on a miss (another process may have packed the object since) and when
// the store's removal count moved (dead entries, dropped packs). An entry
// is trusted for nothing but where to look: every read is verified, and a
// copy that does not hash to its digest (an index written before a crash
// that lost its pack's bytes) is marked dead and reported damaged, and
// the cache fetches it again. A pack whose entries are all dead goes
// whole; from one partly dead, what is live is copied into the current
// pack first, so that a cache's size on disk is what it holds.

const (
	packsDirName = "packs"
	entrySize    = 48
)

// packTarget is the size at which a writer seals its pack and starts
// another: large enough that a pack's files cost nothing, small enough
// that eviction frees space in steps well under a cache's size. A
// variable for tests.
var packTarget int64 = 32 << 20

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// entry names an object's bytes in a pack.
type entry struct {
	d   Digest
	off int64
	n   uint32
	// dead is kept in memory only: the copy left the store.
	dead bool
}

func (e entry) put(b []byte) {
	copy(b, e.d[:])
	binary.LittleEndian.PutUint64(b[32:], uint64(e.off))
	binary.LittleEndian.PutUint32(b[40:], e.n)
	binary.LittleEndian.PutUint32(b[44:], crc32.Checksum(b[:44], crcTable))
}

// decodeEntry reads an entry, and reports whether it is whole: a crash
// can leave an index's tail zeroed or torn.
func decodeEntry(b []byte) (entry, bool) {
	if binary.LittleEndian.Uint32(b[44:]) != crc32.Checksum(b[:44], crcTable) {
		return entry{}, false
	}
	var e entry
	copy(e.d[:], b[:32])
	e.off = int64(binary.LittleEndian.Uint64(b[32:]))
	e.n = binary.LittleEndian.Uint32(b[40:])
	return e, e.off >= 0
}

// pack is one pack as this process knows it.
type pack struct {
	name string
	f    *os.File // read, and written by its writer
	// idxSeen and deadSeen are how far its index and dead list were read.
	idxSeen, deadSeen int64
	sealed            bool  // nothing more is appended
	liveBytes, end    int64 // bytes of live entries; end of the last entry
	touched           atomic.Int64
	// ents are the entries added, live and dead, by ascending offset (a
	// pack is appended to in order): where each copy is, and what lies
	// before an object (WillNeed). A slice, not a map by offset: a
	// process holds every pack's entries, and loads them all before its
	// first look, so each costs it memory and time at its start.
	ents []entry
}

// find returns the position of the entry at off in p.ents, or where it
// would go.
func (p *pack) find(off int64) (int, bool) {
	return slices.BinarySearchFunc(p.ents, off, func(e entry, off int64) int { return cmp.Compare(e.off, off) })
}

type loc struct {
	p *pack
	e entry
}

// ref names a live copy in the index: p.ents holds its entry.
type ref struct {
	p   *pack
	off int64
}

func (r ref) loc() loc {
	i, _ := r.p.find(r.off)
	return loc{r.p, r.p.ents[i]}
}

// packs is a DirStore's view of its packs, and its writer.
type packs struct {
	s   *DirStore
	dir string

	mu       sync.Mutex
	loaded   bool
	removals uint64
	all      map[string]*pack
	// index has each packed object's oldest live copy, more the others,
	// oldest first (few objects have two copies: a sweep's copy of what
	// is live, or two processes that fetched one object at once).
	index map[Digest]ref
	more  map[Digest][]ref
	// dirTime is the packs directory's time at the last listing, which
	// began at listedAt.
	dirTime, listedAt time.Time

	wmu  sync.Mutex
	w    *pack // the pack this store appends to, or nil
	widx *os.File
}

func newPacks(s *DirStore) *packs {
	return &packs{s: s, dir: filepath.Join(s.dir, packsDirName), all: map[string]*pack{}, index: map[Digest]ref{}, more: map[Digest][]ref{}}
}

func (ps *packs) path(name, ext string) string { return filepath.Join(ps.dir, name+ext) }

// refresh reads what other writers appended since, and, if the store's
// removal count moved or dead is set, what left the store.
func (ps *packs) refresh(dead bool) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.refreshLocked(dead)
}

func (ps *packs) refreshLocked(dead bool) error {
	n, err := ps.s.Removals()
	if err != nil {
		return err
	}
	if !ps.loaded || n != ps.removals {
		dead = true
	}
	names, listed, err := ps.list(dead)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	type newEntries struct {
		p    *pack
		b    []byte
		idle bool
	}
	var news []newEntries
	total := 0
	for _, name := range names {
		seen[name] = true
		p := ps.all[name]
		if p == nil {
			f, err := os.Open(ps.path(name, ".pack"))
			if errors.Is(err, fs.ErrNotExist) {
				// A pack is made before its index and removed
				// after it: this one was lost, or removed by hand.
				// Its index names nothing that can be read.
				slog.Warn("object store: pack index without its pack; removing it", "store", ps.s.dir, "pack", name)
				os.Remove(ps.path(name, ".idx"))
				os.Remove(ps.path(name, ".dead"))
				continue
			}
			if err != nil {
				return fmt.Errorf("object store packs: %w", err)
			}
			p = &pack{name: name, f: f}
			ps.all[name] = p
		}
		if p.sealed || p == ps.w {
			continue // nothing more to read, or this store appends to it
		}
		// A writer that died leaves its pack unsealed and unlocked:
		// read it once more, then no more.
		idle := unix.Flock(int(p.f.Fd()), unix.LOCK_SH|unix.LOCK_NB) == nil
		if idle {
			unix.Flock(int(p.f.Fd()), unix.LOCK_UN)
		}
		b, err := readFrom(ps.path(p.name, ".idx"), p.idxSeen)
		if err != nil {
			return fmt.Errorf("object store pack %s: %w", p.name, err)
		}
		news = append(news, newEntries{p, b, idle})
		total += len(b) / entrySize
	}
	if len(ps.index) == 0 && total > 0 {
		// The first load: one map of the right size, not one grown
		// by doubling, which allocated three times what it kept.
		ps.index = make(map[Digest]ref, total)
	}
	for _, n := range news {
		ps.addIndex(n.p, n.b)
		if n.idle {
			n.p.sealed = true
		}
	}
	if listed {
		for name, p := range ps.all {
			if !seen[name] && p != ps.w {
				ps.forget(p)
			}
		}
	}
	if dead {
		for _, p := range ps.all {
			if err := ps.readDead(p); err != nil {
				return err
			}
		}
		ps.removals = n
	}
	ps.loaded = true
	return nil
}

// list returns the packs to read: every pack in the directory (listed),
// or, when the directory has not changed since a listing made well after
// its last change, the packs known. A miss asks on every object fetched,
// and the listing is most of what it costs.
func (ps *packs) list(full bool) (names []string, listed bool, err error) {
	start := time.Now()
	fi, err := os.Stat(ps.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("object store packs: %w", err)
	}
	// A file made after the last listing began dates after it, less
	// the clock's lag: then the directory's time moved.
	if !full && ps.loaded && fi.ModTime().Equal(ps.dirTime) && ps.listedAt.Sub(ps.dirTime) > lagOf(ps.dirTime) {
		for name := range ps.all {
			names = append(names, name)
		}
		return names, false, nil
	}
	ents, err := os.ReadDir(ps.dir)
	if err != nil {
		return nil, false, fmt.Errorf("object store packs: %w", err)
	}
	for _, de := range ents {
		if name, ok := strings.CutSuffix(de.Name(), ".idx"); ok {
			names = append(names, name)
		}
	}
	ps.dirTime, ps.listedAt = fi.ModTime(), start
	return names, true, nil
}

// addIndex adds the entries b read from p's index from where it was read
// up to.
func (ps *packs) addIndex(p *pack, b []byte) {
	p.ents = slices.Grow(p.ents, len(b)/entrySize)
	for i := 0; i+entrySize <= len(b); i += entrySize {
		e, ok := decodeEntry(b[i : i+entrySize])
		p.idxSeen += entrySize
		switch {
		case !ok:
		case e.d == Zero:
			p.sealed = true
		default:
			ps.add(p, e)
		}
	}
}

// readDead reads p's dead list from where it was read up to.
func (ps *packs) readDead(p *pack) error {
	b, err := readFrom(ps.path(p.name, ".dead"), p.deadSeen)
	if err != nil {
		return fmt.Errorf("object store pack %s: %w", p.name, err)
	}
	for i := 0; i+entrySize <= len(b); i += entrySize {
		p.deadSeen += entrySize
		if e, ok := decodeEntry(b[i : i+entrySize]); ok {
			ps.kill(p, e.off)
		}
	}
	return nil
}

// readFrom returns file p's whole entries from off on; a missing file
// has none.
func readFrom(p string, off int64) ([]byte, error) {
	if fi, err := os.Stat(p); err == nil && fi.Size() < off+entrySize {
		return nil, nil // nothing new: one call, not three
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	n := (fi.Size() - off) / entrySize * entrySize
	if n <= 0 {
		return nil, nil
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return b, nil
}

// add records a live copy (ps.mu held).
func (ps *packs) add(p *pack, e entry) {
	e.dead = false
	if n := len(p.ents); n == 0 || e.off > p.ents[n-1].off {
		p.ents = append(p.ents, e)
	} else {
		i, found := p.find(e.off)
		if found {
			return // known, live or dead
		}
		p.ents = slices.Insert(p.ents, i, e)
	}
	p.liveBytes += int64(e.n)
	p.end = max(p.end, e.off+int64(e.n))
	r := ref{p, e.off}
	if _, ok := ps.index[e.d]; !ok {
		ps.index[e.d] = r
	} else {
		ps.more[e.d] = append(ps.more[e.d], r)
	}
}

// before returns the live entry that ends where off begins in p, if one
// does (ps.mu held).
func (p *pack) before(off int64) (entry, bool) {
	i, found := p.find(off)
	if !found || i == 0 {
		return entry{}, false
	}
	e := p.ents[i-1]
	return e, !e.dead && e.off+int64(e.n) == off
}

// kill forgets the copy at off in p (ps.mu held).
func (ps *packs) kill(p *pack, off int64) {
	i, ok := p.find(off)
	if !ok || p.ents[i].dead {
		return
	}
	e := &p.ents[i]
	e.dead = true
	p.liveBytes -= int64(e.n)
	r, m := ref{p, off}, ps.more[e.d]
	switch {
	case ps.index[e.d] != r:
		m = slices.DeleteFunc(m, func(x ref) bool { return x == r })
	case len(m) == 0:
		delete(ps.index, e.d)
		return
	default:
		ps.index[e.d], m = m[0], m[1:]
	}
	if len(m) == 0 {
		delete(ps.more, e.d)
	} else {
		ps.more[e.d] = m
	}
}

// forget drops everything known of p, whose index is gone (ps.mu held).
func (ps *packs) forget(p *pack) {
	for _, e := range p.ents {
		ps.kill(p, e.off)
	}
	delete(ps.all, p.name)
	p.f.Close()
}

// look is how much of what other processes did a look into the packs
// reads first.
type look int

const (
	// lookKnown trusts what this process knows, packs loaded once: no
	// system call. Only for a read whose reader checks the bytes: a copy
	// another process removed since may be read, whose bytes are still
	// in its pack (packs are only appended to), or are found damaged.
	lookKnown look = iota
	// lookRemovals reads the removals counted since, if any.
	lookRemovals
	// lookFresh reads the packs other processes wrote since, too.
	lookFresh
)

// lookLocked brings this process's view of the packs up to date for a
// look (ps.mu held): the dead lists once the removal count moved, so that
// no copy a removal counted before the look is trusted (as a file removed
// is gone at once); with lookFresh, or before the first look, what other
// processes wrote since too; with lookKnown, once loaded, nothing.
func (ps *packs) lookLocked(how look) error {
	if how == lookKnown && ps.loaded {
		return nil
	}
	fresh := how == lookFresh
	if !fresh && ps.loaded && len(ps.all) == 0 {
		return nil // no pack to look in: a store of files
	}
	if !fresh && ps.loaded {
		n, err := ps.s.Removals()
		if err != nil {
			return err
		}
		fresh = n != ps.removals
	}
	if fresh || !ps.loaded {
		return ps.refreshLocked(false)
	}
	return nil
}

// look brings this process's view of the packs up to date as how says
// (lookLocked), for lookups that follow.
func (ps *packs) look(how look) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.lookLocked(how)
}

// locs returns d's live copies, newest first, after a look of how: with
// lookRemovals none that a removal counted before the call took out (as
// a file removed is gone at once); with lookFresh, after reading what
// other processes wrote since, too.
func (ps *packs) locs(d Digest, how look) ([]loc, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := ps.lookLocked(how); err != nil {
		return nil, err
	}
	r, ok := ps.index[d]
	if !ok {
		return nil, nil
	}
	m := ps.more[d]
	out := make([]loc, 0, 1+len(m))
	for i := len(m) - 1; i >= 0; i-- {
		out = append(out, m[i].loc())
	}
	return append(out, r.loc()), nil
}

func (l loc) read() ([]byte, error) { return l.readInto(nil) }

// readInto reads l's bytes into buf, or a new slice if they do not fit;
// short is io.ErrUnexpectedEOF, with what was read.
func (l loc) readInto(buf []byte) ([]byte, error) {
	if uint32(cap(buf)) < l.e.n {
		buf = make([]byte, l.e.n)
	}
	b := buf[:l.e.n]
	n, err := l.p.f.ReadAt(b, l.e.off)
	if n == len(b) {
		return b, nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return b[:n], err
}

// readInto reads d's newest live copy, after a look of how, into the
// buffer get returns for its size, unverified, and reports whether a
// pack holds d.
func (ps *packs) readInto(d Digest, get func(n int) []byte, how look) ([]byte, bool, error) {
	ls, err := ps.locs(d, how)
	if err != nil {
		return nil, false, err
	}
	for _, l := range ls {
		b, err := l.readInto(get(int(l.e.n)))
		if errors.Is(err, os.ErrClosed) {
			continue // its pack was dropped meanwhile
		}
		if err == nil || errors.Is(err, io.ErrUnexpectedEOF) {
			// Short is what a reader's check finds, as for a file
			// shorter than it was.
			return b, true, nil
		}
		return nil, true, fmt.Errorf("read object %s: %w", d.Short(), err)
	}
	return nil, false, nil
}

// get returns d from a pack, verified, read into buf if it fits (else a
// new slice). A copy that is short or does not hash to d is marked dead,
// kept in quarantine, and reported with an error wrapping ErrCorrupt,
// unless another copy is whole. It looks as how says first.
func (ps *packs) get(d Digest, how look, buf []byte) ([]byte, error) {
	ls, err := ps.locs(d, how)
	if err != nil {
		return nil, err
	}
	var bad error
	for _, l := range ls {
		b, err := l.readInto(buf)
		if errors.Is(err, os.ErrClosed) {
			continue // its pack was dropped meanwhile
		}
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%s: %w", d, err)
		}
		if err == nil {
			got := Sum(b)
			if got == d {
				return b, nil
			}
			err = fmt.Errorf("%s: bytes hash to %s: %w", d, got, ErrCorrupt)
		} else {
			err = fmt.Errorf("%s: %d of %d bytes in pack %s: %w", d, len(b), l.e.n, l.p.name, ErrCorrupt)
		}
		if qerr := ps.quarantine(l, b); qerr != nil {
			err = fmt.Errorf("%w; %v", err, qerr)
		} else {
			err = fmt.Errorf("%w (quarantined)", err)
		}
		slog.Error("object store: damaged object quarantined", "object", d.Short(), "store", ps.s.dir,
			"pack", l.p.name, "err", err)
		bad = err
	}
	if bad != nil {
		return nil, bad
	}
	return nil, fmt.Errorf("%s: %w", d, ErrNotFound)
}

// quarantine keeps the bytes b of copy l in QuarantineDir and marks the
// copy dead: it is never read as an object again.
func (ps *packs) quarantine(l loc, b []byte) error {
	if err := ps.s.countRemoval(); err != nil {
		return err
	}
	q := filepath.Join(ps.s.dir, QuarantineDir)
	if err := os.Mkdir(q, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("quarantine %s: %w", l.e.d.Short(), err)
	}
	if err := os.WriteFile(filepath.Join(q, l.e.d.String()[len(digestPrefix):]), b, 0o400); err != nil &&
		!errors.Is(err, fs.ErrExist) && !errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("quarantine %s: %w", l.e.d.Short(), err)
	}
	return ps.markDead(l)
}

// markDead appends l to its pack's dead list and forgets it. Not synced:
// a dead entry lost in a crash brings back a copy that is verified when
// read, or one a sweep removes again.
func (ps *packs) markDead(l loc) error {
	var b [entrySize]byte
	l.e.put(b[:])
	f, err := os.OpenFile(ps.path(l.p.name, ".dead"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("object store pack %s: %w", l.p.name, err)
	}
	_, err = f.Write(b[:])
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("object store pack %s: %w", l.p.name, err)
	}
	ps.mu.Lock()
	ps.kill(l.p, l.e.off)
	ps.mu.Unlock()
	return nil
}

// known reports whether d is in a pack as far as this store last looked,
// without looking again.
func (ps *packs) known(d Digest) bool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	_, ok := ps.index[d]
	return ok
}

// has reports whether a pack holds d, after a look of how.
func (ps *packs) has(d Digest, how look) (bool, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := ps.lookLocked(how); err != nil {
		return false, err
	}
	_, ok := ps.index[d]
	return ok, nil
}

// touch sets the time of the pack holding d's newest copy, once a second
// at most unless exact, and reports whether a pack holds d.
func (ps *packs) touch(d Digest, exact bool) bool {
	ls, err := ps.locs(d, lookRemovals)
	if err != nil || len(ls) == 0 {
		return false
	}
	p := ls[0].p
	now := time.Now()
	if !exact && now.UnixNano()-p.touched.Load() < int64(time.Second) {
		return true
	}
	p.touched.Store(now.UnixNano())
	return os.Chtimes(ps.path(p.name, ".pack"), now, now) == nil
}

// put appends objects to this store's pack: their bytes in one write,
// then their index entries in another, and seals the pack once it is
// full. Not synced (PutCached); DirStore.Sync makes them durable.
func (ps *packs) put(ds []Digest, bs [][]byte) error {
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	return ps.appendLocked(ds, bs)
}

// appendLocked is put with ps.wmu held.
func (ps *packs) appendLocked(ds []Digest, bs [][]byte) error {
	if ps.w == nil {
		if err := ps.create(); err != nil {
			return err
		}
	}
	p := ps.w
	off := p.end
	var buf []byte
	if len(bs) == 1 {
		buf = bs[0]
	} else {
		for _, b := range bs {
			buf = append(buf, b...)
		}
	}
	if _, err := p.f.WriteAt(buf, off); err != nil {
		return fmt.Errorf("object store pack %s: %w", p.name, err)
	}
	idx := make([]byte, entrySize*len(ds))
	es := make([]entry, len(ds))
	for i, d := range ds {
		es[i] = entry{d: d, off: off, n: uint32(len(bs[i]))}
		es[i].put(idx[i*entrySize:])
		off += int64(len(bs[i]))
	}
	if _, err := ps.widx.Write(idx); err != nil {
		return fmt.Errorf("object store pack %s: %w", p.name, err)
	}
	ps.mu.Lock()
	for _, e := range es {
		ps.add(p, e)
	}
	p.idxSeen += int64(len(idx))
	ps.mu.Unlock()
	if off >= packTarget {
		return ps.seal()
	}
	return nil
}

// create starts a new pack for this store to append to (ps.wmu held).
// The pack is locked before its index exists: a reader that finds the
// index and can lock the pack knows its writer is gone.
func (ps *packs) create() error {
	if err := os.MkdirAll(ps.dir, 0o700); err != nil {
		return fmt.Errorf("object store packs: %w", err)
	}
	var r [8]byte
	rand.Read(r[:])
	name := hex.EncodeToString(r[:])
	// Read-only on disk, as objects are; this descriptor writes.
	f, err := os.OpenFile(ps.path(name, ".pack"), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o400)
	if err != nil {
		return fmt.Errorf("object store packs: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("object store pack %s: lock: %w", name, err)
	}
	idx, err := os.OpenFile(ps.path(name, ".idx"), os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("object store packs: %w", err)
	}
	p := &pack{name: name, f: f}
	ps.mu.Lock()
	ps.all[name] = p
	ps.w, ps.widx = p, idx
	ps.mu.Unlock()
	return nil
}

// seal ends this store's pack (ps.wmu held): the sealing entry, then the
// lock goes, and the next put starts another pack.
func (ps *packs) seal() error {
	p := ps.w
	var b [entrySize]byte
	entry{off: p.end}.put(b[:])
	_, err := ps.widx.Write(b[:])
	if cerr := ps.widx.Close(); err == nil {
		err = cerr
	}
	unix.Flock(int(p.f.Fd()), unix.LOCK_UN)
	ps.mu.Lock()
	p.sealed = true
	p.idxSeen += entrySize
	ps.w, ps.widx = nil, nil
	ps.mu.Unlock()
	if err != nil {
		return fmt.Errorf("object store pack %s: seal: %w", p.name, err)
	}
	return nil
}

// each lists every live packed copy, after reading what changed.
func (ps *packs) each() ([]StoredObject, error) {
	if err := ps.refresh(true); err != nil {
		return nil, err
	}
	ps.mu.Lock()
	type one struct {
		name string
		es   []entry
	}
	var all []one
	for _, p := range ps.all {
		o := one{name: p.name}
		for _, e := range p.ents {
			if !e.dead {
				o.es = append(o.es, e)
			}
		}
		all = append(all, o)
	}
	ps.mu.Unlock()
	var out []StoredObject
	for _, o := range all {
		fi, err := os.Stat(ps.path(o.name, ".pack"))
		if err != nil {
			continue // dropped meanwhile
		}
		for _, e := range o.es {
			out = append(out, StoredObject{Digest: e.d, Size: int64(e.n), ModTime: fi.ModTime()})
		}
	}
	return out, nil
}

// remove marks d's packed copies dead, those in packs last used before
// *before if before is set, and returns the bytes they held. count is
// called before the first copy goes; each pack a copy left is added to
// left, for reclaim once the sweep's batch is done.
func (ps *packs) remove(d Digest, before *time.Time, count func() error, left map[*pack]bool) (removed bool, size int64, err error) {
	ls, err := ps.locs(d, lookRemovals)
	if err != nil {
		return false, 0, err
	}
	for _, l := range ls {
		if before != nil {
			fi, err := os.Stat(ps.path(l.p.name, ".pack"))
			if err != nil || !fi.ModTime().Before(*before) {
				continue
			}
		}
		if err := count(); err != nil {
			return removed, size, err
		}
		if err := ps.markDead(l); err != nil {
			return removed, size, err
		}
		removed, size = true, size+int64(l.e.n)
		left[l.p] = true
	}
	return removed, size, nil
}

// reclaim removes pack p, once a sweep left dead copies in it: at once if
// nothing in it is live, else after copying what is live into this
// store's pack; not while another process writes it. An eviction takes
// the least recently used packs whole, so it copies little: the live part
// of the one pack where it stopped, and what snapshots keep.
func (ps *packs) reclaim(p *pack) error {
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	ps.mu.Lock()
	live, end := p.liveBytes, p.end
	ps.mu.Unlock()
	if live >= end {
		return nil // nothing dead
	}
	if p == ps.w {
		if err := ps.seal(); err != nil {
			return err
		}
	}
	// Another process's pack it still writes to stays: its writer
	// would go on appending to a file that is gone.
	if unix.Flock(int(p.f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		return nil
	}
	defer unix.Flock(int(p.f.Fd()), unix.LOCK_UN)
	ps.mu.Lock()
	var keep []loc
	for _, e := range p.ents {
		if !e.dead {
			keep = append(keep, loc{p, e})
		}
	}
	ps.mu.Unlock()
	if err := ps.keepLocked(keep); err != nil {
		return err
	}
	// The index goes first: a pack without one is never read.
	for _, ext := range []string{".idx", ".pack", ".dead"} {
		if err := os.Remove(ps.path(p.name, ext)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("object store pack %s: %w", p.name, err)
		}
	}
	ps.mu.Lock()
	ps.forget(p)
	ps.mu.Unlock()
	return nil
}

func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("object store: %w", err)
	}
	return nil
}

// keepLocked copies the whole ones of keep into this store's pack, and
// makes them durable (ps.wmu held).
func (ps *packs) keepLocked(keep []loc) error {
	var ds []Digest
	var bs [][]byte
	for _, l := range keep {
		b, err := l.read()
		if err != nil || Sum(b) != l.e.d {
			continue // damaged: nothing to keep
		}
		ds, bs = append(ds, l.e.d), append(bs, b)
	}
	if len(ds) == 0 {
		return nil
	}
	if ps.w == nil {
		if err := ps.create(); err != nil {
			return err
		}
	}
	w := ps.w
	if err := ps.appendLocked(ds, bs); err != nil {
		return err
	}
	// The copies are durable, index included, before the originals
	// go: a ref that reaches them was synced already.
	if err := w.f.Sync(); err != nil {
		return fmt.Errorf("object store pack %s: %w", w.name, err)
	}
	return syncFile(ps.path(w.name, ".idx"))
}

// Close seals the pack this store appends to and closes the packs' and
// the removal count's descriptors. The store stays usable: what it reads
// or stores after opens them again.
func (s *DirStore) Close() error {
	if f := s.removals.Swap(nil); f != nil {
		f.Close()
	}
	ps := s.packs
	ps.wmu.Lock()
	defer ps.wmu.Unlock()
	var err error
	if ps.w != nil {
		err = ps.seal()
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, p := range ps.all {
		p.f.Close()
	}
	ps.all, ps.index, ps.more, ps.loaded = map[string]*pack{}, map[Digest]ref{}, map[Digest][]ref{}, false
	return err
}

// Locate returns where the bytes of object d are on disk: a file of its
// own (off 0), or its newest copy in a pack. For tools and tests that
// look at, or damage, what is stored.
// A packed copy comes first, as Get reads it first.
func (s *DirStore) Locate(d Digest) (path string, off, size int64, err error) {
	for _, how := range []look{lookRemovals, lookFresh} {
		ls, err := s.packs.locs(d, how)
		if err != nil {
			return "", 0, 0, err
		}
		if len(ls) > 0 {
			return s.packs.path(ls[0].p.name, ".pack"), ls[0].e.off, int64(ls[0].e.n), nil
		}
		if fi, err := os.Lstat(s.path(d)); err == nil {
			return s.path(d), 0, fi.Size(), nil
		}
	}
	return "", 0, 0, fmt.Errorf("%s: %w", d, ErrNotFound)
}

// WillNeed tells the kernel that d's packed copy will be read soon, so
// that its disk read starts now, beside the caller's other work, and
// returns the copy's size; 0 for an object this process knows in no
// pack (a file, or missing), for which it does nothing. A master about to
// send several objects read cold asks for the next ones while it sends
// the first: one disk read after another would otherwise each wait.
//
// With before > 0 the object stored right before d in its pack comes in
// the same read, if it is at most before bytes: a scan stores a small
// file's chunk right before its file object, and a master that reads the
// file object cold sends that chunk next.
func (s *DirStore) WillNeed(d Digest, before int64) int64 {
	return s.willNeed(d, before, lookRemovals)
}

func (s *DirStore) willNeed(d Digest, before int64, how look) int64 {
	ls, err := s.packs.locs(d, how)
	if err != nil || len(ls) == 0 {
		return 0
	}
	l := ls[0]
	off, n := l.e.off, int64(l.e.n)
	if before > 0 {
		s.packs.mu.Lock()
		if e, ok := l.p.before(off); ok && int64(e.n) <= before {
			off, n = e.off, n+int64(e.n)
		}
		s.packs.mu.Unlock()
	}
	// Advice only: a pack dropped meanwhile, or a kernel that ignores
	// it, costs the read its wait, as without it.
	unix.Fadvise(int(l.p.f.Fd()), off, n, unix.FADV_WILLNEED)
	return int64(l.e.n)
}
