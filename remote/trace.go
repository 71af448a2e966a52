package remote

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cowfs/cowfs/cow/object"
)

// Learned prefetch (decision 0064): a mount records the objects its tasks
// read, in the order first read; a later mount of the same export fetches
// them in that order in the background, ahead of its task. A trace names
// objects by digest, so it never changes what a read returns: a stale or
// wrong one costs only what it fetches.

// Bounds of a recorded trace: the first objects read, up to TraceObjects
// of them and TraceBytes of their bytes. A spider's import of its package
// tree is a few objects a file; its data files a chunk a MiB.
const (
	TraceObjects = 64 << 10
	TraceBytes   = 1 << 30
)

// Bounds of a replay. traceWorkers batches are in flight at a time, each
// of at most traceBatch objects and traceBatchBytes: a read of an object
// not in the trace shares the link with at most that much.
const (
	traceWorkers    = 2
	traceBatch      = 64
	traceBatchBytes = 8 << 20
	// A replay stops once its task has read traceStray objects the trace
	// does not list and traceStrayRatio times as many as it lists: the
	// trace is of another task, and what it would fetch is waste.
	traceStray      = 256
	traceStrayRatio = 4
	// traceLook bounds the entries a worker looks at for one batch.
	traceLook = 1024
	// traceLead bounds the bytes the replay fetched of entries past the
	// furthest one its task reached (what it found held does not
	// count: a warm worker's replay goes through its trace at once, and
	// waits for nothing). What it fetches is
	// held in memory for the task (freshObjects, as read-ahead's is), so
	// that the task does not read it back from the store and hash it
	// again; held no further than the task will soon read, it is not
	// pushed out first. freshObjects holds read-ahead's chunks beside
	// it.
	traceLead = 8 << 20
	// traceFar bounds, in the same way, the bytes of a confirmed replay
	// that goes on past its lead while its task leaves the link idle:
	// once the task has read traceConfirm of the trace's objects, and
	// no more objects it does not list than it does, the trace is of
	// this task; once it has then left the lead unread for traceIdle,
	// and does not wait for a fetch, it is slower than the link (a
	// spider importing its code before it reads its data), and the
	// replay fetches batches past the lead, one at a time, for as long
	// as the task goes on leaving its lead unread, so that the task,
	// when it gets there, finds its data cached. What it fetches past the lead is stored,
	// not held: the task reads it back from the store and hashes it
	// again, which costs far less than a fetch but more than what
	// read-ahead holds for a task that reads all the time, whose replay
	// therefore never goes past its lead. An unconfirmed replay stays
	// within its lead too, which bounds what a wrong trace costs.
	traceFar     = 256 << 20
	traceConfirm = 64
	traceIdle    = 20 * time.Millisecond
	// traceRoom is how far the task must read into the lead before a
	// replay that reached it goes on: woken at every object the task
	// reads, it would go on a file at a time, a call of two small
	// objects each (a file object and its chunk), and a call costs both
	// ends more than that.
	traceRoom = traceLead / 4
)

// TraceEntry is one object of a trace and its size in bytes.
type TraceEntry struct {
	Object object.Digest
	Size   int64
}

// A Trace is the objects a mount's tasks read, in the order first read.
type Trace struct {
	// Version is the version the trace was recorded over, for people
	// reading it: a replay fetches the same objects whatever the
	// version mounted.
	Version object.Digest
	Entries []TraceEntry
}

const traceMagic = "cowfs-trace 1"

// ReadTrace reads the trace at path. A file that is not a whole trace
// (cut short, damaged, of another format) is an error: its caller mounts
// without it.
func ReadTrace(path string) (*Trace, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseTrace(b, path)
}

