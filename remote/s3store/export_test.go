package s3store

import (
	"context"
	"maps"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/cowfs/cowfs/cow/object"
)

// SetTraceAge sets how long gc keeps a trace, for a test that runs alone
// (not in parallel), and returns what it was.
func SetTraceAge(d time.Duration) (old time.Duration) {
	old, traceAge = traceAge, d
	return old
}

// HoldPacks takes the lock of s's pack indexes, which a load of them
// takes, until release is called.
func HoldPacks(s *Store) (release func()) {
	s.packs.mu.Lock()
	return s.packs.mu.Unlock
}

// SetIndexObjectsMax sets how many objects a publish's index names before
// it is written, for a test that runs alone, and returns what it was.
func SetIndexObjectsMax(n int) (old int) {
	old, indexObjectsMax = indexObjectsMax, n
	return old
}

// SetAfterPackListing has f run after each reload's listing of indexes/
// and packs/, before the indexes are read, for a test that runs alone;
// restore undoes it.
func SetAfterPackListing(f func(s *Store)) (restore func()) {
	afterPackListing = f
	return func() { afterPackListing = nil }
}

// SplitIndexes rewrites s's bucket's indexes as publishes wrote them
// before set indexes: one a pack, named by it.
func SplitIndexes(ctx context.Context, s *Store) error {
	if err := s.reloadPacks(ctx, true); err != nil {
		return err
	}
	s.packs.mu.Lock()
	indexes := maps.Clone(s.packs.indexes)
	s.packs.mu.Unlock()
	for name, ps := range indexes {
		if len(ps) == 1 && ps[0].pack == name {
			continue
		}
		for _, po := range ps {
			d, err := object.ParseDigest("sha256-" + po.pack)
			if err != nil {
				return err
			}
			if err := s.putKey(ctx, s.indexKey(po.pack), encodeIndex(d, po.es)); err != nil {
				return err
			}
		}
		if err := s.deleteKey(ctx, s.indexKey(name)); err != nil {
			return err
		}
		s.forgetIndex(name)
	}
	return nil
}

// PackPlace returns where s's indexes put object d: its pack, offset and
// length; ok false if it is in none.
func PackPlace(ctx context.Context, s *Store, d object.Digest) (pack string, off, n int64, ok bool, err error) {
	l, ok, err := s.locate(ctx, d, false)
	return l.pack, int64(l.off), int64(l.n), ok, err
}

// PackAgain writes the objects ds, read from g, into a pack of their own
// in the order given, with an index, as a publisher racing another
// would: the objects are then in two packs.
func PackAgain(ctx context.Context, s *Store, g object.Getter, ds []object.Digest) error {
	eg, gctx := errgroup.WithContext(ctx)
	w := &packWriter{s: s, g: eg, ctx: gctx, sent: func(int, int64) {}}
	for _, d := range ds {
		b, err := g.Get(ctx, d)
		if err != nil {
			return err
		}
		w.add(d, b, false)
	}
	w.flush()
	if err := eg.Wait(); err != nil {
		return err
	}
	return w.finish(ctx)
}

// SetLeaseTTL sets how long a lease holds its version, for a test that
// runs alone, and returns what it was.
func SetLeaseTTL(d time.Duration) (old time.Duration) {
	old, leaseTTL = leaseTTL, d
	return old
}

// SetHoldRenew sets how often HoldVersions puts its leases again, for a
// test that runs alone, and returns what it was.
func SetHoldRenew(d time.Duration) (old time.Duration) {
	old, holdRenew = holdRenew, d
	return old
}

// IndexObjects returns how many objects each index of s's bucket names,
// by the index's name.
func IndexObjects(ctx context.Context, s *Store) (map[string]int, error) {
	if err := s.reloadPacks(ctx, true); err != nil {
		return nil, err
	}
	s.packs.mu.Lock()
	defer s.packs.mu.Unlock()
	out := map[string]int{}
	for name, ps := range s.packs.indexes {
		for _, po := range ps {
			out[name] += len(po.es)
		}
	}
	return out, nil
}

// SetWriterMergeMin sets how many indexes of few objects a publish or a
// push leaves unmerged, for a test that runs alone, and returns what it
// was.
func SetWriterMergeMin(n int) (old int) {
	old, writerMergeMin = writerMergeMin, n
	return old
}

// ReloadPacks loads s's bucket's indexes as a writer does, listing
// packs/ beside indexes/.
func ReloadPacks(ctx context.Context, s *Store) error { return s.reloadPacks(ctx, false) }

// HideIndexPacks makes s a writer whose listing of packs/ missed the
// packs the index name names (written by another writer after it).
func HideIndexPacks(s *Store, name string) {
	s.packs.mu.Lock()
	defer s.packs.mu.Unlock()
	for _, po := range s.packs.indexes[name] {
		delete(s.packs.seenPacks, po.pack)
	}
}

// MergeWritten is what a publish or a push does after writing its key.
func MergeWritten(ctx context.Context, s *Store) { s.mergeWritten(ctx) }

// BatchChunks is how many of a file's chunks a pack of chunk groups
// holds, the batch a sequential reader asks for, from chunk 1 on.
const BatchChunks = packGroups * object.ChunkGroup

// GroupPackTarget is where a pack of chunk groups is closed.
const GroupPackTarget = groupPackTarget

// GetThroughSDK has s make its GETs with the SDK's GetObject, as a
// bucket whose endpoint rules the getter leaves to the SDK does, and
// reports whether it made them itself before.
func GetThroughSDK(s *Store) (had bool) {
	had = s.getter != nil
	s.getter = nil
	return had
}
