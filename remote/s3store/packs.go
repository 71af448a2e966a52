package s3store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
)

// Small objects travel in packs, as restic's blobs do: a publish or push
// writes the objects it uploads of at most PackObjectMax bytes (trees,
// file objects, small chunks; never a version object, which a remount
// asks about with a HEAD, nor its root tree: see mountReads), and each
// file's first chunk right after its file object, end to end (trees in
// packs of their own: packWriter) into packs/<hex>, hex the SHA-256 of the pack's bytes, of about
// packTarget bytes, and once its packs are written an index,
// indexes/<hex>, hex the SHA-256 of the index: which object lies at which
// offset of which of them. An index names the packs of one publish or
// push, or of as many of them as hold indexObjectsMax objects, so that a
// reader's GETs of indexes do not grow with the packs an export fills.
// Indexes written before these name one pack each, and are named by it.
// A reader loads every index once (a listing of indexes/ and of packs/, a
// request per thousand keys, and a GET per index), and then reads a
// packed object with one ranged GET, and the objects of one pack that a
// GetMany asks for together with one GET of the range that covers them.
// Every object read from a pack is still checked against its digest; the
// index has a checksum of its own.
//
// Packs are written before their index, and both before the key of the
// version or checkpoint that reaches their objects: an index found names
// packs that were whole. gc keeps a pack whole while any object in it is
// reached, and writes an index anew without the packs it removes (see
// GC).
const (
	packsDir   = "packs/"
	indexesDir = "indexes/"
	// PackObjectMax is the largest object a publish packs.
	PackObjectMax = 64 << 10
	// packTarget is the size at which a pack is closed and sent.
	packTarget = 4 << 20
	// packGroups is how many of a file's chunk groups a pack of them
	// holds, and a sequential reader asks for in one batch
	// (Fetcher.AheadBatch): one GET of 16 MiB costs the store less CPU
	// than four of 4 MiB, and AWS advises ranged GETs of 8-16 MiB.
	packGroups = 4
	// groupPackTarget is where a pack of chunk groups is closed: it
	// holds packGroups whole groups, chunks encoded, and a pack's run of
	// them is one GET (maxRun).
	groupPackTarget = packGroups*object.ChunkGroup*object.ChunkSize + 64<<10
	// mergeGap is how many bytes between two objects of one pack a
	// GetMany reads and drops rather than make another request.
	mergeGap = 64 << 10
	// maxRun bounds the range one GET of a GetMany covers: a pack of
	// chunk groups.
	maxRun = groupPackTarget
	// indexMagic starts the index of one pack, which indexes were
	// before setIndexMagic's.
	indexMagic = "cowfsix1"
	indexEntry = sha256.Size + 4 + 4
	// setIndexMagic starts the index of a set of packs.
	setIndexMagic = "cowfsix2"
	setIndexEntry = sha256.Size + 4 + 4 + 4
)

// indexObjectsMax is how many objects a publish's index names before it
// is written and another begun: 2.75 MiB of index, which a reader GETs
// whole. A variable for tests.
var indexObjectsMax = 1 << 16

// errNewerIndex is an index in a format a later cowfs writes.
var errNewerIndex = errors.New("an index in a newer format")

// packLoc is where an object lies in a pack.
type packLoc struct {
	pack   string // hex of the pack's digest
	off, n uint32
}

// packIndex is what a Store knows of the bucket's packs: each index
// loaded (immutable, so read once), and the objects of the packs they
// name, those listed at the last reload where the Store checks packs.
type packIndex struct {
	// loading is set while LoadIndexes loads the indexes ahead of use;
	// everLoaded once they were loaded (loaded, without mu).
	loading, everLoaded atomic.Bool
	mu                  sync.Mutex
	loaded              bool
	// checkPacks: reloads list packs/ and leave out what an index
	// says of a pack not listed (reloadLocked).
	checkPacks bool
	lastAt     time.Time
	indexes    map[string][]packObjects // by the index's name
	byPack     map[string][]indexEntryT // by pack hex
	locs       *objectLocs
	// seenPacks are the packs the last reload listed, and those this
	// Store wrote since; nil if it listed none (a reader's).
	seenPacks map[string]bool
}

type indexEntryT struct {
	d      object.Digest
	off, n uint32
}

// packObjects is what an index says of one pack: the objects in it, in
// offset order.
type packObjects struct {
	pack string // hex of the pack's digest
	es   []indexEntryT
}

func (s *Store) packKey(pack string) string  { return s.key(packsDir + pack) }
func (s *Store) indexKey(name string) string { return s.key(indexesDir + name) }

