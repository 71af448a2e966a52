package remote

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
)

// SetLimit turns on eviction: when the store holds more than limit bytes,
// the least recently used blobs that the master can give again are removed
// until it holds 90% of limit. refsDir names what must stay whatever the
// master has: every snapshot, and every pin that is not a remote version
// (a restore's snapshot). Trees and file objects are never evicted: they
// are small, and they are what lets lookups and stats be answered without
// a remote call.
func (c *Cache) SetLimit(limit int64, refsDir *refs.Dir) {
	c.evict.Store(&evictConfig{limit: limit, refs: refsDir})
}

type evictConfig struct {
	limit int64
	refs  *refs.Dir
}

// fetched counts bytes stored and starts an eviction pass in the
// background once a tenth of the limit came in since the last one.
func (c *Cache) fetched(n int64) {
	cfg := c.evict.Load()
	if cfg == nil || cfg.limit <= 0 || c.sinceEvic.Add(n) < cfg.limit/10 {
		return
	}
	// A pass is running: it will see what came in.
	if !c.evictMu.TryLock() {
		return
	}
	c.sinceEvic.Store(0)
	go func() {
		defer c.evictMu.Unlock()
		if _, err := c.evictLocked(c.ctx); err != nil {
			c.log.Error("cache eviction", "err", err)
		}
	}()
}

// evictGrace keeps objects younger than this that nothing reaches yet: a
// snapshot being taken stores its objects before its ref.
const evictGrace = 10 * time.Minute

// Evict brings the store under its limit, as far as it safely can, and
// returns the bytes it removed. A pass already running, started in the
// background by fetches, finishes first.
func (c *Cache) Evict(ctx context.Context) (int64, error) {
	c.evictMu.Lock()
	defer c.evictMu.Unlock()
	return c.evictLocked(ctx)
}

func (c *Cache) evictLocked(ctx context.Context) (int64, error) {
	cfg := c.evict.Load()
	if cfg == nil || cfg.limit <= 0 {
		return 0, nil
	}
	// A snapshot being taken, here or by another mount on this store,
	// fetches what it references and writes its ref after, holding the
	// store (object.DirStore.Hold) all along: wait for those in
	// progress, whose refs are then read below. One that starts later
	// has written its ref before any batch is removed (the batches hold
	// the store exclusively), and each batch reads the refs and pins
	// that are new. Before this, a snapshot of a mount with a small
	// --cache-size lost chunks it had just fetched: a blob the master
	// still has is evicted whatever its age.
	since, err := c.store.Quiesce(ctx)
	if err != nil {
		return 0, fmt.Errorf("evict: %w", err)
	}
	var objs []object.StoredObject
	var total int64
	err = c.store.Each(func(o object.StoredObject) error {
		objs = append(objs, o)
		total += o.Size
		return nil
	})
	if err != nil || total <= cfg.limit {
		return 0, err
	}
	lv := refs.NewLive(c.store, cfg.refs, true)
	if err := lv.Mark(ctx); err != nil {
		return 0, fmt.Errorf("evict: %w", err)
	}
	// Least recently used first; only blobs.
	sort.Slice(objs, func(i, j int) bool { return objs[i].ModTime.Before(objs[j].ModTime) })
	cutoff := since.Add(-evictGrace)
	var cands []object.StoredObject
	for _, o := range objs {
		if lv.Keep[o.Digest] || (!lv.Remote[o.Digest] && o.ModTime.After(cutoff)) {
			continue
		}
		if o.Size > 2 && isBlob(c.store, o.Digest) {
			cands = append(cands, o)
		}
	}
	target := cfg.limit / 10 * 9
	var removed int64
	for len(cands) > 0 && total > target {
		batch := cands[:min(len(cands), 512)]
		cands = cands[len(batch):]
		var ask []object.Digest
		for _, o := range batch {
			if lv.Remote[o.Digest] {
				ask = append(ask, o.Digest)
			}
		}
		has := map[object.Digest]bool{}
		if len(ask) > 0 {
			ok, err := c.f.Has(ctx, ask)
			if err != nil {
				// Without the master's word, keep everything a
				// version needs.
				c.log.Warn("cache eviction: cannot ask the master; keeping remote objects", "err", err)
			}
			for i := range ok {
				has[ask[i]] = ok[i]
			}
		}
		n, err := c.removeBatch(ctx, lv, batch, has, cutoff, &total, target)
		removed += n
		if err != nil {
			return removed, err
		}
	}
	if total > cfg.limit {
		c.log.Warn("cache is over its limit: the rest is needed and not on the master, or in use by snapshots",
			"bytes", total, "limit", cfg.limit)
	}
	return removed, nil
}

// removeBatch removes what it can of batch under the store's exclusive
// lock, after reading the refs and pins written since the pass began. A
// remote blob the master has goes whatever its age; anything else only if
// older than cutoff.
func (c *Cache) removeBatch(ctx context.Context, lv *refs.Live, batch []object.StoredObject, has map[object.Digest]bool,
	cutoff time.Time, total *int64, target int64) (int64, error) {
	w, err := c.store.LockSweep(ctx)
	if err != nil {
		return 0, fmt.Errorf("evict: %w", err)
	}
	defer w.Unlock()
	if err := lv.Mark(ctx); err != nil {
		return 0, fmt.Errorf("evict: %w", err)
	}
	var removed int64
	for _, o := range batch {
		if *total <= target {
			break
		}
		if lv.Keep[o.Digest] {
			continue
		}
		var ok bool
		var size int64
		if lv.Remote[o.Digest] {
			if !has[o.Digest] {
				continue
			}
			ok, size, err = w.Remove(o.Digest)
		} else {
			ok, size, err = w.RemoveIfOlder(o.Digest, cutoff)
		}
		if err != nil {
			return removed, err
		}
		if ok {
			*total -= size
			removed += size
			c.evicted.Add(1)
		}
	}
	return removed, nil
}

// isBlob reads an object's kind from its first bytes.
func isBlob(s *object.DirStore, d object.Digest) bool {
	k, err := s.Kind(d)
	return err == nil && k == object.KindBlob
}
