package cow

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"

	"github.com/cowfs/cowfs/cow/internal/fsio"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/scan"
)

// metaStore is the upper layer's metadata store: whiteouts, opaque and redirected
// directories, and for each copied-up file its origin and chunk presence.
// Every change is one badger transaction, so a crash leaves each record
// either as it was or as it became.
//
// Records are keyed by the id kept in the upper inode's identity (see
// identity.go):
//
//	"f" id        -> fileMeta
//	"d" id        -> dirMeta
//	"w" id name   -> whiteout of name in directory id
//
// and, for an upper inode whose identity cannot be an xattr, by its
// number: "i" ino -> its birth time and identity (identity.go).
type metaStore struct {
	// db is the database once it exists. An upper that has had no record
	// has none: opening one is most of a mount's start, with fsyncs, and
	// its memtables and goroutines stay for the mount's life, where a
	// task that only reads its workspace never writes a record. made
	// makes it at the first write; until then every record reads as
	// absent, which it is.
	db   atomic.Pointer[badger.DB]
	path string     // the database's directory
	mk   sync.Mutex // held while made opens the database, and by close
	// closed is set by close (under mk): a write after it is refused,
	// not given a database of its own.
	closed bool
	// room, when set, refuses a write that would leave its filesystem
	// with less than its floor free (see keepFree).
	room *space
	// whole is what the scan cache's hits found whole in the store, in
	// memory only (see scan.Scanner).
	whole object.KnownSet
	// written counts the write transactions committed, synced how many
	// of them a sync has made durable; syncs counts the database's syncs.
	written, synced, syncs atomic.Uint64
}

// fileMeta describes an upper file whose bytes come partly from its origin in
// the lower layer.
type fileMeta struct {
	// Origin is the file's path in the lower layer.
	Origin string
	// LowerLimit is the offset from which no byte comes from the origin:
	// the origin's size, lowered by every truncate below it. Bytes at or
	// past it are the upper file's (zeros where it is sparse).
	LowerLimit int64
	// Chunks marks the chunks below LowerLimit whose bytes are in the upper.
	Chunks chunkMap
}

// Complete reports whether no byte of the file is read from the origin.
func (m *fileMeta) Complete() bool {
	if m.LowerLimit <= 0 {
		return true
	}
	_, last := chunkRange(0, m.LowerLimit)
	for i := int64(0); i <= last; i++ {
		if !m.Chunks.Has(i) {
			return false
		}
	}
	return true
}

// dirMeta describes how an upper directory merges with the lower.
type dirMeta struct {
	// Opaque hides the lower directory at the same path.
	Opaque bool
	// Redirect, when set, names the lower directory merged under this one
	// (a lower directory that was renamed or moved).
	Redirect string
}

const metaVersion = 1

// openMeta opens the badger database in dir if one was made there; one
// that was not is made at the first write (made).
func openMeta(dir string) (*metaStore, error) {
	m := &metaStore{path: dir}
	// badger writes its manifest before anything else, and reads a
	// database without one as new.
	if _, err := os.Stat(filepath.Join(dir, badger.ManifestFilename)); errors.Is(err, fs.ErrNotExist) {
		return m, nil
	} else if err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", dir, err)
	}
	db, err := openBadger(dir)
	if err != nil {
		return nil, err
	}
	m.db.Store(db)
	return m, nil
}

// made returns the database, made now if it was not: for a write.
func (m *metaStore) made() (*badger.DB, error) {
	if db := m.db.Load(); db != nil {
		return db, nil
	}
	m.mk.Lock()
	defer m.mk.Unlock()
	if db := m.db.Load(); db != nil {
		return db, nil
	}
	if m.closed {
		return nil, fmt.Errorf("metadata %s: %w", m.path, os.ErrClosed)
	}
	// Opening the database writes to it: on a full disk that is a
	// SIGBUS (see keepFree).
	if err := m.room.need(0); err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	db, err := openBadger(m.path)
	if err != nil {
		return nil, err
	}
	// badger syncs its files and their directory as it makes them, not
	// the directory's own entry: made durable before a record in it can
	// be.
	if err := fsio.SyncDir(filepath.Dir(m.path)); err != nil {
		db.Close()
		return nil, fmt.Errorf("open metadata %s: %w", m.path, err)
	}
	m.db.Store(db)
	return db, nil
}

