package remote

import (
	"context"
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/object"
)

// Bounds of what a crawled directory fetches in the background (decision
// 0059). A crawl of a spider's small files made two round trips per file,
// one after the other; these bring a directory's worth in a few batched
// calls, and cap what a big directory, or one of big files, costs a task
// that reads two files of it.
const (
	// dirFiles bounds the file objects fetched per directory (the
	// first, in name order): a file object is a few hundred bytes.
	dirFiles = 512
	// dirSmallFile is the largest file whose chunks are fetched: a
	// source file, a config; a bigger one is a data file, which a task
	// reads, if at all, through read-ahead.
	dirSmallFile = 64 << 10
	// dirBytes and dirChunks bound the chunks fetched per directory.
	dirBytes  = 4 << 20
	dirChunks = 512
	// dirBatch is the objects of one call: 64 are one round trip to a
	// master; a reader waiting on an object a batch holds waits for that
	// call at most.
	dirBatch = 64
	// dirQueue directories wait for dirWorkers; more are dropped (they
	// are read as before, one object at a time).
	dirQueue   = 64
	dirWorkers = 2
)

// dirFetch is a cache's background fetching of directories' files.
type dirFetch struct {
	on    atomic.Bool
	once  sync.Once
	queue chan *dirWait
	errs  atomic.Int64
	// again counts fetchBackground's second tries of busy objects: each
	// is one more call.
	again atomic.Int64

	// waiting maps the file objects of directories looked into to their
	// directory, until a second of them is read (at most dirWaiting
	// file objects, the oldest directories forgotten). Keyed by a
	// digest's first 8 bytes (waitKey): a mount notes every file of
	// each directory it looks into, most never read, and a word is
	// cheaper to hash and hold than a digest. Two digests that share
	// the key cost at worst a directory fetched for a read of another's
	// file.
	mu      sync.Mutex
	waiting map[uint64]*dirWait
	order   []*dirWait
	held    int
}

// dirWaiting bounds the file objects of directories waiting for a second
// read: a crawl lists a whole tree before it reads (find), and each is a
// map entry of some 50 bytes.
const dirWaiting = 64 << 10

// dirWait is a directory looked into, whether one of its files was read
// since, and whether it is fetched ahead of a crawl (see read).
type dirWait struct {
	files  []object.Digest
	sizes  []int64 // the files' sizes, from the tree
	opened bool
	ahead  bool
}

// SetDirPrefetch turns on (or off) PrefetchDir, off by default: a mount
// turns it on unless told not to (Remote.NoDirPrefetch).
func (c *Cache) SetDirPrefetch(on bool) { c.dir.on.Store(on) }

// PrefetchDir notes the files of the directory t; once a second of them
// is read (a crawl, not a task that reads one file here and there), it
// fetches in the background the file objects of its regular files and
// then the chunks of its small ones, in batched calls, unless they are
// cached. A read of an object being fetched so waits for that fetch (its
// lock), and does not ask again. What it fetches is verified and counted
// against the cache's limit as any fetch; a failure is logged at debug
// and counted, and a reader that needs the object then fetches it
// itself.
func (c *Cache) PrefetchDir(t *object.Tree) {
	if !c.dir.on.Load() || c.ctx.Err() != nil {
		return
	}
	files := func(yield func(d object.Digest, size int64) bool) {
		n := 0
		for i := range t.Entries {
			e := &t.Entries[i]
			if e.Mode&unix.S_IFMT == unix.S_IFREG && e.Size > 0 && !e.Object.IsZero() {
				if n++; n > dirFiles || !yield(e.Object, e.Size) {
					return
				}
			}
		}
	}
	// A directory whose file objects the store holds was read before:
	// its small files' chunks came with them (an open's follow, or this
	// fetch), so there is nothing to wait for a second read for, and a
	// warm mount's walk notes nothing, nor allocates for it. One whose
	// chunks alone went (evicted, or never read: a snapshot reads file
	// objects only) is read as its files are opened.
	n, cached := 0, true
	for d := range files {
		n++
		cached = cached && c.store.HasKnown(d)
	}
	if n < 2 || cached {
		return
	}
	ds, sizes := make([]object.Digest, 0, n), make([]int64, 0, n)
	for d, size := range files {
		ds = append(ds, d)
		sizes = append(sizes, size)
	}
	c.dir.once.Do(func() {
		c.dir.queue = make(chan *dirWait, dirQueue)
		for range dirWorkers {
			go func() {
				for {
					select {
					case <-c.ctx.Done():
						return
					case w := <-c.dir.queue:
						c.fetchDir(w)
					}
				}
			}()
		}
	})
	f := &c.dir
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.waiting == nil {
		f.waiting = map[uint64]*dirWait{}
	}
	w := &dirWait{files: ds, sizes: sizes}
	for _, d := range ds {
		f.waiting[waitKey(d)] = w
	}
	f.order = append(f.order, w)
	f.held += len(ds)
	for f.held > dirWaiting {
		f.forget(f.order[0])
	}
}

// forget drops w from waiting; f.mu is held.
func (f *dirFetch) forget(w *dirWait) {
	for _, d := range w.files {
		if k := waitKey(d); f.waiting[k] == w {
			delete(f.waiting, k)
		}
	}
	for i, o := range f.order {
		if o == w {
			f.order = append(f.order[:i], f.order[i+1:]...)
			f.held -= len(w.files)
			break
		}
	}
}

