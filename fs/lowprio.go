package fs

import (
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// lowPriorityNice is how much nicer than the mount lowPriority's work runs.
const lowPriorityNice = 10

// extraProcs serializes ExtraProc's changes of GOMAXPROCS, so that
// overlapping calls each add one P and take one back.
var extraProcs sync.Mutex

// ExtraProc gives the Go runtime one P more than it has, until release is
// called: for a while in which the mount process has more to run at once
// than the few Ps it is given (Spec.Procs, one by default), such as its
// start, where a background goroutine (badger's, gRPC's, the version's
// trees coming in) holding the only P delays the mount. Overlapping
// calls each add one and take one back.
func ExtraProc() (release func()) {
	extraProcs.Lock()
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	extraProcs.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			extraProcs.Lock()
			runtime.GOMAXPROCS(max(1, runtime.GOMAXPROCS(0)-1))
			extraProcs.Unlock()
		})
	}
}

// lowPriority runs f, work that holds nothing up but takes a CPU for a
// while (a snapshot's prepare: reading and hashing the whole lower), so
// that the requests the mount serves meanwhile do not wait for it.
//
// f gets an OS thread of its own, lowPriorityNice nicer than the mount's,
// so that the kernel runs the mount's threads (and the processes they
// serve) first. And the runtime gets one more P while f runs: the mount
// process runs with few (Spec.Procs, one by default), and a P is held by
// whichever thread runs Go code on it, also while the kernel has that
// thread off the CPU; on a busy machine, f's thread holding the mount's
// only P so kept every request waiting for as long as the kernel left f
// off the CPU. f should allocate little: a garbage collection stops every
// thread, f's too, so it waits for f's thread to get a CPU.
func lowPriority(f func()) {
	defer ExtraProc()()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Never unlocked: the thread, niced, ends with this goroutine
		// instead of going back to run the mount's requests. (The
		// runtime starts new threads from a template thread, not from a
		// locked one, so none inherits the nice value.)
		runtime.LockOSThread()
		tid := unix.Gettid()
		if raw, err := unix.Getpriority(unix.PRIO_PROCESS, tid); err == nil {
			// The raw syscall answers 20 - nice. Best effort: at
			// the mount's priority, f still holds nothing up.
			unix.Setpriority(unix.PRIO_PROCESS, tid, min(20-raw+lowPriorityNice, 19))
		}
		f()
	}()
	<-done
}
