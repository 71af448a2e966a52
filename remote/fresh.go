package remote

import (
	"runtime/debug"
	"sync"
	"time"

	"github.com/cowfs/cowfs/cow/object"
)

// freshObjects holds the last objects fetched ahead of a sequential
// reader, verified, for the reader: the reader then does not read each
// 1 MiB chunk back from the store and hash it a second time, which was a
// third of the worker's CPU on a cold read of a big file. An object read
// stays until newer ones push it out: the kernel's read-ahead asks for
// the end of one chunk after the start of the next, and each such read
// went back to the store. At most freshBytes (or max): the oldest of
// those taken go first; one not taken yet goes only past twice that,
// since its reader would read it back from the store and hash it again
// (a trace's replay and read-ahead, together ahead of one reader or each
// ahead of its own, can hold more than the bound). All of them go once
// none was put or taken for freshIdle.
//
// What came after a file object or a tree (getFollowing: a file's first
// chunk, the trees beneath a version's root) is held for one reader only
// (putOnce): it takes the bytes and keeps them (a file's last chunk, a
// tree decoded), and held on they were the larger part of a mount's
// memory, to its end, and each a new piece of memory the process had to
// fault in, where bytes let go are used again.
//
// An object fetched into a buffer of the pool (Client.GetManyGiven) goes
// back to the pool once let go, unless someone was handed it: a reader
// that reads it in place (GetPinned) pins it until it is done, which
// costs no copy; a reader with a buffer of its own (GetInto) gets a copy,
// which costs less than new memory for each chunk would (a page fault
// for every page, then the collector's sweep).
type freshObjects struct {
	mu sync.Mutex
	m  map[object.Digest]*freshObject
	// once marks what goes at its first take, once stored.
	once map[object.Digest]onceState
	// order is oldest first; an object let go leaves m and stays here
	// until the front reaches it or the list is compacted. Each place
	// names the entry it was made for: an object let go and put again
	// is a new entry, and its old place is not its own.
	order []freshRef
	// taken is, oldest first, the objects taken since they were put:
	// the first to go. As order, it may name objects let go.
	taken []freshRef
	// puts counts the entries made, to number them.
	puts uint64
	size int
	// last is when an object was last put or taken; idle, while objects
	// are held, lets them all go once that is freshIdle ago.
	last time.Time
	idle *time.Timer
	// idleAfter, if set, is freshIdle for a test.
	idleAfter time.Duration
	// wait holds a channel for each object read-ahead is fetching,
	// closed once it is verified and held, or the fetch gave up on it.
	wait map[object.Digest]chan struct{}
	// free, if set, is giveBack for a test.
	free func(b []byte)
	// max is how many bytes are held at most; 0: freshBytes.
	max int
}

// A freshRef is a place in freshObjects' order or taken: d, if it is
// still held as the put numbered put. A number, not the entry: a place
// let go stays in the lists a while, and must not keep the bytes.
type freshRef struct {
	d   object.Digest
	put uint64
}

// A freshObject is one object held.
type freshObject struct {
	b []byte
	// pins counts those reading b outside f.mu: readers copying it
	// out, and the fetch that put it until it is stored.
	pins int
	// pooled says b goes back to the pool once let go and unpinned;
	// cleared once b is handed to anyone, who may keep it.
	pooled bool
	// gone says b was let go while pinned: the last unpin gives it back.
	gone bool
	// taken says a reader took b (or the cache got it): it goes first.
	taken bool
	// put numbers this entry among freshObjects' puts.
	put uint64
}

// expect notes that ds are being fetched ahead.
func (f *freshObjects) expect(ds []object.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range ds {
		if _, ok := f.m[d]; ok {
			continue
		}
		if _, ok := f.wait[d]; !ok {
			if f.wait == nil {
				f.wait = map[object.Digest]chan struct{}{}
			}
			f.wait[d] = make(chan struct{})
		}
	}
}

// drop lets readers of ds stop waiting: the fetch ahead is over.
func (f *freshObjects) drop(ds []object.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, d := range ds {
		f.release(d)
	}
}

func (f *freshObjects) release(d object.Digest) {
	if ch, ok := f.wait[d]; ok {
		close(ch)
		delete(f.wait, d)
	}
}

