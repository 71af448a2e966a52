package object

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// DirStore keeps objects as plain files under a directory, one file per
// object at ab/cdef... (the hex of its digest), written once by atomic
// rename and never opened for writing again. Plain files, not a database,
// because every mount process on a machine shares the store, and a file
// rename needs no lock between processes (git keeps loose objects the same
// way). Objects a cache fetched go to packs instead (pack.go): many
// objects to a file. Every Get verifies the bytes against the digest.
type DirStore struct {
	dir   string
	packs *packs

	marginOnce  sync.Once
	sweepMargin time.Duration // see margin
	// removals is removalsName, open for Removals once it was asked.
	removals atomic.Pointer[os.File]
}

// OpenDirStore opens (creating if needed) a store in dir.
func OpenDirStore(dir string) (*DirStore, error) {
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("object store %s: %w", dir, err)
	}
	s := &DirStore{dir: dir}
	s.packs = newPacks(s)
	return s, nil
}

func (s *DirStore) path(d Digest) string {
	h := d.String()[len(digestPrefix):]
	return filepath.Join(s.dir, h[:2], h[2:])
}

// Has reports whether the store holds d.
func (s *DirStore) Has(_ context.Context, d Digest) (bool, error) {
	if ok, err := s.packs.has(d, lookRemovals); ok || err != nil {
		return ok, err
	}
	_, err := os.Lstat(s.path(d))
	if errors.Is(err, fs.ErrNotExist) {
		// Another process may have packed it since.
		return s.packs.has(d, lookFresh)
	}
	return err == nil, err
}

// HasMany is Has for each of ds, looking once for what other processes
// packed since, where Has looks once for each missing object. An object
// packed by another process during the call may be reported missing,
// never one that is not stored as present.
func (s *DirStore) HasMany(ds []Digest) ([]bool, error) {
	if err := s.packs.refresh(false); err != nil {
		return nil, err
	}
	has := make([]bool, len(ds))
	for i, d := range ds {
		if s.packs.known(d) {
			has[i] = true
			continue
		}
		_, err := os.Lstat(s.path(d))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		has[i] = err == nil
	}
	return has, nil
}

// HasKnown reports whether d is in one of the store's packs as far as
// this process last looked: no system call, so a batch can skip, cheaply,
// what it certainly fetched before. False says nothing: d may be a file,
// or in a pack another process wrote since (Has looks).
func (s *DirStore) HasKnown(d Digest) bool { return s.packs.known(d) }

// Get returns the encoded object d, verified.
func (s *DirStore) Get(ctx context.Context, d Digest) ([]byte, error) {
	return s.GetInto(ctx, d, nil)
}

// GetInto is Get, reading d into buf when it is in a pack and fits (else
// into a new slice): for a reader that reads object after object and
// owns buf, which it may use again once done with what GetInto returned.
func (s *DirStore) GetInto(_ context.Context, d Digest, buf []byte) ([]byte, error) {
	b, perr := s.packs.get(d, lookRemovals, buf)
	if perr == nil || !errors.Is(perr, ErrNotFound) && !errors.Is(perr, ErrCorrupt) {
		return b, perr
	}
	b, err := os.ReadFile(s.path(d))
	if errors.Is(err, fs.ErrNotExist) {
		if errors.Is(perr, ErrCorrupt) {
			return nil, perr
		}
		// Another process may have packed it since.
		return s.packs.get(d, lookFresh, buf)
	}
	if err != nil {
		return nil, err
	}
	if got := Sum(b); got != d {
		return nil, s.damaged(d, got)
	}
	return b, nil
}

// QuarantineDir is where damaged objects go, under the store's directory,
// named by the digest they were stored as.
const QuarantineDir = "quarantine"

// Quarantine moves object d out of the store, into QuarantineDir, where it
// can be looked at but is never read as an object again: once an object's
// bytes are found not to match its name, no reader may trust it, and
// whoever has its source stores it again. It counts as a removal, so that
// what trusted d to be stored (a KnownSet, a scan cache) looks again.
// Quarantining an object the store no longer holds is not an error.
func (s *DirStore) Quarantine(d Digest) error {
	if err := s.countRemoval(); err != nil {
		return err
	}
	ls, err := s.packs.locs(d, lookRemovals)
	if err != nil {
		return err
	}
	for _, l := range ls {
		b, _ := l.read()
		if err := s.packs.quarantine(l, b); err != nil {
			return err
		}
	}
	q := filepath.Join(s.dir, QuarantineDir)
	if err := os.Mkdir(q, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("quarantine %s: %w", d.Short(), err)
	}
	err = os.Rename(s.path(d), filepath.Join(q, d.String()[len(digestPrefix):]))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("quarantine %s: %w", d.Short(), err)
	}
	return nil
}

