package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/pb"
)

// maxMany bounds the digests of one GetMany call.
const maxMany = 1024

// GetMany streams the requested objects, unverified (see Get).
func (s *Server) GetMany(req *pb.GetManyRequest, stream pb.Export_GetManyServer) error {
	if len(req.GetDigests()) > maxMany {
		return status.Errorf(codes.InvalidArgument, "more than %d digests in one call", maxMany)
	}
	n := len(req.GetDigests())
	ds := make([]object.Digest, n)
	for i, raw := range req.GetDigests() {
		d, err := digestOf(raw)
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "digest %d: %v", i, err)
		}
		ds[i] = d
	}
	// With follow, an object comes off the disk with what lies right
	// before it: read cold, a file object waits for its own read, then
	// its chunk's, which the scan stored right before it.
	follow := req.GetFollow()
	// One look at what gc removed, for the whole call.
	rd, err := s.store.Reads()
	if err != nil {
		return status.Errorf(codes.Internal, "object store: %v", err)
	}
	ahead := &sendAhead{willNeed: func(d object.Digest) int64 { return rd.WillNeed(d, follow) }}
	for i, d := range ds {
		ahead.upTo(ds, i)
		mb, b, err := s.readSend(rd, d)
		if errors.Is(err, object.ErrNotFound) {
			if err := stream.Send(&pb.GetManyResponse{Index: int32(i), Missing: true}); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return status.Errorf(codes.Internal, "object %s: %v", d.Short(), err)
		}
		next := followed(b, follow)
		// The object's reader waits for what follows it: its disk
		// read starts before the object is sent.
		ahead.all(next)
		err = s.sendObject(stream, int32(i), nil, d, mb)
		if err == nil {
			err = s.sendFollowed(stream, rd, int32(n), b, next, follow)
		}
		mb.Free()
		if err != nil {
			return err
		}
	}
	return nil
}

// aheadBytes bounds what a GetMany call asks the disk to read ahead of the
// object it sends: enough to keep a cold disk busy while it sends, little
// enough that a call of many chunks does not fill the page cache with
// what it sends much later.
const aheadBytes = 8 << 20

// sendAhead asks the store's disk for a call's next objects while the
// call sends the one before (object.DirStore.WillNeed).
type sendAhead struct {
	// willNeed starts the read of one object and returns its size.
	willNeed func(object.Digest) int64
	// next is the first of the call's objects not yet asked for; bytes
	// what was asked for beyond the object being sent.
	next  int
	bytes int64
	sizes []int64
}

// upTo asks for ds[i], about to be read, unless it was asked for ahead,
// and for the objects after it, up to aheadBytes.
func (a *sendAhead) upTo(ds []object.Digest, i int) {
	if a.sizes == nil {
		a.sizes = make([]int64, len(ds))
	}
	if i < a.next {
		a.bytes -= a.sizes[i]
	} else {
		a.willNeed(ds[i]) // not ahead: with what lies before it
		a.next = i + 1
	}
	for a.next < len(ds) && a.bytes < aheadBytes {
		a.sizes[a.next] = a.willNeed(ds[a.next])
		a.bytes += a.sizes[a.next]
		a.next++
	}
}

// all asks for ds, outside the call's own list (what follows an object).
func (a *sendAhead) all(ds []object.Digest) {
	var n int64
	for _, d := range ds {
		if n >= aheadBytes {
			return
		}
		n += a.willNeed(d)
	}
}

// sendFollowed sends, after the requested object b, what its reader asks
// for next, up to follow bytes (GetManyRequest.follow): for a file object
// the chunks holding its first bytes, for a tree the trees beneath it,
// breadth first. The client checks each against its digest, so a damaged
// one costs it a fetch of its own; one this store lacks is left out.
func (s *Server) sendFollowed(stream pb.Export_GetManyServer, rd object.Reads, index int32, b []byte, queue []object.Digest, follow int64) error {
	if len(queue) == 0 {
		return nil
	}
	k, _ := object.KindOf(b)
	seen := map[object.Digest]bool{}
	for sent := int64(0); len(queue) > 0 && sent < follow; {
		d := queue[0]
		queue = queue[1:]
		if seen[d] {
			continue
		}
		seen[d] = true
		mb, ob, err := s.readSend(rd, d)
		if err != nil {
			continue
		}
		err = s.sendObject(stream, index, d[:], d, mb)
		sent += int64(len(ob))
		if err == nil && k == object.KindTree {
			queue = append(queue, subtrees(ob)...)
		}
		mb.Free()
		if err != nil {
			return err
		}
	}
	return nil
}

