package remote

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/names"
	"github.com/cowfs/cowfs/cow/object"
)

// A Warmup fetches objects of a version into the cache ahead of use, in
// the background: all of it (--prefetch) or what lies beneath some of
// its paths (cowfs warmup).
type Warmup struct {
	mu   sync.Mutex
	p    *object.PrefetchProgress
	done chan struct{}
	err  error
}

// prefetchWorkers fetch objects side by side: a fetch is a round trip plus
// a file written; 16 in flight kept loopback busy where 4 left it idle
// (bench-remote, eager download). Readers still go first (yield).
const prefetchWorkers = 16

// PrefetchVersion fetches every object of the tree root in the background,
// so that the mount works with the master gone once it is done. Reads a
// process waits for go first: a prefetch worker waits while any is in
// flight. Progress reports how far it got.
func (c *Cache) PrefetchVersion(root object.Digest) {
	c.pf.Store(c.Warm(c.ctx, root, nil))
}

// Warm starts fetching every object beneath paths (slash-separated,
// relative to root; none: all of it) of the tree root, and every tree on
// the way to them, until it is done, ctx is done or the cache is closed.
// A symlink is not followed. Reads a process waits for go first, as for
// PrefetchVersion.
func (c *Cache) Warm(ctx context.Context, root object.Digest, paths []string) *Warmup {
	w := &Warmup{p: &object.PrefetchProgress{State: "listing", StartedAt: time.Now()}, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(c.ctx, cancel)
	go func() {
		defer cancel()
		defer stop()
		w.run(ctx, c, root, paths)
	}()
	return w
}

// Progress returns the prefetch's progress, nil when there is none.
func (c *Cache) Progress() *object.PrefetchProgress {
	w := c.pf.Load()
	if w == nil {
		return nil
	}
	p := w.Progress()
	return &p
}

// Progress returns how far the warmup got.
func (w *Warmup) Progress() object.PrefetchProgress {
	w.mu.Lock()
	defer w.mu.Unlock()
	return *w.p
}

// Done is closed once the warmup ended; Err then says how.
func (w *Warmup) Done() <-chan struct{} { return w.done }

// Err is nil once the warmup fetched everything it was asked for, and
// why not otherwise; nil while it runs.
func (w *Warmup) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

func (w *Warmup) update(fn func(p *object.PrefetchProgress)) {
	w.mu.Lock()
	fn(w.p)
	w.mu.Unlock()
}

// yield waits while a reader waits for a fetch.
func (c *Cache) yield(ctx context.Context) {
	for c.demand.Load() > 0 && ctx.Err() == nil {
		time.Sleep(2 * time.Millisecond)
	}
}

type chunkRef struct {
	d    object.Digest
	size int64
	// last: the last chunk of its read-ahead batch in its file
	// (Cache.AheadBatch: whole chunk groups).
	last bool
}

// warmJob is an object to fetch and, for a tree or a file, expand.
type warmJob struct {
	d    object.Digest
	tree bool
}

func (pf *Warmup) run(ctx context.Context, c *Cache, root object.Digest, paths []string) {
	start, err := c.warmStart(ctx, root, paths)
	var chunks []chunkRef
	if err == nil {
		chunks, err = pf.list(ctx, c, start)
	}
	if err == nil {
		pf.update(func(p *object.PrefetchProgress) { p.State = "fetching"; p.Chunks = int64(len(chunks)) })
		work := make(chan []chunkRef)
		errs := make(chan error, prefetchWorkers)
		var wg sync.WaitGroup
		for range prefetchWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for batch := range work {
					c.yield(ctx)
					ds := make([]object.Digest, len(batch))
					var size int64
					for i, ch := range batch {
						ds[i] = ch.d
						size += ch.size
					}
					if err := c.fetchMany(ctx, ds); err != nil {
						select {
						case errs <- err:
						default:
						}
						continue
					}
					pf.update(func(p *object.PrefetchProgress) { p.ChunksDone += int64(len(batch)); p.BytesDone += size })
				}
			}()
		}
	feed:
		for len(chunks) > 0 {
			// Batches of about 8 MiB: few round trips, and a reader
			// never waits behind much. A batch ends where a read-ahead
			// batch does (two chunk groups, or a bucket's pack of four),
			// which a bucket sends in one GET (its chunks lie side by
			// side in a pack) where two batches would make two.
			n, size := 0, int64(0)
			for n < len(chunks) && n < maxMany && (size < 8<<20 || !chunks[n-1].last) {
				size += chunks[n].size
				n++
			}
			select {
			case work <- chunks[:n]:
				chunks = chunks[n:]
			case err = <-errs:
				break feed
			case <-ctx.Done():
				err = ctx.Err()
				break feed
			}
		}
		close(work)
		wg.Wait()
		if err == nil {
			select {
			case err = <-errs:
			default:
			}
		}
	}
	pf.update(func(p *object.PrefetchProgress) {
		p.FinishedAt = time.Now()
		if err != nil {
			p.State, p.Error = "failed", err.Error()
			return
		}
		// Bytes counts holes too; BytesDone only stored chunks.
		p.State, p.BytesDone = "done", p.Bytes
	})
	pf.mu.Lock()
	pf.err = err
	p := *pf.p
	pf.mu.Unlock()
	close(pf.done)
	if err != nil {
		c.log.Error("prefetch failed", "paths", paths, "err", err)
	} else {
		c.log.Info("prefetch done", "paths", paths, "files", p.Files, "bytes", p.Bytes)
	}
}