// encodeSetIndex is the index of the packs ps and its name: magic, the
// number of packs, each pack's digest, 44 bytes an object (digest, the
// pack's place in that list, offset, length, big-endian) in the order of
// ps and of each pack's objects, and the SHA-256 of all that, whose hex
// names it.
func encodeSetIndex(ps []packObjects) (string, []byte) {
	n := 0
	for _, p := range ps {
		n += len(p.es)
	}
	b := make([]byte, 0, len(setIndexMagic)+4+len(ps)*sha256.Size+n*setIndexEntry+sha256.Size)
	b = append(b, setIndexMagic...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(ps)))
	for _, p := range ps {
		d, _ := hex.DecodeString(p.pack)
		b = append(b, d...)
	}
	for i, p := range ps {
		for _, e := range p.es {
			b = append(b, e.d[:]...)
			b = binary.BigEndian.AppendUint32(b, uint32(i))
			b = binary.BigEndian.AppendUint32(b, e.off)
			b = binary.BigEndian.AppendUint32(b, e.n)
		}
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), append(b, sum[:]...)
}

// decodeIndex checks and reads the index named name: of a set of packs,
// or of one pack, named by it.
func decodeIndex(name string, b []byte) ([]packObjects, error) {
	if len(b) >= len(setIndexMagic) && string(b[:len(setIndexMagic)]) == setIndexMagic {
		return decodeSetIndex(name, b)
	}
	if len(b) >= len(indexMagic) && string(b[:len(indexMagic)-1]) == indexMagic[:len(indexMagic)-1] && b[len(indexMagic)-1] > setIndexMagic[len(setIndexMagic)-1] {
		// Not damage: a reader must not take it for that and serve a
		// version without its objects, nor tell anyone to delete it.
		return nil, fmt.Errorf("%w (%q): upgrade cowfs to read this bucket", errNewerIndex, b[:len(indexMagic)])
	}
	es, err := decodePackIndex(name, b)
	if err != nil {
		return nil, err
	}
	return []packObjects{{pack: name, es: es}}, nil
}

// decodeSetIndex checks and reads an index encodeSetIndex made. Its
// objects must come in the order it writes them, each pack's by offset:
// an index read is one it could have written.
func decodeSetIndex(name string, b []byte) ([]packObjects, error) {
	head := len(setIndexMagic) + 4
	if len(b) < head+sha256.Size {
		return nil, fmt.Errorf("not an index of %d bytes: %w", len(b), object.ErrCorrupt)
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, fmt.Errorf("its checksum does not match: %w", object.ErrCorrupt)
	}
	if hex.EncodeToString(sum) != name {
		return nil, fmt.Errorf("it is another index than its name says: %w", object.ErrCorrupt)
	}
	np := uint64(binary.BigEndian.Uint32(body[len(setIndexMagic):]))
	if np == 0 || np*sha256.Size > uint64(len(body)-head) || (uint64(len(body)-head)-np*sha256.Size)%setIndexEntry != 0 {
		return nil, fmt.Errorf("an index of %d packs in %d bytes: %w", np, len(b), object.ErrCorrupt)
	}
	ps := make([]packObjects, np)
	seen := make(map[string]bool, np)
	for i := range ps {
		ps[i].pack = hex.EncodeToString(body[head+i*sha256.Size : head+(i+1)*sha256.Size])
		if seen[ps[i].pack] {
			return nil, fmt.Errorf("it names pack %s twice: %w", ps[i].pack, object.ErrCorrupt)
		}
		seen[ps[i].pack] = true
	}
	last, lastOff := uint32(0), int64(-1)
	for p := body[head+int(np)*sha256.Size:]; len(p) > 0; p = p[setIndexEntry:] {
		var e indexEntryT
		copy(e.d[:], p)
		at := binary.BigEndian.Uint32(p[sha256.Size:])
		e.off = binary.BigEndian.Uint32(p[sha256.Size+4:])
		e.n = binary.BigEndian.Uint32(p[sha256.Size+8:])
		if e.n == 0 || e.n > maxObject {
			return nil, fmt.Errorf("an object of %d bytes: %w", e.n, object.ErrCorrupt)
		}
		if uint64(at) >= np || at < last || (at == last && int64(e.off) <= lastOff) {
			return nil, fmt.Errorf("its objects are out of order: %w", object.ErrCorrupt)
		}
		last, lastOff = at, int64(e.off)
		ps[at].es = append(ps[at].es, e)
	}
	return ps, nil
}