// followed returns what follows object b, up to follow bytes, to be sent
// after it (sendFollowed): the chunks of a file object, the trees beneath
// a tree.
func followed(b []byte, follow int64) []object.Digest {
	if follow <= 0 {
		return nil
	}
	switch k, _ := object.KindOf(b); k {
	case object.KindFile:
		return FirstChunks(b, follow)
	case object.KindTree:
		return subtrees(b)
	}
	return nil
}

// sendObject sends object d, held by b, in pieces of the call's index;
// digest, if set, goes on the first. Each piece is a reference to b of
// its own, which gRPC frees once it has written it (outPiece).
func (s *Server) sendObject(stream pb.Export_GetManyServer, index int32, digest []byte, d object.Digest, b mem.Buffer) error {
	s.countGet(d)
	size := b.Len()
	for off := 0; ; {
		end := min(off+getPiece, size)
		p := &outPiece{index: index, size: int64(size), data: b.Slice(off, end)}
		if off == 0 {
			p.digest = digest
		}
		if err := stream.SendMsg(p); err != nil {
			return err
		}
		s.bytes.Add(int64(end - off))
		if off = end; off == size {
			return nil
		}
	}
}

// FirstChunks returns the chunks holding the first n bytes of the file
// object b, each once, holes left out; nil if b is no file object. Master
// and client both use it: the client waits, in readers of these chunks,
// for the master to send them; a bucket's fetcher (s3store) sends those
// it has at hand.
func FirstChunks(b []byte, n int64) []object.Digest {
	f, err := object.DecodeFile(b)
	if err != nil {
		return nil
	}
	var ds []object.Digest
	for i, c := range f.Chunks {
		if int64(i)*object.ChunkSize >= n {
			break
		}
		if !c.IsZero() && !slices.Contains(ds, c) {
			ds = append(ds, c)
		}
	}
	return ds
}

// subtrees returns the trees of the directories in tree b, in its order;
// nil if b is no tree.
func subtrees(b []byte) []object.Digest {
	t, err := object.DecodeTree(b)
	if err != nil {
		return nil
	}
	var ds []object.Digest
	for _, e := range t.Entries {
		if e.Mode&unix.S_IFMT == unix.S_IFDIR && !e.Object.IsZero() {
			ds = append(ds, e.Object)
		}
	}
	return ds
}

// GetMany fetches objects in one call and hands each, unverified, to got
// as it completes. A broken call is retried for the objects not yet had.
// Objects the master lacks are reported as ErrNotFound errors to got.
//
// A stream that moves is not a hang: an attempt ends when no piece has
// arrived for CallTimeout, not CallTimeout after it began, and the call
// gives up after Timeout without a whole object. A batch of megabytes
// over a slow link takes as long as it takes; a silent master is still
// given up on within the usual bounds (or ctx's deadline, a reader's
// --io-timeout).
func (c *Client) GetMany(ctx context.Context, ds []object.Digest, got func(i int, b []byte, err error)) error {
	return c.getMany(ctx, ds, 0, bufsOwned, got, nil)
}

// GetManyLent is GetMany, but lends each object to got: b is valid only
// until got returns, and its memory receives a later object. For a
// caller that stores what it fetches and keeps no reference (a warmup):
// an object in new memory costs a page fault for every page it fills,
// and the collector's sweep, more than its copy from the wire.
func (c *Client) GetManyLent(ctx context.Context, ds []object.Digest, got func(i int, b []byte, err error)) error {
	return c.getMany(ctx, ds, 0, bufsLent, got, nil)
}

// GetManyGiven is GetMany, but each object comes in a buffer of the
// process's buffer pool (package bufpool), which got may give back with
// giveBack once nothing reads it, or keep: for a caller that holds
// objects a while and then lets them go (freshObjects), whose objects
// would otherwise each come in new memory.
func (c *Client) GetManyGiven(ctx context.Context, ds []object.Digest, got func(i int, b []byte, err error)) error {
	return c.getMany(ctx, ds, 0, bufsGiven, got, nil)
}

// bufUse is whose the buffer an object is received into is.
type bufUse uint8

const (
	bufsOwned bufUse = iota // new memory, the caller's (GetMany)
	bufsLent                // the pool's, back once got returns (GetManyLent)
	bufsGiven               // the pool's, the caller's (GetManyGiven)
)

