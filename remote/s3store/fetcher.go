package s3store

import (
	"context"
	"errors"
	"fmt"
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

// Get returns the bytes stored as d, unverified (the cache verifies). A
// bucket that does not answer is remote.ErrUnavailable, which the cache
// remembers for a while instead of asking again for every read.
func (f Fetcher) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	b, err := f.S.getKey(ctx, f.S.objectKey(d))
	if errors.Is(err, ErrUnreachable) {
		err = errors.Join(err, remote.ErrUnavailable)
	}
	if err != nil {
		return nil, fmt.Errorf("object %s: %w", d.Short(), err)
	}
	return b, nil
}

// GetVerified gets d again, after the cache found it damaged, and checks
// it here: the bucket has no copy of its own to check, so bytes damaged
// twice are the bucket's, an error (object.ErrCorrupt) that names the
// object's key and what to do.
func (f Fetcher) GetVerified(ctx context.Context, d object.Digest) ([]byte, error) {
	b, err := f.S.Get(ctx, d)
	if errors.Is(err, ErrUnreachable) {
		err = errors.Join(err, remote.ErrUnavailable)
	}
	return b, err
}

// GetMany gets objects concurrently, and hands each to got as it
// completes, one at a time.
func (f Fetcher) GetMany(ctx context.Context, ds []object.Digest, got func(i int, b []byte, err error)) error {
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(f.limit())
	for i, d := range ds {
		g.Go(func() error {
			b, err := f.Get(gctx, d)
			mu.Lock()
			got(i, b, err)
			mu.Unlock()
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
