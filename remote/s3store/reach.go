package s3store

import (
	"context"
	"syscall"

	"github.com/cowfs/cowfs/cow/object"
)

// reachBatch bounds the objects of one GetMany of reach.
const reachBatch = 1024

// reach is object.Reachable of root (ReachablePresent if partial), into
// live, with what the walk reads fetched first: each level of trees, then
// the file objects beneath it, in GetMany calls (a ranged GET a run of a
// pack). Read one at a time, as the walk asks for them, a gc made a
// request for every file of every version it keeps, which on an object
// store tens of milliseconds away is hours for a big bucket. Anything the
// fetch did not bring (a failure, damaged bytes) the walk asks for
// itself, and fails as it would have.
func (s *Store) reach(ctx context.Context, root object.Digest, live map[object.Digest]bool, partial bool) error {
	held := map[object.Digest][]byte{}
	fetch := func(ds []object.Digest) {
		for len(ds) > 0 && ctx.Err() == nil {
			batch := ds[:min(len(ds), reachBatch)]
			ds = ds[len(batch):]
			// got is called one at a time.
			Fetcher{S: s}.GetMany(ctx, batch, func(i int, b []byte, err error) {
				if err == nil && object.Sum(b) == batch[i] {
					held[batch[i]] = b
				}
			})
		}
	}
	level := []object.Digest{root}
	if live[root] {
		level = nil
	}
	for len(level) > 0 && ctx.Err() == nil {
		fetch(level)
		var next, files []object.Digest
		seen := map[object.Digest]bool{}
		for _, d := range level {
			t, err := object.DecodeTree(held[d])
			if err != nil {
				continue
			}
			for _, e := range t.Entries {
				if live[e.Object] || seen[e.Object] {
					continue
				}
				switch e.Mode & syscall.S_IFMT {
				case syscall.S_IFDIR:
					next = append(next, e.Object)
				case syscall.S_IFREG:
					if e.Size > 0 {
						files = append(files, e.Object)
					}
				default:
					continue
				}
				seen[e.Object] = true
			}
		}
		fetch(files)
		level = next
	}
	g := heldGetter{held: held, s: s}
	if partial {
		return object.ReachablePresent(ctx, g, root, live)
	}
	return object.Reachable(ctx, g, root, live)
}

// heldGetter is the store, with what reach fetched ahead in memory.
type heldGetter struct {
	held map[object.Digest][]byte
	s    *Store
}

func (g heldGetter) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	if b, ok := g.held[d]; ok {
		return b, nil
	}
	return g.s.Get(ctx, d)
}
