package fs

import (
	"sync"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/cowfs/cowfs/cow"
)

// ioMode is how the kernel does I/O for one open file.
type ioMode uint8

const (
	// modeCached: through the kernel's page cache (FOPEN_KEEP_CACHE).
	modeCached ioMode = iota
	// modePassthrough: the kernel reads (and, for files born in the
	// upper, writes) a backing file directly; nothing reaches cowfs.
	modePassthrough
)

// ioModes counts, per kernel inode, the opens the kernel holds in each
// mode. The kernel enforces rules across them: while an inode has a
// passthrough open, every other open of it must be a passthrough open of
// the same backing file (anything else gets EIO), and a passthrough open is
// refused while the inode has cached opens.
//
// The kernel drops an open's mode when the file is closed, before it sends
// RELEASE, so these counts are never below the kernel's.
type ioModes struct {
	mu     sync.Mutex
	counts [2]int
}

// regens hands out the inode generations the kernel sees. A lower file
// passed through can be written only through a new kernel inode (the old
// one is bound to the lower file until its passthrough opens close), so the
// writer's open bumps the generation of the file's inode number and fails
// with ESTALE; the kernel then looks the path up again (LOOKUP_REVAL), gets
// a node with the new generation, and opens that. st_ino does not change.
type regens struct {
	// bumped is set by the first bump: until then every node is of the
	// current generation, and current need not look.
	bumped atomic.Bool
	mu     sync.Mutex
	m      map[uint64]uint64
}

// none reports that no generation was ever retired: every node is of its
// inode number's current generation.
func (r *regens) none() bool { return !r.bumped.Load() }

// current reports whether the kernel inode in was made with its inode
// number's current generation. Until the first bump it need not look at
// in, whose memory a listing of a large directory would otherwise touch
// for each entry.
func (r *regens) current(in *gofs.Inode) bool {
	if !r.bumped.Load() {
		return true
	}
	n := in.Operations().(*node)
	return n.regen == r.get(n.c.Ino)
}

func (r *regens) get(ino uint64) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[ino]
}

// bump retires generation gen of ino; it is a no-op when already retired.
func (r *regens) bump(ino, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[uint64]uint64{}
	}
	if r.m[ino] == gen {
		r.bumped.Store(true)
		r.m[ino] = gen + 1
	}
}

// ptHandle is an open the kernel passes through to fd. Only it implements
// FilePassthroughFder: go-fuse hands an inode's registered backing file to
// every open whose handle does, so a plain handle must not.
type ptHandle struct {
	*handle
	fd int
}

var _ = (gofs.FilePassthroughFder)((*ptHandle)(nil))

func (h *ptHandle) PassthroughFd() (int, bool) { return h.fd, true }

// isWrite says whether open flags may change the file.
func isWrite(flags uint32) bool {
	return flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0
}

// stale reports whether an open of n must go to a new kernel inode: n is a
// retired generation, or it is passed through to a lower file and this
// open cannot be (it writes). It retires n in the second case.
func (n *node) stale(write bool) bool {
	if !n.m.regen.current(n.EmbeddedInode()) {
		return true
	}
	n.io.mu.Lock()
	ptLower := n.io.counts[modePassthrough] > 0 && n.ptLower
	n.io.mu.Unlock()
	if ptLower && write {
		n.m.regen.bump(n.c.Ino, n.regen)
		return true
	}
	return false
}

// newHandle wraps an open of n in the mode the inode allows: read-only
// opens of a file whose bytes are all in one lower file are passed through
// with --passthrough-lower, files born in the upper with --passthrough. It
// returns ESTALE, after retiring n, for a read-only open of a lower file
// that was copied up while n was passed through to the lower.
func (n *node) newHandle(h *cow.Handle, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fd, ok, lower := -1, false, false
	if n.m.passthrough {
		fd, ok = h.PassthroughFd()
	}
	if !ok && n.m.passthroughLower && !isWrite(flags) {
		fd, ok = h.LowerFd()
		lower = ok
	}
	n.io.mu.Lock()
	defer n.io.mu.Unlock()
	mode := modeCached
	switch {
	case n.io.counts[modePassthrough] > 0 && !ok:
		// Bound to a backing file this open cannot use.
		n.m.regen.bump(n.c.Ino, n.regen)
		return nil, 0, syscall.ESTALE
	case ok && n.io.counts[modeCached] == 0:
		mode = modePassthrough
		n.ptLower = lower
	}
	n.io.counts[mode]++
	fh := &handle{h: h, n: n, mode: mode}
	if mode == modeCached && isWrite(flags) {
		fh.writer = true
		n.m.writers.add(n)
	}
	if mode == modePassthrough {
		return &ptHandle{handle: fh, fd: fd}, 0, 0
	}
	return fh, fuse.FOPEN_KEEP_CACHE, 0
}

func (m *ioModes) release(mode ioMode) {
	m.mu.Lock()
	m.counts[mode]--
	m.mu.Unlock()
}
