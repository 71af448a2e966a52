package cow

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Work is a mount's work directory, locked, with the upper's metadata
// database in it open: the part of New that needs neither the lower nor
// the upper, and the slowest (the database syncs as it opens). A caller
// whose lower takes a while to open (a remote version resolved and its
// root fetched) opens it meanwhile and hands it to New (Options.Work).
//
// It writes nothing outside the work directory: the upper, its root's
// attributes and its identity namespace are New's, in their own order.
type Work struct {
	lock int
	// mounted says the metadata existed before OpenWork: an upper a
	// mount has had (choosePrefix).
	mounted bool
	meta    *metaStore
}

// OpenWork opens opts.WorkDir (which must exist) and the metadata in
// opts.MetaDir, for New. An upper that exists and is the work directory
// itself, or on another filesystem, is refused before anything is
// written, as New refuses it. A work directory another open FS holds is
// refused with EWOULDBLOCK.
func OpenWork(opts Options) (*Work, error) {
	var w, u unix.Stat_t
	if err := unix.Stat(opts.WorkDir, &w); err != nil {
		return nil, fmt.Errorf("open work dir %s: %w", opts.WorkDir, err)
	}
	upperErr := unix.Stat(opts.UpperDir, &u)
	if upperErr == nil {
		switch {
		case u.Dev != w.Dev:
			return nil, fmt.Errorf("upper %s and work dir %s are on different filesystems; copy-up renames from one to the other", opts.UpperDir, opts.WorkDir)
		case u.Ino == w.Ino:
			return nil, fmt.Errorf("the work dir %s is the upper itself; give a directory of its own beside it", opts.WorkDir)
		}
	}
	lock, err := lockDir(opts.WorkDir)
	if err != nil {
		return nil, err
	}
	// The metadata is made here before New records the upper's xattr
	// namespace, so its presence alone no longer tells an upper a mount
	// has had: one whose mount failed (or was killed) after OpenWork
	// has metadata and no record. Such an upper was never made (New
	// makes it), and an upper that does not exist is new whatever the
	// work directory holds.
	_, metaErr := os.Stat(opts.MetaDir)
	meta, err := openMetaRoom(opts.MetaDir, reserveOf(opts))
	if err != nil {
		unix.Close(lock)
		return nil, err
	}
	return &Work{lock: lock, mounted: metaErr == nil && upperErr == nil, meta: meta}, nil
}

// Close releases what New did not take over. A nil Work is closed.
func (w *Work) Close() {
	if w == nil {
		return
	}
	if w.meta != nil {
		w.meta.close()
		w.meta = nil
	}
	if w.lock != -1 {
		unix.Close(w.lock)
		w.lock = -1
	}
}

// reserveOf is opts.Reserve with its default.
func reserveOf(opts Options) int64 {
	if opts.Reserve == 0 {
		return DefaultReserve
	}
	return opts.Reserve
}

// openMetaRoom opens the metadata in dir, kept off the last of its
// filesystem's free space.
//
// Metadata-only changes (whiteouts, redirects, dropped records) may use
// half of the reserve, so that removing lower files still works once
// cowfs's own writes have filled the disk up to it; below that the
// database is kept off the disk (metaStore.keepFree).
func openMetaRoom(dir string, reserve int64) (*metaStore, error) {
	var room *space
	if reserve > 0 {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		var err error
		if room, err = openSpace(dir, metaFloor(reserve)); err != nil {
			return nil, err
		}
		// Opening the database writes to it: on a full disk that is a
		// SIGBUS, so say what is wrong first.
		if err := room.need(0); err != nil {
			room.close()
			return nil, fmt.Errorf("the filesystem of %s has less than %d KiB free, which the metadata needs (half the reserve): free some space there first: %w",
				dir, metaFloor(reserve)>>10, err)
		}
	}
	meta, err := openMeta(dir)
	if err != nil {
		room.close()
		return nil, err
	}
	meta.room = room
	return meta, nil
}
