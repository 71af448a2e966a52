package remote_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
)

// memFetcher is a master that answers from a map at once, counting its
// calls.
type memFetcher struct {
	mu        sync.Mutex
	objs      map[object.Digest][]byte
	get, many atomic.Int64
}

func (f *memFetcher) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	f.get.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.objs[d]; ok {
		return b, nil
	}
	return nil, fmt.Errorf("%s: %w", d.Short(), object.ErrNotFound)
}

func (f *memFetcher) GetVerified(ctx context.Context, d object.Digest) ([]byte, error) {
	return f.Get(ctx, d)
}

func (f *memFetcher) GetMany(ctx context.Context, ds []object.Digest, got func(int, []byte, error)) error {
	f.many.Add(1)
	for i, d := range ds {
		f.mu.Lock()
		b, ok := f.objs[d]
		f.mu.Unlock()
		if !ok {
			got(i, nil, fmt.Errorf("%s: %w", d.Short(), object.ErrNotFound))
			continue
		}
		got(i, b, nil)
	}
	return nil
}

func (f *memFetcher) Has(ctx context.Context, ds []object.Digest) ([]bool, error) {
	return make([]bool, len(ds)), nil
}

func (f *memFetcher) Addr() string { return "memory" }

// stripeMates returns blobs, served by f, of which the first two share a
// lock stripe and the rest each have a stripe of their own, n in all.
func stripeMates(t *testing.T, f *memFetcher, n int) []object.Digest {
	t.Helper()
	f.objs = map[object.Digest][]byte{}
	byStripe := map[int]object.Digest{}
	var ds []object.Digest
	for i := 0; len(ds) < n; i++ {
		b := blob(t, fmt.Sprintf("object %d", i))
		d := object.Sum(b)
		s := remote.StripeOf(d)
		if first, ok := byStripe[s]; ok {
			if len(ds) == 0 {
				f.objs[d] = b
				ds = append(ds, first, d)
			}
			continue
		}
		byStripe[s] = d
		f.objs[d] = b
		if len(ds) > 0 {
			ds = append(ds, d)
		}
	}
	return ds
}

