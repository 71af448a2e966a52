package remote_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// A replay runs at most its lead (8 MiB of the trace) ahead of the
// furthest entry its task reached: what it fetches is held in memory for
// the task, which would read it back from the store and hash it again
// had the replay run further. A read further on moves the lead with it.
func TestReplayLead(t *testing.T) {
	r := newLeadReplay(t, 24, object.ChunkSize)
	r.c.ReplayTrace(r.entries)
	which := r.settled(8)
	for i, ok := range which {
		if ok != (i < 8) {
			t.Fatalf("entry %d held: %v before the task read anything; want the first 8 held", i, ok)
		}
	}
	if _, err := r.c.Get(r.ctx, r.entries[15].Object); err != nil {
		t.Fatal(err)
	}
	which = r.settled(8 + 1 + 8)
	for i, ok := range which {
		if want := i < 8 || i >= 15; ok != want {
			t.Fatalf("entry %d held: %v after the task read entry 15; want entries 0-7 and 15-23", i, ok)
		}
	}
}

// A replay goes on past its lead once its task has read enough of the
// trace (64 objects, none it does not list), storing what it fetches
// there rather than holding it in memory: a spider that imports its code
// and then reads its data finds the data cached, fetched while it
// imported. Until then it stays within its lead, which bounds what a
// wrong trace costs.
func TestReplayRunsFarOnceConfirmed(t *testing.T) {
	// 64 small objects (a package tree), then 24 chunks (a data file).
	sizes := make([]int, 64+24)
	for i := range sizes {
		sizes[i] = 8 << 10
		if i >= 64 {
			sizes[i] = object.ChunkSize
		}
	}
	r := newLeadReplaySizes(t, sizes, nil)
	r.c.ReplayTrace(r.entries)
	// The lead: the small objects and 8 chunks.
	r.settled(64 + 8)
	for _, e := range r.entries[:63] {
		if _, err := r.c.Get(r.ctx, e.Object); err != nil {
			t.Fatal(err)
		}
	}
	// 63 read: not yet confirmed, and the lead is still full.
	r.settled(64 + 8)
	if _, err := r.c.Get(r.ctx, r.entries[63].Object); err != nil {
		t.Fatal(err)
	}
	r.settled(len(sizes))
	for i := 64 + 16; i < len(sizes); i++ {
		if remote.FreshHolds(r.c, r.entries[i].Object) {
			t.Errorf("entry %d, past the lead, held in memory; want it stored only", i)
		}
	}
}

// A replay that cannot go past its lead (its task has not confirmed the
// trace) waits for its task alone: nothing wakes its workers while only
// a read can move it, however long the mount lives.
func TestReplayAtLeadWaitsForTask(t *testing.T) {
	r := newLeadReplay(t, 24, object.ChunkSize)
	r.c.ReplayTrace(r.entries)
	r.settled(8)
	before := remote.ReplayWaits(r.c)
	time.Sleep(300 * time.Millisecond)
	if n := remote.ReplayWaits(r.c) - before; n > 0 {
		t.Fatalf("the replay's workers woke %d times in 300 ms at their lead with no read; want none", n)
	}
}

// A task that reads a trace's small objects one by one, once the replay
// is its lead ahead, lets the replay go on in calls of many objects, not
// a call each time it reads one more: a call costs both ends more than a
// few small objects, and a crawl replaying its trace went 1.5x slower
// for it.
func TestReplayCallsStayFull(t *testing.T) {
	const n = 2048 // twice the lead
	r := newLeadReplay(t, n, 8<<10)
	var calls atomic.Int64
	r.c.ObserveFetches(func(batch bool, _ time.Duration, _ error) {
		if batch {
			calls.Add(1)
		}
	})
	r.c.ReplayTrace(r.entries)
	for i, e := range r.entries {
		if _, err := r.c.Get(r.ctx, e.Object); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		// A task does something with what it reads (a crawl's FUSE
		// requests): slower than the replay's calls, it moved the
		// replay on an object at a time.
		time.Sleep(100 * time.Microsecond)
	}
	// A replay moved on an object at a time makes a call for each entry
	// past its lead (over a thousand here); in calls of many, about 75
	// alone, and more where a loaded machine lets the task overtake the
	// replay now and then (150 seen under a full test suite).
	t.Logf("the replay made %d calls for %d entries", calls.Load(), n)
	if got := calls.Load(); got > n/8 {
		t.Fatalf("the replay made %d calls for %d entries; want at most %d", got, n, n/8)
	}
}

// An entry whose lock stripe another fetch holds (a reader's, of the same
// object or of one sharing its stripe) when the replay's batch comes to
// it is fetched once that fetch lets go, not left out of the replay.
func TestReplayWaitsForBusyStripe(t *testing.T) {
	r := newLeadReplay(t, 24, object.ChunkSize)
	release := remote.HoldLock(r.c, r.entries[3].Object)
	released := false
	defer func() {
		if !released {
			release()
		}
	}()
	r.c.ReplayTrace(r.entries)
	// All of the first lead but entry 3, whose stripe is held; then,
	// once it is let go, entry 3 too.
	which := r.settled(7)
	if which[3] {
		t.Fatal("entry 3 held while its stripe was")
	}
	release()
	released = true
	which = r.settled(8)
	for i, ok := range which {
		if ok != (i < 8) {
			t.Fatalf("entry %d held: %v; want the first 8 held", i, ok)
		}
	}
}

// A replay's batch that reaches its bounds goes on to the end of the
// pack run it is in, where the source knows its packs (a bucket): a batch
// that ended inside a chunk group would split it into two GETs, and the
// next batch would start inside one, and so on to the trace's end.
func TestReplayBatchesEndWithPacks(t *testing.T) {
	// Entry 0 with the small objects (a first chunk), then chunk groups
	// of four, one a pack, as a publish packs a file.
	testReplayToPackEnd(t, 25, object.ChunkGroup, false)
}

