package remote

import (
	"context"
	"sync"
	"time"

	"github.com/cowfs/cowfs/cow/object"
)

// Progress is how far a whole-version prefetch got.
type Progress struct {
	// State is "listing" (fetching trees and file objects), "fetching"
	// (chunks), "done" or "failed".
	State      string `json:"state"`
	Files      int64  `json:"files"`
	Chunks     int64  `json:"chunks"`
	ChunksDone int64  `json:"chunks_done"`
	Bytes      int64  `json:"bytes"`
	BytesDone  int64  `json:"bytes_done"`
	Err        string `json:"error,omitempty"`
	StartedAt  time.Time
	FinishedAt time.Time `json:",omitzero"`
}

type prefetch struct {
	mu sync.Mutex
	p  *Progress
}

// prefetchWorkers fetch chunks side by side: enough to hide a round trip,
// few enough to leave the link to readers.
const prefetchWorkers = 4

// PrefetchVersion fetches every object of the tree root in the background,
// so that the mount works with the master gone once it is done. Reads a
// process waits for go first: a prefetch worker waits while any is in
// flight. Progress reports how far it got.
func (c *Cache) PrefetchVersion(root object.Digest) {
	pf := &prefetch{p: &Progress{State: "listing", StartedAt: time.Now()}}
	c.pf.Store(pf)
	go pf.run(c, root)
}

// Progress returns the prefetch's progress, nil when there is none.
func (c *Cache) Progress() *Progress {
	pf := c.pf.Load()
	if pf == nil {
		return nil
	}
	pf.mu.Lock()
	defer pf.mu.Unlock()
	p := *pf.p
	return &p
}

func (pf *prefetch) update(fn func(p *Progress)) {
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
	var chunks []chunkRef
	seen := map[object.Digest]bool{}
	err := object.Walk(ctx, getterFunc(func(ctx context.Context, d object.Digest) ([]byte, error) {
		c.yield(ctx)
		return c.get(ctx, d)
	}), root, func(_ string, e *object.Entry, f *object.File) error {
		if f == nil {
			return nil
		}
		pf.update(func(p *Progress) { p.Files++; p.Bytes += f.Size })
		for i, d := range f.Chunks {
			if d.IsZero() || seen[d] {
				continue
			}
			seen[d] = true
			chunks = append(chunks, chunkRef{d, min(object.ChunkSize, f.Size-int64(i)*object.ChunkSize)})
		}
		return nil
	})
	if err == nil {
		pf.update(func(p *Progress) { p.State = "fetching"; p.Chunks = int64(len(chunks)) })
		work := make(chan chunkRef)
		errs := make(chan error, prefetchWorkers)
		var wg sync.WaitGroup
		for range prefetchWorkers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ch := range work {
					c.yield(ctx)
					if _, err := c.get(ctx, ch.d); err != nil {
						select {
						case errs <- err:
						default:
						}
						continue
					}
					pf.update(func(p *Progress) { p.ChunksDone++; p.BytesDone += ch.size })
				}
			}()
		}
	feed:
		for _, ch := range chunks {
			select {
			case work <- ch:
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
	pf.update(func(p *Progress) {
		p.FinishedAt = time.Now()
		if err != nil {
			p.State, p.Err = "failed", err.Error()
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

type getterFunc func(ctx context.Context, d object.Digest) ([]byte, error)

func (g getterFunc) Get(ctx context.Context, d object.Digest) ([]byte, error) { return g(ctx, d) }
