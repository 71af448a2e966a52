package fs

import (
	"runtime"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// threadNice returns the nice value of the calling thread.
func threadNice(t *testing.T) int {
	t.Helper()
	raw, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	if err != nil {
		t.Fatal(err)
	}
	return 20 - raw // the raw syscall answers 20 - nice
}

// Work that holds nothing up (a snapshot's prepare) runs on a thread of
// its own at a lower CPU priority, with one more P for the runtime while
// it runs, so that the mount's requests never wait for it: not for a P
// its thread holds while the kernel has it off the CPU, nor for the CPU.
// Not parallel: it reads GOMAXPROCS, which concurrent snapshots change.
func TestLowPriority(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	procs, nice, tid := runtime.GOMAXPROCS(0), threadNice(t), unix.Gettid()
	want := min(nice+lowPriorityNice, 19)
	const n = 2
	var wg sync.WaitGroup
	entered, release := make(chan struct{}), make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lowPriority(func() {
				entered <- struct{}{}
				<-release
				if got := threadNice(t); got != want {
					t.Errorf("nice %d inside, want %d", got, want)
				}
				if unix.Gettid() == tid {
					t.Errorf("ran on the caller's thread")
				}
			})
		}()
	}
	for range n {
		<-entered
	}
	if got := runtime.GOMAXPROCS(0); got != procs+n {
		t.Errorf("GOMAXPROCS %d with %d running, want %d", got, n, procs+n)
	}
	close(release)
	wg.Wait()
	if got := runtime.GOMAXPROCS(0); got != procs {
		t.Errorf("GOMAXPROCS %d after, want %d as before", got, procs)
	}
	if got := threadNice(t); got != nice {
		t.Errorf("the caller's thread has nice %d after, want %d as before", got, nice)
	}
}

// ExtraProc adds one P until released; overlapping calls each add one and
// take one back, and a release called twice takes back one.
func TestExtraProc(t *testing.T) {
	procs := runtime.GOMAXPROCS(0)
	a := ExtraProc()
	b := ExtraProc()
	if n := runtime.GOMAXPROCS(0); n != procs+2 {
		t.Fatalf("GOMAXPROCS %d with two extra Ps, want %d", n, procs+2)
	}
	a()
	a()
	if n := runtime.GOMAXPROCS(0); n != procs+1 {
		t.Fatalf("GOMAXPROCS %d after one release (called twice), want %d", n, procs+1)
	}
	b()
	if n := runtime.GOMAXPROCS(0); n != procs {
		t.Fatalf("GOMAXPROCS %d after both releases, want %d", n, procs)
	}
}