// openBadger opens (creating if needed) the badger database in dir.
func openBadger(dir string) (*badger.DB, error) {
	opts := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{}).
		// Upper metadata is small; keep the footprint of each mount small
		// too, since a worker runs many.
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithValueLogFileSize(64 << 20).
		WithNumCompactors(2).
		// Durability against a killed process comes from the write-ahead
		// log reaching the page cache at commit; durability against power
		// loss from Sync, which fsync on any file calls.
		WithSyncWrites(false)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", dir, err)
	}
	return db, nil
}

// keepFree makes every later write fail with ENOSPC, and change nothing,
// while it would leave less than floor bytes free on the filesystem of
// dir, the database's directory.
//
// badger writes its logs and tables through shared memory mappings of
// sparse files, and a page of such a mapping that finds the filesystem
// full when first written kills the process with SIGBUS. FS's reserve
// keeps cowfs's own writes off the last bytes, but any process can fill
// a shared disk; this check keeps the database from writing into the
// last bytes whoever took the rest. A writer that fills the disk between
// the check and badger's write can still beat it: the floor makes that
// window a matter of that writer outrunning the statfs, not of chance.
func (m *metaStore) keepFree(dir string, floor int64) error {
	room, err := openSpace(dir, floor)
	if err != nil {
		return err
	}
	m.room.close()
	m.room = room
	return nil
}

// close flushes and closes the database. On a disk without room for the
// flush (see keepFree) it leaves the database as a kill would, to be
// replayed from its log at the next open: the flush writes a table
// through a mapping, and on a full disk that is a SIGBUS.
func (m *metaStore) close() error {
	m.mk.Lock()
	defer m.mk.Unlock()
	defer m.room.close()
	m.closed = true
	db := m.db.Swap(nil)
	if db == nil {
		return nil
	}
	if err := m.room.need(0); err != nil {
		slog.Warn("metadata not flushed at close: the disk is full; the next mount replays its log", "err", err)
		return nil
	}
	return db.Close()
}

// update runs fn in a write transaction, once the filesystem has room
// for about size more bytes (see keepFree).
func (m *metaStore) update(size int, fn func(txn *badger.Txn) error) error {
	// A record costs its bytes in the log and again in the table it is
	// flushed to, plus badger's headers.
	if err := m.room.need(int64(2*size + 64)); err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	db, err := m.made()
	if err != nil {
		return err
	}
	err = db.Update(fn)
	m.written.Add(1)
	return err
}

// sync makes every committed change durable. With none committed since
// the last sync it syncs nothing: a file's fsync then has no record of
// the metadata's to wait for (its chunk records change only while
// chunks come up), and the database's sync is two more flushes to disk.
// Only update writes to the database, and badger syncs its own tables
// as it writes them, so the write counter covers all that sync would
// flush.
func (m *metaStore) sync() error {
	// Read before the sync: a transaction committed later may or may
	// not be in it, so it counts as not synced.
	w := m.written.Load()
	if m.synced.Load() >= w {
		return nil
	}
	m.syncs.Add(1)
	// w > 0: a write made the database, and only close takes it away.
	db := m.db.Load()
	if db == nil {
		return fmt.Errorf("sync metadata %s: %w", m.path, os.ErrClosed)
	}
	if err := db.Sync(); err != nil {
		return err
	}
	for {
		s := m.synced.Load()
		if s >= w || m.synced.CompareAndSwap(s, w) {
			return nil
		}
	}
}

// newID returns a fresh metadata id. Ids are random so that no counter has
// to survive a crash; 64 bits make a collision practically impossible.
func newID() uint64 {
	var b [8]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			panic(err) // crypto/rand never fails on Linux
		}
		if id := binary.BigEndian.Uint64(b[:]); id != 0 {
			return id
		}
	}
}

func key(kind byte, id uint64, name string) []byte {
	k := make([]byte, 9, 9+len(name))
	k[0] = kind
	binary.BigEndian.PutUint64(k[1:], id)
	return append(k, name...)
}