// A replay from a store that packs a file's chunk groups a read-ahead
// batch to a pack (a bucket, AheadBatch) goes on to the end of the pack,
// not only of the group: a batch that ended inside a pack would split
// its GET, and every batch's after.
func TestReplayBatchesEndWithBatchPacks(t *testing.T) {
	testReplayToPackEnd(t, 40, 4*object.ChunkGroup, true)
}

// testReplayToPackEnd replays a trace of n chunks of 1 MiB, entry 0 in a
// pack of its own and then perPack to a pack, from a fetcher that asks
// for batches of four groups if batching, and wants the first batch to
// end with the pack that the lead (8 MiB) fills inside, in one call.
func testReplayToPackEnd(t *testing.T, n, perPack int, batching bool) {
	var f *packedFetcher
	r := newLeadReplayVia(t, n, object.ChunkSize, func(es []remote.TraceEntry, c remote.Fetcher) remote.Fetcher {
		f = &packedFetcher{Fetcher: c, packs: map[object.Digest]string{}}
		for i, e := range es {
			f.packs[e.Object] = fmt.Sprintf("pack %d", (i+perPack-1)/perPack)
		}
		if batching {
			return batchingFetcher{f}
		}
		return f
	})
	r.c.ReplayTrace(r.entries)
	// The lead is full at entry 7; the batch goes on to its pack's end.
	want := (7+perPack-1)/perPack*perPack + 1
	which := r.settled(want)
	for i, ok := range which {
		if ok != (i < want) {
			t.Fatalf("entry %d held: %v; want the first %d, to the end of the pack of entries %d-%d", i, ok, want, want-perPack, want-1)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.calls) != 1 || len(f.calls[0]) != want {
		t.Errorf("the replay's calls: %d, of %v objects; want one of %d", len(f.calls), lens(f.calls), want)
	}
}

// batchingFetcher is a packedFetcher that asks for a sequential reader's
// chunk groups four at a time, as a bucket's Fetcher does.
type batchingFetcher struct{ *packedFetcher }

func (batchingFetcher) AheadBatch() int { return 4 }

// packedFetcher is a master's client as the cache sees a bucket's
// Fetcher: it says which pack each object lies in (what a bucket's
// indexes say), and records the objects of each call for many.
type packedFetcher struct {
	remote.Fetcher
	packs map[object.Digest]string
	mu    sync.Mutex
	calls [][]object.Digest
}

func (f *packedFetcher) PackOf(d object.Digest) (string, bool) {
	p, ok := f.packs[d]
	return p, ok
}

func (f *packedFetcher) GetMany(ctx context.Context, ds []object.Digest, got func(i int, b []byte, err error)) error {
	f.mu.Lock()
	f.calls = append(f.calls, slices.Clone(ds))
	f.mu.Unlock()
	return f.Fetcher.GetMany(ctx, ds, got)
}

func lens(calls [][]object.Digest) []int {
	var n []int
	for _, c := range calls {
		n = append(n, len(c))
	}
	return n
}

// leadReplay is a cache on a master whose store holds n objects of size
// bytes, the entries of a trace to replay.
type leadReplay struct {
	t       *testing.T
	ctx     context.Context
	c       *remote.Cache
	store   *object.DirStore
	entries []remote.TraceEntry
}

func newLeadReplay(t *testing.T, n, size int) *leadReplay {
	t.Helper()
	return newLeadReplayVia(t, n, size, nil)
}

// newLeadReplayVia is newLeadReplay with the cache fetching through what
// via makes of the master's client (nil: the client itself).
func newLeadReplayVia(t *testing.T, n, size int, via func([]remote.TraceEntry, remote.Fetcher) remote.Fetcher) *leadReplay {
	t.Helper()
	sizes := make([]int, n)
	for i := range sizes {
		sizes[i] = size
	}
	return newLeadReplaySizes(t, sizes, via)
}

// newLeadReplaySizes is newLeadReplayVia with an object of each of sizes.
func newLeadReplaySizes(t *testing.T, sizes []int, via func([]remote.TraceEntry, remote.Fetcher) remote.Fetcher) *leadReplay {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	ms, client := dialedMaster(t)
	master, err := object.OpenDirStore(ms.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	r := &leadReplay{t: t, ctx: ctx}
	for _, size := range sizes {
		enc, err := object.EncodeBlob(remotetest.RandBytes(size))
		if err != nil {
			t.Fatal(err)
		}
		d, err := master.Put(ctx, enc)
		if err != nil {
			t.Fatal(err)
		}
		r.entries = append(r.entries, remote.TraceEntry{Object: d, Size: int64(len(enc))})
	}
	r.store, err = object.OpenDirStore(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	var f remote.Fetcher = client
	if via != nil {
		f = via(r.entries, client)
	}
	r.c, err = remote.NewCache(r.store, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.c.Close() })
	return r
}

// held returns how many of the entries the store holds, and which.
func (r *leadReplay) held() (n int, which []bool) {
	for _, e := range r.entries {
		ok, _ := r.store.Has(r.ctx, e.Object)
		which = append(which, ok)
		if ok {
			n++
		}
	}
	return n, which
}

// settled waits until want entries are held and nothing more comes for a
// while, and returns which are held.
func (r *leadReplay) settled(want int) []bool {
	r.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for n, _ := r.held(); n < want; n, _ = r.held() {
		if time.Now().After(deadline) {
			r.t.Fatalf("%d of the trace's entries held 20 s after the replay began; want %d", n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	n, which := r.held()
	if n != want {
		r.t.Fatalf("%d of the trace's entries held; want %d, the replay's lead", n, want)
	}
	return which
}