// GetManyFollow is GetMany, but the master sends, after each requested
// object, what its reader asks for next, about follow bytes of it (see
// Server.sendFollowed), and GetManyFollow hands each, unverified, to fol
// as it completes. A master that
// predates follow sends none; a follower must not count on them.
func (c *Client) GetManyFollow(ctx context.Context, ds []object.Digest, follow int64, got func(i int, b []byte, err error), fol func(d object.Digest, b []byte)) error {
	return c.getMany(ctx, ds, follow, bufsOwned, got, fol)
}

// GetManyFollowLent is GetManyFollow, but lends got and fol what it
// hands them, as GetManyLent lends got: for a caller that stores what
// it fetches, followed objects too, and keeps no reference.
func (c *Client) GetManyFollowLent(ctx context.Context, ds []object.Digest, follow int64, got func(i int, b []byte, err error), fol func(d object.Digest, b []byte)) error {
	return c.getMany(ctx, ds, follow, bufsLent, got, fol)
}

// getMany is GetManyFollow; bufs says whose what it hands to got and
// fol is.
func (c *Client) getMany(ctx context.Context, ds []object.Digest, follow int64, bufs bufUse, got func(i int, b []byte, err error), fol func(d object.Digest, b []byte)) error {
	done := make([]bool, len(ds))
	what := fmt.Sprintf("get %d objects", len(ds))
	last := time.Now() // the last whole object
	for {
		progressed := false
		// An attempt runs under the caller's ctx and its own watchdog,
		// not retryFor's bounds, which would cut a stream that moves
		// (and leave what the link still holds of it in the way of
		// the next attempt); those bounds decide only whether to try
		// again.
		err := c.retryFor(ctx, what, c.cfg.Timeout, c.cfg.Timeout, func(context.Context) error {
			return c.getManyAttempt(ctx, ds, done, follow, bufs, func(i int, b []byte, err error) {
				progressed, last = true, time.Now()
				got(i, b, err)
			}, fol)
		})
		// Another round only for a call that was moving: one that went
		// silent has had its Timeout since the last object, and what
		// waits for it (a reader behind read-ahead) must not wait twice.
		if err == nil || !progressed || ctx.Err() != nil || time.Since(last) >= c.cfg.Timeout {
			return err
		}
		// Slow but moving: the call goes on for what is left, and
		// what retryFor counted as a failure was not one.
		c.failures.Add(-1)
	}
}