// read notes that a reader asked for object d: the second file object of
// a directory read starts the background fetch of its files, and of the
// next directory looked into after it, which a crawl (find, an import of
// a package tree) reads next; the first read in a directory so fetched
// ahead starts the one after it. A crawl then finds a directory's files
// fetched, or being fetched, when it gets there, where it used to race
// its own directory's fetch for them.
func (f *dirFetch) read(d object.Digest) {
	if !f.on.Load() {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := waitKey(d)
	w := f.waiting[k]
	if w == nil {
		return
	}
	delete(f.waiting, k)
	if !w.opened && !w.ahead {
		w.opened = true
		return
	}
	next := f.after(w)
	f.forget(w)
	if !w.ahead {
		f.enqueue(w)
	}
	if next != nil && !next.ahead {
		next.ahead = true
		f.enqueue(next)
	}
}

// waitKey is d's key in dirFetch.waiting.
func waitKey(d object.Digest) uint64 { return binary.LittleEndian.Uint64(d[:8]) }

// after returns the directory looked into next after w, if one waits;
// f.mu is held.
func (f *dirFetch) after(w *dirWait) *dirWait {
	for i, o := range f.order {
		if o == w && i+1 < len(f.order) {
			return f.order[i+1]
		}
	}
	return nil
}

// enqueue hands w's files to the workers, or drops them if too many wait.
func (f *dirFetch) enqueue(w *dirWait) {
	select {
	case f.queue <- w:
	default:
	}
}

// fetchDir fetches the file objects of w's files and the chunks of the
// small ones, within the bounds above. From a master, a small file's
// chunks come right after its file object, in the same call
// (fetchBatch's follow): a crawl reading the directory's files in order
// finds each whole as it gets there, where fetching all the file objects
// first and then their chunks made it wait for both passes.
func (c *Cache) fetchDir(w *dirWait) {
	if _, ok := c.f.(followFetcher); !ok {
		if c.fetchBackground(w.files, 0) {
			c.fetchDirChunks(w.files)
		}
		return
	}
	var small, rest []object.Digest
	var bytes int64
	chunks := 0
	for i, d := range w.files {
		n := w.sizes[i]
		k := int((n + object.ChunkSize - 1) / object.ChunkSize)
		if len(rest) == 0 && n <= dirSmallFile && bytes+n <= dirBytes && chunks+k <= dirChunks {
			small = append(small, d)
			bytes += n
			chunks += k
			continue
		}
		rest = append(rest, d)
	}
	if !c.fetchBackground(small, dirSmallFile) {
		return
	}
	// The chunks of small files whose file objects were held already
	// (and so not asked for): none, unless some were evicted since.
	c.fetchDirChunks(small)
	c.fetchBackground(rest, 0)
}

// fetchDirChunks fetches the chunks of the small files among the file
// objects files, within the bounds above.
func (c *Cache) fetchDirChunks(files []object.Digest) {
	var chunks []object.Digest
	var bytes int64
	for _, d := range files {
		b, err := c.store.Get(c.ctx, d)
		if err != nil {
			continue // evicted meanwhile, or damaged: left to its reader
		}
		f, err := object.DecodeFile(b)
		if err != nil || f.Size > dirSmallFile {
			continue
		}
		if bytes+f.Size > dirBytes || len(chunks)+len(f.Chunks) > dirChunks {
			break
		}
		bytes += f.Size
		for _, ch := range f.Chunks {
			if !ch.IsZero() {
				chunks = append(chunks, ch)
			}
		}
	}
	c.fetchBackground(chunks, 0)
}

// fetchBackground fetches ds in batches of dirBatch (with follow as for
// fetchBatch), each bounded by the fetcher's Timeout, and stops at the first failure (a master that does
// not answer one batch would not answer the next), reporting whether all
// went well. An object whose lock another fetch holds is tried again
// after the rest, up to busyRetries times, a pause before each: the
// fetch may be another process's of an object that shares its lock
// stripe, or a reader's open that holds the chunk coming with its file
// object, and then nothing else would fetch it. One whose own fetch holds
// it is stored by then, and skipped.
func (c *Cache) fetchBackground(ds []object.Digest, follow int64) bool {
	timeout := c.bound()
	var busy []object.Digest
	for retry := 0; ; retry++ {
		if !c.fetchBatches(ds, follow, timeout, &busy) {
			return false
		}
		if len(busy) == 0 || retry == busyRetries {
			return true
		}
		select {
		case <-c.ctx.Done():
			return false
		case <-time.After(busyPause << retry):
		}
		c.dir.again.Add(1)
		ds, busy = busy, nil
	}
}

// bound is how long one background call may take: the fetcher's
// Timeout (a mount's --io-timeout), 30 s for one without.
func (c *Cache) bound() time.Duration {
	if t, ok := c.f.(boundedFetcher); ok {
		return t.Timeout()
	}
	return 30 * time.Second
}

// busyRetries and busyPause bound fetchBackground's second tries: pauses
// of 25, 50, 100 and 200 ms, long enough for a reader's fetch of a chunk
// on a busy machine, short beside a crawl.
const (
	busyRetries = 4
	busyPause   = 25 * time.Millisecond
)

// fetchBatches is one pass of fetchBackground over ds; the objects whose
// lock was taken go to busy.
func (c *Cache) fetchBatches(ds []object.Digest, follow int64, timeout time.Duration, busy *[]object.Digest) bool {
	for len(ds) > 0 {
		if c.ctx.Err() != nil {
			return false // closed: the lock files with it
		}
		n := min(len(ds), dirBatch)
		batch, rest := ds[:n], ds[n:]
		ctx, cancel := context.WithTimeout(c.ctx, timeout)
		b, _, err := c.fetchBatch(ctx, batch, false, false, follow, nil)
		cancel()
		*busy = append(*busy, b...)
		if err != nil {
			if c.ctx.Err() == nil {
				c.dir.errs.Add(1)
				c.log.Debug("background fetch of a directory's files failed", "objects", len(batch), "err", err)
			}
			return false
		}
		ds = rest
	}
	return true
}