// view runs fn in a read transaction; with no database, not at all:
// every record is absent.
func (m *metaStore) view(fn func(txn *badger.Txn) error) error {
	db := m.db.Load()
	if db == nil {
		return nil
	}
	return db.View(fn)
}

func (m *metaStore) get(k []byte) ([]byte, error) {
	var v []byte
	found := false
	err := m.view(func(txn *badger.Txn) error {
		found = true
		item, err := txn.Get(k)
		if err != nil {
			return err
		}
		v, err = item.ValueCopy(nil)
		return err
	})
	if !found || errors.Is(err, badger.ErrKeyNotFound) {
		return nil, errNotFound
	}
	return v, err
}

// file returns the metadata of file id, or errNotFound.
func (m *metaStore) file(id uint64) (*fileMeta, error) {
	v, err := m.get(key('f', id, ""))
	if err != nil {
		return nil, err
	}
	fm, err := decodeFileMeta(v)
	if err != nil {
		return nil, fmt.Errorf("file meta %x: %w", id, err)
	}
	return fm, nil
}

// putFile stores the metadata of file id.
func (m *metaStore) putFile(id uint64, fm *fileMeta) error {
	if id == 0 {
		// A record nobody can find again would lose the chunks it
		// marks: refuse loudly instead.
		return fmt.Errorf("file meta of %q without an id: %w", fm.Origin, ErrCorrupt)
	}
	v := encodeFileMeta(fm)
	return m.update(9+len(v), func(txn *badger.Txn) error {
		return txn.Set(key('f', id, ""), v)
	})
}

// dir returns the metadata of directory id; a directory without a record
// merges normally.
func (m *metaStore) dir(id uint64) (dirMeta, error) {
	if id == 0 {
		return dirMeta{}, nil
	}
	v, err := m.get(key('d', id, ""))
	if errors.Is(err, errNotFound) {
		return dirMeta{}, nil
	}
	if err != nil {
		return dirMeta{}, err
	}
	if len(v) < 2 || v[0] != metaVersion {
		return dirMeta{}, fmt.Errorf("dir meta %x: %w", id, ErrCorrupt)
	}
	return dirMeta{Opaque: v[1] == 1, Redirect: string(v[2:])}, nil
}

// putDir stores the metadata of directory id.
func (m *metaStore) putDir(id uint64, dm dirMeta) error {
	v := []byte{metaVersion, 0}
	if dm.Opaque {
		v[1] = 1
	}
	v = append(v, dm.Redirect...)
	return m.update(9+len(v), func(txn *badger.Txn) error {
		return txn.Set(key('d', id, ""), v)
	})
}

// whiteout reports whether name is whited out in directory id.
func (m *metaStore) whiteout(dir uint64, name string) (bool, error) {
	if dir == 0 {
		return false, nil
	}
	_, err := m.get(key('w', dir, name))
	if errors.Is(err, errNotFound) {
		return false, nil
	}
	return err == nil, err
}

// setWhiteout hides the lower entry name in directory dir.
func (m *metaStore) setWhiteout(dir uint64, name string) error {
	return m.update(9+len(name), func(txn *badger.Txn) error {
		return txn.Set(key('w', dir, name), nil)
	})
}

// whiteouts lists the whited-out names of directory dir.
func (m *metaStore) whiteouts(dir uint64) (map[string]bool, error) {
	out := map[string]bool{}
	if dir == 0 {
		return out, nil
	}
	prefix := key('w', dir, "")
	err := m.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			out[string(it.Item().Key()[len(prefix):])] = true
		}
		return nil
	})
	return out, err
}