// warmStart returns the objects beneath which a warmup of paths of the
// tree root fetches everything: root itself without paths.
func (c *Cache) warmStart(ctx context.Context, root object.Digest, paths []string) ([]warmJob, error) {
	if len(paths) == 0 {
		return []warmJob{{root, true}}, nil
	}
	var jobs []warmJob
	for _, path := range paths {
		rel, err := names.CleanRel(path)
		if err != nil {
			return nil, err
		}
		j := warmJob{root, true}
		for walked, name := range splitRel(rel) {
			if !j.tree {
				return nil, fmt.Errorf("warm up %q: %q is not a directory: %w", path, walked, unix.ENOTDIR)
			}
			b, err := c.get(ctx, j.d)
			if err != nil {
				return nil, fmt.Errorf("warm up %q: %w", path, err)
			}
			t, err := object.DecodeTree(b)
			if err != nil {
				return nil, fmt.Errorf("warm up %q: %w", path, err)
			}
			e, ok := t.Lookup(name)
			if !ok {
				return nil, fmt.Errorf("warm up %q: not in the version: %w", path, unix.ENOENT)
			}
			switch e.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
				j = warmJob{e.Object, true}
			case unix.S_IFREG:
				j = warmJob{e.Object, false} // zero for an empty file
			default:
				j = warmJob{} // all of it is in the tree just fetched
			}
		}
		if !j.d.IsZero() {
			jobs = append(jobs, j)
		}
	}
	return jobs, nil
}

// splitRel yields the path walked so far and the next name, for each name
// of the clean relative path rel.
func splitRel(rel string) func(func(string, string) bool) {
	return func(yield func(string, string) bool) {
		if rel == "" {
			return
		}
		walked := ""
		for _, name := range strings.Split(rel, "/") {
			if !yield(walked, name) {
				return
			}
			walked = names.Join(walked, name)
		}
	}
}

// A packLocator knows, without asking, which pack of the source an
// object lies in (a bucket's Fetcher, once its indexes are loaded).
type packLocator interface {
	PackOf(d object.Digest) (pack string, ok bool)
}

// warmQueue holds the objects a warmup's listing has yet to fetch. With
// packOf, file objects wait by the pack they lie in, and a batch is the
// objects of one pack: where the source reads a batch's objects of a
// pack, and the chunks packed after them, in one ranged GET, batches cut
// without regard to packs would split most packs between two calls.
type warmQueue struct {
	packOf func(object.Digest) (string, bool)
	plain  []warmJob            // trees, and objects in no known pack
	byPack map[string][]warmJob // the other file objects
	packs  []string             // byPack's keys, in the order they came
}

func (q *warmQueue) push(j warmJob) {
	if q.packOf != nil && !j.tree {
		if p, ok := q.packOf(j.d); ok {
			if q.byPack == nil {
				q.byPack = map[string][]warmJob{}
			}
			if len(q.byPack[p]) == 0 {
				q.packs = append(q.packs, p)
			}
			q.byPack[p] = append(q.byPack[p], j)
			return
		}
	}
	q.plain = append(q.plain, j)
}

func (q *warmQueue) empty() bool { return len(q.plain) == 0 && len(q.packs) == 0 }

// take removes and returns up to n jobs of a non-empty queue: trees and
// objects of no known pack first, the last queued first, since a tree
// leads to more; then objects of one pack, the pack that came first,
// whose objects are the likeliest to be all queued by now.
func (q *warmQueue) take(n int) []warmJob {
	if len(q.plain) > 0 {
		k := max(0, len(q.plain)-n)
		jobs := slices.Clone(q.plain[k:])
		q.plain = q.plain[:k]
		return jobs
	}
	p := q.packs[0]
	js := q.byPack[p]
	if len(js) > n {
		q.byPack[p] = js[n:]
		return slices.Clone(js[:n])
	}
	delete(q.byPack, p)
	q.packs = q.packs[1:]
	return js
}

