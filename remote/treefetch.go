package remote

import (
	"context"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/object"
)

// treeFetchMax bounds the trees FetchTrees walks: a tree is a directory,
// and a spider's export has some hundreds; a version of a million
// directories gets its first levels.
const treeFetchMax = 16 << 10

// FetchTrees fetches in the background the trees beneath root that the
// store lacks, a level at a time, each level in batched calls: a source
// that does not send a version's trees with the version, as a master does
// (a bucket, whose batches are ranged GETs of the packs that hold them),
// would otherwise cost a round trip for each directory a task looks into.
// It stops at treeFetchMax trees, at the cache's close, at a failed call
// (logged at debug; readers fetch for themselves as before), and when
// the level below root is held already: a worker that mounted the version
// before holds its trees.
func (c *Cache) FetchTrees(root object.Digest) {
	go func() {
		timeout := c.bound()
		level := []object.Digest{root}
		seen := map[object.Digest]bool{root: true}
		for depth, walked := 0, 0; len(level) > 0 && walked < treeFetchMax && c.ctx.Err() == nil; depth++ {
			level = level[:min(len(level), treeFetchMax-walked)]
			var missing []object.Digest
			for _, d := range level {
				if !c.store.HasKnown(d) {
					missing = append(missing, d)
				}
			}
			if depth == 1 && len(missing) == 0 {
				return
			}
			for part := range slices.Chunk(missing, maxMany) {
				ctx, cancel := context.WithTimeout(c.ctx, timeout)
				err := c.fetchManyFor(ctx, part, false, 0, nil)
				cancel()
				if err != nil {
					if c.ctx.Err() == nil {
						c.log.Debug("background fetch of a version's trees failed; lookups fetch their own", "trees", len(part), "err", err)
					}
					return
				}
			}
			var next []object.Digest
			for _, d := range level {
				b, err := c.store.Get(c.ctx, d)
				if err != nil {
					continue // left to its reader
				}
				t, err := object.DecodeTree(b)
				if err != nil {
					continue
				}
				for _, e := range t.Entries {
					if e.Mode&unix.S_IFMT == unix.S_IFDIR && !seen[e.Object] {
						seen[e.Object] = true
						next = append(next, e.Object)
					}
				}
			}
			walked += len(level)
			level = next
		}
	}()
}
