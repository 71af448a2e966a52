package cowfs

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// Close ends the calls still running (here a snapshot taking a big lower
// in) and waits for them before it releases the lower's descriptor, and a
// call after Close is refused: a snapshot whose caller gave up never
// reads through a closed descriptor, which another open may have reused.
func TestCloseEndsRunningSnapshot(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	state, lower, mnt := filepath.Join(base, "state"), filepath.Join(base, "lower"), filepath.Join(base, "mnt")
	os.Mkdir(lower, 0o755)
	os.Mkdir(mnt, 0o755)
	// Enough lower bytes that taking them in lasts well past the Close.
	big := make([]byte, 256<<20)
	rand.Read(big)
	if err := os.WriteFile(filepath.Join(lower, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	ws := openT(t, Spec{Mountpoint: mnt, State: state, Lower: Lower{Dir: lower}})

	snapped := make(chan error, 1)
	go func() {
		_, err := ws.Snapshot(context.Background(), "s")
		snapped <- err
	}()
	// Close once the snapshot runs: on a loaded machine, 50 ms after
	// its goroutine started it may not have begun.
	deadline := time.Now().Add(time.Minute)
	for ws.ops.running() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the snapshot did not begin within a minute")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	// A call that takes a while to end once cancelled, as a call deep in
	// a read does: Close must be seen to wait for it.
	slowCtx, end, err := ws.ops.begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var slowEnded atomic.Bool
	go func() {
		<-slowCtx.Done()
		time.Sleep(200 * time.Millisecond)
		slowEnded.Store(true)
		end()
	}()
	closed := make(chan error, 1)
	go func() { closed <- ws.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("close: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Close did not return within a minute of a running snapshot")
	}
	if !slowEnded.Load() {
		t.Fatal("Close returned before a call it cancelled had ended")
	}
	// The snapshot's call ended before Close returned; the goroutine
	// that made it may not have taken its result yet.
	if n := ws.ops.running(); n != 0 {
		t.Fatalf("Close returned while %d call(s) were still running", n)
	}
	select {
	case err := <-snapped:
		t.Logf("the running snapshot returned: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("the snapshot's call did not return within a minute of Close")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := ws.Snapshot(ctx, "after"); !errors.Is(err, ErrClosed) {
		t.Errorf("snapshot after Close: %v; want ErrClosed", err)
	}
}