// decodePackIndex checks and reads the index of one pack, as publishes
// wrote them before set indexes: magic, the pack's digest, 40 bytes an
// object (digest, offset, length, big-endian), and the SHA-256 of all
// that.
func decodePackIndex(pack string, b []byte) ([]indexEntryT, error) {
	head := len(indexMagic) + sha256.Size
	if len(b) < head+sha256.Size || (len(b)-head-sha256.Size)%indexEntry != 0 || string(b[:len(indexMagic)]) != indexMagic {
		return nil, fmt.Errorf("not an index of %d bytes: %w", len(b), object.ErrCorrupt)
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if got := sha256.Sum256(body); !bytes.Equal(got[:], sum) {
		return nil, fmt.Errorf("its checksum does not match: %w", object.ErrCorrupt)
	}
	if hex.EncodeToString(b[len(indexMagic):head]) != pack {
		return nil, fmt.Errorf("it is the index of another pack: %w", object.ErrCorrupt)
	}
	var es []indexEntryT
	for p := body[head:]; len(p) > 0; p = p[indexEntry:] {
		var e indexEntryT
		copy(e.d[:], p)
		e.off = binary.BigEndian.Uint32(p[sha256.Size:])
		e.n = binary.BigEndian.Uint32(p[sha256.Size+4:])
		// A reader reads n bytes into memory at once: an index that
		// claims more than any object holds must not make it try.
		if e.n == 0 || e.n > maxObject {
			return nil, fmt.Errorf("an object of %d bytes: %w", e.n, object.ErrCorrupt)
		}
		es = append(es, e)
	}
	return es, nil
}

// reloadPacks lists indexes/ and packs/ and reads the indexes not read
// before: afterwards the Store knows every object packed in a pack
// listed now under an index listed now. What an index says of a pack
// that is gone (a damaged pack deleted by hand, a gc that stopped
// between the two) is left out: a publish must not count on those
// objects, nor gc or verify. An index that cannot be read is an error if
// strict, else logged and left out (its objects then read as missing, or
// are uploaded again). From then on the Store's reloads list packs/ too.
func (s *Store) reloadPacks(ctx context.Context, strict bool) error {
	p := s.packs
	p.mu.Lock()
	defer p.mu.Unlock()
	p.checkPacks = true
	return s.reloadLocked(ctx, strict)
}

// reloadLocked is reloadPacks, with p.mu held; it lists packs/ only once
// the Store checks packs (checkPacks). A reader's Store does not until it
// finds a pack gone (relocate): packs/ is a page a thousand packs, which
// a prefix of terabytes would make a mount wait on, and an index that
// names a pack gone is rare (a damaged pack removed by hand), costing
// that reader one GET that finds it gone.
func (s *Store) reloadLocked(ctx context.Context, strict bool) error {
	p := s.packs
	var listed []string
	var packs map[string]bool
	for try := 1; ; try++ {
		var err error
		listed, packs, err = s.listPacks(ctx, p.checkPacks)
		if err != nil {
			return err
		}
		if afterPackListing != nil {
			afterPackListing(s)
		}
		removed, err := s.readIndexes(ctx, listed, strict)
		if err != nil {
			return err
		}
		if !removed || try == indexListings {
			s.pruneIndexCache(listed)
			break
		}
		// gc writes an index anew before it removes the old one:
		// listed again, the new one is there, with the objects the
		// removed one named.
	}
	locs := newObjectLocs(p.locs.len())
	byPack := make(map[string][]indexEntryT, len(p.byPack))
	for _, name := range listed {
		for _, po := range p.indexes[name] {
			if packs != nil && !packs[po.pack] {
				continue
			}
			byPack[po.pack] = po.es
			locs.add(po)
		}
	}
	p.locs, p.byPack, p.seenPacks, p.loaded, p.lastAt = locs, byPack, packs, true, time.Now()
	p.everLoaded.Store(true)
	s.indexes.Store(int64(len(p.indexes)))
	return nil
}

// indexListings bounds how many times a reload lists the indexes when
// one it listed was removed before it was read.
const indexListings = 3

// afterPackListing, if set, runs after a reload's listings, before the
// indexes are read: a test's gc runs there.
var afterPackListing func(s *Store)

// listPacks lists indexes/ and, with withPacks, packs/, together (packs
// is nil without). One of indexes/ that finds an index naming a pack the
// other missed (written meanwhile, or removed) leaves that pack out of
// the reload, as it does one that is gone. A reader loses nothing by it:
// the packs and indexes of the version it resolved were written before
// that version's key, so before either listing began. A publish's
// listing that leaves out a pack written meanwhile uploads its objects
// again.
func (s *Store) listPacks(ctx context.Context, withPacks bool) (indexes []string, packs map[string]bool, _ error) {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return s.listKeys(gctx, indexesDir, 0, func(name string) bool {
			indexes = append(indexes, name)
			return true
		})
	})
	if withPacks {
		packs = map[string]bool{}
		g.Go(func() error {
			return s.listKeys(gctx, packsDir, 0, func(name string) bool {
				packs[name] = true
				return true
			})
		})
	}
	return indexes, packs, g.Wait()
}

