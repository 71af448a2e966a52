package object

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Holds share the store; a sweep's lock excludes them, and a wait for
// either ends with its context.
func TestSweepLock(t *testing.T) {
	s, err := OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r1, err := s.Hold(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Hold(ctx)
	if err != nil {
		t.Fatal("a second hold waited for the first:", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if _, err := s.LockSweep(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("sweep lock while held: %v", err)
	}
	r1()
	got := make(chan error, 1)
	go func() {
		w, err := s.LockSweep(ctx)
		if err == nil {
			w.Unlock()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("sweep lock with one hold left: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	r2()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	w, err := s.LockSweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	short2, cancelShort2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort2()
	if _, err := s.Hold(short2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("hold during a sweep: %v", err)
	}
	w.Unlock()
	// The lock file is no object.
	n := 0
	s.Each(func(StoredObject) error { n++; return nil })
	if n != 0 {
		t.Fatalf("Each lists %d objects in an empty store", n)
	}
}

// RemoveIfOlder removes only what was not freshened since the time, and
// an object freshened after Quiesce returned dates after its result.
func TestRemoveIfOlder(t *testing.T) {
	s, err := OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, _ := EncodeBlob([]byte("x"))
	d, err := s.Put(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(s.path(d), old, old); err != nil {
		t.Fatal(err)
	}
	since, err := s.Quiesce(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Freshen(d) {
		t.Fatal("freshen: missing")
	}
	n0, err := s.Removals()
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.LockSweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Unlock()
	if removed, _, err := w.RemoveIfOlder(d, since); err != nil || removed {
		t.Fatalf("freshened object: removed %v, %v", removed, err)
	}
	if err := os.Chtimes(s.path(d), old, old); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Removals(); err != nil || n != n0 {
		t.Fatalf("removals counted %d (%v) before any removal; %d before", n, err, n0)
	}
	removed, size, err := w.RemoveIfOlder(d, since)
	if err != nil || !removed || size != int64(len(b)) {
		t.Fatalf("old object: removed %v, size %d, %v", removed, size, err)
	}
	if n, err := s.Removals(); err != nil || n != n0+1 {
		t.Fatalf("removals: %d, %v; want %d", n, err, n0+1)
	}
	if _, err := os.Lstat(s.path(d)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("still there: %v", err)
	}
	if removed, _, err := w.RemoveIfOlder(d, since); err != nil || removed {
		t.Fatalf("missing object: removed %v, %v", removed, err)
	}
	if _, err := os.Lstat(filepath.Join(s.Dir(), lockName)); err != nil {
		t.Fatal(err)
	}
}

// Holders that keep the store held back to back, as the scans of a busy
// master do, do not keep a sweep out: once it waits, new holds wait for
// it.
func TestSweepNotStarved(t *testing.T) {
	s, err := OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * time.Millisecond)
			for {
				select {
				case <-stop:
					return
				default:
				}
				release, err := s.Hold(ctx)
				if err != nil {
					return
				}
				time.Sleep(3 * time.Millisecond)
				release()
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	time.Sleep(50 * time.Millisecond)
	for range 5 {
		sweepCtx, cancelSweep := context.WithTimeout(ctx, 5*time.Second)
		w, err := s.LockSweep(sweepCtx)
		cancelSweep()
		if err != nil {
			t.Fatalf("sweep kept out by holders: %v", err)
		}
		w.Unlock()
	}
}

// Removals loses no count when removals race, in one process or in
// several: a reader that saw the count before one of them must see it
// move, or it would go on trusting an object that has gone.
func TestRemovalsCountRaces(t *testing.T) {
	s, err := OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// A second DirStore on the same directory stands for another process.
	s2, err := OpenDirStore(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		st := s
		if i%2 == 1 {
			st = s2
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				if err := st.countRemoval(); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n, err := s.Removals(); err != nil || n != workers*each {
		t.Fatalf("removals: %d, %v; want %d", n, err, workers*each)
	}
}
