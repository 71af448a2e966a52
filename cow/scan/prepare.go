package scan

import (
	"context"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/fsio"
	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
)

// Prep is a local-directory lower taken in ahead of a capture
// (Prepare): the tree of every lower directory, as the capture would
// make it of a directory the upper never touched.
type Prep struct {
	dirs map[string]PreparedDir
	// BytesRead is what the prepare read and hashed.
	BytesRead int64
}

// PreparedDir is a lower directory as Prepare read it.
type PreparedDir struct {
	Tree object.Digest
	// The directory's inode and times before a listing that they
	// outlasted unchanged: a create, removal or rename in it since
	// moves its mtime and ctime.
	ino          uint64
	mtime, ctime unix.Timespec
	// What is beneath it, itself included for dirs, as a capture counts.
	Dirs, Files int
	// Links: a non-directory beneath it has several names, so it may
	// hold a name of a file the capture must link up (the engine's capture.pending).
	Links bool
}

// Prepare takes the local-directory lower lo into store ahead of a
// capture, as Tree does, through cache, and keeps the tree of each
// directory with what tells whether it changed since (the engine's
// FS.PrepareLower). dropXattr, if set, says which xattrs to leave out.
func Prepare(ctx context.Context, lo lower.Layer, store object.GetPutter, cache Cache, dropXattr func(string) bool) (*Prep, error) {
	s := New(ctx, lo, store, cache)
	s.prep = &Prep{dirs: map[string]PreparedDir{}}
	s.dropXattr = dropXattr
	if _, err := s.dir(""); err != nil {
		return nil, err
	}
	s.prep.BytesRead = s.stats.BytesRead
	return s.prep, nil
}

// Still drops from p the directories that changed since they were read,
// and every directory above one (its tree holds the old one's), with a
// stat of each.
func (p *Prep) Still(lo lower.Layer) map[string]PreparedDir {
	var stale []string
	for path, d := range p.dirs {
		st, err := lo.Lstat(path)
		if err != nil || st.Ino != d.ino || st.Mtim != d.mtime || st.Ctim != d.ctime {
			stale = append(stale, path)
		}
	}
	for _, path := range stale {
		for {
			delete(p.dirs, path)
			if path == "" {
				break
			}
			path, _ = fsio.SplitPath(path)
		}
	}
	return p.dirs
}

// tally counts entry e of the directory into d; sub is e's own, if e is
// a directory.
func (d *PreparedDir) tally(e object.Entry, sub PreparedDir) {
	switch e.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		d.Dirs += sub.Dirs
		d.Files += sub.Files
		d.Links = d.Links || sub.Links
	case unix.S_IFREG:
		d.Files++
	}
	if e.Link != 0 {
		d.Links = true
	}
}