// waiter returns what closes once d, fetched ahead, is held or given up
// on; nil if no fetch ahead has it.
func (f *freshObjects) waiter(d object.Digest) <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	if ch, ok := f.wait[d]; ok {
		return ch
	}
	return nil
}

// freshBytes is what a cache holds at most with the read-ahead a master
// gets: the trace's lead and the chunks read-ahead keeps in flight. A
// cache whose fetcher asks for more read-ahead (aheadFetcher) holds that
// much more, so that what it fetched is not pushed out before its
// reader gets to it.
const freshBytes = traceLead + aheadGroups*object.ChunkGroup*object.ChunkSize

// limit is f.max, or freshBytes.
func (f *freshObjects) limit() int {
	if f.max > 0 {
		return f.max
	}
	return freshBytes
}

// freshIdle is how long held objects stay once nothing is put or taken:
// a mount that went quiet after a sequential read gives its memory back,
// and a reader that comes later reads from the store.
const freshIdle = 5 * time.Second

// idleFor is freshIdle, or what a test set.
func (f *freshObjects) idleFor() time.Duration {
	if f.idleAfter > 0 {
		return f.idleAfter
	}
	return freshIdle
}

// expire lets every held object go if none was put or taken for
// freshIdle; else it looks again when that will be so.
func (f *freshObjects) expire() {
	f.mu.Lock()
	if wait := f.idleFor() - time.Since(f.last); wait > 0 {
		f.idle.Reset(wait)
		f.mu.Unlock()
		return
	}
	for _, e := range f.m {
		// To the collector, which gives memory back, not to the pool.
		e.pooled = false
	}
	// New maps: clearing keeps a map's buckets.
	f.m, f.once = nil, nil
	f.order, f.taken, f.size, f.idle = nil, nil, 0, nil
	f.mu.Unlock()
	// The runtime would give the pages back to the system over minutes;
	// a quiet mount has time for one collection now.
	debug.FreeOSMemory()
}

func (f *freshObjects) put(d object.Digest, b []byte) { f.add(d, b, false, false) }

// hold is put for b from the pool, pinned for the caller until it calls
// unpin; nil if b is not held (too big, or d held already), and then b
// is still the caller's.
func (f *freshObjects) hold(d object.Digest, b []byte) *freshObject {
	return f.add(d, b, false, true)
}

// unpin ends a pin of e; b goes back to the pool if e was let go and
// nobody else reads it.
func (f *freshObjects) unpin(e *freshObject) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e.pins--
	if e.gone && e.pins == 0 {
		f.giveBack(e)
	}
}

// giveBack returns e's bytes to the pool if they are the pool's and
// nobody was handed them; e.pins is 0.
func (f *freshObjects) giveBack(e *freshObject) {
	if !e.pooled {
		return
	}
	if f.free != nil {
		f.free(e.b)
	} else {
		giveBack(e.b)
	}
	e.pooled, e.b = false, nil
}

// onceState is where an object held for one reader is: it goes once
// both taken and in the store, so that a second reader that comes before
// the store has it finds it here, not at the master.
type onceState uint8

const (
	onceHeld onceState = iota + 1
	onceTaken
	onceStored
)

// putOnce is put, for one reader: b goes once a reader took it and
// stored says the store has it.
func (f *freshObjects) putOnce(d object.Digest, b []byte) { f.add(d, b, true, false) }

// stored notes that the store has d: held for one reader and taken, it
// goes.
func (f *freshObjects) stored(d object.Digest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch f.once[d] {
	case onceTaken:
		f.remove(d)
	case onceHeld:
		f.once[d] = onceStored
	}
}

// add holds b as d; with pooled, b is the pool's and what add returns is
// pinned (hold).
func (f *freshObjects) add(d object.Digest, b []byte, once, pooled bool) *freshObject {
	f.mu.Lock()
	defer f.mu.Unlock()
	defer f.release(d)
	limit := f.limit()
	if len(b) > limit {
		return nil
	}
	if _, ok := f.m[d]; ok {
		if !once {
			delete(f.once, d) // held for every reader now
		}
		return nil
	}
	for f.size+len(b) > limit {
		old, ok := f.first(f.size+len(b) > 2*limit)
		if !ok {
			break
		}
		f.remove(old)
	}
	if f.m == nil {
		f.m = map[object.Digest]*freshObject{}
		f.once = map[object.Digest]onceState{}
	}
	f.order = f.compact(f.order)
	f.taken = f.compact(f.taken)
	f.puts++
	e := &freshObject{b: b, pooled: pooled, put: f.puts}
	if pooled {
		e.pins = 1
	}
	f.m[d] = e
	if once {
		f.once[d] = onceHeld
	}
	f.order = append(f.order, freshRef{d, e.put})
	f.size += len(b)
	f.last = time.Now()
	if f.idle == nil {
		f.idle = time.AfterFunc(f.idleFor(), f.expire)
	}
	return e
}

