package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/cowfs/cowfs/cow/object"
)

// Fetcher gets objects from a master; *Client is one. It is the cache's
// view of the wire, not an object store: its Get is unverified (the cache
// checks what it fetches, once), it asks again with the master checking
// its copy (GetVerified), in batches (GetMany), and asks Has for many
// objects in one round trip. What a Cache offers in turn is an
// object.Getter.
type Fetcher interface {
	// Get returns the bytes stored as d, unverified; a missing object is
	// an error wrapping object.ErrNotFound.
	Get(ctx context.Context, d object.Digest) ([]byte, error)
	// GetVerified is Get once bytes of d came damaged (Client.GetVerified).
	GetVerified(ctx context.Context, d object.Digest) ([]byte, error)
	GetMany(ctx context.Context, ds []object.Digest, got func(i int, b []byte, err error)) error
	Has(ctx context.Context, ds []object.Digest) ([]bool, error)
	Addr() string
}

// aheadGroups is how many of a sequential reader's chunk groups
// (object.ChunkGroup) read-ahead keeps in flight, unless the fetcher asks
// for more: two batches of aheadBatch, each one GetMany call.
const aheadGroups = 2 * aheadBatch

// aheadBatch is how many chunk groups read-ahead asks for in one call,
// unless the fetcher says otherwise (batchFetcher): a master's GetMany of
// eight chunks costs both ends less CPU a byte than two of four, and on
// a loopback or LAN link its round trip is short enough that two calls
// in flight keep the link busy.
const aheadBatch = 2

// An aheadFetcher is a Fetcher that asks for more of a sequential
// reader's chunk groups in flight than a master needs: a bucket, whose
// every GET costs the request's setup and its first byte's latency, and
// whose throughput grows with the requests in flight.
type aheadFetcher interface {
	AheadGroups() int
}

// A batchFetcher is a Fetcher that wants a sequential reader's chunk
// groups asked for this many at a time: a bucket, which keeps that many
// side by side in a pack and sends them with one GET.
type batchFetcher interface {
	AheadBatch() int
}

// boundedFetcher is a Fetcher whose calls, retries included, give up
// after Timeout (*Client: ClientConfig.Timeout).
type boundedFetcher interface {
	Timeout() time.Duration
}

var (
	_ object.Getter     = (*Cache)(nil)
	_ object.Prefetcher = (*Cache)(nil)
	_ Fetcher           = (*Client)(nil)
)

// CacheStats counts what a cache did.
type CacheStats struct {
	Hits, Misses int64
	// BytesFetched is what came over the wire and was verified.
	BytesFetched int64
	// Corrupt counts objects that arrived damaged, or were found damaged
	// in the cache, and were fetched again.
	Corrupt int64
	// Errors counts reads that could not be served.
	Errors  int64
	Evicted int64
	// DirPrefetchErrors counts background fetches of a directory's
	// files (PrefetchDir) that failed; no read saw them.
	DirPrefetchErrors int64
	// TraceObjects is how many objects the trace being replayed lists
	// (ReplayTrace), 0 without one; TraceFetched counts those its
	// batches asked for, TraceErrors the batches that failed.
	TraceObjects, TraceFetched, TraceErrors int64
}

// Cache is a worker's view of a master's objects: the machine's object
// store first, then the master. What it fetches it verifies, then keeps in
// the store, where every mount of the same state directory (in any process)
// finds it. One fetch per object: concurrent reads of it in this process
// wait for one call, and other processes wait on a lock file for it.
type Cache struct {
	store *object.DirStore
	f     Fetcher
	log   *slog.Logger

	flight singleflight.Group
	// failed remembers, for failMemory, fetches that failed because the
	// master did not answer (object.Digest -> *failure).
	failed sync.Map
	// demand counts fetches a reader waits for; prefetching yields to
	// them.
	demand atomic.Int32

	hits, misses, bytes, corrupt, errs, evicted atomic.Int64

	pf    atomic.Pointer[Warmup]
	ahead chan []object.Digest
	// groups is how many chunk groups read-ahead keeps in flight, each
	// in a call of its own.
	groups    int
	fresh     freshObjects // what read-ahead fetched, for its reader
	aheadOnce sync.Once
	locks     *fetchLocks
	ctx       context.Context // ended by Close: stops background work
	cancel    context.CancelFunc

	dir dirFetch // see dirfetch.go

	// Learned prefetch: see trace.go.
	rec    traceRecorder
	replay traceReplay

	// Eviction: see evict.go.
	evict     atomic.Pointer[evictConfig]
	sinceEvic atomic.Int64
	// evictMu makes eviction passes one at a time: two passes would
	// each count the store's total and together remove too much.
	evictMu sync.Mutex

	// onFetch, when set, is told of every call that fetched from the
	// master (ObserveFetches).
	onFetch func(batch bool, took time.Duration, err error)
	// activity is whether fetches are under way (SetFetching).
	activity activity
}