// ParseTrace decodes a trace's text (WriteTrace's, EncodeTrace's), which
// must be whole; name says where it came from, in errors.
func ParseTrace(b []byte, name string) (*Trace, error) {
	bad := func(why string) (*Trace, error) {
		return nil, fmt.Errorf("trace %s: %s: %w", name, why, object.ErrCorrupt)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 4 || lines[0] != traceMagic || lines[len(lines)-1] != "" {
		return bad("not a trace, or cut short")
	}
	lines = lines[:len(lines)-1]
	t := &Trace{}
	v, ok := strings.CutPrefix(lines[1], "version ")
	if !ok {
		return bad("no version line")
	}
	var err error
	if t.Version, err = object.ParseDigest(v); err != nil {
		return bad(err.Error())
	}
	end, ok := strings.CutPrefix(lines[len(lines)-1], "end ")
	n, err := strconv.Atoi(end)
	if !ok || err != nil || n != len(lines)-3 || n > TraceObjects {
		return bad("entries missing, or too many")
	}
	t.Entries = make([]TraceEntry, 0, n)
	for i, l := range lines[2 : len(lines)-1] {
		ds, ss, ok := strings.Cut(l, " ")
		d, err := object.ParseDigest(ds)
		size, serr := strconv.ParseInt(ss, 10, 64)
		if !ok || err != nil || serr != nil || !objectSize(size) {
			return bad(fmt.Sprintf("entry %d", i))
		}
		t.Entries = append(t.Entries, TraceEntry{d, size})
	}
	return t, nil
}

// EncodeTrace returns t as the text ParseTrace reads.
func EncodeTrace(t *Trace) []byte {
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	fmt.Fprintf(w, "%s\nversion %s\n", traceMagic, t.Version)
	for _, e := range t.Entries {
		fmt.Fprintf(w, "%s %d\n", e.Object, e.Size)
	}
	fmt.Fprintf(w, "end %d\n", len(t.Entries))
	w.Flush()
	return b.Bytes()
}

// WriteTrace writes t to path, whole or not at all: a new file renamed
// over the old, so that two mounts closing at once leave one of theirs.
func WriteTrace(path string, t *Trace) error {
	if err := WriteWhole(path, ".trace-", EncodeTrace(t)); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	return nil
}

// WriteWhole writes b to path through a new file beside it, named
// tmpPrefix and a random suffix, synced and then renamed over the old:
// path holds the old bytes or all of b. A temporary file a crash leaves
// is the caller's to remove, by its prefix.
func WriteWhole(path, tmpPrefix string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), tmpPrefix+"*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// traceRecorder keeps the objects readers asked for, each once, in the
// order first asked, within its bounds.
type traceRecorder struct {
	on         atomic.Bool
	mu         sync.Mutex
	seen       map[object.Digest]bool
	entries    []TraceEntry
	bytes      int64
	maxObjects int
	maxBytes   int64
}

// RecordTrace starts recording the objects readers get (Get), in the
// order first read, the first maxObjects of them and maxBytes of their
// bytes; Trace returns them. Off by default: a mount turns it on unless
// told not to (Remote.NoLearnedPrefetch).
func (c *Cache) RecordTrace(maxObjects int, maxBytes int64) {
	r := &c.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	r.maxObjects, r.maxBytes = maxObjects, maxBytes
	if r.seen == nil {
		r.seen = map[object.Digest]bool{}
	}
	r.on.Store(true)
}

// Trace returns what RecordTrace recorded so far.
func (c *Cache) Trace() []TraceEntry {
	r := &c.rec
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]TraceEntry(nil), r.entries...)
}

// note records that a reader got object d of size bytes.
func (r *traceRecorder) note(d object.Digest, size int) {
	if !r.on.Load() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[d] {
		return
	}
	if len(r.entries) >= r.maxObjects || r.bytes+int64(size) > r.maxBytes {
		r.on.Store(false) // full: the first of a task's reads are kept
		return
	}
	r.seen[d] = true
	r.entries = append(r.entries, TraceEntry{d, int64(size)})
	r.bytes += int64(size)
}