// first returns the held object to let go first: the oldest of those
// taken, or, with any, the oldest of all when none was taken.
func (f *freshObjects) first(any bool) (object.Digest, bool) {
	for len(f.taken) > 0 {
		r := f.taken[0]
		f.taken = f.taken[1:]
		if f.at(r) {
			return r.d, true
		}
	}
	for any && len(f.order) > 0 {
		r := f.order[0]
		f.order = f.order[1:]
		if f.at(r) {
			return r.d, true
		}
	}
	return object.Digest{}, false
}

// at reports whether r's object is still held as the entry r was made
// for.
func (f *freshObjects) at(r freshRef) bool {
	e, ok := f.m[r.d]
	return ok && e.put == r.put
}

// compact returns list (order or taken) without the objects let go once
// they are most of it.
func (f *freshObjects) compact(list []freshRef) []freshRef {
	if len(list) <= 2*len(f.m)+64 {
		return list
	}
	kept := list[:0]
	for _, r := range list {
		if f.at(r) {
			kept = append(kept, r)
		}
	}
	clear(list[len(kept):])
	return kept
}

// takenLocked notes that e, held as d, was taken; f.mu is held.
func (f *freshObjects) takenLocked(d object.Digest, e *freshObject) {
	if !e.taken {
		e.taken = true
		f.taken = append(f.taken, freshRef{d, e.put})
	}
}

// remove lets d go, if held.
func (f *freshObjects) remove(d object.Digest) {
	if e, ok := f.m[d]; ok {
		f.size -= len(e.b)
		delete(f.m, d)
		delete(f.once, d)
		e.gone = true
		if e.pins == 0 {
			f.giveBack(e)
		}
	}
}

// holds reports whether d is held.
func (f *freshObjects) holds(d object.Digest) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.m[d]
	return ok
}

// get returns d's bytes if they are held; the caller may keep them.
func (f *freshObjects) get(d object.Digest) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.m[d]
	if !ok {
		return nil, false
	}
	e.pooled = false
	f.takenLocked(d, e)
	return e.b, true
}

// take is get for a reader: what was held for one reader goes. An object
// from the pool that fits in buf is copied into it, and what take
// returns is in buf.
func (f *freshObjects) take(d object.Digest, buf []byte) ([]byte, bool) {
	b, _, ok := f.takeFor(d, buf, false)
	return b, ok
}

// takePinned is take for a reader that reads the bytes where they are
// held instead of copying them out: an object from the pool comes pinned
// (e is set), and stays the pool's once the reader calls unpin(e), which
// it must do once, when it reads no more of them. With e nil, the bytes
// are the reader's to keep.
func (f *freshObjects) takePinned(d object.Digest) (b []byte, e *freshObject, ok bool) {
	return f.takeFor(d, nil, true)
}

func (f *freshObjects) takeFor(d object.Digest, buf []byte, pin bool) ([]byte, *freshObject, bool) {
	f.mu.Lock()
	e, ok := f.m[d]
	if !ok {
		f.mu.Unlock()
		return nil, nil, false
	}
	f.last = time.Now()
	f.takenLocked(d, e)
	pinned := e.pooled && (pin || (buf != nil && len(e.b) <= cap(buf)))
	if pinned {
		e.pins++
	} else {
		e.pooled = false
	}
	switch f.once[d] {
	case onceStored:
		f.remove(d)
	case onceHeld:
		f.once[d] = onceTaken
	}
	f.mu.Unlock()
	switch {
	case !pinned:
		return e.b, nil, true
	case pin:
		return e.b, e, true
	}
	buf = buf[:copy(buf[:len(e.b)], e.b)]
	f.unpin(e)
	return buf, nil, true
}
