package cowfs_test

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// stallBound is the most a snapshot may hold up the workspace while the
// master is away: a snapshot holds writes for local work only. One that
// held them while it waited for the master would stall them for the
// I/O timeout (8 s below); the rest is slack for a loaded machine, where
// a step of the loops can wait a second for a CPU.
const stallBound = 3 * time.Second

// A snapshot of a remote mount whose master is down does not freeze the
// workspace: it needs the part of a lower chunk that an append left in the
// lower (never read, so never cached), cannot fetch it, and fails, while
// appends and opens of cached files go on.
func TestSnapshotMasterDownHoldsNoWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out --io-timeout with the master down; the full suite runs it")
	}
	exp := t.TempDir()
	// Three whole chunks and a partial one: an append leaves the
	// partial one's bytes in the lower, and the snapshot reads them.
	writeFile(t, filepath.Join(exp, "big"), randBytes(3<<20+12345), 0o644)
	writeFile(t, filepath.Join(exp, "cached"), randBytes(100<<10), 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	w := remotetest.NewWorker(t)
	const ioTimeout = 8 * time.Second
	rm := mountRemote(w, ms.Addr, remotetest.ViewOptions{Timeout: ioTimeout})
	want := sha(t, filepath.Join(rm.dir, "cached"))
	f, err := os.OpenFile(filepath.Join(rm.dir, "big"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("appended\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	ms.Stop()

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writeGap, readGap atomic.Int64
	var loopErr atomic.Value
	loop := func(gap *atomic.Int64, step func() error) {
		defer wg.Done()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := step(); err != nil {
				loopErr.CompareAndSwap(nil, err)
				return
			}
			now := time.Now()
			if d := int64(now.Sub(last)); d > gap.Load() {
				gap.Store(d)
			}
			last = now
			time.Sleep(5 * time.Millisecond)
		}
	}
	wg.Add(2)
	go loop(&writeGap, func() error {
		f, err := os.OpenFile(filepath.Join(rm.dir, "written"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		_, err = f.WriteString("x")
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
	go loop(&readGap, func() error {
		f, err := os.Open(filepath.Join(rm.dir, "cached"))
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(io.Discard, f)
		return err
	})
	// However the snapshot goes, the loops stop: a stalled one is
	// reported by its gap, under the deadline of within.
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		within(t, 3*ioTimeout, "stop the writer and reader", func() error { wg.Wait(); return nil })
	})

	ctx, cancel := context.WithTimeout(context.Background(), 6*ioTimeout)
	defer cancel()
	time.Sleep(100 * time.Millisecond) // the loops are running
	start := time.Now()
	var snapErr error
	within(t, 5*ioTimeout, "snapshot with the master down", func() error {
		_, snapErr = rm.m.Snapshot(ctx, "s1")
		return nil
	})
	took := time.Since(start)
	time.Sleep(100 * time.Millisecond) // a step after the snapshot ends
	close(stop)
	within(t, 3*ioTimeout, "stop the writer and reader", func() error { wg.Wait(); return nil })
	if err, _ := loopErr.Load().(error); err != nil {
		t.Fatalf("workspace during the snapshot: %v", err)
	}
	if snapErr == nil {
		t.Fatal("snapshot succeeded without the bytes the append left in the lower")
	}
	if !strings.Contains(snapErr.Error(), "needed by the snapshot") || !strings.Contains(snapErr.Error(), "unreachable") {
		t.Errorf("snapshot error does not say what it could not fetch, and why: %v", snapErr)
	}
	t.Logf("snapshot failed after %v: %v", took, snapErr)
	if g := time.Duration(writeGap.Load()); g > stallBound {
		t.Errorf("appends stalled %v during the snapshot (bound %v)", g, stallBound)
	}
	if g := time.Duration(readGap.Load()); g > stallBound {
		t.Errorf("reads of a cached file stalled %v during the snapshot (bound %v)", g, stallBound)
	}
	if got := sha(t, filepath.Join(rm.dir, "cached")); got != want {
		t.Error("cached file reads wrong bytes after the snapshot")
	}
}
