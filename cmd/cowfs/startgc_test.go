package main

import (
	"runtime/debug"
	"testing"
)

// holdGC turns collection off under a memory limit no higher than the
// one set, and puts both back as they were, once.
func TestHoldGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(150))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(1 << 40))
	release := holdGC()
	if p := debug.SetGCPercent(-1); p != -1 {
		t.Errorf("GOGC %d while held, want off (-1)", p)
	}
	if l := debug.SetMemoryLimit(-1); l != startHeapLimit {
		t.Errorf("memory limit %d while held, want %d", l, startHeapLimit)
	}
	release()
	if p := debug.SetGCPercent(-1); p != 150 {
		t.Errorf("GOGC %d after, want 150 as before", p)
	}
	debug.SetGCPercent(150)
	if l := debug.SetMemoryLimit(-1); l != 1<<40 {
		t.Errorf("memory limit %d after, want %d as before", l, int64(1<<40))
	}
	// A second release changes nothing; a lower limit is kept.
	debug.SetGCPercent(80)
	release()
	if p := debug.SetGCPercent(-1); p != 80 {
		t.Errorf("GOGC %d after a second release, want 80 (untouched)", p)
	}
	debug.SetGCPercent(150)
	debug.SetMemoryLimit(64 << 20)
	release = holdGC()
	if l := debug.SetMemoryLimit(-1); l != 64<<20 {
		t.Errorf("memory limit %d held under a lower GOMEMLIMIT, want it kept (%d)", l, 64<<20)
	}
	release()
}