// traceReplay is a cache's background fetching of a trace.
type traceReplay struct {
	on      atomic.Bool
	entries []TraceEntry
	at      map[object.Digest]int // entries' positions

	mu sync.Mutex
	// next is the first entry not yet handed to a worker; a reader that
	// asks for a later one moves it past that: the replay keeps ahead
	// of its task, which fetches what it reached itself.
	next          int
	listed, stray int
	// reached is one past the furthest entry the task got to; lead is
	// the bytes of entries from there on that batches took to hold
	// (batched says which, heldAhead), far the bytes of those they took
	// to store only (storedAhead): lead+far is bounded by traceLead,
	// and by traceFar while the task leaves the link idle. moved, while
	// workers wait for the task to read on, is closed when it does.
	reached   int
	lead, far int64
	batched   []uint8
	moved     chan struct{}
	// farBusy: a batch past the lead is in flight.
	farBusy bool
	// busy are the objects of batches in flight.
	busy map[object.Digest]bool

	// For Stats: what the batches asked for, the batches that failed,
	// and len(entries) once the replay started. waits counts the waits
	// of workers that ended, for tests.
	fetched, errs, objects, waits atomic.Int64
}

// How a batch took an entry (traceReplay.batched).
const (
	heldAhead   = 1 // held in memory for the task (freshObjects)
	storedAhead = 2 // stored only, past the lead
)

// ahead is the bytes the replay fetched past the furthest entry its task
// reached (p.mu held).
func (p *traceReplay) ahead() int64 { return p.lead + p.far }

// confirmed says whether the task's reads show the trace is of it (see
// traceFar; p.mu held).
func (p *traceReplay) confirmed() bool {
	return p.listed >= traceConfirm && p.stray <= p.listed
}

// ReplayTrace fetches the trace's objects that the store lacks in the
// background, in its order, traceWorkers batches at a time, until the
// end, the cache closes, a batch fails (a master that does not answer
// one would not answer the next) or the reads show the trace is of
// another task. It never fails a read: a reader that asks for an object
// a batch is fetching waits for that fetch (its lock), as for
// PrefetchDir; one it does not list is fetched as ever.
func (c *Cache) ReplayTrace(entries []TraceEntry) {
	p := &c.replay
	if len(entries) == 0 || p.on.Load() {
		return
	}
	p.entries = entries
	p.at = make(map[object.Digest]int, len(entries))
	p.batched = make([]uint8, len(entries))
	for i, e := range entries {
		if _, ok := p.at[e.Object]; !ok {
			p.at[e.Object] = i
		}
	}
	p.objects.Store(int64(len(entries)))
	p.on.Store(true)
	var wg sync.WaitGroup
	for range traceWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			idle := false
			for p.on.Load() && c.ctx.Err() == nil {
				batch, hold, end, moved, far := c.nextTraceBatch(idle)
				idle = false
				if end {
					return
				}
				if moved != nil {
					// traceLead ahead of the task: until it reads
					// on (or the replay stops), or, where a batch
					// past the lead may come next, until the task
					// has left its lead unread that long, waiting
					// for no fetch (a task that reads all the time
					// may wait that long for one): the link is
					// idle.
					var t *time.Timer
					var idled <-chan time.Time
					if far {
						t = time.NewTimer(traceIdle)
						idled = t.C
					}
					select {
					case <-moved:
					case <-c.ctx.Done():
					case <-idled:
						idle = c.demand.Load() == 0
					}
					if t != nil {
						t.Stop()
					}
					p.waits.Add(1)
					continue
				}
				if len(batch) == 0 {
					// The other worker's batch holds the next
					// object, or all looked at was held already.
					time.Sleep(time.Millisecond)
					continue
				}
				ok := c.fetchTraceBatch(batch, hold)
				p.mu.Lock()
				for _, d := range batch {
					delete(p.busy, d)
				}
				if !hold {
					p.farBusy = false
				}
				if !ok {
					p.on.Store(false)
					p.wake() // the other worker, if it waits
				}
				p.mu.Unlock()
			}
		}()
	}
	go func() {
		wg.Wait()
		p.on.Store(false)
		c.log.Debug("trace replay ended", "entries", len(entries), "fetched", p.fetched.Load(), "errors", p.errs.Load())
	}()
}

