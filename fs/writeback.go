package fs

import (
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// writers tracks the kernel inodes that have a handle open for writing
// through the page cache: only they can hold data the kernel has not
// written back yet. With the writeback cache that is every write; without
// it, what a process wrote through a shared writable mapping. A close
// with the writeback cache, and an munmap, write back and wait, and a
// mapping keeps its file's handle open until then.
type writers struct {
	mu    sync.Mutex
	nodes map[*node]int
}

func (w *writers) add(n *node) {
	w.mu.Lock()
	if w.nodes == nil {
		w.nodes = map[*node]int{}
	}
	w.nodes[n]++
	w.mu.Unlock()
}

func (w *writers) remove(n *node) {
	w.mu.Lock()
	if w.nodes[n]--; w.nodes[n] <= 0 {
		delete(w.nodes, n)
	}
	w.mu.Unlock()
}

func (w *writers) list() []*node {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*node, 0, len(w.nodes))
	for n := range w.nodes {
		out = append(out, n)
	}
	return out
}

// flushWriters makes the kernel write back, and wait for, the data of
// every file open for writing, so that a snapshot taken next holds it.
// syncfs alone is not enough: the kernel does not wait for a FUSE
// filesystem's write-back there (a stuck server must not hang sync(2)).
// It opens each file through the mount and fsyncs it; a file whose name
// went has nothing a snapshot could reach. It returns how many it fsynced.
func (m *Mount) flushWriters() int {
	done := 0
	for _, n := range m.ms.writers.list() {
		rel := n.path().Rel()
		fd, err := openIn(m.Dir, rel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC)
		if err != nil {
			continue
		}
		if err := unix.Fsync(fd); err != nil {
			m.log.Warn("snapshot: write back an open file", "path", rel, "err", err)
		} else {
			done++
		}
		unix.Close(fd)
	}
	return done
}

// openIn opens rel below the directory dir. Joined, the two may be longer
// than a system call takes (a process works in a deep directory with paths
// relative to it): then rel's directories are opened from dir's descriptor
// in pieces each short enough for one call.
func openIn(dir, rel string, flags int) (int, error) {
	if len(dir)+1+len(rel) < unix.PathMax {
		return unix.Open(filepath.Join(dir, rel), flags, 0)
	}
	at, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	const piece = unix.PathMax / 2
	for len(rel) > piece {
		i := strings.LastIndexByte(rel[:piece], '/')
		if i <= 0 {
			unix.Close(at)
			return -1, unix.ENAMETOOLONG
		}
		next, err := unix.Openat(at, rel[:i], unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		unix.Close(at)
		if err != nil {
			return -1, err
		}
		at, rel = next, rel[i+1:]
	}
	defer unix.Close(at)
	return unix.Openat(at, rel, flags, 0)
}