// dropDir removes every record of directory id: its merge flags and its
// whiteouts. Called when the directory is removed.
func (m *metaStore) dropDir(id uint64) error {
	if id == 0 {
		return nil
	}
	// Deletes are records too: tombstones, until compaction.
	return m.update(64, func(txn *badger.Txn) error {
		if err := txn.Delete(key('d', id, "")); err != nil {
			return err
		}
		prefix := key('w', id, "")
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		var keys [][]byte
		for it.Rewind(); it.Valid(); it.Next() {
			keys = append(keys, it.Item().KeyCopy(nil))
		}
		it.Close()
		for _, k := range keys {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// dropFile removes the record of file id, once no name and no open handle
// reaches it.
func (m *metaStore) dropFile(id uint64) error {
	return m.update(9, func(txn *badger.Txn) error {
		return txn.Delete(key('f', id, ""))
	})
}

func encodeFileMeta(fm *fileMeta) []byte {
	var b bytes.Buffer
	b.WriteByte(metaVersion)
	var n [binary.MaxVarintLen64]byte
	b.Write(n[:binary.PutVarint(n[:], fm.LowerLimit)])
	b.Write(n[:binary.PutUvarint(n[:], uint64(len(fm.Origin)))])
	b.WriteString(fm.Origin)
	b.Write(fm.Chunks)
	return b.Bytes()
}

func decodeFileMeta(v []byte) (*fileMeta, error) {
	if len(v) < 1 || v[0] != metaVersion {
		return nil, ErrCorrupt
	}
	v = v[1:]
	limit, n := binary.Varint(v)
	if n <= 0 {
		return nil, ErrCorrupt
	}
	v = v[n:]
	l, n := binary.Uvarint(v)
	if n <= 0 || uint64(len(v)-n) < l {
		return nil, ErrCorrupt
	}
	v = v[n:]
	fm := &fileMeta{LowerLimit: limit, Origin: string(v[:l])}
	fm.Chunks = append(chunkMap(nil), v[l:]...)
	return fm, nil
}

// badgerLogger sends badger's warnings and errors to slog and drops its
// chatty info and debug lines.
type badgerLogger struct{}

func (badgerLogger) Errorf(f string, a ...any)   { slog.Error("badger: " + fmt.Sprintf(f, a...)) }
func (badgerLogger) Warningf(f string, a ...any) { slog.Warn("badger: " + fmt.Sprintf(f, a...)) }
func (badgerLogger) Infof(string, ...any)        {}
func (badgerLogger) Debugf(string, ...any)       {}

// linkIndex records the one upper inode of a lower file with several names
// (hard links), so that every name is copied up as a link to it rather than
// as a file of its own. The inode also stays in the work directory's index/
// under the lower inode number, the source of those links.
type linkIndex struct {
	// ID is the upper inode's metaStore id.
	ID uint64
	// LowerLeft counts the lower names not yet linked into the upper nor
	// removed: the inode's link count is its upper links, less the index
	// link, plus these.
	LowerLeft int64
}

// index returns the link index of lower inode ino.
func (m *metaStore) index(ino uint64) (linkIndex, bool, error) {
	v, err := m.get(key('h', ino, ""))
	if errors.Is(err, errNotFound) {
		return linkIndex{}, false, nil
	}
	if err != nil || len(v) != 16 {
		return linkIndex{}, false, fmt.Errorf("link index %x: %w", ino, ErrCorrupt)
	}
	return linkIndex{ID: binary.BigEndian.Uint64(v), LowerLeft: int64(binary.BigEndian.Uint64(v[8:]))}, true, nil
}

// pendingLinks returns the lower inodes with several names of which some
// are in the upper and some not yet (LowerLeft > 0).
func (m *metaStore) pendingLinks() (map[uint64]bool, error) {
	out := map[uint64]bool{}
	err := m.view(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte{'h'}})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			k := it.Item().Key()
			v, err := it.Item().ValueCopy(nil)
			if err != nil {
				return err
			}
			if len(k) != 9 || len(v) != 16 {
				return fmt.Errorf("link index %x: %w", k, ErrCorrupt)
			}
			if binary.BigEndian.Uint64(v[8:]) > 0 {
				out[binary.BigEndian.Uint64(k[1:])] = true
			}
		}
		return nil
	})
	return out, err
}

// putIndex records the link index of lower inode ino.
func (m *metaStore) putIndex(ino uint64, li linkIndex) error {
	v := binary.BigEndian.AppendUint64(nil, li.ID)
	v = binary.BigEndian.AppendUint64(v, uint64(max(0, li.LowerLeft)))
	return m.update(9+len(v), func(txn *badger.Txn) error {
		return txn.Set(key('h', ino, ""), v)
	})
}