// damaged quarantines d, whose bytes hash to got, and returns the error
// that says so.
func (s *DirStore) damaged(d, got Digest) error {
	err := fmt.Errorf("%s: bytes hash to %s: %w", d, got, ErrCorrupt)
	if qerr := s.Quarantine(d); qerr != nil {
		return fmt.Errorf("%w; %v", err, qerr)
	}
	slog.Error("object store: damaged object quarantined", "object", d.Short(), "store", s.dir,
		"hashes_to", got.Short())
	return fmt.Errorf("%w (quarantined)", err)
}

// Put stores an encoded object durably and returns its digest. Storing an
// object the store has is a no-op: an object, once stored, is never written
// again. An object that does not decode (Check) is refused with an error
// wrapping ErrCorrupt, and nothing is stored.
func (s *DirStore) Put(ctx context.Context, encoded []byte) (Digest, error) {
	return s.put(ctx, encoded, true)
}

// PutCached stores an object without waiting for the disk: for objects
// that can be had again (fetched from a master, or scanned from a tree that
// is still there). A crash may leave such an object short or empty; Get
// finds that by its digest, and the caller fetches it again. Whoever
// records a reference that must outlive a crash calls Sync first.
func (s *DirStore) PutCached(ctx context.Context, encoded []byte) (Digest, error) {
	return s.put(ctx, encoded, false)
}

// Sync makes every object stored so far durable: one syncfs(2) of the
// store's filesystem instead of an fsync per object.
func (s *DirStore) Sync() error {
	fd, err := unix.Open(s.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sync object store: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("sync object store: %w", err)
	}
	return nil
}

// Kind reads the kind of object d from its first bytes, without reading or
// verifying the rest.
func (s *DirStore) Kind(d Digest) (Kind, error) {
	path, off, _, err := s.Locate(d)
	if err != nil {
		return 0, err
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var b [2]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		return 0, err
	}
	return KindOf(b[:])
}

// Touch marks d as just used, for a cache that evicts the least recently
// used objects first.
func (s *DirStore) Touch(d Digest) {
	if s.packs.touch(d, false) {
		return
	}
	now := time.Now()
	os.Chtimes(s.path(d), now, now)
}

// Freshen marks d as just used, as Touch, and reports whether the store
// holds it: one call for both.
func (s *DirStore) Freshen(d Digest) bool {
	now := time.Now()
	if os.Chtimes(s.path(d), now, now) == nil {
		return true
	}
	if ok, _ := s.packs.has(d, lookFresh); !ok {
		return false
	}
	return s.packs.touch(d, true)
}

// Dir returns the directory the store keeps its objects in.
func (s *DirStore) Dir() string { return s.dir }

func (s *DirStore) put(ctx context.Context, encoded []byte, sync bool) (Digest, error) {
	if _, err := Check(encoded); err != nil {
		return Zero, fmt.Errorf("store object: %w", err)
	}
	d := Sum(encoded)
	return d, s.putAs(d, encoded, sync)
}

// PutCachedAs is PutCached for bytes the caller has already checked hash
// to d (a cache that verified what it fetched): hashing twice costs as
// much as the rest of storing.
//
// The object goes to a pack (pack.go), not a file of its own: a cache
// stores many objects, each of which it can fetch again. For the same
// reason the copy it may find already is looked for in the packs as this
// process last saw them, with no look at the removals counted since (a
// cache asks HasMany, which looks, before it fetches): a copy a sweep
// took out since, taken for the object, costs a later read a fetch. What
// must keep a copy (a snapshot) asks Has under its hold, which looks.
func (s *DirStore) PutCachedAs(d Digest, encoded []byte) error {
	if _, err := Check(encoded); err != nil {
		return fmt.Errorf("store object %s: %w", d.Short(), err)
	}
	return s.pack(d, encoded, lookKnown)
}

