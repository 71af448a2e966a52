package cow

import (
	"errors"
	"fmt"
	"syscall"
)

// Sentinel errors. They wrap the errno the kernel boundary should report, so
// errors.Is works with both the sentinel and the errno.
var (
	ErrNotFound = fmt.Errorf("cowfs: not found: %w", syscall.ENOENT)
	ErrCorrupt  = errors.New("cowfs: metadata corrupt")
)
