package object

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// Objects leave the store only through a sweep (cowfs gc, cache
// eviction), and a sweep must never remove an object that a ref or pin
// written meanwhile reaches. Age alone cannot promise that: between a
// sweep's look at an object's age and its unlink, a snapshot can freshen
// the object, count on it and write its ref. So the store has a lock
// file, shared by every process that uses the store:
//
//   - A writer of a ref or pin (a snapshot, a master's scan, a restore)
//     holds the lock shared (Hold) from before it stores or freshens the
//     first object the ref will reach until the ref is written.
//   - A sweep first waits until no writer holds the lock (Quiesce) and
//     notes the time: every writer after that freshens what it uses
//     later than the time. It then reads the refs and pins (what is
//     live), and removes in batches under the lock held exclusively
//     (LockSweep), where Sweep.RemoveIfOlder looks at each object's age again:
//     with the lock held, no writer can freshen it between the look and
//     the unlink.
//
// flock, not fcntl locks: one lock per open file description, so two
// holds in one process do not merge, and the kernel drops the lock when
// a process dies, so a killed snapshot cannot stop gc for good.

const lockName = "lock"

// Quiesce dates its result earlier than the wall clock, as an object
// freshened just after the quiesce must still date after it. File times
// come from the kernel's coarse clock, which runs up to a tick (10 ms at
// HZ=100) behind time.Now; on a filesystem that keeps whole seconds (ext4
// with 128-byte inodes) they run up to a second behind. The margin is
// kept small where it can be: a cache eviction spares what was used
// within it.
const (
	fineMargin   = 50 * time.Millisecond
	coarseMargin = 2 * time.Second
)

// lagOf returns how far the filesystem time t, read from a file, may run
// behind the wall clock when it was set: a tick of the coarse clock where
// the filesystem keeps nanoseconds, a second where it keeps whole ones. A
// time on a whole second is taken for the latter, which costs only
// caution: one in a billion from the former lands there.
func lagOf(t time.Time) time.Duration {
	if t.Nanosecond() == 0 {
		return coarseMargin
	}
	return fineMargin
}

// margin returns how far back Quiesce dates its result for this store's
// filesystem: it sets the lock file's time to one with nanoseconds and
// reads back whether they were kept.
func (s *DirStore) margin() time.Duration {
	s.marginOnce.Do(func() {
		s.sweepMargin = coarseMargin
		p := filepath.Join(s.dir, lockName)
		probe := time.Unix(1700000000, 123456789)
		if err := os.Chtimes(p, probe, probe); err != nil {
			return
		}
		if fi, err := os.Lstat(p); err == nil && fi.ModTime().Equal(probe) {
			s.sweepMargin = fineMargin
		}
	})
	return s.sweepMargin
}

// Hold takes the store's lock shared: until release is called, no sweep
// removes anything. Hold waits while a sweep removes a batch, which takes
// milliseconds, and while a sweep waits to begin one (see lock). Holds
// must not nest: a sweep waiting between them would wait for the outer
// one, and the inner one for the sweep.
func (s *DirStore) Hold(ctx context.Context) (release func(), err error) {
	return s.lock(ctx, unix.LOCK_SH)
}

// A Sweep is the store's lock held exclusively, for removing objects.
type Sweep struct {
	s       *DirStore
	unlock  func()
	counted bool
	// left holds the packs this sweep removed copies from: reclaimed
	// (removed, or compacted) at Unlock, once, not after each copy.
	left map[*pack]bool
}

// LockSweep takes the store's lock exclusively, for RemoveIfOlder: it
// waits until no writer holds the lock. Keep it for one batch, not a
// whole sweep: writers wait for it.
func (s *DirStore) LockSweep(ctx context.Context) (*Sweep, error) {
	unlock, err := s.lock(ctx, unix.LOCK_EX)
	if err != nil {
		return nil, err
	}
	return &Sweep{s: s, unlock: unlock, left: map[*pack]bool{}}, nil
}

// Unlock lets writers in again, once the packs the batch removed copies
// from are reclaimed (pack.go).
func (w *Sweep) Unlock() {
	for p := range w.left {
		if err := w.s.packs.reclaim(p); err != nil {
			slog.Error("object store: reclaim a pack", "store", w.s.dir, "pack", p.name, "err", err)
		}
	}
	w.left = nil
	w.unlock()
}

// Quiesce waits until no writer holds the store's lock and returns a time
// before which nothing stored or freshened since counts: an object a
// writer will still use is either reached by a ref or pin written by now
// or freshened after the returned time.
func (s *DirStore) Quiesce(ctx context.Context) (time.Time, error) {
	w, err := s.LockSweep(ctx)
	if err != nil {
		return time.Time{}, err
	}
	// Taken with the lock held (margin needs the lock file): no writer
	// is between its first object and its ref now.
	since := time.Now().Add(-s.margin())
	w.Unlock()
	return since, nil
}

// RemoveIfOlder removes object d if it was last stored or freshened
// before t, and returns its size if it did.
func (w *Sweep) RemoveIfOlder(d Digest, t time.Time) (removed bool, size int64, err error) {
	return w.remove(d, &t)
}

// Remove removes object d whatever its age, and returns its size if it
// was there: for a cache evicting what its master can give again.
func (w *Sweep) Remove(d Digest) (removed bool, size int64, err error) {
	return w.remove(d, nil)
}

