package cow

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors. They wrap the errno the kernel boundary should report, so
// errors.Is works with both the sentinel and the errno.
var (
	errNotFound = fmt.Errorf("cowfs: not found: %w", syscall.ENOENT)
	errCorrupt  = errors.New("cowfs: metadata corrupt")
)
