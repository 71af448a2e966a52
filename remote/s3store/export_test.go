package s3store

import "time"

// SetTraceAge sets how long gc keeps a trace, for a test that runs alone
// (not in parallel), and returns what it was.
func SetTraceAge(d time.Duration) (old time.Duration) {
	old, traceAge = traceAge, d
	return old
}

// HoldPacks takes the lock of s's pack indexes, which a load of them
// takes, until release is called.
func HoldPacks(s *Store) (release func()) {
	s.packs.mu.Lock()
	return s.packs.mu.Unlock
}
