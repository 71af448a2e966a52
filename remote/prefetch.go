package remote

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/object"
)

type prefetch struct {
	mu sync.Mutex
	p  *object.PrefetchProgress
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
	pf := &prefetch{p: &object.PrefetchProgress{State: "listing", StartedAt: time.Now()}}
	c.pf.Store(pf)
	go pf.run(c, root)
}

// Progress returns the prefetch's progress, nil when there is none.
func (c *Cache) Progress() *object.PrefetchProgress {
	pf := c.pf.Load()
	if pf == nil {
		return nil
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	p := *pf.p
	return &p
}

func (pf *prefetch) update(fn func(p *object.PrefetchProgress)) {
	pf.mu.Lock()
	fn(pf.p)
	pf.mu.Unlock()
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
}

func (pf *prefetch) run(c *Cache, root object.Digest) {
	ctx := c.ctx
	chunks, err := pf.list(c, root)
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
			// Batches of up to 8 MiB: few round trips, and a reader
			// never waits behind much.
			n, size := 0, int64(0)
			for n < len(chunks) && n < maxMany && size < 8<<20 {
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
	if err != nil {
		c.log.Error("prefetch failed", "err", err)
	} else {
		c.log.Info("prefetch done", "files", pf.p.Files, "bytes", pf.p.Bytes)
	}
}

// list fetches every tree and file object of root, prefetchWorkers at a
// time (one at a time, a 10k-file tree is 10k round trips in a row), and
// returns the chunks to fetch, each once.
func (pf *prefetch) list(c *Cache, root object.Digest) ([]chunkRef, error) {
	ctx := c.ctx
	type job struct {
		d    object.Digest
		tree bool
	}
	var (
		mu      sync.Mutex
		cond    = sync.NewCond(&mu)
		queue   = []job{{root, true}}
		active  int
		firstEr error
		seen    = map[object.Digest]bool{root: true}
		chunks  []chunkRef
	)
	// expand decodes one fetched object and queues what it leads to.
	expand := func(j job) error {
		b, err := c.get(ctx, j.d)
		if err != nil {
			return err
		}
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
					queue = append(queue, job{e.Object, dir})
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
				chunks = append(chunks, chunkRef{d, min(object.ChunkSize, f.Size-int64(i)*object.ChunkSize)})
			}
		}
		return nil
	}
	// do fetches a batch of objects in one call and queues what they
	// lead to.
	do := func(jobs []job) error {
		c.yield(ctx)
		ds := make([]object.Digest, len(jobs))
		for i, j := range jobs {
			ds[i] = j.d
		}
		if err := c.fetchMany(ctx, ds); err != nil {
			return err
		}
		for _, j := range jobs {
			if err := expand(j); err != nil {
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
				for len(queue) == 0 && active > 0 && firstEr == nil {
					cond.Wait()
				}
				if len(queue) == 0 || firstEr != nil || ctx.Err() != nil {
					cond.Broadcast()
					return
				}
				k := max(0, len(queue)-64)
				jobs := append([]job(nil), queue[k:]...)
				queue = queue[:k]
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
