package remote

import (
	"context"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/object"
)

// lockStripes is how many stripes the store's objects are spread over, by
// the first two bytes of their digest. A fetch holds the stripe of each
// object it fetches, and an object whose stripe another fetch holds waits
// for a second call: with fewer stripes, the batches a warmup or a trace's
// replay keeps in flight (some thousand objects) shared most stripes with
// each other, and each batch fell apart into as many requests as it had
// holes.
const lockStripes = 1 << 16

// stripeOf is the lock stripe of d (Cache.lock).
func stripeOf(d object.Digest) int { return int(d[0])<<8 | int(d[1]) }

// The stripes' bytes, locked with open file description locks (fcntl
// F_OFD_SETLK) so that the processes sharing the store fetch an object
// once, are spread over stripeFiles files in the store's locks directory:
// stripe n is byte n%stripesPerFile of file n/stripesPerFile. The kernel
// keeps a file's locks in one list that every lock and unlock walks, and
// a few thousand locks of one file, none adjacent to another, cost more
// CPU than the requests the stripes saved. File 0 is stripesFile, whose
// bytes older cowfs took for 1024 stripes: for the objects of file 0 the
// two still exclude each other, for the others an older process and this
// one may both fetch an object, which costs a fetch, never a wrong byte
// (each copy is verified; packs keep duplicates apart). The files are
// opened as they are first needed: a mount's start makes one.
const (
	stripeFiles    = 64
	stripesPerFile = lockStripes / stripeFiles
	stripesFile    = "stripes"
)

// fetchLocks are what this process's fetches hold: each object one
// fetch at a time, and each stripe's byte while any of them holds an
// object of that stripe. Objects, not stripes, exclude each other within
// the process (its byte locks share its file descriptions and never
// exclude each other anyway): two batches of one warmup that share only
// stripes do not wait for each other.
type fetchLocks struct {
	dir string // the store's locks directory
	mu  sync.Mutex
	// held are the objects taken, each with its holding.
	held map[object.Digest]*fetchHold
	// locked counts, for each stripe whose byte this process locked,
	// the objects of it held.
	locked map[int]int
	// closing is set while Close waits for the holders to give theirs
	// back; closed, and set to nil, once the files are closed.
	closing chan struct{}
	drained chan struct{} // closed by the last give while closing
	closed  bool          // Close ran: the files are closed for good
	// fds are the stripes' files, each its descriptor plus one (0: not
	// open yet); opening one takes openMu.
	fds    [stripeFiles]atomic.Int32
	openMu sync.Mutex
}

// A fetchHold is one fetch's holding of an object; a reader that waited
// one out tells it from the next holding by its address.
type fetchHold struct {
	freed chan struct{} // made by the first waiter; closed when given back
}

// openLocks opens the stripes' directory and its first file, so that a
// cache whose locks cannot be had fails as it opens, not at its first
// fetch.
func openLocks(dir string) (*fetchLocks, error) {
	l := &fetchLocks{dir: dir, held: map[object.Digest]*fetchHold{}, locked: map[int]int{}}
	if _, err := l.file(0); err != nil {
		return nil, err
	}
	return l, nil
}

// take takes object d for this process, waiting no longer than ctx
// allows for the fetch that holds it; that holding is returned when ctx
// ends first. A free object is taken even when ctx has ended.
func (l *fetchLocks) take(ctx context.Context, d object.Digest) (bool, *fetchHold) {
	for {
		l.mu.Lock()
		var wait chan struct{}
		h := l.held[d]
		switch {
		case l.closing != nil:
			wait = l.closing
		case h == nil:
			l.held[d] = &fetchHold{}
			l.mu.Unlock()
			return true, nil
		default:
			if h.freed == nil {
				h.freed = make(chan struct{})
			}
			wait = h.freed
		}
		l.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return false, h
		}
	}
}

// tryLock takes object d and its stripe's byte if both are free now:
// d in this process, the byte among processes.
func (l *fetchLocks) tryLock(d object.Digest) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing != nil || l.held[d] != nil || l.joinLocked(stripeOf(d)) != nil {
		return false
	}
	l.held[d] = &fetchHold{}
	return true
}

// give gives object d back, not its stripe's byte (a take whose join
// failed).
func (l *fetchLocks) give(d object.Digest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.giveLocked(d)
}

// unlock gives back d's stripe's byte, if d was the last of the stripe
// held, and then d.
func (l *fetchLocks) unlock(d object.Digest) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.leaveLocked(stripeOf(d))
	l.giveLocked(d)
}

func (l *fetchLocks) giveLocked(d object.Digest) {
	h := l.held[d]
	delete(l.held, d)
	if h != nil && h.freed != nil {
		close(h.freed)
	}
	if l.drained != nil && len(l.held) == 0 {
		close(l.drained)
		l.drained = nil
	}
}

