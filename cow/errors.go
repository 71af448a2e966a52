package cow

import (
	"errors"
	"fmt"
	"syscall"
)

// errNotFound wraps the errno the kernel boundary should report, so
// errors.Is works with both the sentinel and the errno.
var errNotFound = fmt.Errorf("cowfs: not found: %w", syscall.ENOENT)

// ErrCorrupt reports upper metadata that cannot be read: the CLI exits
// with its "corrupt" code for it.
var ErrCorrupt = errors.New("cowfs: metadata corrupt")