// getManyAttempt is one GetMany call for the objects not yet done.
func (c *Client) getManyAttempt(ctx context.Context, ds []object.Digest, done []bool, follow int64, bufs bufUse, got func(i int, b []byte, err error), fol func(d object.Digest, b []byte)) error {
	var idx []int
	req := &pb.GetManyRequest{Follow: follow}
	for i := range ds {
		if !done[i] {
			idx = append(idx, i)
			req.Digests = append(req.Digests, ds[i][:])
		}
	}
	if len(idx) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var idle atomic.Bool
	watchdog := time.AfterFunc(c.cfg.CallTimeout, func() { idle.Store(true); cancel() })
	defer watchdog.Stop()
	st, err := c.ex.GetMany(ctx, req, grpc.ForceCodecV2(pieceCodec{}))
	if err != nil {
		return idleErr(&idle, err)
	}
	cur, want := -1, int64(0)
	var buf []byte
	// A lent or given object, followed ones too, is read into a buffer
	// of gRPC's pool (newBuf, which notes it in *p); a lent one goes back
	// to it once got (or fol) returns. One cut short is left to the
	// collector.
	pool := mem.DefaultBufferPool()
	var bp *[]byte
	newBuf := func(n int64, p **[]byte) []byte {
		if bufs == bufsOwned {
			return make([]byte, 0, n)
		}
		*p = pool.Get(int(n))
		return (**p)[:0]
	}
	// A followed object, between two requested ones: its digest and
	// bytes so far; fnew says into began it with the piece being read.
	var fd object.Digest
	var fbuf []byte
	var fbp *[]byte
	fwant := int64(-1)
	fnew := false
	// into places a piece's data at the end of the object it continues
	// or begins, when it fits there; the checks below refuse any other.
	into := func(p *piece, n int) []byte {
		k := int(p.index)
		if k == len(idx) && follow > 0 && cur < 0 && !p.missing {
			if fwant < 0 {
				if !objectSize(p.size) || int64(n) > p.size {
					return nil
				}
				fwant, fbuf, fnew = p.size, newBuf(p.size, &fbp), true
			} else if int64(len(fbuf)+n) > fwant {
				return nil
			}
			fbuf = fbuf[:len(fbuf)+n]
			return fbuf[len(fbuf)-n:]
		}
		if k < 0 || k >= len(idx) || p.missing || (cur >= 0 && k != cur) {
			return nil
		}
		if cur < 0 {
			if !objectSize(p.size) {
				return nil
			}
			cur, want, buf = k, p.size, newBuf(p.size, &bp)
		}
		if int64(len(buf)+n) > want {
			return nil
		}
		buf = buf[:len(buf)+n]
		return buf[len(buf)-n:]
	}
	r := piece{into: into}
	for {
		err := st.RecvMsg(&r)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return idleErr(&idle, err)
		}
		if !watchdog.Stop() {
			return idleErr(&idle, context.Canceled)
		}
		watchdog.Reset(c.cfg.CallTimeout)
		k := int(r.index)
		if k == len(idx) && follow > 0 && cur < 0 {
			// The first piece of a followed object, and only it, has
			// its digest, whether into began the object with it or not.
			began := fnew
			fnew = false
			if r.digest != nil {
				if (fwant >= 0 && !began) || len(r.digest) != len(fd) || !objectSize(r.size) {
					return status.Errorf(codes.Internal, "GetMany: malformed followed object")
				}
				copy(fd[:], r.digest)
				if !began {
					fwant, fbuf = r.size, newBuf(r.size, &fbp)
				}
			} else if began {
				return status.Errorf(codes.Internal, "GetMany: followed object without its digest")
			}
			if !r.placed {
				if fwant < 0 || int64(len(fbuf)+len(r.data)) > fwant {
					return status.Errorf(codes.Internal, "GetMany: followed piece out of order")
				}
				fbuf = append(fbuf, r.data...)
			}
			if int64(len(fbuf)) == fwant {
				if fol != nil {
					fol(fd, fbuf)
				}
				if bufs == bufsLent {
					pool.Put(fbp)
				}
				fwant, fbuf, fbp = -1, nil, nil
			}
			continue
		}
		if fwant >= 0 {
			return status.Errorf(codes.Internal, "GetMany: followed object cut short")
		}
		if k < 0 || k >= len(idx) || (cur >= 0 && k != cur && int64(len(buf)) != want) {
			return status.Errorf(codes.Internal, "GetMany: piece out of order")
		}
		i := idx[k]
		if r.missing {
			done[i] = true
			got(i, nil, fmt.Errorf("%s: %w", ds[i].Short(), object.ErrNotFound))
			continue
		}
		if !r.placed {
			if k != cur {
				if !objectSize(r.size) {
					return status.Errorf(codes.Internal, "GetMany: object of %d bytes", r.size)
				}
				cur, want, buf = k, r.size, newBuf(r.size, &bp)
			}
			buf = append(buf, r.data...)
		}
		if int64(len(buf)) > want {
			return status.Errorf(codes.Internal, "object longer than its size")
		}
		if int64(len(buf)) == want {
			done[i] = true
			got(i, buf, nil)
			if bufs == bufsLent {
				pool.Put(bp)
			}
			bp = nil
			cur = -1
		}
	}
}

// idleErr turns the error of a stream its watchdog cancelled into the
// DeadlineExceeded a bounded call would have had, so that it is retried.
func idleErr(idle *atomic.Bool, err error) error {
	if idle.Load() {
		return status.Error(codes.DeadlineExceeded, "no data from the master for the call timeout")
	}
	return err
}

// fetchMany brings the objects of ds that the store lacks into it, in one
// call for all those no other fetch (in this process or another) is
// working on, and in a second for the rest once those fetches let go.
func (c *Cache) fetchMany(ctx context.Context, ds []object.Digest) error {
	return c.fetchManyFor(ctx, ds, false, 0, nil)
}

// fetchManyEach is fetchMany that hands each object it fetches to each,
// verified and stored, lent (valid only while each runs): a caller that
// decodes what it fetches need not read it back. Objects the store had
// already, and those fetched again one by one (damaged on the way), are
// not handed to each; the caller reads them from the store. With follow,
// what follows each (fetchBatch) is stored too, not handed to each.
func (c *Cache) fetchManyEach(ctx context.Context, ds []object.Digest, follow int64, each func(d object.Digest, b []byte)) error {
	return c.fetchManyFor(ctx, ds, false, follow, each)
}

