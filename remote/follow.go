package remote

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cowfs/cowfs/cow/object"
)

// A followFetcher sends, after an object, what its reader asks for next,
// in the same call (*Client, through GetMany's follow): after a file
// object the chunks its reader reads first, after a tree the trees beneath
// it. A bucket's Fetcher has one too: what follows an object there is what
// a publish packed right after it, read in the same ranged GET.
type followFetcher interface {
	GetManyFollow(ctx context.Context, ds []object.Digest, follow int64, got func(i int, b []byte, err error), fol func(d object.Digest, b []byte)) error
}

var _ followFetcher = (*Client)(nil)

// A packFollower is a followFetcher whose follow reads what follows an
// object in the request that reads the object (a bucket, where a publish
// packs a file's first chunk right after its file object): a batch asked
// for with follow costs no request more.
type packFollower interface {
	followFetcher
	FollowsInPlace()
}

// getFollowing gets object d, unverified, as soon as it is whole; the call
// goes on in the background for what follows it: for a file object the
// chunks holding the file's first followBytes, for a tree (a version's
// root, at mount) the trees beneath it, breadth first, followBytes of
// them. Those are verified, kept in memory for a reader waiting on them,
// and stored as they come. A file opened cold is then one round trip
// before its first read is served, not two, and a cold mount's lookups
// need none. A reader of a chunk, or of a tree right beneath d, meanwhile
// waits for it (freshObjects) rather than fetching it again; so does
// another process sharing the store, which waits for d's lock, held by
// the caller, and for d itself: when stores is true, d, which came whole,
// is stored by getFollowing after what follows it, not by the caller, so
// that a process that finds d in the store finds the rest too.
// getFollowing calls release once it is done with d's lock. What does not
// come, or comes damaged, its reader fetches itself.
func (c *Cache) getFollowing(ctx context.Context, ff followFetcher, d object.Digest, release func()) (_ []byte, stores bool, _ error) {
	type result struct {
		b      []byte
		stores bool
		err    error
	}
	head := make(chan result, 1)
	timeout := time.Minute
	if t, ok := c.f.(boundedFetcher); ok {
		timeout = t.Timeout()
	}
	// The caller stops waiting once it has d; the chunks after it are
	// fetched under the cache's life, bounded as any fetch.
	bg, cancel := context.WithTimeout(c.ctx, timeout)
	busy := c.activity.start()
	go func() {
		defer busy()
		defer release()
		defer cancel()
		var (
			want   []object.Digest // what its readers wait for
			wanted = map[object.Digest]bool{}
			tree   bool  // d is a tree: the trees beneath it come
			took   int64 // bytes of those taken in
			sent   bool
			whole  []byte // d, verified
		)
		err := ff.GetManyFollow(bg, []object.Digest{d}, followBytes, func(_ int, b []byte, err error) {
			if err == nil && object.Sum(b) == d {
				whole = b
				if k, _ := object.KindOf(b); k == object.KindTree {
					// A mount's first look: nothing beneath is held yet,
					// and asking the store a hundred times would delay
					// the mount.
					tree, want = true, subtrees(b)
				} else {
					// The master sends these whether or not they are
					// held; what this process knows it holds is left
					// to the store, at no cost to the open.
					for _, ch := range FirstChunks(b, followBytes) {
						if !c.store.HasKnown(ch) {
							want = append(want, ch)
						}
					}
				}
				for _, w := range want {
					wanted[w] = true
				}
				c.fresh.expect(want)
			}
			head <- result{b, whole != nil, err}
			sent = true
		}, func(fd object.Digest, b []byte) {
			// A tree deeper down is taken in too, up to the bound: the
			// master walks them breadth first.
			if !wanted[fd] && (!tree || took >= followBytes) {
				return
			}
			if !c.followedWhole(fd, b) {
				return
			}
			if k, _ := object.KindOf(b); tree && k != object.KindTree {
				return
			}
			took += int64(len(b))
			if wanted[fd] {
				c.fresh.putOnce(fd, b)
			}
			if c.keep(fd, b) == nil {
				c.fresh.stored(fd)
			}
		})
		c.fresh.drop(want)
		if whole != nil {
			if err := c.store.PutCachedAs(d, whole); err != nil {
				c.log.Warn("could not keep a fetched object in the cache", "object", d.String(), "err", err)
			}
		}
		if !sent {
			if err == nil {
				// The call ended well without d: a master that breaks
				// the protocol, not one that sent d damaged. Its Get,
				// below, gives d or says why not.
				err = fmt.Errorf("GetMany of %s ended without it", d.Short())
			}
			head <- result{nil, false, err}
		}
	}()
	select {
	case r := <-head:
		// A master that lacks d, or refused the call for another reason
		// than its being out of reach, is asked with Get: its answer
		// says why (a version no longer kept), or the object.
		if r.err != nil && ctx.Err() == nil && !errors.Is(r.err, ErrUnavailable) && !errors.Is(r.err, ErrUnauthenticated) {
			b, err := c.f.Get(ctx, d)
			return b, false, err
		}
		return r.b, r.stores, r.err
	case <-ctx.Done():
		return nil, false, fmt.Errorf("get %s: %w (%w)", d.Short(), ErrUnavailable, ctx.Err())
	}
}

// sharedUnlock lets a cache lock go once every holder is done with it.
type sharedUnlock struct {
	mu     sync.Mutex
	n      int
	unlock func()
}

func (s *sharedUnlock) hold() {
	s.mu.Lock()
	s.n++
	s.mu.Unlock()
}

func (s *sharedUnlock) done() {
	s.mu.Lock()
	s.n--
	last := s.n == 0
	s.mu.Unlock()
	if last {
		s.unlock()
	}
}

// followedWhole reports whether b, sent after what was asked for, hashes
// to fd; one that does not is counted and logged, and left to its reader
// to fetch itself.
func (c *Cache) followedWhole(fd object.Digest, b []byte) bool {
	if object.Sum(b) == fd {
		return true
	}
	c.corrupt.Add(1)
	c.log.Error("object from master does not match its digest; its reader fetches it again",
		"object", fd.String(), "master", c.f.Addr())
	return false
}

// keep stores b, fetched and verified as d, in the cache, and counts it:
// the bytes fetched, and eviction's tally.
func (c *Cache) keep(d object.Digest, b []byte) error {
	if err := c.store.PutCachedAs(d, b); err != nil {
		return err
	}
	c.bytes.Add(int64(len(b)))
	c.fetched(int64(len(b)))
	return nil
}