func (w *Sweep) remove(d Digest, before *time.Time) (removed bool, size int64, err error) {
	count := func() error {
		if !w.counted {
			if err := w.s.countRemoval(); err != nil {
				return err
			}
			w.counted = true
		}
		return nil
	}
	removed, size, err = w.s.packs.remove(d, before, count, w.left)
	if err != nil {
		return removed, size, err
	}
	p := w.s.path(d)
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return removed, size, nil
	}
	if err != nil {
		return removed, size, err
	}
	if before != nil && !fi.ModTime().Before(*before) {
		return removed, size, nil
	}
	if err := count(); err != nil {
		return removed, size, err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return removed, size, err
	}
	return true, size + fi.Size(), nil
}

// Removals counts the sweeps (and other removals) that took objects out of
// the store, so that a process that found objects whole can trust that
// for as long as the count stays: a scan cache checks its hits against
// the store only when the count moved (scan.Scanner). Read it holding the
// store (Hold): a sweep counts before it removes anything.
func (s *DirStore) Removals() (uint64, error) {
	// The count is asked for on every look into the packs: from a file
	// kept open, a stat without a path to walk. The file is only ever
	// appended to, never replaced, so the descriptor stays its.
	f := s.removals.Load()
	if f == nil {
		nf, err := os.OpenFile(filepath.Join(s.dir, removalsName), os.O_RDONLY|os.O_CREATE, 0o600)
		if err != nil {
			return s.removalsByPath() // a store this process may not write
		}
		if s.removals.CompareAndSwap(nil, nf) {
			f = nf
		} else {
			nf.Close()
			if f = s.removals.Load(); f == nil {
				return s.removalsByPath()
			}
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return s.removalsByPath() // closed meanwhile (Close)
	}
	return uint64(fi.Size()), nil
}

func (s *DirStore) removalsByPath() (uint64, error) {
	fi, err := os.Stat(filepath.Join(s.dir, removalsName))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("object store: %w", err)
	}
	return uint64(fi.Size()), nil
}

// removalsName is the file whose size is the count: a removal appends a
// line to it. Appends to one file do not lose each other, whichever
// processes make them, where a count written back (read, add one, rename)
// lost most of 400 racing ones (TestRemovalsCountRaces): a reader that
// saw a count before a lost one would have gone on trusting an object
// that had gone. A removal that does not take the store's lock (Remove
// of a damaged object) races with others. The file grows by a byte per
// sweep batch or damaged object, never shrinks (a count that went back
// could come round to a value a reader trusts), and `wc -l` reads it.
const removalsName = "removals.log"

// countRemoval moves the count Removals reads. Not synced: what trusts
// the count keeps it in memory, which a crash clears as well.
func (s *DirStore) countRemoval() error {
	f, err := os.OpenFile(filepath.Join(s.dir, removalsName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("object store: count removal: %w", err)
	}
	_, err = f.Write([]byte{'\n'})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("object store: count removal: %w", err)
	}
	return nil
}

// lockPoll bounds the wait between tries for a lock that is taken: short,
// as holds are short, and the wait is cancelable, which a blocking flock
// is not.
const lockPoll = 20 * time.Millisecond

// lockPatience is how long a wait for the store's lock goes unreported.
const lockPatience = 2 * time.Second

// lock takes the store's lock shared (LOCK_SH) or exclusively (LOCK_EX),
// preferring sweeps: a master whose workers mount all the time has scans
// holding the store back to back, and a gc that only waited for a moment
// with no holder would never run. So a sweep first takes a second file,
// the intent, exclusively, and a holder passes through the intent shared
// on its way to the lock and lets go of it at once: once a sweep has the
// intent, new holders wait, and the holds in progress drain.
func (s *DirStore) lock(ctx context.Context, how int) (release func(), err error) {
	intent, err := s.flock(ctx, intentName, how)
	if err != nil {
		return nil, err
	}
	f, err := s.flock(ctx, lockName, how)
	if err != nil {
		intent.Close()
		return nil, err
	}
	if how == unix.LOCK_SH {
		intent.Close()
		return func() { f.Close() }, nil // closing drops the lock
	}
	return func() { f.Close(); intent.Close() }, nil
}

const intentName = "lock.sweep"

// flock opens the store's file name and takes how on it, waiting as long
// as ctx allows.
func (s *DirStore) flock(ctx context.Context, name string, how int) (*os.File, error) {
	p := filepath.Join(s.dir, name)
	f, err := os.OpenFile(p, os.O_RDONLY|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("object store lock: %w", err)
	}
	wait := time.Millisecond
	start, told := time.Now(), false
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			if told {
				slog.Info("object store: got the lock", "waited", time.Since(start).Round(time.Millisecond))
			}
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("object store lock %s: %w", p, err)
		}
		if !told && time.Since(start) > lockPatience {
			// A gc that says nothing for minutes looks hung.
			holder := "a snapshot, scan or restore in progress"
			if how == unix.LOCK_SH {
				holder = "a gc or cache eviction removing objects"
			}
			slog.Info("object store: waiting for its lock", "held_by", holder, "store", s.dir)
			told = true
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("object store lock %s: %w", p, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, lockPoll)
	}
}