// newTestCache returns a cache over a fresh store that fetches from f,
// closed when the test ends.
func newTestCache(t *testing.T, f remote.Fetcher) (*remote.Cache, *object.DirStore) {
	t.Helper()
	store, err := object.OpenDirStore(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := remote.NewCache(store, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, store
}

// A batch whose objects share a lock stripe fetches them all in its one
// call: each object's lock is its own, and the stripe's byte is locked
// once for all of them.
func TestBatchTakesSharedStripeOnce(t *testing.T) {
	f := &memFetcher{}
	ds := stripeMates(t, f, 8)
	c, store := newTestCache(t, f)
	within(t, 20*time.Second, "the batch", func() error { return remote.FetchMany(c, ds) })
	if g, m := f.get.Load(), f.many.Load(); g != 0 || m != 1 {
		t.Errorf("%d Get and %d GetMany calls; want one GetMany for all", g, m)
	}
	allStored(t, store, ds)
	// Every lock was given back: a fetch of each takes it at once.
	for i, d := range ds {
		release, ok := tryHold(c, d)
		if !ok {
			t.Fatalf("object %d's lock still held after the batch", i)
		}
		release()
	}
}

// Objects whose lock another fetch holds are waited for and fetched in
// one more call, not one call each.
func TestBatchWaitsForBusyStripes(t *testing.T) {
	f := &memFetcher{}
	ds := stripeMates(t, f, 8)
	c, store := newTestCache(t, f)
	// Another fetch holds three of the objects; the first shares the
	// stripe of one of them, and is fetched in the first call.
	var releases []func()
	for _, d := range ds[1:4] {
		releases = append(releases, remote.HoldLock(c, d))
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		for _, r := range releases {
			r()
		}
	}()
	within(t, 20*time.Second, "the batch", func() error { return remote.FetchMany(c, ds) })
	if g, m := f.get.Load(), f.many.Load(); g != 0 || m != 2 {
		t.Errorf("%d Get and %d GetMany calls; want two GetMany: the free objects, then the busy ones", g, m)
	}
	allStored(t, store, ds)
}

// allStored fails the test for each of ds that store lacks.
func allStored(t *testing.T, store *object.DirStore, ds []object.Digest) {
	t.Helper()
	for i, d := range ds {
		if ok, _ := store.Has(context.Background(), d); !ok {
			t.Errorf("object %d not stored", i)
		}
	}
}

// tryHold takes d's lock if it is free now.
func tryHold(c *remote.Cache, d object.Digest) (func(), bool) {
	done := make(chan func(), 1)
	go func() { done <- remote.HoldLock(c, d) }()
	select {
	case r := <-done:
		return r, true
	case <-time.After(time.Second):
		go func() { (<-done)() }()
		return nil, false
	}
}

// twoCaches opens the store at dir and two caches on it, as two mount
// processes of one worker would, closed when the test ends.
func twoCaches(t *testing.T, f remote.Fetcher, dir string) [2]*remote.Cache {
	t.Helper()
	store, err := object.OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	var cs [2]*remote.Cache
	for i := range cs {
		if cs[i], err = remote.NewCache(store, f, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cs[i].Close)
	}
	return cs
}

// lockedOut fails the test unless c's fetch of d, given 300 ms, ends
// unavailable: another fetch holds its lock.
func lockedOut(t *testing.T, c *remote.Cache, d object.Digest, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	within(t, 20*time.Second, what, func() error {
		if _, err := c.Get(ctx, d); !errors.Is(err, remote.ErrUnavailable) {
			t.Errorf("%s: %v; want ErrUnavailable", what, err)
		}
		return nil
	})
}

// Two caches on one store (two mount processes) exclude each other per
// stripe: while one holds d's stripe, the other's fetch of d waits, up to
// its deadline, and goes on once the stripe is given back.
func TestStripeLockAcrossCaches(t *testing.T) {
	f := &memFetcher{}
	ds := stripeMates(t, f, 2)
	cs := twoCaches(t, f, filepath.Join(t.TempDir(), "objects"))
	release := remote.HoldLock(cs[0], ds[0])
	lockedOut(t, cs[1], ds[1], "a stripe-mate's fetch while the other cache holds the stripe")
	if f.get.Load() != 0 {
		t.Errorf("the master was asked %d times while the stripe was held", f.get.Load())
	}
	got := make(chan error, 1)
	go func() {
		_, err := cs[1].Get(context.Background(), ds[0])
		got <- err
	}()
	time.Sleep(100 * time.Millisecond)
	release()
	within(t, 20*time.Second, "the fetch once the stripe is given back", func() error { return <-got })
}

// The stripes' bytes lie in several files (the kernel walks one list of
// locks a file): two caches on one store exclude each other in every
// file, and the same byte of two files is two stripes, not one.
func TestStripesOverFiles(t *testing.T) {
	f := &memFetcher{objs: map[object.Digest][]byte{}}
	// Two objects at the same byte of different stripe files, and one
	// in the first file (the one older cowfs locks).
	byByte := map[int]object.Digest{}
	var held, other, first object.Digest
	for i := 0; held.IsZero() || first.IsZero(); i++ {
		b := blob(t, fmt.Sprintf("object %d", i))
		d := object.Sum(b)
		s := remote.StripeOf(d)
		f.objs[d] = b
		if s/1024 == 0 && first.IsZero() {
			first = d
		}
		if o, ok := byByte[s%1024]; ok && remote.StripeOf(o)/1024 != s/1024 && held.IsZero() {
			held, other = o, d
		}
		byByte[s%1024] = d
	}
	dir := filepath.Join(t.TempDir(), "objects")
	cs := twoCaches(t, f, dir)
	for _, d := range []object.Digest{held, first} {
		release := remote.HoldLock(cs[0], d)
		lockedOut(t, cs[1], d, fmt.Sprintf("a fetch of stripe %d while the other cache holds it", remote.StripeOf(d)))
		release()
	}
	release := remote.HoldLock(cs[0], held)
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := within(t, 20*time.Second, "a fetch at the held stripe's byte of another file", func() error {
		_, err := cs[1].Get(ctx, other)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := f.get.Load(); got != 1 {
		t.Errorf("the master was asked %d times; want once, for the object of the other file", got)
	}
	for _, name := range []string{"stripes", fmt.Sprintf("stripes.%d", remote.StripeOf(held)/1024)} {
		if _, err := os.Stat(filepath.Join(dir, "locks", name)); err != nil {
			t.Errorf("stripe file: %v", err)
		}
	}
}

// Close waits for the stripes held to be given back before it closes the
// stripe files; a fetch after fails, and asks the master nothing.
func TestCloseWaitsForStripes(t *testing.T) {
	f := &memFetcher{}
	ds := stripeMates(t, f, 2)
	c, _ := newTestCache(t, f)
	release := remote.HoldLock(c, ds[0])
	closed := make(chan struct{})
	go func() {
		c.Close()
		close(closed)
	}()
	select {
	case <-closed:
		t.Fatal("Close returned while a stripe was held")
	case <-time.After(200 * time.Millisecond):
	}
	release()
	within(t, 20*time.Second, "Close once the stripe is given back", func() error {
		<-closed
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	within(t, 20*time.Second, "a fetch after Close", func() error {
		if _, err := c.Get(ctx, ds[1]); err == nil {
			t.Error("a fetch after Close succeeded")
		}
		return nil
	})
	if n := f.get.Load() + f.many.Load(); n != 0 {
		t.Errorf("the master was asked %d times after Close", n)
	}
}

// Within one process objects, not stripes, exclude each other: a fetch of
// an object whose stripe-mate another fetch holds goes on at once, and the
// stripe's byte stays locked against other processes until the last of
// its objects held is given back.
func TestStripeMatesInOneProcess(t *testing.T) {
	f := &memFetcher{}
	ds := stripeMates(t, f, 2)
	cs := twoCaches(t, f, filepath.Join(t.TempDir(), "objects"))
	release := remote.HoldLock(cs[0], ds[0])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := within(t, 20*time.Second, "a fetch of a stripe-mate in the same process", func() error {
		_, err := cs[0].Get(ctx, ds[1])
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// Held again by the process, then its first holder lets go: the byte
	// is still the process's.
	second := remote.HoldLock(cs[0], ds[1])
	release()
	lockedOut(t, cs[1], ds[0], "another cache's fetch while the stripe's last object is held")
	second()
	// A batch's fetch: a reader's Get would meet the failure the wait
	// above left for failMemory.
	if err := within(t, 20*time.Second, "another process's fetch once the stripe is free", func() error {
		return remote.FetchMany(cs[1], ds[:1])
	}); err != nil {
		t.Fatal(err)
	}
	if got := f.get.Load() + f.many.Load(); got != 2 {
		t.Errorf("the master was asked %d times; want twice, once for each object", got)
	}
}