// readIndexes makes the indexes the Store knows those listed: each read
// before is kept, one no longer listed (removed by gc) forgotten, and the
// others read, eight at a time. removed says that one listed was gone
// when read (gc removed it since the listing); it is left out. An index
// that cannot be read is an error if strict, else logged and left out.
func (s *Store) readIndexes(ctx context.Context, listed []string, strict bool) (removed bool, _ error) {
	p := s.packs
	kept := make(map[string][]packObjects, len(listed))
	var todo []string
	for _, name := range listed {
		if ps, ok := p.indexes[name]; ok {
			kept[name] = ps
		} else {
			todo = append(todo, name)
		}
	}
	p.indexes = kept
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for _, name := range todo {
		g.Go(func() error {
			ps, err := s.readIndex(gctx, name)
			switch {
			case errors.Is(err, object.ErrNotFound):
				mu.Lock()
				removed = true
				mu.Unlock()
				return nil
			case err != nil && (strict || !errors.Is(err, object.ErrCorrupt)):
				return err
			case err != nil:
				s.cfg.Log.Error("an index of the bucket is damaged; the objects of its packs are left out", "store", s.URL(), "err", err)
				return nil
			}
			mu.Lock()
			p.indexes[name] = ps
			mu.Unlock()
			return nil
		})
	}
	return removed, g.Wait()
}

// LoadIndexes loads the pack indexes in the background, unless they are
// loaded or loading: for a mount once it knows its version, so that the
// indexes come beside the version object and its root tree, which a
// publish leaves loose (mountReads), not before them, as they would at
// their first fetch. Not earlier: indexes listed before the version was
// resolved could miss the packs of a version published in between, and
// those objects would be missing until a reload (at most once a second,
// locate). Until the load ends, fetch tries an object's loose key before
// waiting for it. A load that fails is the first fetch's to do again.
func (s *Store) LoadIndexes(ctx context.Context) {
	p := s.packs
	if !p.loading.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer p.loading.Store(false)
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.loaded {
			return
		}
		if err := s.reloadLocked(ctx, false); err != nil {
			s.cfg.Log.Debug("loading the pack indexes ahead of use", "store", s.URL(), "err", err)
		}
	}()
}

// readIndex GETs and checks the index name, or reads it from the index
// cache (Config.IndexCache), where it keeps it once read.
func (s *Store) readIndex(ctx context.Context, name string) ([]packObjects, error) {
	if ps, ok := s.cachedIndex(name); ok {
		return ps, nil
	}
	b, err := s.getKey(ctx, s.indexKey(name))
	if err != nil {
		return nil, fmt.Errorf("index %s: %w", s.indexKey(name), err)
	}
	ps, err := decodeIndex(name, b)
	if errors.Is(err, errNewerIndex) {
		return nil, fmt.Errorf("index %s in bucket %s: %w", s.indexKey(name), s.cfg.Bucket, err)
	}
	if err != nil {
		return nil, fmt.Errorf("index %s in bucket %s is damaged: %w: delete it and publish (or push) again", s.indexKey(name), s.cfg.Bucket, err)
	}
	s.cacheIndex(name, b)
	return ps, nil
}

// cacheable says whether the index cache keeps the index name of bytes
// b: an index of a set of packs (cowfsix2), which is named by the SHA-256
// of its bytes and checks it, so that a file torn by a crash or damaged
// on disk reads as not held; not a bucket's older index of one pack,
// named by the pack.
func cacheable(name string, b []byte) bool {
	return cacheName(name) && len(b) >= len(setIndexMagic) && string(b[:len(setIndexMagic)]) == setIndexMagic
}

// cacheName says whether name can be a set index's, 64 hex digits: any
// other key listed under indexes/ is never made a path.
func cacheName(name string) bool { return hexName(name, sha256.Size) }

// hexName says whether name is n bytes in lower-case hex, as the index
// cache names what it holds.
func hexName(name string, n int) bool {
	d, err := hex.DecodeString(name)
	return err == nil && len(d) == n && hex.EncodeToString(d) == name
}

// cachedIndex reads the index name from the index cache, if it holds it
// whole. One that does not decode is removed.
func (s *Store) cachedIndex(name string) ([]packObjects, bool) {
	if s.cfg.IndexCache == "" || !cacheName(name) {
		return nil, false
	}
	path := filepath.Join(s.cfg.IndexCache, name)
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	ps, err := decodeSetIndex(name, b)
	if err != nil || !cacheable(name, b) {
		s.cfg.Log.Warn("an index kept on this machine is damaged; it is read from the bucket again", "path", path, "err", err)
		os.Remove(path)
		return nil, false
	}
	s.indexesKept.Add(1)
	return ps, true
}

// indexTmp begins the name of an index being written into the index
// cache.
const indexTmp = ".tmp-"

