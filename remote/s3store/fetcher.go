package s3store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
)

// Fetcher is the bucket as a worker's cache sees a master
// (remote.Fetcher): a remote.Cache over it keeps what it fetches in the
// machine's store, verified once, for every mount of the worker. A
// bucket cannot check its own copy, so GetVerified is another Get.
type Fetcher struct {
	S *Store
	// Concurrency bounds the requests of one GetMany or Has; 0: 8.
	Concurrency int
}

var _ remote.Fetcher = Fetcher{}

func (f Fetcher) limit() int {
	if f.Concurrency > 0 {
		return f.Concurrency
	}
	return 8
}

// aheadGroups is how many chunk groups a sequential reader keeps in
// flight from a bucket (remote.Cache): two batches of packGroups, each
// one ranged GET of a pack. A bucket's throughput grows with the GETs in
// flight, where each one's setup and first byte cost more than a
// master's round trip.
const aheadGroups = 2 * packGroups

// AheadGroups is how many of a sequential reader's chunk groups
// read-ahead keeps in flight from the bucket.
func (Fetcher) AheadGroups() int { return aheadGroups }

// AheadBatch is how many chunk groups a sequential reader asks for at a
// time: a publish's pack of them, one GET.
func (Fetcher) AheadBatch() int { return packGroups }

// Get returns the bytes stored as d, unverified (the cache verifies). A
// bucket that does not answer is remote.ErrUnavailable, which the cache
// remembers for a while instead of asking again for every read.
func (f Fetcher) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	return f.get(ctx, d, false)
}

// get is Get, into the pool's memory when pooled.
func (f Fetcher) get(ctx context.Context, d object.Digest, pooled bool) ([]byte, error) {
	b, _, err := f.S.fetch(ctx, d, pooled)
	return b, unavailable(err)
}

// unavailable marks a bucket that does not answer as
// remote.ErrUnavailable.
func unavailable(err error) error {
	if errors.Is(err, ErrUnreachable) {
		return errors.Join(err, remote.ErrUnavailable)
	}
	return err
}

// GetVerified gets d again, after the cache found it damaged, and checks
// it here: the bucket has no copy of its own to check, so bytes damaged
// twice are the bucket's, an error (object.ErrCorrupt) that names the
// object's key and what to do.
func (f Fetcher) GetVerified(ctx context.Context, d object.Digest) ([]byte, error) {
	b, err := f.S.Get(ctx, d)
	return b, unavailable(err)
}

// GetMany gets objects concurrently, and hands each to got as it
// completes, one at a time. The packed objects of one pack are read
// together, a ranged GET for each run of them (runs).
func (f Fetcher) GetMany(ctx context.Context, ds []object.Digest, got func(i int, b []byte, err error)) error {
	return f.getMany(ctx, ds, bufsOwned, got, 0, nil)
}

// GetManyFollow is GetMany for objects whose readers read on from them
// (a file opened, a directory's small files prefetched): a file object's
// first chunk, when it holds the file's first follow bytes and the bucket
// packed it right after the file object, as a publish does, comes in the
// same ranged GET and is handed, unverified, to fol after the file
// object. The range of each packed object asked for reaches to the end of
// the object after it (at most a chunk more), and a reader's first read
// then costs no request of its own. Chunks packed elsewhere or loose (a
// version published before first chunks were packed, a chunk another
// file packed first) are left to their readers, as is everything beneath
// a tree.
func (f Fetcher) GetManyFollow(ctx context.Context, ds []object.Digest, follow int64, got func(i int, b []byte, err error), fol func(d object.Digest, b []byte)) error {
	return f.getMany(ctx, ds, bufsOwned, got, follow, fol)
}

// GetManyFollowLent is GetManyFollow, but lends got and fol what it
// hands them, as GetManyLent lends got: valid only until the call
// returns, read into the process's buffer pool (remote.lentFollower).
func (f Fetcher) GetManyFollowLent(ctx context.Context, ds []object.Digest, follow int64, got func(i int, b []byte, err error), fol func(d object.Digest, b []byte)) error {
	return f.getMany(ctx, ds, bufsLent, got, follow, fol)
}

// PackOf returns the pack d lies in, from the indexes loaded; false if
// it is in none of them, or they are not loaded yet: the caller then
// asks without knowing.
func (f Fetcher) PackOf(d object.Digest) (string, bool) { return f.S.packOf(d) }

// FollowsInPlace says that GetManyFollow's follow costs no request
// more: what follows an object is read in the ranged GET of the object.
func (Fetcher) FollowsInPlace() {}

// GetManyLent is GetMany, but lends each object to got: b is valid only
// until got returns, and its memory, the process's buffer pool's,
// receives a later object (remote.Client.GetManyLent).
func (f Fetcher) GetManyLent(ctx context.Context, ds []object.Digest, got func(i int, b []byte, err error)) error {
	return f.getMany(ctx, ds, bufsLent, got, 0, nil)
}