// scanChunksKept is the most chunks of a file whose list metaStore keeps in its
// scan cache entry (256 bytes of digests): enough for the many small files
// of a spider project, whose file objects would otherwise be read back
// from the store at the first snapshot after each mount.
const scanChunksKept = 8

// decodeScanEntry decodes what putScanned stored; it copies what it keeps.
func decodeScanEntry(v []byte) (scan.Entry, bool) {
	if len(v) < 24+32 || (len(v)-24-32)%32 != 0 {
		return scan.Entry{}, false
	}
	var e scan.Entry
	e.Size = int64(binary.BigEndian.Uint64(v))
	e.Mtime = int64(binary.BigEndian.Uint64(v[8:]))
	e.Ctime = int64(binary.BigEndian.Uint64(v[16:]))
	copy(e.Object[:], v[24:])
	if rest := v[24+32:]; len(rest) > 0 && int64(len(rest)/32) == (e.Size+ChunkSize-1)/ChunkSize {
		fo := &object.File{Size: e.Size, Chunks: make([]object.Digest, len(rest)/32)}
		for i := range fo.Chunks {
			copy(fo.Chunks[i][:], rest[32*i:])
		}
		e.File = fo
	}
	return e, true
}

// putScanned records a scan cache entry.
func (m *metaStore) putScanned(dev, ino uint64, e scan.Entry) error {
	v := make([]byte, 24, 24+32)
	binary.BigEndian.PutUint64(v, uint64(e.Size))
	binary.BigEndian.PutUint64(v[8:], uint64(e.Mtime))
	binary.BigEndian.PutUint64(v[16:], uint64(e.Ctime))
	v = append(v, e.Object[:]...)
	if e.File != nil && len(e.File.Chunks) <= scanChunksKept {
		for _, c := range e.File.Chunks {
			v = append(v, c[:]...)
		}
	}
	return m.update(17+len(v), func(txn *badger.Txn) error {
		return txn.Set(scanKey(dev, ino), v)
	})
}

// scanView is the scan cache read through one badger transaction, for a
// capture that looks up every lower file: a transaction per lookup cost
// more than the lookup (badger's read timestamp bookkeeping). What is put
// meanwhile goes to the database at once, and is remembered by the view
// (a lower file with several names is hashed once).
type scanView struct {
	m   *metaStore
	txn *badger.Txn
	put map[[2]uint64]scan.Entry
}

// scanView opens a view; Discard it when done.
func (m *metaStore) scanView() *scanView {
	v := &scanView{m: m}
	if db := m.db.Load(); db != nil {
		v.txn = db.NewTransaction(false)
	}
	return v
}

// Discard ends the view's transaction.
func (v *scanView) Discard() {
	if v.txn != nil {
		v.txn.Discard()
	}
}

func (v *scanView) Scanned(dev, ino uint64) (scan.Entry, bool) {
	if e, ok := v.put[[2]uint64{dev, ino}]; ok {
		return e, true
	}
	if v.txn == nil {
		return scan.Entry{}, false // no database when the view began
	}
	item, err := v.txn.Get(scanKey(dev, ino))
	if err != nil {
		return scan.Entry{}, false
	}
	var e scan.Entry
	ok := false
	item.Value(func(b []byte) error {
		e, ok = decodeScanEntry(b)
		return nil
	})
	return e, ok
}

func (v *scanView) PutScanned(dev, ino uint64, e scan.Entry) error {
	if err := v.m.putScanned(dev, ino, e); err != nil {
		return err
	}
	if v.put == nil {
		v.put = map[[2]uint64]scan.Entry{}
	}
	v.put[[2]uint64{dev, ino}] = e
	return nil
}

// WholeSet returns the mount's set of file objects found whole.
func (v *scanView) WholeSet() *object.KnownSet { return &v.m.whole }

// A capture's scans go through the view, and find its whole set.
var (
	_ scan.Cache       = (*scanView)(nil)
	_ scan.WholeSetter = (*scanView)(nil)
)

func scanKey(dev, ino uint64) []byte {
	k := make([]byte, 17)
	k[0] = 's'
	binary.BigEndian.PutUint64(k[1:], dev)
	binary.BigEndian.PutUint64(k[9:], ino)
	return k
}
