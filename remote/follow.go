package remote

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/cowfs/cowfs/cow/object"
)

// A followFetcher sends, after a file object, the chunks its reader reads
// first, in the same call (*Client, through GetMany's follow). A bucket
// has no such call: its reads of small objects are batched by packs.
type followFetcher interface {
	GetManyFollow(ctx context.Context, ds []object.Digest, follow int64, got func(i int, b []byte, err error), fol func(d object.Digest, b []byte)) error
}

var _ followFetcher = (*Client)(nil)

// getFollowing gets file object d, unverified, as soon as it is whole;
// the call goes on in the background for the chunks holding the file's
// first followBytes, which are verified, kept in memory for their reader
// and stored as they come. A file opened cold is then one round trip
// before its first read is served, not two. A reader of one of those
// chunks meanwhile waits for it (freshObjects) rather than fetching it
// again; so does another process sharing the store, which waits for d's
// lock, held by the caller, and for d itself: when stores is true, d, which
// came whole, is stored by getFollowing after those chunks, not by the
// caller, so that a process that finds d in the store finds them too.
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
	go func() {
		defer release()
		defer cancel()
		var (
			want  []object.Digest
			sent  bool
			whole []byte // d, verified
		)
		err := ff.GetManyFollow(bg, []object.Digest{d}, followBytes, func(_ int, b []byte, err error) {
			if err == nil && object.Sum(b) == d {
				whole = b
				for _, ch := range followed(b, followBytes) {
					if ok, _ := c.store.Has(bg, ch); !ok {
						want = append(want, ch)
					}
				}
				c.fresh.expect(want)
			}
			head <- result{b, whole != nil, err}
			sent = true
		}, func(fd object.Digest, b []byte) {
			if !slices.Contains(want, fd) {
				return
			}
			if object.Sum(b) != fd {
				c.corrupt.Add(1)
				c.log.Error("object from master does not match its digest; its reader fetches it again",
					"object", fd.String(), "master", c.f.Addr())
				return
			}
			c.fresh.put(fd, b)
			if c.store.PutCachedAs(fd, b) == nil {
				c.bytes.Add(int64(len(b)))
				c.fetched(int64(len(b)))
			}
		})
		c.fresh.drop(want)
		if whole != nil {
			if err := c.store.PutCachedAs(d, whole); err != nil {
				c.log.Warn("could not keep a fetched object in the cache", "object", d.String(), "err", err)
			}
		}
		if !sent {
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