// ReplayTraceFrom is ReplayTrace of the trace load returns, asked for
// in the background: a mount does not wait for it. What load fails with
// is logged at debug (ErrNoTrace not at all); a read meanwhile is served
// as ever.
func (c *Cache) ReplayTraceFrom(load func(ctx context.Context) (*Trace, error)) {
	go func() {
		t, err := load(c.ctx)
		if err != nil {
			if !errors.Is(err, ErrNoTrace) && c.ctx.Err() == nil {
				c.log.Debug("no trace to fetch ahead by", "err", err)
			}
			return
		}
		if c.ctx.Err() == nil {
			c.ReplayTrace(t.Entries)
		}
	}()
}

// nextTraceBatch takes the next entries that the store lacks, in order,
// none that the other worker's batch holds: a batch stops at an object
// the other one fetches, and leaves it to that batch. hold says whether
// the batch is within the lead, what it fetches to be held for the task;
// past it, a batch is taken only if idle (the worker waited traceIdle
// with the lead unread) and the replay confirmed, and is stored only.
// end is true once the trace is done. With no batch, moved is what to
// wait for, and far whether a batch past the lead may come after
// traceIdle: if not, nothing but the task's reads can move the replay.
//
// A batch that reaches a bound goes on to the end of the pack run it is
// in, where the source says which pack an object lies in (a bucket), by
// at most a read-ahead batch less one entry (AheadBatch): a bucket reads a run of a pack with one GET, and a batch that
// ended inside a pack's run of chunk groups would split it into two, and
// every batch after it too, its start then inside one.
func (c *Cache) nextTraceBatch(idle bool) (batch []object.Digest, hold, end bool, moved <-chan struct{}, far bool) {
	p := &c.replay
	p.mu.Lock()
	defer p.mu.Unlock()
	// A worker the task woke has traceRoom within the lead; one that
	// waited traceIdle may have only a few objects' worth, and a call
	// for those costs both ends more than they do (traceRoom).
	hold = p.ahead() < traceLead && !(idle && p.ahead() > traceLead-traceRoom)
	bound, mark := int64(traceLead), uint8(heldAhead)
	if !hold {
		// Past the lead, one batch at a time: the task is busy, and a
		// second batch's verifying and storing would take more of the
		// CPU it runs on than the link needs.
		if !idle || p.farBusy || !p.confirmed() {
			return nil, false, false, p.waitMoved(), p.farNext()
		}
		bound, mark = traceFar, storedAhead
	}
	var size int64
	mine := map[object.Digest]bool{}
	pl, _ := c.f.(packLocator)
	var lastPack string
	over, overMax := 0, int(c.AheadBatch())-1
	// At most traceLook entries looked at under p.mu, which readers
	// take: a trace mostly held already is gone through a part at a time.
	for look := 0; p.next < len(p.entries) && look < traceLook; look++ {
		e := p.entries[p.next]
		if len(batch) >= traceBatch || size >= traceBatchBytes || p.ahead() >= bound {
			if pl == nil || lastPack == "" || over == overMax {
				break
			}
			if pack, ok := pl.PackOf(e.Object); !ok || pack != lastPack {
				break
			}
			over++
		}
		if p.busy[e.Object] && !mine[e.Object] {
			break
		}
		p.next++
		if e.Object.IsZero() {
			continue
		}
		// What this process knows it holds: a miss of Has would look
		// on disk for what other processes stored, under p.mu, which
		// readers take; the batch's fetch looks once for all of them.
		if c.store.HasKnown(e.Object) {
			continue
		}
		if p.busy == nil {
			p.busy = map[object.Digest]bool{}
		}
		p.busy[e.Object], mine[e.Object] = true, true
		p.batched[p.next-1] = mark
		if hold {
			p.lead += e.Size
		} else {
			p.far += e.Size
		}
		batch = append(batch, e.Object)
		size += e.Size
		if pl != nil {
			lastPack, _ = pl.PackOf(e.Object)
		}
	}
	if len(batch) == 0 && p.next < len(p.entries) && p.ahead() >= bound {
		return nil, false, false, p.waitMoved(), p.farNext()
	}
	if !hold && len(batch) > 0 {
		p.farBusy = true
	}
	return batch, hold, len(batch) == 0 && p.next >= len(p.entries), nil, false
}

