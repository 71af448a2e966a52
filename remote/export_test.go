package remote

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/pb"
)

// SetRepairRetry sets how long a failed repair scan stands, for a test,
// and returns what it was. Call it with no server running.
func SetRepairRetry(d time.Duration) (old time.Duration) {
	old, repairRetry = repairRetry, d
	return old
}

// GiveUpWatch makes s stop watching its export, as when the watch limit
// is reached.
func GiveUpWatch(s *Server) {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	s.watch.giveUp("a test", errors.New("given up by a test"))
}

// KnownPaths returns how many paths s keeps a last scan of.
func KnownPaths(s *Server) int {
	s.knownMu.Lock()
	defer s.knownMu.Unlock()
	return len(s.known)
}

// ReplayWaits is how many waits of c's trace replay's workers have
// ended.
func ReplayWaits(c *Cache) int64 { return c.replay.waits.Load() }

// FreshHolds reports whether c holds d in memory, fetched ahead of a
// reader.
func FreshHolds(c *Cache, d object.Digest) bool { return c.fresh.holds(d) }

// CountGivenBack counts the buffers c's read-ahead gives back to the pool
// from now on; c has fetched nothing yet. Each is overwritten first, so
// that a reader still reading one reads bytes no file has.
func CountGivenBack(c *Cache) (n func() int64) {
	var given atomic.Int64
	c.fresh.mu.Lock()
	defer c.fresh.mu.Unlock()
	c.fresh.free = func(b []byte) {
		given.Add(1)
		for i := range b {
			b[i] = 0xa5
		}
		giveBack(b)
	}
	return given.Load
}

// FailMemory is how long a failed fetch is remembered at least.
const FailMemory = failMemory

// HoldLock takes d's lock as a fetch of d would (d in c, and the byte
// of its stripe among caches on the store) until release is called.
func HoldLock(c *Cache, d object.Digest) (release func()) {
	for {
		if unlock, ok := c.tryLock(d); ok {
			return unlock
		}
		time.Sleep(time.Millisecond)
	}
}

// FetchBackground runs c's background fetch of ds (directory prefetch).
func FetchBackground(c *Cache, ds []object.Digest) bool { return c.fetchBackground(ds, 0) }

// FetchMany runs c's batch fetch of ds, waiting for what other fetches
// hold (prefetch, read-ahead).
func FetchMany(c *Cache, ds []object.Digest) error { return c.fetchMany(context.Background(), ds) }

// StripeOf is the lock stripe of d.
func StripeOf(d object.Digest) int { return stripeOf(d) }

// HookCounter counts the begins and ends of a SetFetching hook.
type HookCounter struct {
	mu           sync.Mutex
	begun, ended int
}

// Begin is the hook.
func (h *HookCounter) Begin() func() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.begun++
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.ended++
	}
}

// Counts returns how often the hook began and ended.
func (h *HookCounter) Counts() (begun, ended int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.begun, h.ended
}

// DirFetchedAgain reports how many times c's background fetch of a
// directory asked again for objects whose lock a reader held.
func DirFetchedAgain(c *Cache) int64 { return c.dir.again.Load() }

// PutTraceBytes puts b as a trace as it is, whole or not (PutTrace sends
// only whole traces).
func PutTraceBytes(ctx context.Context, c *Client, sub, snapshot string, b []byte) error {
	_, err := c.ex.PutTrace(ctx, &pb.PutTraceRequest{Path: sub, Snapshot: snapshot, Trace: b})
	return err
}

// SetMaxTraces sets how many traces a master keeps, for a test, and
// returns what it was. Call it with no server running.
func SetMaxTraces(n int) (old int) {
	old, maxTraces = maxTraces, n
	return old
}

// DirWaiting is how many file objects c's directory prefetch holds,
// waiting for a second read in their directory.
func DirWaiting(c *Cache) int {
	c.dir.mu.Lock()
	defer c.dir.mu.Unlock()
	return len(c.dir.waiting)
}