// PutPacked is PutCached into a pack, as PutCachedAs: for a store that
// keeps many objects it reads back cold, one after another (a master's
// scans and pushes), where a file per object costs a directory entry,
// an inode and their disk reads on every cold read of it. An object the
// store already holds as a file, whole, stays there (a store written
// before packs), freshened.
func (s *DirStore) PutPacked(_ context.Context, encoded []byte) (Digest, error) {
	if _, err := Check(encoded); err != nil {
		return Zero, fmt.Errorf("store object: %w", err)
	}
	d := Sum(encoded)
	if !s.packs.known(d) {
		p := s.path(d)
		switch same, err := s.holds(p, encoded); {
		case err != nil:
			return Zero, err
		case same:
			now := time.Now()
			os.Chtimes(p, now, now)
			return d, nil
		}
	}
	return d, s.pack(d, encoded, lookRemovals)
}

// pack stores d, whose encoding the caller checked, in a pack, unless a
// pack holds it whole already, as a look of how finds.
func (s *DirStore) pack(d Digest, encoded []byte, how look) error {
	ls, err := s.packs.locs(d, how)
	if err != nil {
		return err
	}
	for _, l := range ls {
		b, err := l.read()
		if err == nil && bytes.Equal(b, encoded) {
			// Freshened, as putAs does for a file.
			s.packs.touch(d, true)
			return nil
		}
		if !errors.Is(err, os.ErrClosed) {
			if err := s.packs.quarantine(l, b); err != nil {
				return err
			}
		}
	}
	if err := s.packs.put([]Digest{d}, [][]byte{encoded}); err != nil {
		return fmt.Errorf("store %s: %w", d, err)
	}
	return nil
}

// tmpSeq numbers this process's temporary files; with the pid it makes
// their names unique among the processes sharing the store.
var tmpSeq atomic.Uint64

func (s *DirStore) putAs(d Digest, encoded []byte, sync bool) error {
	p := s.path(d)
	switch same, err := s.holds(p, encoded); {
	case err != nil:
		return err
	case same:
		// Freshen it: a gc running now keeps objects younger than its
		// grace period, and this one is about to be referenced again.
		now := time.Now()
		os.Chtimes(p, now, now)
		return nil
	}
	// Missing, short (a crash can leave an object stored with PutCached
	// short or empty), or damaged: nothing else would ever replace it,
	// and every snapshot that reused it would be born broken. The rename
	// below replaces it whole.
	tmp := filepath.Join(s.dir, "tmp", fmt.Sprintf("put-%d-%d", os.Getpid(), tmpSeq.Add(1)))
	// Objects are read-only on disk from the start: nothing in cowfs
	// opens one for writing again, and the mode says so to everything
	// else. Readable by the owner only: an object holds the bytes of a
	// file that may have been readable by its owner only.
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	if errors.Is(err, fs.ErrExist) {
		// Left by a crashed process that had this pid.
		os.Remove(tmp)
		f, err = os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o400)
	}
	if err != nil {
		return err
	}
	_, err = f.Write(encoded)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
		if errors.Is(err, fs.ErrNotExist) {
			// The first object of its fan-out directory.
			if err = os.Mkdir(filepath.Dir(p), 0o700); err == nil || errors.Is(err, fs.ErrExist) {
				err = os.Rename(tmp, p)
			}
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store %s: %w", d, err)
	}
	return nil
}

// holds reports whether the object file p has exactly the bytes b. An
// object is reused only so: its size alone would take a damaged object
// for a good one, and comparing costs one read, less than the hash that
// made b's digest. A file that differs is quarantined, to be replaced.
func (s *DirStore) holds(p string, b []byte) (bool, error) {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if fi.Size() == int64(len(b)) {
		buf := make([]byte, min(len(b), 256<<10))
		same := true
		for off := 0; off < len(b) && same; {
			n, err := f.ReadAt(buf[:min(len(buf), len(b)-off)], int64(off))
			if n == 0 && err != nil {
				return false, fmt.Errorf("read stored object: %w", err)
			}
			same = bytes.Equal(buf[:n], b[off:off+n])
			off += n
		}
		if same {
			return true, nil
		}
	}
	d := Sum(b)
	slog.Error("object store: stored object differs from its bytes; replacing it", "object", d.Short(),
		"store", s.dir, "stored_size", fi.Size(), "size", len(b))
	return false, s.Quarantine(d)
}

// ReadUnverified returns the bytes stored as d without checking them: for
// a server whose every client checks what it gets (cowfs serve), where a
// second hash per send would cost the master a CPU for nothing. A file or
// packed copy shorter than it should be gives what it holds: the reader
// checks the bytes.
func (s *DirStore) ReadUnverified(d Digest) ([]byte, error) {
	return s.ReadUnverifiedWith(d, func(n int) []byte { return make([]byte, n) })
}