// farNext says whether a batch past the lead may be the next (p.mu
// held): the replay is confirmed and there is more of the trace within
// traceFar. One may be in flight: a worker that waits meanwhile takes the
// next once that one is done and the task still leaves the lead unread,
// so that such batches follow each other while it does.
func (p *traceReplay) farNext() bool {
	return p.confirmed() && p.ahead() < traceFar && p.next < len(p.entries)
}

// fetchTraceBatch fetches ds in one call, bounded by the fetcher's
// Timeout, with hold holding what comes for the task as read-ahead does
// (see traceLead), and reports whether the replay may go on: objects the source
// lacks (a trace of an older version) are skipped; any other failure ends
// it, logged at debug and counted. An object whose lock another fetch
// holds (a reader's, or another process's of an object sharing its
// stripe) is waited for and then fetched if still missing: the replay has
// moved past it, so nothing would come back for it.
func (c *Cache) fetchTraceBatch(ds []object.Digest, hold bool) bool {
	timeout := c.bound()
	ctx, cancel := context.WithTimeout(c.ctx, timeout)
	defer cancel()
	err := c.fetchManyFor(ctx, ds, hold, 0, nil)
	if err == nil || errors.Is(err, object.ErrNotFound) {
		c.replay.fetched.Add(int64(len(ds)))
		return true
	}
	if c.ctx.Err() == nil {
		c.replay.errs.Add(1)
		c.log.Debug("background fetch of a learned trace failed; the rest of it is left to the task", "objects", len(ds), "err", err)
	}
	return false
}

// passed notes that read-ahead fetches ds (Cache.Prefetch): the replay
// moves past those it lists, as past what a reader asks for. A file read
// in order is fetched by its read-ahead; a replay that went on fetching
// the same chunks would only race it for them, and for the master.
func (p *traceReplay) passed(ds []object.Digest) {
	if !p.on.Load() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range ds {
		if i, ok := p.at[d]; ok {
			p.reach(i)
		}
	}
}

// reach notes that the task got to entry i, fetched by itself or by
// read-ahead (p.mu held), and wakes the workers waiting for it once
// there is traceRoom to fetch within the lead.
func (p *traceReplay) reach(i int) {
	p.next = max(p.next, i+1)
	if i+1 > p.reached {
		for j := p.reached; j <= i; j++ {
			switch p.batched[j] {
			case heldAhead:
				p.lead -= p.entries[j].Size
			case storedAhead:
				p.far -= p.entries[j].Size
			}
		}
		p.reached = i + 1
		if p.ahead() <= traceLead-traceRoom {
			p.wake()
		}
	}
}

// waitMoved returns the channel that wake closes (p.mu held).
func (p *traceReplay) waitMoved() <-chan struct{} {
	if p.moved == nil {
		p.moved = make(chan struct{})
	}
	return p.moved
}

// wake lets the workers waiting for the task go on (p.mu held).
func (p *traceReplay) wake() {
	if p.moved != nil {
		close(p.moved)
		p.moved = nil
	}
}

// read notes that a reader asked for object d: the replay moves past a
// listed one, and stops once most of what the reader asks for is not
// listed.
func (p *traceReplay) read(d object.Digest) {
	if !p.on.Load() {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	i, ok := p.at[d]
	if !ok {
		p.stray++
		if p.stray >= traceStray && p.stray > traceStrayRatio*p.listed {
			p.on.Store(false)
			p.wake()
		}
		return
	}
	p.listed++
	if p.listed == traceConfirm && p.confirmed() {
		// Workers that wait for the task may go past the lead now.
		p.wake()
	}
	p.reach(i)
}