// NewCache returns a cache over store that fetches from f.
func NewCache(store *object.DirStore, f Fetcher, log *slog.Logger) (*Cache, error) {
	if log == nil {
		log = slog.Default()
	}
	locks := filepath.Join(store.Dir(), "locks")
	if err := os.MkdirAll(locks, 0o700); err != nil {
		return nil, fmt.Errorf("cache locks: %w", err)
	}
	fl, err := openLocks(locks)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Cache{store: store, f: f, log: log, locks: fl, ahead: make(chan []object.Digest, 64), ctx: ctx, cancel: cancel}
	c.groups = aheadGroups
	if a, ok := f.(aheadFetcher); ok {
		c.groups = max(c.groups, a.AheadGroups())
	}
	c.fresh.max = traceLead + c.groups*object.ChunkGroup*object.ChunkSize
	return c, nil
}

// ReadAhead is how many chunks past a sequential reader to keep in
// flight: whole chunk groups, as many as the fetcher asks for.
func (c *Cache) ReadAhead() int64 {
	return int64(c.groups * object.ChunkGroup)
}

// AheadBatch is how many chunks a sequential reader's read-ahead asks for
// at a time, whole groups, at least one, as the fetcher asks
// (batchFetcher), or aheadBatch groups.
func (c *Cache) AheadBatch() int64 {
	if b, ok := c.f.(batchFetcher); ok {
		return int64(max(b.AheadBatch(), 1) * object.ChunkGroup)
	}
	return aheadBatch * object.ChunkGroup
}

// Close stops read-ahead, prefetching and eviction, and closes the lock
// files. Nothing may use the cache after.
func (c *Cache) Close() {
	c.cancel()
	defer c.activity.close()
	c.locks.close()
}

// Stats returns the counters.
func (c *Cache) Stats() CacheStats {
	return CacheStats{
		Hits: c.hits.Load(), Misses: c.misses.Load(), BytesFetched: c.bytes.Load(),
		Corrupt: c.corrupt.Load(), Errors: c.errs.Load(), Evicted: c.evicted.Load(),
		DirPrefetchErrors: c.dir.errs.Load(),
		TraceObjects:      c.replay.objects.Load(), TraceFetched: c.replay.fetched.Load(), TraceErrors: c.replay.errs.Load(),
	}
}

// ObserveFetches has f told of every call that fetches from the master:
// one object, or a batch (read-ahead, prefetch), how long it took with its
// retries, and how it ended (metrics). Call it before the cache is used.
func (c *Cache) ObserveFetches(f func(batch bool, took time.Duration, err error)) { c.onFetch = f }

// Get returns object d, verified: from the store, or fetched. Without a
// deadline in ctx, the fetcher's Timeout (the mount's --io-timeout) is
// the bound, from now: waiting for another fetch of d counts against it.
func (c *Cache) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	return c.getFor(ctx, d, false, nil, nil)
}

// GetInto is Get for a reader that owns buf and reads object after object
// (a lower file's chunks): an object the store holds is read into buf
// when it fits (object.DirStore.GetInto). What it returns is buf's bytes
// or bytes nobody writes (held in memory, fetched); the caller reads it
// and may use buf again once done with it.
func (c *Cache) GetInto(ctx context.Context, d object.Digest, buf []byte) ([]byte, error) {
	return c.getFor(ctx, d, false, buf, nil)
}

