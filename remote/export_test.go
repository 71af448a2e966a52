package remote

import (
	"errors"
	"time"
)

// SetRepairRetry sets how long a failed repair scan stands, for a test,
// and returns what it was. Call it with no server running.
func SetRepairRetry(d time.Duration) (old time.Duration) {
	old, repairRetry = repairRetry, d
	return old
}

// GiveUpWatch makes s stop watching its export, as when the watch limit
// is reached.
func GiveUpWatch(s *Server) {
	s.watch.mu.Lock()
	defer s.watch.mu.Unlock()
	s.watch.giveUp("a test", errors.New("given up by a test"))
}

// KnownPaths returns how many paths s keeps a last scan of.
func KnownPaths(s *Server) int {
	s.knownMu.Lock()
	defer s.knownMu.Unlock()
	return len(s.known)
}