// cacheIndex keeps the index name, of bytes b, in the index cache. A
// failure costs only a GET at the next load, so it is logged at debug.
func (s *Store) cacheIndex(name string, b []byte) {
	if s.cfg.IndexCache == "" || !cacheable(name, b) {
		return
	}
	if err := remote.WriteWhole(filepath.Join(s.cfg.IndexCache, name), indexTmp, b); err != nil {
		s.cfg.Log.Debug("keeping an index on this machine", "dir", s.cfg.IndexCache, "err", err)
	}
}

// indexCacheIdle is how long the kept indexes of a prefix no load read
// stay on the worker: a prefix no mount reads any more (a spider
// retired, a bucket moved) would otherwise keep them forever, and one
// read again after this only GETs them again.
const indexCacheIdle = 30 * 24 * time.Hour

// pruneIndexCache removes from the index cache the indexes a listing of
// indexes/ no longer found (gc removed them), and temporary files an
// hour old (a write a crash cut short). It marks this prefix's directory
// as read now, by its time, and removes the directories of other
// prefixes read no load for indexCacheIdle.
func (s *Store) pruneIndexCache(listed []string) {
	if s.cfg.IndexCache == "" {
		return
	}
	es, err := os.ReadDir(s.cfg.IndexCache)
	if err != nil {
		return
	}
	now := time.Now()
	if err := os.Chtimes(s.cfg.IndexCache, now, now); err == nil {
		pruneIdlePrefixes(filepath.Dir(s.cfg.IndexCache), now)
	}
	keep := make(map[string]bool, len(listed))
	for _, name := range listed {
		keep[name] = true
	}
	for _, e := range es {
		name := e.Name()
		if strings.HasPrefix(name, indexTmp) {
			if fi, err := e.Info(); err != nil || time.Since(fi.ModTime()) < time.Hour {
				continue
			}
		} else if keep[name] {
			continue
		}
		os.Remove(filepath.Join(s.cfg.IndexCache, name))
	}
}

// pruneIdlePrefixes removes the directories under parent, each a
// prefix's kept indexes, whose time says no load read them for
// indexCacheIdle. A load of one under way beside this only finds its
// indexes gone, and GETs them.
func pruneIdlePrefixes(parent string, now time.Time) {
	es, err := os.ReadDir(parent)
	if err != nil {
		return
	}
	for _, e := range es {
		if !e.IsDir() || !hexName(e.Name(), cacheDirBytes) {
			continue
		}
		if fi, err := e.Info(); err == nil && now.Sub(fi.ModTime()) > indexCacheIdle {
			os.RemoveAll(filepath.Join(parent, e.Name()))
		}
	}
}

// cacheDirBytes is how many bytes of hex name a prefix's directory in
// the index cache (Open's naming): nothing else under the cache's
// directory is removed.
const cacheDirBytes = 16

// locate says in which pack d lies, loading the indexes on first use.
// With again, a d not found makes the Store look for indexes written
// since, at most once a second.
func (s *Store) locate(ctx context.Context, d object.Digest, again bool) (packLoc, bool, error) {
	p := s.packs
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.loaded || (again && time.Since(p.lastAt) > time.Second && !p.locs.has(d)) {
		if err := s.reloadLocked(ctx, false); err != nil {
			return packLoc{}, false, err
		}
	}
	l, ok := p.locs.get(d)
	return l, ok, nil
}

// relocate is locate for a d whose pack a GET found gone: the indexes
// are loaded again, however recently they were, unless a load since has
// placed d elsewhere; ok is false while they still place it in gone.
func (s *Store) relocate(ctx context.Context, d object.Digest, gone string) (packLoc, bool, error) {
	p := s.packs
	p.mu.Lock()
	defer p.mu.Unlock()
	if l, ok := p.locs.get(d); !ok || l.pack == gone {
		p.checkPacks = true
		if err := s.reloadLocked(ctx, false); err != nil {
			return packLoc{}, false, err
		}
	}
	l, ok := p.locs.get(d)
	if ok && l.pack == gone {
		return packLoc{}, false, nil
	}
	return l, ok, nil
}

// packOf returns the pack d lies in, as the indexes last loaded say,
// without loading them.
func (s *Store) packOf(d object.Digest) (string, bool) {
	p := s.packs
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.locs.get(d)
	return l.pack, ok
}

// nextPacked returns the object packed right after the one at l, if one
// is.
func (s *Store) nextPacked(l packLoc) (object.Digest, packLoc, bool) {
	p := s.packs
	p.mu.Lock()
	defer p.mu.Unlock()
	es := p.byPack[l.pack]
	i := sort.Search(len(es), func(i int) bool { return es[i].off > l.off })
	if i == len(es) || es[i].off != l.off+l.n {
		return object.Digest{}, packLoc{}, false
	}
	return es[i].d, packLoc{pack: l.pack, off: es[i].off, n: es[i].n}, true
}