// GetPinned is GetInto for a reader that reads what it gets in place and
// is done with it before its next get (a lower file's chunk): an object
// read-ahead holds in the pool's memory is handed as it is held, not
// copied into buf, and pinned there until the reader calls release,
// which it must do once. release is nil when nothing was pinned: what
// GetPinned returns is then as for GetInto.
func (c *Cache) GetPinned(ctx context.Context, d object.Digest, buf []byte) (_ []byte, release func(), _ error) {
	b, err := c.getFor(ctx, d, false, buf, &release)
	return b, release, err
}

// GetForRead is Get for an object a reader reads from next: the file
// object of a file it opened, or the root tree of a version it mounts. A
// master that can sends what that reader asks for next in the same round
// trip (the file's first chunk, the trees beneath; see getFollowing),
// where the reader would otherwise wait for more round trips.
func (c *Cache) GetForRead(ctx context.Context, d object.Digest) ([]byte, error) {
	return c.getFor(ctx, d, true, nil, nil)
}

// followBytes bounds what comes with an object got for reading: for a
// file, its first chunk, which a reader of any size of file needs, and no
// more, which bounds what an open that reads little costs; for a
// version's root, its trees up to about ten thousand directory entries.
const followBytes = object.ChunkSize

// getFor is a reader's get: follow as for GetForRead, buf as for GetInto,
// pin, if set, as for GetPinned.
func (c *Cache) getFor(ctx context.Context, d object.Digest, follow bool, buf []byte, pin *func()) ([]byte, error) {
	c.dir.read(d)
	c.replay.read(d)
	c.demand.Add(1)
	defer c.demand.Add(-1)
	if _, ok := ctx.Deadline(); !ok {
		if t, ok := c.f.(boundedFetcher); ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, t.Timeout())
			defer cancel()
		}
	}
	b, err := c.getFollow(ctx, d, follow, true, buf, pin)
	if err == nil {
		c.rec.note(d, len(b))
	}
	return b, err
}

// held returns d if it is held in memory (freshObjects); a reader takes
// what was held for one reader, into buf if it has one (take), or pinned
// where it is held if it asks for that (pin set; takePinned).
func (c *Cache) held(d object.Digest, reader bool, buf []byte, pin *func()) ([]byte, bool) {
	switch {
	case reader && pin != nil:
		b, e, ok := c.fresh.takePinned(d)
		if e != nil {
			*pin = func() { c.fresh.unpin(e) }
		}
		return b, ok
	case reader:
		return c.fresh.take(d, buf)
	}
	return c.fresh.get(d)
}

func (c *Cache) get(ctx context.Context, d object.Digest) ([]byte, error) {
	return c.getFollow(ctx, d, false, false, nil, nil)
}

// getFollow is get, with follow as for GetForRead; reader is set for a
// reader's get (Get, GetForRead, GetInto, GetPinned), not for the cache's
// own work; buf, if set, is what a store hit is read into (GetInto); pin
// as for held.
func (c *Cache) getFollow(ctx context.Context, d object.Digest, follow, reader bool, buf []byte, pin *func()) ([]byte, error) {
	if b, ok := c.held(d, reader, buf, pin); ok {
		c.hits.Add(1)
		return b, nil
	}
	// A read-ahead fetch of d still under way is waited for, unless a
	// reader already waited out its deadline on d: the kernel asks again
	// at once after a failed read, and must not wait a second time.
	if ch := c.fresh.waiter(d); ch != nil && !c.recentlyFailed(d) {
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, c.waitedOut(ctx, d, ch)
		}
		if b, ok := c.held(d, reader, buf, pin); ok {
			c.hits.Add(1)
			return b, nil
		}
	}
	b, err := c.store.GetInto(ctx, d, buf)
	if err == nil {
		c.hits.Add(1)
		c.store.Touch(d)
		return b, nil
	}
	c.misses.Add(1)
	c.noteDamage(d, err)
	if f, ok := c.failed.Load(d); ok {
		if f := f.(*failure); f.current() {
			c.errs.Add(1)
			return nil, f.err
		}
		c.failed.CompareAndDelete(d, f)
	}
	// A reader that joins a fetch another started waits no longer than
	// its own deadline.
	ch := c.flight.DoChan(string(d[:]), func() (any, error) { return c.fetch(ctx, d, follow, reader) })
	select {
	case r := <-ch:
		if r.Err != nil {
			c.errs.Add(1)
			return nil, r.Err
		}
		return r.Val.([]byte), nil
	case <-ctx.Done():
		// The fetch goes on under its own deadline; it is over when
		// its result is sent.
		over := make(chan struct{})
		go func() { <-ch; close(over) }()
		return nil, c.waitedOut(ctx, d, over)
	}
}

