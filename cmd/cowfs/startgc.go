package main

import (
	"runtime/debug"
	"sync"
)

// startHeapLimit bounds the Go runtime's memory while holdGC holds
// collections off.
const startHeapLimit = 256 << 20

// holdGC holds garbage collection off until release is called, unless
// the runtime's memory reaches startHeapLimit (or a lower GOMEMLIMIT).
// A mount's start allocates several MiB at once (badger's tables, the
// version's trees as they come in) on a heap whose first goal is 4 MiB:
// left alone, it would run a collection, its stops of the world and its
// marking on the mount's few Ps, on the way to the mount's first request.
// The Go compiler starts with a larger heap goal for the same reason.
func holdGC() (release func()) {
	pct := debug.SetGCPercent(-1)
	limit := debug.SetMemoryLimit(-1)
	debug.SetMemoryLimit(min(limit, startHeapLimit))
	var once sync.Once
	return func() {
		once.Do(func() {
			debug.SetMemoryLimit(limit)
			debug.SetGCPercent(pct)
		})
	}
}