// learnIndex adds an index this Store wrote, and its packs, to what it
// knows.
func (s *Store) learnIndex(name string, ps []packObjects) {
	p := s.packs
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.indexes == nil {
		p.indexes = map[string][]packObjects{}
	}
	if p.byPack == nil {
		p.byPack = map[string][]indexEntryT{}
	}
	if p.locs == nil {
		p.locs = newObjectLocs(0)
	}
	p.indexes[name] = ps
	for _, po := range ps {
		p.byPack[po.pack] = po.es
		p.locs.add(po)
		if p.seenPacks != nil {
			p.seenPacks[po.pack] = true
		}
	}
}

// forgetIndex drops an index gc removed.
func (s *Store) forgetIndex(name string) {
	p := s.packs
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.indexes, name)
}

// forgetPack drops a pack gc removed.
func (s *Store) forgetPack(pack string) {
	p := s.packs
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.byPack[pack] {
		p.locs.remove(e.d, pack)
	}
	delete(p.byPack, pack)
	delete(p.seenPacks, pack)
}

// readRun reads n bytes at off of pack with one ranged GET, and the
// objects at (of pack, in offset order, apart, the last ending the
// range, as runs makes them) one at a time as they come: each wanted is
// read into memory of its own (newBuf's) and handed to each, whose it is
// then; the bytes of the others, and those between objects, are read and
// dropped. An object is in memory once, as it arrives, whatever the
// run's length; the body's last byte read ends it, so that the
// connection goes back to the client's pool. It
// returns how many of at it got through; an error says why not the
// rest: a pack shorter than the range is object.ErrCorrupt, a missing
// one object.ErrNotFound, and both name the pack's key.
func (s *Store) readRun(ctx context.Context, pack string, off, n int64, at []packLoc, pooled bool, wanted func(k int) bool, each func(k int, b []byte)) (int, error) {
	key := s.packKey(pack)
	ctx, cancel := s.callCtx(ctx)
	defer cancel()
	s.gets.Add(1)
	out, err := s.getObject(ctx, key, fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	if err != nil {
		if status(err) == 416 {
			return 0, fmt.Errorf("pack %s in bucket %s is shorter than its index says (truncated): %w", key, s.cfg.Bucket, object.ErrCorrupt)
		}
		return 0, s.wrap("get", key, err)
	}
	defer out.body.Close()
	pos := off // the pack's offset the body is at
	short := func(got int64) error {
		return fmt.Errorf("pack %s in bucket %s: %d bytes at %d, its index says %d (truncated?): %w", key, s.cfg.Bucket, got, off, n, object.ErrCorrupt)
	}
	// An answer of another range than the one asked for (a store that
	// ignored the range and sent the whole pack, a pack shorter than its
	// index says) would hand bytes of the wrong offsets: found before
	// any is handed.
	if cr := out.contentRange; cr != "" {
		var from, to int64
		if _, err := fmt.Sscanf(cr, "bytes %d-%d/", &from, &to); err != nil || from != off || to > off+n-1 {
			return 0, fmt.Errorf("pack %s in bucket %s: asked for bytes %d-%d, sent %q: %w", key, s.cfg.Bucket, off, off+n-1, cr, object.ErrCorrupt)
		}
		if to < off+n-1 {
			return 0, short(to + 1 - off)
		}
	} else if off != 0 {
		return 0, fmt.Errorf("pack %s in bucket %s: asked for bytes %d-%d, sent the whole pack: %w", key, s.cfg.Bucket, off, off+n-1, object.ErrCorrupt)
	}
	// A body that ends before the length its answer gave is a transfer
	// cut short; one without a length that ends early, a short pack.
	sized := out.contentLength >= 0
	fail := func(err error) error {
		if !sized && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			return short(pos - off)
		}
		return s.wrap("get", key, err)
	}
	skip := func(to int64) error {
		m, err := io.CopyN(io.Discard, out.body, to-pos)
		pos += m
		s.bytesIn.Add(m)
		if err != nil {
			return fail(err)
		}
		return nil
	}
	for k, l := range at {
		start, end := int64(l.off), int64(l.off)+int64(l.n)
		if start < pos || end > off+n {
			return k, fmt.Errorf("pack %s in bucket %s: object at %d-%d outside the run read at %d-%d", key, s.cfg.Bucket, start, end, pos, off+n)
		}
		if !wanted(k) {
			if err := skip(end); err != nil {
				return k, err
			}
			continue
		}
		if err := skip(start); err != nil {
			return k, err
		}
		b := newBuf(int(l.n), pooled)
		got, err := io.ReadFull(out.body, b)
		pos += int64(got)
		s.bytesIn.Add(int64(got))
		if err != nil {
			freeBuf(b, pooled)
			return k, fail(err)
		}
		each(k, b)
	}
	return len(at), nil
}