// list fetches every tree and file object beneath start,
// prefetchWorkers at a time (one at a time, a 10k-file tree is 10k round
// trips in a row), and returns the chunks to fetch, each once.
func (pf *Warmup) list(ctx context.Context, c *Cache, start []warmJob) ([]chunkRef, error) {
	type job = warmJob
	var (
		mu      sync.Mutex
		cond    = sync.NewCond(&mu)
		queue   warmQueue
		active  int
		firstEr error
		seen    = map[object.Digest]bool{}
		chunks  []chunkRef
		// unit is a read-ahead batch's chunks: a batch of the feed
		// ends where one of them does.
		unit = c.AheadBatch()
	)
	if pl, ok := c.f.(packLocator); ok {
		queue.packOf = pl.PackOf
	}
	for _, j := range start {
		if !seen[j.d] {
			seen[j.d] = true
			queue.push(j)
		}
	}
	// expand decodes object b of job j and queues what it leads to.
	expand := func(j job, b []byte) error {
		mu.Lock()
		defer mu.Unlock()
		if j.tree {
			t, err := object.DecodeTree(b)
			if err != nil {
				return err
			}
			for _, e := range t.Entries {
				dir, reg := e.Mode&unix.S_IFMT == unix.S_IFDIR, e.Mode&unix.S_IFMT == unix.S_IFREG
				if (dir || (reg && e.Size > 0)) && !seen[e.Object] {
					seen[e.Object] = true
					queue.push(job{e.Object, dir})
				}
			}
			return nil
		}
		f, err := object.DecodeFile(b)
		if err != nil {
			return err
		}
		pf.update(func(p *object.PrefetchProgress) { p.Files++; p.Bytes += f.Size })
		for i, d := range f.Chunks {
			if !d.IsZero() && !seen[d] {
				seen[d] = true
				i := int64(i)
				last := i == int64(len(f.Chunks))-1 || i%unit == 0
				chunks = append(chunks, chunkRef{d, min(object.ChunkSize, f.Size-i*object.ChunkSize), last})
			}
		}
		return nil
	}
	// Where the source's follow reads what lies after an object in the
	// same request (packFollower), a file object's first chunk comes
	// with it: the file objects of a directory and their chunks, packed
	// side by side, are then read in long ranges, and the chunk fetches
	// below find them held. A master's follow would stream them in the
	// listing's calls instead of the chunk fetches' own: left out.
	var follow int64
	if _, ok := c.f.(packFollower); ok {
		follow = followBytes
	}
	// do fetches a batch of objects in one call and queues what they
	// lead to: those fetched as they come, those the store had after.
	do := func(jobs []job) error {
		c.yield(ctx)
		ds := make([]object.Digest, len(jobs))
		byDigest := make(map[object.Digest]job, len(jobs))
		for i, j := range jobs {
			ds[i] = j.d
			byDigest[j.d] = j
		}
		var eerr error
		err := c.fetchManyEach(ctx, ds, follow, func(d object.Digest, b []byte) {
			if j, ok := byDigest[d]; ok && eerr == nil {
				delete(byDigest, d)
				eerr = expand(j, b)
			}
		})
		if err == nil {
			err = eerr
		}
		if err != nil {
			return err
		}
		for _, j := range jobs {
			if _, ok := byDigest[j.d]; !ok {
				continue
			}
			b, err := c.get(ctx, j.d)
			if err != nil {
				return err
			}
			if err := expand(j, b); err != nil {
				return err
			}
		}
		return nil
	}
	var wg sync.WaitGroup
	for range prefetchWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mu.Lock()
			defer mu.Unlock()
			for {
				for queue.empty() && active > 0 && firstEr == nil {
					cond.Wait()
				}
				if queue.empty() || firstEr != nil || ctx.Err() != nil {
					cond.Broadcast()
					return
				}
				jobs := queue.take(64)
				active++
				mu.Unlock()
				err := do(jobs)
				mu.Lock()
				active--
				if err != nil && firstEr == nil {
					firstEr = err
				}
				cond.Broadcast()
			}
		}()
	}
	wg.Wait()
	if firstEr == nil {
		firstEr = ctx.Err()
	}
	return chunks, firstEr
}
