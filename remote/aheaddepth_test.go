package remote_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
)

// heldFetcher is a memFetcher whose GetMany calls wait until released,
// noting how many wait at once.
type heldFetcher struct {
	memFetcher
	release chan struct{}

	mu            sync.Mutex
	waiting, most int
	changed       chan struct{}
}

func (f *heldFetcher) GetMany(ctx context.Context, ds []object.Digest, got func(int, []byte, error)) error {
	f.mu.Lock()
	f.waiting++
	f.most = max(f.most, f.waiting)
	f.mu.Unlock()
	f.changed <- struct{}{}
	select {
	case <-f.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	f.mu.Lock()
	f.waiting--
	f.mu.Unlock()
	return f.memFetcher.GetMany(ctx, ds, got)
}

// bucketLike is a heldFetcher that asks for more of a reader's chunk
// groups in flight, as a bucket's fetcher does.
type bucketLike struct{ *heldFetcher }

func (bucketLike) AheadGroups() int { return 8 }

// Read-ahead keeps as many calls in flight as the fetcher asks for chunk
// groups: four from a master, more from a bucket, and tells the reader the
// window in chunks, and the batch it asks for in one call: two groups
// unless the fetcher says otherwise.
func TestReadAheadDepth(t *testing.T) {
	for _, tc := range []struct {
		name   string
		groups int
		f      func(*heldFetcher) remote.Fetcher
	}{
		{"master", 4, func(f *heldFetcher) remote.Fetcher { return f }},
		{"bucket", 8, func(f *heldFetcher) remote.Fetcher { return bucketLike{f} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &heldFetcher{release: make(chan struct{}), changed: make(chan struct{}, 64)}
			f.objs = map[object.Digest][]byte{}
			var ds []object.Digest
			for i := range 8 {
				b := blob(t, fmt.Sprintf("chunk %d", i))
				d := object.Sum(b)
				f.objs[d] = b
				ds = append(ds, d)
			}
			c, _ := newTestCache(t, tc.f(f))
			if got, want := c.ReadAhead(), int64(tc.groups*object.ChunkGroup); got != want {
				t.Errorf("ReadAhead %d chunks; want %d", got, want)
			}
			if got, want := c.AheadBatch(), int64(2*object.ChunkGroup); got != want {
				t.Errorf("AheadBatch %d chunks; want %d", got, want)
			}
			for _, d := range ds {
				c.Prefetch([]object.Digest{d})
			}
			deadline := time.After(20 * time.Second)
			for n := 0; n < tc.groups; n++ {
				select {
				case <-f.changed:
				case <-deadline:
					t.Fatalf("%d read-ahead calls in flight; want %d", n, tc.groups)
				}
			}
			// One more would have started at once if the cache let it.
			select {
			case <-f.changed:
			case <-time.After(200 * time.Millisecond):
			}
			f.mu.Lock()
			most := f.most
			f.mu.Unlock()
			if most != tc.groups {
				t.Errorf("%d read-ahead calls in flight at most; want %d", most, tc.groups)
			}
			close(f.release)
			for _, d := range ds {
				within(t, 20*time.Second, "the read of "+d.Short(), func() error {
					_, err := c.Get(context.Background(), d)
					return err
				})
			}
		})
	}
}