// getPacked reads the object at l, unverified, into the pool's memory
// when pooled.
func (s *Store) getPacked(ctx context.Context, d object.Digest, l packLoc, pooled bool) ([]byte, error) {
	var b []byte
	_, err := s.readRun(ctx, l.pack, int64(l.off), int64(l.n), []packLoc{l}, pooled,
		func(int) bool { return true }, func(_ int, got []byte) { b = got })
	if err != nil {
		return nil, fmt.Errorf("object %s: %w", d.Short(), err)
	}
	return b, nil
}

// fetch returns the bytes stored as d, packed or loose, unverified, in
// the pool's memory when pooled (newBuf).
func (s *Store) fetch(ctx context.Context, d object.Digest, pooled bool) ([]byte, string, error) {
	if b, ok, err := s.looseWhileLoading(ctx, d, pooled); ok || err != nil {
		return b, s.objectKey(d), err
	}
	l, ok, err := s.locate(ctx, d, false)
	if err != nil {
		return nil, "", fmt.Errorf("object %s: %w", d.Short(), err)
	}
	var gone string
	if ok {
		b, err := s.getPacked(ctx, d, l, pooled)
		if !errors.Is(err, object.ErrNotFound) {
			return b, fmt.Sprintf("pack %s (bytes %d-%d)", s.packKey(l.pack), l.off, l.off+l.n-1), err
		}
		// The pack is gone (gc repacked what was live in it, or
		// removed it): the object may be loose too, or in a pack
		// written since.
		gone = l.pack
	}
	b, err := s.getKeyInto(ctx, s.objectKey(d), pooled)
	if errors.Is(err, object.ErrNotFound) {
		// Packed since the indexes were loaded, or moved out of a pack
		// that is gone?
		lookAgain := func() (packLoc, bool, error) {
			if gone != "" {
				return s.relocate(ctx, d, gone)
			}
			return s.locate(ctx, d, true)
		}
		if l, ok, lerr := lookAgain(); lerr == nil && ok {
			b, err := s.getPacked(ctx, d, l, pooled)
			return b, fmt.Sprintf("pack %s (bytes %d-%d)", s.packKey(l.pack), l.off, l.off+l.n-1), err
		}
	}
	if err != nil {
		return nil, "", fmt.Errorf("object %s: %w", d.Short(), err)
	}
	return b, s.objectKey(d), nil
}

// looseWhileLoading reads d from its loose key while the indexes are on
// their way (LoadIndexes): a loose object, a mount's version object and
// root tree first, need not wait for them. ok is false, with no error,
// where d is not loose or nothing loads: the caller then locates it.
func (s *Store) looseWhileLoading(ctx context.Context, d object.Digest, pooled bool) (_ []byte, ok bool, _ error) {
	if !s.packs.loading.Load() {
		return nil, false, nil
	}
	b, err := s.getKeyInto(ctx, s.objectKey(d), pooled)
	switch {
	case err == nil:
		return b, true, nil
	case errors.Is(err, object.ErrNotFound):
		return nil, false, nil
	}
	return nil, false, fmt.Errorf("object %s: %w", d.Short(), err)
}

// packRun is one ranged GET of a GetMany: the objects of one pack that
// lie in [off, end).
type packRun struct {
	pack     string
	off, end int64
	members  []int // indexes into the GetMany's digests
}

// runs groups the packed objects of ds by pack, in offset order, into
// ranges no longer than maxRun with no gap over mergeGap, the objects of
// a run apart (readRun reads each once, as it comes): an object asked
// for twice, or one an index says overlaps the one before, starts a run
// of its own.
func runs(ds []object.Digest, where map[int]packLoc) []packRun {
	byPack := map[string][]int{}
	for i, l := range where {
		byPack[l.pack] = append(byPack[l.pack], i)
	}
	var out []packRun
	for pack, is := range byPack {
		sort.Slice(is, func(a, b int) bool { return where[is[a]].off < where[is[b]].off })
		var cur *packRun
		for _, i := range is {
			l := where[i]
			off, end := int64(l.off), int64(l.off)+int64(l.n)
			if cur != nil && off >= cur.end && off <= cur.end+mergeGap && end-cur.off <= maxRun {
				cur.end = end
				cur.members = append(cur.members, i)
				continue
			}
			out = append(out, packRun{pack: pack, off: off, end: end, members: []int{i}})
			cur = &out[len(out)-1]
		}
	}
	return out
}