// ReadUnverifiedWith is ReadUnverified reading into the buffer get
// returns once the object's size n is known (at least n bytes long), so
// that a master reads what it sends into pooled buffers of each object's
// size with one look at the store. get may be called again if a pack is
// dropped under the read; what it returned then is not used.
func (s *DirStore) ReadUnverifiedWith(d Digest, get func(n int) []byte) ([]byte, error) {
	return s.readUnverified(d, get, lookRemovals)
}

// Reads are unverified reads (ReadUnverifiedWith, WillNeed) that share
// the look at the removals other processes counted that Reads took: a
// master sending a call's many objects stats the count once for the call,
// not twice an object. A copy removed since that look may still be read,
// as it may by a read that began just before the removal: its bytes stay
// in its pack (packs are only appended to) and its reader checks them.
type Reads struct{ s *DirStore }

// Reads looks at the removals counted so far, for the reads that follow.
func (s *DirStore) Reads() (Reads, error) {
	if err := s.packs.look(lookRemovals); err != nil {
		return Reads{}, err
	}
	return Reads{s}, nil
}

// ReadUnverifiedWith is DirStore.ReadUnverifiedWith after r's look.
func (r Reads) ReadUnverifiedWith(d Digest, get func(n int) []byte) ([]byte, error) {
	return r.s.readUnverified(d, get, lookKnown)
}

// WillNeed is DirStore.WillNeed after r's look.
func (r Reads) WillNeed(d Digest, before int64) int64 {
	return r.s.willNeed(d, before, lookKnown)
}

// readUnverified is ReadUnverifiedWith, the packs it knows looked at as
// how says.
func (s *DirStore) readUnverified(d Digest, get func(n int) []byte, how look) ([]byte, error) {
	// Packed first, as far as this process knows (no system call to
	// ask but the removal count's, if that): a master packs what it
	// scans (PutPacked).
	if b, ok, err := s.packs.readInto(d, get, how); ok || err != nil {
		return b, err
	}
	// Plain system calls, not os.Open: a master reads an object per
	// file object and chunk it sends, and os.File would also try, and
	// fail, to put each regular file in the poller (five more calls).
	fd, err := unix.Open(s.path(d), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT {
		// Another process may have packed it since.
		b, ok, err := s.packs.readInto(d, get, lookFresh)
		if !ok && err == nil {
			err = fmt.Errorf("%s: %w", d, ErrNotFound)
		}
		return b, err
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: s.path(d), Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: s.path(d), Err: err}
	}
	buf := get(int(st.Size))[:st.Size]
	n := 0
	for n < len(buf) {
		m, err := unix.Pread(fd, buf[n:], int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read object %s: %w", d.Short(), err)
		}
		if m == 0 {
			break // shorter than it was: the caller's check finds it
		}
		n += m
	}
	return buf[:n], nil
}

// StoredObject describes one object on disk.
type StoredObject struct {
	Digest  Digest
	Size    int64
	ModTime time.Time
}

// Each calls fn for every object in the store.
func (s *DirStore) Each(fn func(StoredObject) error) error {
	fans, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	for _, fan := range fans {
		if !fan.IsDir() || len(fan.Name()) != 2 {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(s.dir, fan.Name()))
		if err != nil {
			return err
		}
		for _, e := range ents {
			d, err := ParseDigest(digestPrefix + fan.Name() + e.Name())
			if err != nil || strings.Contains(e.Name(), ".") {
				continue
			}
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			if err := fn(StoredObject{Digest: d, Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
				return err
			}
		}
	}
	packed, err := s.packs.each()
	if err != nil {
		return err
	}
	for _, o := range packed {
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}

// Size returns the stored size of object d.
func (s *DirStore) Size(d Digest) (int64, error) {
	_, _, size, err := s.Locate(d)
	return size, err
}

// Remove deletes object d: one a cache found damaged, which it fetches
// again. What may still be in use leaves through a Sweep.
func (s *DirStore) Remove(d Digest) error {
	if err := s.countRemoval(); err != nil {
		return err
	}
	ls, err := s.packs.locs(d, lookRemovals)
	if err != nil {
		return err
	}
	for _, l := range ls {
		if err := s.packs.markDead(l); err != nil {
			return err
		}
	}
	err = os.Remove(s.path(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}