// holding returns the holding of object d, nil if it is free.
func (l *fetchLocks) holding(d object.Digest) *fetchHold {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.held[d]
}

// join counts a held object in stripe i, locking the stripe's byte if
// none of its objects was held: without waiting, EAGAIN (or EACCES) if
// another process holds it.
func (l *fetchLocks) join(i int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.joinLocked(i)
}

func (l *fetchLocks) joinLocked(i int) error {
	if n := l.locked[i]; n > 0 {
		l.locked[i] = n + 1
		return nil
	}
	if err := l.lockByte(i, false); err != nil {
		return err
	}
	l.locked[i] = 1
	return nil
}

// leaveLocked undoes a join: the last object of stripe i given back
// unlocks its byte.
func (l *fetchLocks) leaveLocked(i int) {
	if n := l.locked[i]; n > 1 {
		l.locked[i] = n - 1
		return
	}
	delete(l.locked, i)
	l.lockByte(i, true)
}

// file returns the descriptor of stripe file f, opening it the first time.
func (l *fetchLocks) file(f int) (int, error) {
	if fd := l.fds[f].Load(); fd > 0 {
		return int(fd - 1), nil
	}
	l.openMu.Lock()
	defer l.openMu.Unlock()
	if fd := l.fds[f].Load(); fd > 0 {
		return int(fd - 1), nil
	}
	if l.closed {
		return -1, fmt.Errorf("cache closed: %w", unix.EBADF)
	}
	name := stripesFile
	if f > 0 {
		name += "." + strconv.Itoa(f)
	}
	fd, err := unix.Open(filepath.Join(l.dir, name), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, fmt.Errorf("cache locks: %w", err)
	}
	l.fds[f].Store(int32(fd + 1))
	return fd, nil
}

// lockByte takes (or with unlock, gives back) stripe i's byte without
// waiting. The caller holds l.mu.
func (l *fetchLocks) lockByte(i int, unlock bool) error {
	fd, err := l.file(i / stripesPerFile)
	if err != nil {
		return err
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0 /* SEEK_SET */, Start: int64(i % stripesPerFile), Len: 1}
	if unlock {
		lk.Type = unix.F_UNLCK
	}
	for {
		err := unix.FcntlFlock(uintptr(fd), unix.F_OFD_SETLK, &lk)
		if err != unix.EINTR {
			return err
		}
	}
}

// close waits for every object to be given back, holding off new takers,
// and closes the files: no byte is locked or unlocked meanwhile, and one
// asked for after finds no descriptor (whose number the process may give
// another file).
func (l *fetchLocks) close() {
	l.mu.Lock()
	if l.closed || l.closing != nil {
		l.mu.Unlock()
		return
	}
	l.closing = make(chan struct{})
	var drained chan struct{}
	if len(l.held) > 0 {
		drained = make(chan struct{})
		l.drained = drained
	}
	l.mu.Unlock()
	if drained != nil {
		<-drained
	}
	l.openMu.Lock()
	l.closed = true
	for f := range l.fds {
		if fd := l.fds[f].Swap(0); fd > 0 {
			unix.Close(int(fd - 1))
		}
	}
	l.openMu.Unlock()
	l.mu.Lock()
	close(l.closing)
	l.closing = nil
	l.mu.Unlock()
}

// unlocker gives back d and, if d was the last of its stripe held, the
// stripe's byte.
func (c *Cache) unlocker(d object.Digest) func() {
	return func() { c.locks.unlock(d) }
}

// lock takes the lock of d, so that the fetches of this process and of
// others sharing the store fetch an object once: d in this process, and
// the byte of its stripe among processes. It waits no longer than ctx
// allows, or a minute: the holder is itself bounded by the client's
// deadlines. A reader's wait that ctx's deadline ended is remembered
// (lockWaitedOut); the cache's own work's is not, since no read waited.
func (c *Cache) lock(ctx context.Context, d object.Digest, reader bool) (func(), error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Minute)
		defer cancel()
	}
	if ok, h := c.locks.take(ctx, d); !ok {
		return nil, c.lockWaitedOut(ctx, d, h, reader)
	}
	i := stripeOf(d)
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		err := c.locks.join(i)
		if err == nil {
			return c.unlocker(d), nil
		}
		if err != unix.EAGAIN && err != unix.EACCES {
			c.locks.give(d)
			return nil, fmt.Errorf("cache lock: %w", err)
		}
		if ctx.Err() != nil {
			c.locks.give(d)
			// Another process holds it: this one cannot tell when
			// that ends, so failMemory bounds what is remembered.
			return nil, c.lockWaitedOut(ctx, d, nil, reader)
		}
		time.Sleep(wait)
	}
}

// tryLock takes d's lock if it is free now.
func (c *Cache) tryLock(d object.Digest) (func(), bool) {
	if !c.locks.tryLock(d) {
		return nil, false
	}
	return c.unlocker(d), true
}
