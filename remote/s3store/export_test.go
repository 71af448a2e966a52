package s3store

import "time"

// SetTraceAge sets how long gc keeps a trace, for a test that runs alone
// (not in parallel), and returns what it was.
func SetTraceAge(d time.Duration) (old time.Duration) {
	old, traceAge = traceAge, d
	return old
}
