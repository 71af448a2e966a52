package cowfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// fuseDevice is the kernel's FUSE device; a test points it elsewhere.
var fuseDevice = "/dev/fuse"

// checkFuseDevice says why this process cannot use the FUSE device, with
// what to do about it. A mount needs to open it read-write whether it
// mounts directly (root) or through fusermount3, which opens it as the
// calling user; without this check the mount fails later as "fusermount
// exited with code 256", the cause only in the mount's log.
func checkFuseDevice(dev string) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err == nil {
		return f.Close()
	}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("no %s: load the fuse module (modprobe fuse), or give the container the device (docker run --device /dev/fuse): %w", dev, err)
	case errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
		return fmt.Errorf("%s has no driver: load the fuse module (modprobe fuse): %w", dev, err)
	case errors.Is(err, fs.ErrPermission) && os.Geteuid() == 0:
		// Root is refused by the device cgroup, not by the mode.
		return fmt.Errorf("%s: this container may not use the device: give it --device /dev/fuse (or the cgroup rule c 10:229 rwm): %w", dev, err)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s: uid %d may not open it: add the user to the group that owns it, make it mode 0666 as most distributions do, or mount as root: %w", dev, os.Geteuid(), err)
	}
	return fmt.Errorf("open %s: %w", dev, err)
}