// waitedOut is the error of a reader whose ctx ended while another fetch
// of d was under way; over is closed when that fetch is.
func (c *Cache) waitedOut(ctx context.Context, d object.Digest, over <-chan struct{}) error {
	c.errs.Add(1)
	err := fmt.Errorf("wait for the fetch of %s from %s: %w (%w)", d.Short(), c.f.Addr(), ErrUnavailable, ctx.Err())
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		// A whole --io-timeout went by with the fetch still under way
		// (begun by read-ahead, with a later deadline): the kernel asks
		// for the page again at once, and that ask must not wait the
		// fetch out a second time, however long the fetch goes on. A
		// fetch that lands meanwhile is found in memory or the store
		// first.
		c.remember(d, &failure{at: time.Now(), err: err, pending: func() bool {
			select {
			case <-over:
				return false
			default:
				return true
			}
		}})
	}
	return err
}

// failMemory is how long a fetch that found the master unreachable is
// answered with its error without asking again. The kernel reads a page
// again as soon as its read-ahead of it failed: without this, one read of
// a file from a master that is gone waited out --io-timeout twice or
// more (8 s with a 4 s timeout). Short, so that a master that is back is
// used again at once.
const failMemory = 2 * time.Second

type failure struct {
	at  time.Time
	err error
	// pending, if set, reports whether what a reader waited out (a
	// fetch of the object, or the lock another fetch held) is still
	// under way: until it ends, another read would wait for the same
	// thing again, so the failure stands past failMemory.
	pending func() bool
}

// current reports whether f still answers reads.
func (f failure) current() bool {
	return time.Since(f.at) < failMemory || f.pending != nil && f.pending()
}

// recentlyFailed reports whether a read of d failed so recently, or on a
// wait still under way, that another must not wait again.
func (c *Cache) recentlyFailed(d object.Digest) bool {
	f, ok := c.failed.Load(d)
	return ok && f.(*failure).current()
}

// fetch gets d from the master, unless another process stored it while
// this one waited for the lock; with follow, and a master that can, with
// what a reader of d reads next (getFollowing).
func (c *Cache) fetch(ctx context.Context, d object.Digest, follow, reader bool) (_ []byte, err error) {
	unlock, err := c.lock(ctx, d, reader)
	if err != nil {
		return nil, err
	}
	// The lock goes once this fetch, and the call that brings the chunks
	// after d, if any, are done with it.
	lk := &sharedUnlock{n: 1, unlock: unlock}
	defer lk.done()
	// storedBy is set when that call verified d and stores it itself,
	// after what follows it: a process that finds d stored then finds
	// the rest too.
	storedBy := false
	// Read-ahead may have fetched it while this waited for the lock.
	if b, ok := c.held(d, reader, nil, nil); ok {
		return b, nil
	}
	b, err := c.store.Get(ctx, d)
	if err == nil {
		return b, nil
	}
	c.noteDamage(d, err)
	defer c.activity.start()()
	if c.onFetch != nil {
		start := time.Now()
		defer func() { c.onFetch(false, time.Since(start), err) }()
	}
	// Every try shares ctx's deadline: a damaged transfer is tried
	// again only while there is time.
	for try := range 3 {
		if err := ctx.Err(); err != nil {
			// The time ran out waiting (for the file, or this lock),
			// not on the master: nothing to remember about it.
			return nil, fmt.Errorf("fetch %s from %s: %w (%w)", d.Short(), c.f.Addr(), ErrUnavailable, err)
		}
		get := c.f.Get
		if ff, ok := c.f.(followFetcher); ok && follow && try == 0 {
			get = func(ctx context.Context, d object.Digest) ([]byte, error) {
				lk.hold()
				b, stores, err := c.getFollowing(ctx, ff, d, lk.done)
				storedBy = stores
				return b, err
			}
		}
		if try > 0 {
			// Damaged on the way, or in the master's store: asked so,
			// the master checks its copy and restores a damaged one
			// from its export, or says it cannot.
			get = c.f.GetVerified
		}
		b, err := get(ctx, d)
		if errors.Is(err, ErrMasterDamaged) {
			c.log.Error("the master's copy of the object is damaged and could not be restored from its export",
				"object", d.String(), "master", c.f.Addr())
		}
		if err != nil {
			if errors.Is(err, ErrUnavailable) {
				c.failed.Store(d, &failure{at: time.Now(), err: err})
			}
			return nil, fmt.Errorf("fetch %s from %s: %w", d.Short(), c.f.Addr(), err)
		}
		if !storedBy && object.Sum(b) != d { // storedBy: getFollowing verified it
			c.corrupt.Add(1)
			c.log.Error("object from master does not match its digest; fetching it again",
				"object", d.String(), "got", object.Sum(b).String(), "master", c.f.Addr())
			continue
		}
		if !storedBy {
			if err := c.store.PutCachedAs(d, b); err != nil {
				return nil, fmt.Errorf("cache %s: %w", d.Short(), err)
			}
		}
		c.bytes.Add(int64(len(b)))
		c.fetched(int64(len(b)))
		return b, nil
	}
	return nil, fmt.Errorf("fetch %s from %s: damaged three times: %w", d.Short(), c.f.Addr(), object.ErrCorrupt)
}

