package remote_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
)

// stuckFetcher is a master whose calls never answer, whatever their
// deadline, until gone is closed: a link that went silent mid-transfer.
// Then GetMany fails and Get answers with body.
type stuckFetcher struct {
	timeout time.Duration
	many    atomic.Int64
	gone    chan struct{}
	body    []byte
}

func (f *stuckFetcher) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-f.gone:
		return f.body, nil
	}
}

func (f *stuckFetcher) GetVerified(ctx context.Context, d object.Digest) ([]byte, error) {
	return f.Get(ctx, d)
}

func (f *stuckFetcher) GetMany(ctx context.Context, ds []object.Digest, got func(int, []byte, error)) error {
	f.many.Add(1)
	<-f.gone
	return errors.New("test over")
}

func (f *stuckFetcher) Has(ctx context.Context, ds []object.Digest) ([]bool, error) {
	return make([]bool, len(ds)), nil
}

func (f *stuckFetcher) Addr() string { return "stuck" }

func (f *stuckFetcher) Timeout() time.Duration { return f.timeout }

// A reader that waited out its deadline on a chunk read-ahead is still
// fetching is answered at once when it asks again (the kernel does, as
// soon as a read failed), not after a second wait: a read from a master
// that is gone fails within one --io-timeout.
func TestWaitForReadAheadOnce(t *testing.T) {
	const timeout = 2 * time.Second
	f := &stuckFetcher{timeout: timeout, gone: make(chan struct{})}
	c := newStuckCache(t, f)
	d := object.Sum([]byte("a chunk the master never sends"))
	stuckAhead(t, c, f, d)
	if _, err := c.Get(context.Background(), d); !errors.Is(err, remote.ErrUnavailable) {
		t.Fatalf("first read: %v; want ErrUnavailable", err)
	}
	start := time.Now()
	_, err := c.Get(context.Background(), d)
	if took := time.Since(start); !errors.Is(err, remote.ErrUnavailable) || took >= timeout/2 {
		t.Fatalf("read again at once: %v after %v; want ErrUnavailable without a second wait of %v", err, took, timeout)
	}
}

// A reader that waited out a fetch ahead is answered at once for as long
// as that fetch goes on, not only for failMemory: the fetch may be a batch
// with a later deadline, and a read(2) may ask the kernel's FUSE requests
// for the page again seconds later.
func TestWaitedOutWhileFetchAheadGoesOn(t *testing.T) {
	const timeout = time.Second
	body := blob(t, "a chunk the master sends once its link is back")
	d := object.Sum(body)
	f := &stuckFetcher{timeout: timeout, gone: make(chan struct{}), body: body}
	c := newStuckCache(t, f)
	stuckAhead(t, c, f, d)
	if _, err := c.Get(context.Background(), d); !errors.Is(err, remote.ErrUnavailable) {
		t.Fatalf("first read: %v; want ErrUnavailable", err)
	}
	time.Sleep(remote.FailMemory + timeout/4)
	start := time.Now()
	_, err := c.Get(context.Background(), d)
	if took := time.Since(start); !errors.Is(err, remote.ErrUnavailable) || took >= timeout/2 {
		t.Fatalf("read %v after the first failed, read-ahead still under way: %v after %v; want ErrUnavailable at once",
			remote.FailMemory+timeout/4, err, took)
	}
	// The link is back and read-ahead's call over: a read asks again.
	close(f.gone)
	within(t, 20*time.Second, "a read once the fetch ahead ended", func() error {
		for {
			b, err := c.Get(context.Background(), d)
			if err == nil {
				if string(b) != string(body) {
					t.Fatalf("read %q; want %q", b, body)
				}
				return nil
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
}

// A fetch waits for its object's lock no longer than its deadline, even
// while another fetch of this process holds the lock (the lock's stripe
// is shared by many objects; the holder may be a batch with a later
// deadline); and the next read is answered at once while that holder
// goes on.
func TestLockWaitBoundedByDeadline(t *testing.T) {
	const timeout = time.Second
	body := blob(t, "an object whose lock stripe a batch holds")
	d := object.Sum(body)
	f := &stuckFetcher{timeout: timeout, gone: make(chan struct{}), body: body}
	close(f.gone) // the master answers at once
	c := newStuckCache(t, f)
	release := remote.HoldLock(c, d)
	released := false
	defer func() {
		if !released {
			release()
		}
	}()
	start := time.Now()
	within(t, 20*time.Second, "a read while another fetch holds the lock", func() error {
		_, err := c.Get(context.Background(), d)
		if !errors.Is(err, remote.ErrUnavailable) {
			t.Fatalf("read: %v; want ErrUnavailable", err)
		}
		return nil
	})
	if took := time.Since(start); took > 3*timeout {
		t.Fatalf("read failed after %v; want within its %v deadline", took, timeout)
	}
	time.Sleep(remote.FailMemory + timeout/4)
	start = time.Now()
	_, err := c.Get(context.Background(), d)
	if took := time.Since(start); !errors.Is(err, remote.ErrUnavailable) || took >= timeout/2 {
		t.Fatalf("read again, the lock still held: %v after %v; want ErrUnavailable at once", err, took)
	}
	release()
	released = true
	b, err := c.Get(context.Background(), d)
	if err != nil || string(b) != string(body) {
		t.Fatalf("read once the lock was given back: %q, %v; want %q", b, err, body)
	}
}

// newStuckCache returns a cache over a fresh store that fetches from f,
// closed when the test ends, after f's calls are let go.
func newStuckCache(t *testing.T, f *stuckFetcher) *remote.Cache {
	t.Helper()
	c, _ := newTestCache(t, f)
	// Before Close, which waits for read-ahead's call.
	t.Cleanup(func() {
		select {
		case <-f.gone:
		default:
			close(f.gone)
		}
	})
	return c
}

// stuckAhead starts read-ahead of d, which f never answers, and returns
// once its call reached f.
func stuckAhead(t *testing.T, c *remote.Cache, f *stuckFetcher, d object.Digest) {
	t.Helper()
	c.Prefetch([]object.Digest{d})
	within(t, 20*time.Second, "read-ahead's call to the master", func() error {
		for f.many.Load() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	})
}

// blob returns s encoded as a blob object.
func blob(t *testing.T, s string) []byte {
	t.Helper()
	b, err := object.EncodeBlob([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
