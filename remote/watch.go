package remote

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/names"
)

// watchMask is every change to a directory's entries, or to the
// attributes, xattrs or bytes of what it holds (inotify reports those of
// a directory's children to the directory's watch).
const watchMask = unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CREATE | unix.IN_DELETE |
	unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF |
	unix.IN_ONLYDIR | unix.IN_DONT_FOLLOW

// treeWatch tells a master whether its export may have changed since a
// moment it noted (decision 0049): an inotify watch on every directory of
// the export, and a count of the events seen. The kernel queues an event
// before the call that made the change returns, and generation reads the
// queue to its end, so a change made before generation is called is
// counted in what it returns.
//
// A treeWatch that cannot watch the whole tree (no inotify, the watch
// limit reached) gives up for good and reports that it cannot tell; the
// master then scans for every resolve, as it would without one.
type treeWatch struct {
	root string
	log  *slog.Logger

	mu  sync.Mutex
	fd  int              // -1: given up, or closed
	wds map[int32]string // watch descriptor -> directory, relative to root
	gen uint64
	// rewalk: the events do not tell what was created (the queue
	// overflowed, or nothing is watched yet): watch the tree again,
	// from the root, before the next generation is handed out.
	rewalk bool
	buf    []byte
}

func newTreeWatch(root string, log *slog.Logger) *treeWatch {
	w := &treeWatch{root: root, log: log, fd: -1, wds: map[int32]string{}, rewalk: true}
	// The export is opened through symlinks; beneath it, none is followed.
	root, err := filepath.EvalSymlinks(root)
	if err != nil {
		log.Warn("cannot watch the export for changes: every mount scans it", "root", w.root, "err", err)
		return w
	}
	w.root = root
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		log.Warn("cannot watch the export for changes: every mount scans it", "root", root, "err", err)
		return w
	}
	w.fd = fd
	w.buf = make([]byte, 64<<10)
	return w
}

// generation returns a number that changes whenever the export changed
// since the last call, or ok false if the watch cannot tell. The first
// call watches the whole tree.
func (w *treeWatch) generation() (gen uint64, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd < 0 {
		return 0, false
	}
	w.drain()
	if w.fd >= 0 && w.rewalk {
		w.rewalk = false
		w.gen++
		w.add("")
	}
	return w.gen, w.fd >= 0
}

// drain reads every event queued.
func (w *treeWatch) drain() {
	for w.fd >= 0 {
		n, err := unix.Read(w.fd, w.buf)
		switch {
		case errors.Is(err, unix.EAGAIN):
			return
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			w.giveUp("read the inotify queue", err)
			return
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&w.buf[off]))
			name := w.buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			if i := bytes.IndexByte(name, 0); i >= 0 {
				name = name[:i]
			}
			off += unix.SizeofInotifyEvent + int(ev.Len)
			w.event(ev.Wd, ev.Mask, string(name))
		}
	}
}

// event takes in one event on watch wd about its child name ("" for the
// directory itself).
func (w *treeWatch) event(wd int32, mask uint32, name string) {
	w.gen++
	switch {
	case mask&unix.IN_Q_OVERFLOW != 0:
		// Events were lost, among them perhaps the creation of a
		// directory that is now not watched.
		w.log.Info("inotify queue overflowed: watching the export again", "root", w.root)
		w.rewalk = true
	case mask&unix.IN_IGNORED != 0:
		delete(w.wds, wd) // the directory is gone, or its watch was dropped
	case mask&unix.IN_ISDIR != 0 && mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0:
		// A directory made or moved in: watch it and what it holds. One
		// moved within the tree keeps its watches, under its new path.
		if dir, ok := w.wds[wd]; ok {
			w.add(names.Join(dir, name))
		}
	}
}

// add watches the directory at path and every directory beneath it. The
// watch comes before the listing, so a directory made meanwhile is
// either listed or reported.
func (w *treeWatch) add(path string) {
	if w.fd < 0 {
		return
	}
	wd, err := unix.InotifyAddWatch(w.fd, filepath.Join(w.root, path), watchMask)
	switch {
	case err != nil && path == "":
		w.giveUp("watch the export's root", err)
		return
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR), errors.Is(err, unix.ELOOP):
		return // gone or replaced since it was reported: that was an event too
	case errors.Is(err, unix.ENOSPC):
		w.giveUp("watch "+path+" (the limit is fs.inotify.max_user_watches)", err)
		return
	case err != nil:
		w.giveUp("watch "+path, err)
		return
	}
	w.wds[int32(wd)] = path
	ents, err := os.ReadDir(filepath.Join(w.root, path))
	if err != nil {
		if path != "" && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR)) {
			return
		}
		w.giveUp("list "+path, err)
		return
	}
	for _, e := range ents {
		if e.Type() == os.ModeDir {
			w.add(names.Join(path, e.Name()))
		}
	}
}

// giveUp stops watching: from now on the watch cannot tell.
func (w *treeWatch) giveUp(what string, err error) {
	w.log.Warn("cannot watch the export for changes: every mount scans it", "root", w.root, "op", what, "err", err)
	w.closeLocked()
}

func (w *treeWatch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.closeLocked()
}

func (w *treeWatch) closeLocked() {
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
		w.wds = nil
	}
}