// GetManyGiven is GetMany, but each object comes in a buffer of its own
// from the process's buffer pool, which got may give back to it or keep
// (remote.Client.GetManyGiven).
func (f Fetcher) GetManyGiven(ctx context.Context, ds []object.Digest, got func(i int, b []byte, err error)) error {
	return f.getMany(ctx, ds, bufsGiven, got, 0, nil)
}

// bufUse is whose the memory an object is read into is.
type bufUse uint8

const (
	bufsOwned bufUse = iota // new memory, got's
	bufsLent                // the pool's, back to it once got returns
	bufsGiven               // the pool's, got's
)

// getMany is GetManyFollow, bufs saying whose the memory handed to got
// is; follow is 0 where nothing follows (fol nil).
func (f Fetcher) getMany(ctx context.Context, ds []object.Digest, bufs bufUse, got func(i int, b []byte, err error), follow int64, fol func(d object.Digest, b []byte)) error {
	// got and fol are called one at a time, as a master's stream calls
	// them.
	var mu sync.Mutex
	hand := func(i int, b []byte, err error) {
		mu.Lock()
		got(i, b, err)
		mu.Unlock()
	}
	pooled := bufs != bufsOwned
	if len(ds) == 1 {
		// One object, as a mount asks for its version object (with what
		// follows it), is tried loose while the indexes load, as Get
		// tries it; a batch is what packs hold, and waits for them.
		b, ok, err := f.S.looseWhileLoading(ctx, ds[0], pooled)
		if err != nil {
			hand(0, nil, unavailable(err))
			return nil
		}
		if ok {
			hand(0, b, nil)
			if bufs == bufsLent {
				freeBuf(b, true)
			}
			return nil
		}
	}
	where := map[int]packLoc{}
	var loose []int
	for i, d := range ds {
		l, ok, err := f.S.locate(ctx, d, false)
		if err != nil {
			return unavailable(err)
		}
		if ok {
			where[i] = l
		} else {
			loose = append(loose, i)
		}
	}
	// all is ds, then (with follow) the objects packed right after those
	// asked for: where numbers them on from len(ds).
	all := ds
	if follow > 0 {
		asked := make(map[object.Digest]bool, len(ds))
		for _, d := range ds {
			asked[d] = true
		}
		for i := range ds {
			l, ok := where[i]
			if !ok {
				continue
			}
			if nd, nl, ok := f.S.nextPacked(l); ok && !asked[nd] {
				asked[nd] = true
				where[len(all)] = nl
				all = append(all[:len(all):len(all)], nd)
			}
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(f.limit())
	for _, r := range runs(all, where) {
		if !slices.ContainsFunc(r.members, func(i int) bool { return i < len(ds) }) {
			continue // only what would have followed: a run of its own is not worth a GET
		}
		g.Go(func() error {
			at := make([]packLoc, len(r.members))
			for k, i := range r.members {
				at[k] = where[i]
			}
			var ahead []object.Digest // first chunks of the file objects handed
			// An object asked for is handed; one that follows it only if
			// it is a first chunk of a file object handed before it.
			wanted := func(k int) bool {
				i := r.members[k]
				return i < len(ds) || slices.Contains(ahead, all[i])
			}
			handed, err := f.S.readRun(gctx, r.pack, r.off, r.end-r.off, at, pooled, wanted, func(k int, b []byte) {
				// b is the caller's when owned or given; lent, it goes
				// back to the pool once handed.
				if i := r.members[k]; i < len(ds) {
					if follow > 0 {
						ahead = append(ahead, remote.FirstChunks(b, follow)...)
					}
					hand(i, b, nil)
				} else {
					mu.Lock()
					fol(all[i], b)
					mu.Unlock()
				}
				if bufs == bufsLent {
					freeBuf(b, true)
				}
			})
			for _, i := range r.members[handed:] {
				switch {
				case err == nil || i >= len(ds):
				case errors.Is(err, object.ErrNotFound):
					// The pack is gone (gc repacked it): each is looked
					// for where the indexes now say.
					b, err := f.get(gctx, ds[i], pooled)
					hand(i, b, err)
					if err == nil && bufs == bufsLent {
						freeBuf(b, true)
					}
				default:
					hand(i, nil, unavailable(fmt.Errorf("object %s: %w", ds[i].Short(), err)))
				}
			}
			return nil
		})
	}
	for _, i := range loose {
		g.Go(func() error {
			b, err := f.get(gctx, ds[i], pooled)
			hand(i, b, err)
			if err == nil && bufs == bufsLent {
				freeBuf(b, true)
			}
			return nil
		})
	}
	return g.Wait()
}

// Has asks about each object with a HEAD, concurrently.
func (f Fetcher) Has(ctx context.Context, ds []object.Digest) ([]bool, error) {
	has := make([]bool, len(ds))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(f.limit())
	for i, d := range ds {
		g.Go(func() (err error) {
			has[i], err = f.S.Has(gctx, d)
			return err
		})
	}
	return has, g.Wait()
}

// Addr names the bucket in messages.
func (f Fetcher) Addr() string { return f.S.URL() }