// fetchManyFor is fetchMany; with ahead, what it fetches is also kept in
// memory for the reader it was fetched ahead of (freshObjects); each, if
// set, is as for fetchManyEach (not with ahead), follow as for
// fetchBatch. The
// objects whose lock another fetch held (of this process, or another
// process's of an object in the same stripe) are fetched in a second
// call once their locks are had, and those that came damaged one by one
// (Get, which asks the master to check its copy).
func (c *Cache) fetchManyFor(ctx context.Context, ds []object.Digest, ahead bool, follow int64, each func(d object.Digest, b []byte)) error {
	busy, damaged, err := c.fetchBatch(ctx, ds, ahead, false, follow, each)
	first := err
	if len(busy) > 0 && ctx.Err() == nil {
		// Another batch (prefetch runs several), a reader or another
		// process holds their locks: wait for each, then one call
		// for all, where one call each cost a round trip apiece.
		_, more, err := c.fetchBatch(ctx, busy, ahead, true, follow, each)
		damaged = append(damaged, more...)
		if err != nil && first == nil {
			first = err
		}
	}
	for _, d := range damaged {
		if _, err := c.get(ctx, d); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// fetchBatch fetches in one call the objects of ds that the store lacks,
// each once. It takes the lock of each first (Cache.lock). Without wait,
// an object whose lock another fetch holds is left out and returned in
// busy; with wait, the locks are waited for in digest order, which is
// their stripes' order (a stripe is a digest's first two bytes), so that
// two waiting batches, of this process or of two, never hold what the
// other waits for; within ctx. damaged are those
// that came not matching their digest. With follow, a master that can
// sends after each file object the chunks of its first follow bytes
// (GetManyFollow), which are verified and stored as they come; a reader
// of one of those waits for it rather than fetching it again. each, if
// set, is handed each requested object once stored (fetchManyEach).
func (c *Cache) fetchBatch(ctx context.Context, ds []object.Digest, ahead, wait bool, follow int64, each func(d object.Digest, b []byte)) (busy, damaged []object.Digest, err error) {
	if wait {
		ds = slices.Clone(ds)
		slices.SortFunc(ds, func(a, b object.Digest) int { return bytes.Compare(a[:], b[:]) })
	}
	// locks holds each object's lock until it is stored: a reader
	// waiting for one goes on as soon as it is there, not once the
	// whole batch is.
	locks := batchLocks{c: c}
	defer locks.release()
	var taken []object.Digest
	seen := map[object.Digest]bool{}
	for _, d := range ds {
		// What this process knows it holds is skipped at no cost; the
		// rest is looked for in earnest once its lock is had.
		if seen[d] || c.store.HasKnown(d) {
			continue
		}
		seen[d] = true
		if wait {
			if lerr := locks.wait(ctx, d); lerr != nil {
				// ctx ended: what is left is not fetched.
				err = lerr
				break
			}
		} else if !locks.try(d) {
			busy = append(busy, d)
			continue
		}
		taken = append(taken, d)
	}
	// Fetched by another process before the locks were had? One look at
	// the store for all of them.
	var want []object.Digest
	has, herr := c.store.HasMany(taken)
	for i, d := range taken {
		if herr == nil && has[i] {
			locks.done(d)
			continue
		}
		want = append(want, d)
	}
	if ahead {
		// A reader of one of these waits for it to be verified, not
		// for its lock, which is held until the chunk is in the pack.
		c.fresh.expect(want)
	}
	var first error
	if len(want) > 0 {
		c.misses.Add(int64(len(want)))
		stop := c.activity.start()
		start := time.Now()
		ff, _ := c.f.(followFetcher)
		if ff == nil {
			follow = 0
		}
		// expected are the chunks coming after the file objects
		// (follow), which their readers wait for until the call ends.
		var expected []object.Digest
		// given: what got is handed is the pool's (GetManyGiven), held
		// for the reader it was fetched ahead of until pushed out, and
		// then back to the pool.
		pf, pooled := c.f.(poolFetcher)
		given := pooled && ahead && follow == 0
		got := func(i int, b []byte, err error) {
			d := want[i]
			if err == nil && object.Sum(b) != d {
				c.corrupt.Add(1)
				c.log.Error("object from master does not match its digest; fetching it again",
					"object", d.String(), "master", c.f.Addr())
				damaged = append(damaged, d)
				if given {
					giveBack(b)
				}
				return
			}
			if err == nil && follow > 0 {
				// Before the file object can be read: its reader's
				// next read finds the chunk expected.
				var chs []object.Digest
				for _, ch := range FirstChunks(b, follow) {
					if !c.store.HasKnown(ch) {
						chs = append(chs, ch)
					}
				}
				c.fresh.expect(chs)
				expected = append(expected, chs...)
			}
			if err == nil {
				// Verified: its reader may have it now. The pack write
				// that follows can only fail to keep it, and a crash
				// before it costs a fetch, never a wrong byte.
				var h *freshObject
				if given {
					h = c.fresh.hold(d, b)
				} else if ahead {
					c.fresh.put(d, b)
				}
				if err = c.keep(d, b); err == nil {
					locks.done(d)
					if each != nil {
						each(d, b)
					}
				}
				if h != nil {
					c.fresh.unpin(h)
				} else if given {
					giveBack(b)
				}
			}
			if err != nil && first == nil {
				first = err
			}
		}
		var gerr error
		if follow > 0 {
			fol := func(fd object.Digest, b []byte) {
				// Held in no lock stripe: another process may fetch
				// one too, and the pack then holds it twice.
				if c.followedWhole(fd, b) {
					c.keep(fd, b)
				}
				c.fresh.drop([]object.Digest{fd})
			}
			if lf, ok := c.f.(lentFollower); ok && !ahead {
				// What got and fol keep goes to the pack and to each,
				// which keep none of it: fetched into the pool's memory,
				// not new memory each (and, from a bucket, not copied
				// out of the run it was read in).
				gerr = lf.GetManyFollowLent(ctx, want, follow, got, fol)
			} else {
				gerr = ff.GetManyFollow(ctx, want, follow, got, fol)
			}
			c.fresh.drop(expected)
		} else if pooled && !ahead {
			// What got keeps goes to the pack, not to a reader.
			gerr = pf.GetManyLent(ctx, want, got)
		} else if given {
			gerr = pf.GetManyGiven(ctx, want, got)
		} else {
			gerr = c.f.GetMany(ctx, want, got)
		}
		stop()
		if c.onFetch != nil {
			c.onFetch(true, time.Since(start), gerr)
		}
		if gerr != nil && first == nil {
			first = gerr
		}
	}
	if ahead {
		// Before the damaged are fetched again: fetching one of those,
		// this goroutine must not wait for itself.
		c.fresh.drop(want)
	}
	if err == nil {
		err = first
	}
	return busy, damaged, err
}

// poolFetcher is a Fetcher that can fetch into buffers of the pool,
// lent (Client.GetManyLent) or given (Client.GetManyGiven).
type poolFetcher interface {
	GetManyLent(ctx context.Context, ds []object.Digest, got func(i int, b []byte, err error)) error
	GetManyGiven(ctx context.Context, ds []object.Digest, got func(i int, b []byte, err error)) error
}

// lentFollower is a followFetcher that can lend what it fetches, the
// objects asked for and those that follow them (Client.GetManyFollowLent).
type lentFollower interface {
	GetManyFollowLent(ctx context.Context, ds []object.Digest, follow int64, got func(i int, b []byte, err error), fol func(d object.Digest, b []byte)) error
}

var _ lentFollower = (*Client)(nil)

// batchLocks are the locks of the objects one batch holds and has not
// stored yet; a batch asks for each object once (fetchBatch's seen).
type batchLocks struct {
	c    *Cache
	held map[object.Digest]func()
}

// try takes d's lock for the batch; false if another fetch holds it.
func (l *batchLocks) try(d object.Digest) bool {
	unlock, ok := l.c.tryLock(d)
	if ok {
		l.add(d, unlock)
	}
	return ok
}

// wait is try that waits, within ctx, for a lock another fetch holds.
func (l *batchLocks) wait(ctx context.Context, d object.Digest) error {
	unlock, err := l.c.lock(ctx, d, false)
	if err == nil {
		l.add(d, unlock)
	}
	return err
}

func (l *batchLocks) add(d object.Digest, unlock func()) {
	if l.held == nil {
		l.held = map[object.Digest]func(){}
	}
	l.held[d] = unlock
}

// done gives back d's lock, taken with try or wait.
func (l *batchLocks) done(d object.Digest) {
	if unlock := l.held[d]; unlock != nil {
		unlock()
		delete(l.held, d)
	}
}

// release gives back every lock still held.
func (l *batchLocks) release() {
	for d, unlock := range l.held {
		unlock()
		delete(l.held, d)
	}
}
