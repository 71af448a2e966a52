package remote

import (
	"context"
	"fmt"
	"sort"
	"strings"
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

// HoldEviction waits for an eviction pass in progress and keeps any other
// from running until the returned function is called. A snapshot of a
// remote-backed mount holds it from fetching what it references until its
// ref is written: before the ref, nothing reaches those objects, and a
// blob the master still has is evicted whatever its age (the snapshot of
// a mount with a small --cache-size lost chunks it had just fetched).
func (c *Cache) HoldEviction() (release func()) {
	c.evictMu.Lock()
	return c.evictMu.Unlock
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
	var objs []object.StoredObject
	var total int64
	err := c.store.Each(func(o object.StoredObject) error {
		objs = append(objs, o)
		total += o.Size
		return nil
	})
	if err != nil || total <= cfg.limit {
		return 0, err
	}
	// keep: what no eviction may touch. remote: blobs of remote versions,
	// evictable only while the master still has them.
	keep := map[object.Digest]bool{}
	remote := map[object.Digest]bool{}
	snaps, err := cfg.refs.List()
	if err != nil {
		return 0, err
	}
	for _, s := range snaps {
		if err := object.Reachable(ctx, c.store, s.Root, keep); err != nil {
			return 0, fmt.Errorf("evict: snapshot %s: %w", s.Name, err)
		}
	}
	pins, err := cfg.refs.Pins()
	if err != nil {
		return 0, err
	}
	for _, p := range pins {
		set, reach := keep, object.Reachable
		if strings.HasPrefix(p.Key, refs.RemotePinPrefix) {
			set, reach = remote, object.ReachablePresent
		}
		if err := reach(ctx, c.store, p.Root, set); err != nil {
			return 0, fmt.Errorf("evict: pin %s: %w", p.Key, err)
		}
	}
	// Least recently used first; only blobs.
	sort.Slice(objs, func(i, j int) bool { return objs[i].ModTime.Before(objs[j].ModTime) })
	cutoff := time.Now().Add(-evictGrace)
	var cands []object.StoredObject
	for _, o := range objs {
		if keep[o.Digest] || (!remote[o.Digest] && o.ModTime.After(cutoff)) {
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
			if remote[o.Digest] {
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
		for _, o := range batch {
			if total <= target {
				break
			}
			if remote[o.Digest] && !has[o.Digest] {
				continue
			}
			if err := c.store.Remove(o.Digest); err != nil {
				return removed, err
			}
			total -= o.Size
			removed += o.Size
			c.evicted.Add(1)
		}
	}
	if total > cfg.limit {
		c.log.Warn("cache is over its limit: the rest is needed and not on the master, or in use by snapshots",
			"bytes", total, "limit", cfg.limit)
	}
	return removed, nil
}

// isBlob reads an object's kind from its first bytes.
func isBlob(s *object.DirStore, d object.Digest) bool {
	k, err := s.Kind(d)
	return err == nil && k == object.KindBlob
}
