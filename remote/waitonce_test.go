package remote_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
)

// stuckFetcher is a master whose calls never answer, whatever their
// deadline: a link that went silent mid-transfer.
type stuckFetcher struct {
	timeout time.Duration
	many    atomic.Int64
	gone    chan struct{}
}

func (f *stuckFetcher) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	<-ctx.Done()
	return nil, ctx.Err()
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
	store, err := object.OpenDirStore(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := remote.NewCache(store, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Close waits for read-ahead's call: end it first.
	defer c.Close()
	defer close(f.gone)
	d := object.Sum([]byte("a chunk the master never sends"))
	c.Prefetch([]object.Digest{d})
	within(t, 20*time.Second, "read-ahead's call to the master", func() error {
		for f.many.Load() == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	})
	if _, err := c.Get(context.Background(), d); !errors.Is(err, remote.ErrUnavailable) {
		t.Fatalf("first read: %v; want ErrUnavailable", err)
	}
	start := time.Now()
	_, err = c.Get(context.Background(), d)
	if took := time.Since(start); !errors.Is(err, remote.ErrUnavailable) || took >= timeout/2 {
		t.Fatalf("read again at once: %v after %v; want ErrUnavailable without a second wait of %v", err, took, timeout)
	}
}
