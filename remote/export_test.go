package remote

import "time"

// SetRepairRetry sets how long a failed repair scan stands, for a test,
// and returns what it was. Call it with no server running.
func SetRepairRetry(d time.Duration) (old time.Duration) {
	old, repairRetry = repairRetry, d
	return old
}
