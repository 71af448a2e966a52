package fs

import (
	"path/filepath"
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
		fd, err := unix.Open(filepath.Join(m.Dir, rel), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
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
