package fs

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// DefaultReadAhead is the read-ahead a mount gets unless told otherwise
// (decision 0069). The kernel gives a FUSE mount 128 KiB, and a cold
// sequential reader then waits on a READ round trip per 128 KiB; from
// 256 KiB up a cold sequential read measures as fast as with any bigger
// window. A bigger window costs every page fault of a mapped file whose
// pages were dropped (a punch, a truncate, memory pressure): the kernel
// reads the whole window around the fault.
const DefaultReadAhead = 256 << 10

// setReadAhead sets the read-ahead of the FUSE mount at dir: the kernel
// keeps it on the mount's backing device info, named by the device number
// the mount's files report.
func setReadAhead(dir string, n int64) error {
	if n < 0 {
		return nil
	}
	if n == 0 {
		n = DefaultReadAhead
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return fmt.Errorf("read-ahead: %w", err)
	}
	return os.WriteFile(bdiReadAheadPath(st.Dev), []byte(strconv.FormatInt(n>>10, 10)), 0)
}

func bdiReadAheadPath(dev uint64) string {
	return fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(dev), unix.Minor(dev))
}