// noteDamage counts and logs a cached object that err, from the store's
// Get, says was damaged: one a crash cut short (PutCached does not
// fsync), or bit rot. The store has quarantined it; it is never served,
// and is fetched again.
func (c *Cache) noteDamage(d object.Digest, err error) {
	if errors.Is(err, object.ErrCorrupt) {
		c.corrupt.Add(1)
		c.log.Warn("damaged object in cache; fetching it again", "object", d.Short(), "err", err)
	}
}

// lockWaitedOut is the error of a fetch of d whose ctx ended while
// another fetch held d's lock: in this process, h that fetch's holding of
// d.
// Like waitedOut, it is remembered while that holder goes on, so that the
// kernel's next ask does not wait for the same holder again: the holder
// may be a batch fetch (read-ahead, a directory's prefetch) with a later
// deadline than the reader's.
func (c *Cache) lockWaitedOut(ctx context.Context, d object.Digest, h *fetchHold, reader bool) error {
	err := fmt.Errorf("wait for the lock of %s, held by another fetch: %w (%w)", d.Short(), ErrUnavailable, ctx.Err())
	if !reader || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return err
	}
	f := &failure{at: time.Now(), err: err}
	if h != nil {
		f.pending = func() bool { return c.locks.holding(d) == h }
	}
	c.remember(d, f)
	return err
}

// remember keeps f as d's failure. A failure still pending that it
// replaces goes on standing in it: a reader gives up on the fetch it
// joined at the deadline at which that fetch gives up on the lock, either
// may be noted first, and the failure stands while either wait's holder
// goes on.
func (c *Cache) remember(d object.Digest, f *failure) {
	for {
		old, loaded := c.failed.LoadOrStore(d, f)
		if !loaded {
			return
		}
		g := f
		if o := old.(*failure); o.pending != nil && o.pending() {
			was, now := o.pending, f.pending
			g = &failure{at: f.at, err: f.err, pending: func() bool { return was() || now != nil && now() }}
		}
		if c.failed.CompareAndSwap(d, old, g) {
			return
		}
	}
}

// Prefetch starts fetching ds, those not cached, in one call, without
// waiting: read-ahead of a sequential reader. If too much is already
// queued, it does nothing.
func (c *Cache) Prefetch(ds []object.Digest) {
	c.aheadOnce.Do(func() {
		for range c.groups {
			go func() {
				for {
					select {
					case <-c.ctx.Done():
						return
					case batch := <-c.ahead:
						c.fetchManyFor(c.ctx, batch, true, 0, nil)
					}
				}
			}()
		}
	})
	select {
	case c.ahead <- ds:
		c.replay.passed(ds)
	default:
	}
}
