package remote_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
)

// A master sends each object from a pooled buffer that gRPC holds until
// it has written the last piece of it. Calls side by side, some read
// slowly so that pieces wait behind their stream's window while the
// master reads the next objects into buffers: every call gets every
// object as it was stored.
func TestGetManySendsWhatWasStored(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ms, client := dialedMaster(t)
	master, err := object.OpenDirStore(ms.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	var ds []object.Digest
	// Whole chunks and small objects, and every fifth a file object of
	// 40,000 chunks (1.3 MB: bigger than a chunk, so memory of its own
	// rather than the pool's).
	sizes := []int{object.ChunkSize, 100, object.ChunkSize - 1, 5000}
	for i := range 36 {
		var enc []byte
		var err error
		if i%5 == 4 {
			f := &object.File{Size: 40000 * object.ChunkSize, Chunks: make([]object.Digest, 40000)}
			for j := range f.Chunks {
				f.Chunks[j] = object.Sum(randBytes(8))
			}
			enc, err = object.EncodeFile(f)
		} else {
			enc, err = object.EncodeBlob(randBytes(sizes[i%len(sizes)]))
		}
		if err != nil {
			t.Fatal(err)
		}
		d, err := master.Put(ctx, enc)
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, err)
	}
	for c := range 6 {
		order := slices.Clone(ds)
		rand.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			err := client.GetMany(ctx, order, func(i int, b []byte, err error) {
				switch {
				case err != nil:
					fail(fmt.Errorf("call %d, object %d: %v", c, i, err))
				case object.Sum(b) != order[i]:
					fail(fmt.Errorf("call %d, object %d: %d bytes not as stored", c, i, len(b)))
				default:
					n++
				}
				if c%2 == 0 {
					time.Sleep(2 * time.Millisecond)
				}
			})
			if err == nil && n != len(order) {
				err = fmt.Errorf("call %d: %d of %d objects whole", c, n, len(order))
			}
			if err != nil {
				fail(err)
			}
		}()
	}
	within(t, 50*time.Second, "the calls", func() error { wg.Wait(); return nil })
	for _, err := range errs[:min(len(errs), 10)] {
		t.Error(err)
	}
	if len(errs) > 10 {
		t.Errorf("and %d errors more", len(errs)-10)
	}
}
