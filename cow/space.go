package cow

import (
	"fmt"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultReserve is the space kept free on the upper's filesystem when
// Options.Reserve is 0.
const DefaultReserve = 64 << 20

// space keeps the last bytes of the upper's filesystem for the metadata
// database. badger writes its logs through shared memory mappings of
// sparse files, and a page of such a mapping that finds the filesystem
// full when first written kills the process with SIGBUS; a spider filling
// the disk with items would take its whole workspace down, and the upper
// could not be mounted again until space was freed beside the mount. So
// what adds data to the upper (writes, fallocate, new inodes, xattrs)
// gets ENOSPC once the filesystem has less than the reserve free, as
// ext4's reserved blocks do for users, and what only records metadata or
// frees space (unlink, rmdir, rename) goes on until half the reserve is
// left (metaFloor). The reserve is a few memtables of badger (8 MiB
// each) and the tables they flush to, with a margin. Processes outside
// cowfs can still fill the filesystem: then the floor, checked by the
// metadata store itself, turns what would be a SIGBUS into ENOSPC.
type space struct {
	fd      int  // a directory of the filesystem
	own     bool // fd is the space's to close
	reserve int64
	// exact asks the filesystem on every call: for a guard against
	// other processes, which can fill a disk within the second an
	// estimate is trusted.
	exact bool
	mu    sync.Mutex
	// free is the free space at the last statfs, less what was asked
	// for since; checked is when that statfs was.
	free    int64
	checked time.Time
}

// openSpace returns a space keeping reserve bytes free on the filesystem
// of dir, asking it on every call.
func openSpace(dir string, reserve int64) (*space, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return &space{fd: fd, reserve: reserve, own: true, exact: true}, nil
}

// close releases the descriptor of a space made by openSpace.
func (s *space) close() {
	if s != nil && s.own {
		unix.Close(s.fd)
	}
}

// metaFloor is the free space below which the metadata database writes
// nothing (metaStore.keepFree), for a reserve of r.
func metaFloor(r int64) int64 { return r / 2 }

// spaceRecheck bounds how long an estimate of free space is trusted
// while far from the reserve: other writers share the filesystem.
const spaceRecheck = time.Second

// need reports ENOSPC if adding n bytes would leave less than the reserve
// free. Far from the reserve it answers from an estimate; within twice
// the reserve it asks the filesystem every time.
func (s *space) need(n int64) error {
	if s == nil || s.reserve <= 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exact || s.free-n < 2*s.reserve || time.Since(s.checked) > spaceRecheck {
		var st unix.Statfs_t
		if err := unix.Fstatfs(s.fd, &st); err != nil {
			return err
		}
		s.free = int64(st.Bfree) * st.Bsize
		s.checked = time.Now()
	}
	if s.free-n < s.reserve {
		return syscall.ENOSPC
	}
	s.free -= n
	return nil
}

// NeedSpace reports ENOSPC if writing n more bytes to the upper's
// filesystem would eat into the reserve (Options.Reserve). It is for
// writers other than FS that share that filesystem: snapshots storing
// objects in a state directory beside the upper.
func (f *FS) NeedSpace(n int64) error { return f.space.need(n) }

// hide takes the reserve out of what statfs reports, so that df shows
// the space a writer gets before ENOSPC.
func (s *space) hide(st *unix.Statfs_t) {
	if s == nil || s.reserve <= 0 || st.Bsize <= 0 {
		return
	}
	blocks := uint64((s.reserve + st.Bsize - 1) / st.Bsize)
	sub := func(v uint64) uint64 {
		if v < blocks {
			return 0
		}
		return v - blocks
	}
	st.Bfree, st.Bavail = sub(st.Bfree), sub(st.Bavail)
}