// packWriter gathers small objects into packs and sends each as it
// fills, and an index of the packs sent once they name indexObjectsMax
// objects, or at finish. Trees go into packs of their own: a mount's
// lookups, a warmup's listing and a trace's batches read the trees of a
// version together, which a file's chunks, packed after its file object,
// would otherwise lie between. A file's later chunks go into packs of
// their own too, a chunk group (object.ChunkGroup) never split between
// two: a sequential reader's read-ahead asks for a group at a time, and
// reads it with one GET; the file objects and first chunks a warmup or a
// task that opens many files reads stay together.
type packWriter struct {
	s    *Store
	g    *errgroup.Group
	ctx  context.Context
	sent func(objects int, bytes int64)
	open [3]gathered // trees, file objects and small objects, chunk groups (openTarget)
	// group is the group (a chunk group, or what a repacked pack held)
	// being added to each of open.
	group [3]int
	// noIndex, if set, is handed each pack sent instead of its being
	// put in an index the writer writes: gc's repack writes one index
	// for what it wrote once it is all written.
	noIndex func(packObjects)

	mu        sync.Mutex
	unindexed []packObjects // packs sent, not yet in an index
	objects   int           // in unindexed
}

// openTarget is the size at which each of packWriter.open is closed
// before a group that would not fit: a pack of chunk groups holds
// packGroups of them.
var openTarget = [3]int64{packTarget, packTarget, groupPackTarget}

// gathered is a pack being gathered.
type gathered struct {
	buf []byte
	es  []indexEntryT
}

// add appends an object, into the trees' pack if tree; a pack that
// reaches packTarget is sent.
func (w *packWriter) add(d object.Digest, b []byte, tree bool) {
	p := &w.open[1]
	if tree {
		p = &w.open[0]
	}
	p.es = append(p.es, indexEntryT{d: d, off: uint32(len(p.buf)), n: uint32(len(b))})
	p.buf = append(p.buf, b...)
	if len(p.buf) >= packTarget {
		w.send(p)
	}
}

// addGrouped appends a chunk of chunk group grp to the chunk groups'
// pack; a group that may not fit in what is left of groupPackTarget
// starts another pack, so that a group lies in one, and so does one that
// begins a sequential reader's batch, so that a batch lies in one.
func (w *packWriter) addGrouped(d object.Digest, b []byte, grp chunkGroup) {
	w.addTogether(2, d, b, grp)
}

// addTogether appends an object of group grp to open[i]; a group that may
// not fit in what is left of the pack's target starts another pack.
func (w *packWriter) addTogether(i int, d object.Digest, b []byte, grp chunkGroup) {
	p := &w.open[i]
	if grp.id != w.group[i] {
		w.group[i] = grp.id
		if len(p.buf) > 0 && (grp.batch || int64(len(p.buf))+grp.bytes > openTarget[i]) {
			w.send(p)
		}
	}
	p.es = append(p.es, indexEntryT{d: d, off: uint32(len(p.buf)), n: uint32(len(b))})
	p.buf = append(p.buf, b...)
}

// flush sends the packs being gathered.
func (w *packWriter) flush() {
	for i := range w.open {
		w.send(&w.open[i])
	}
}

// send sends pack p, if it holds anything, and, once the packs sent name
// indexObjectsMax objects, their index.
func (w *packWriter) send(p *gathered) {
	if len(p.es) == 0 {
		return
	}
	buf, es := p.buf, p.es
	p.buf, p.es = nil, nil
	w.g.Go(func() error {
		sum := sha256.Sum256(buf)
		name := hex.EncodeToString(sum[:])
		if err := w.s.putKey(w.ctx, w.s.packKey(name), buf); err != nil {
			return fmt.Errorf("pack %s: %w", name[:12], err)
		}
		w.sent(len(es), int64(len(buf)))
		if w.noIndex != nil {
			w.noIndex(packObjects{pack: name, es: es})
			return nil
		}
		w.mu.Lock()
		w.unindexed = append(w.unindexed, packObjects{pack: name, es: es})
		w.objects += len(es)
		var ps []packObjects
		if w.objects >= indexObjectsMax {
			ps, w.unindexed, w.objects = w.unindexed, nil, 0
		}
		w.mu.Unlock()
		_, err := w.s.putIndex(w.ctx, ps)
		return err
	})
}

// finish writes the index of the packs sent and not yet in one, once
// every pack was sent (the group waited for).
func (w *packWriter) finish(ctx context.Context) error {
	ps := w.unindexed
	w.unindexed, w.objects = nil, 0
	_, err := w.s.putIndex(ctx, ps)
	return err
}

// putIndex writes the index of ps, packs already written, if there are
// any, and returns its name.
func (s *Store) putIndex(ctx context.Context, ps []packObjects) (name string, _ error) {
	if len(ps) == 0 {
		return "", nil
	}
	name, b := encodeSetIndex(ps)
	if err := s.putKey(ctx, s.indexKey(name), b); err != nil {
		return "", fmt.Errorf("index of %d packs: %w", len(ps), err)
	}
	s.learnIndex(name, ps)
	return name, nil
}
