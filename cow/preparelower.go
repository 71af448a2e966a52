package cow

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/fsio"
	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/names"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/scan"
)

// PrepareLower takes a local-directory lower into store ahead of a
// capture (CapturePrepared), holding nothing up: its files through the
// mount's scan cache, as a capture does, and a tree for each directory. A
// capture then holds changes only for what the upper changed, not for a
// read of the whole lower. Over an object lower it returns nil: its trees
// are taken by digest already.
//
// The lower does not change while mounted; if it does anyway, the capture
// walks afresh each directory whose listing changed since (a stat per
// directory tells), and takes a file rewritten in place since as the
// prepare read it, a moment earlier: the mount, too, shows such a change
// late or not at all (docs/architecture.md).
func (f *FS) PrepareLower(ctx context.Context, store object.GetPutter) (*scan.Prep, error) {
	if _, ok := f.lo.(*lower.Objects); ok {
		return nil, nil
	}
	view := f.meta.scanView()
	defer view.Discard()
	// The capture lists a lower file's xattrs without cowfs's own.
	prep, err := scan.Prepare(ctx, f.lo, store, view, f.up.ownXattr)
	if err != nil {
		return nil, fmt.Errorf("take in the lower: %w", err)
	}
	return prep, nil
}

// CapturePrepared is Capture after PrepareLower: a lower directory that
// the upper never touched is the tree prep holds for it, unless it or a
// directory beneath it changed since. A nil prep makes it Capture.
func (f *FS) CapturePrepared(ctx context.Context, store object.GetPutter, prep *scan.Prep) (object.Digest, object.Entry, CaptureStats, error) {
	return f.capture(ctx, store, nil, prep)
}

// prepared returns the tree of the lower directory of n if the capture
// can take it whole from c.prepared.
func (c *capture) prepared(n *Node) (scan.PreparedDir, bool) {
	if c.prep == nil || n.upper || !n.hasLower {
		return scan.PreparedDir{}, false
	}
	d, ok := c.prep[n.lower]
	if !ok || d.Links && len(c.pending) > 0 {
		// A name of a file with several names is linked up if another
		// name of it is in the upper: walk it, as without a prepare.
		return scan.PreparedDir{}, false
	}
	return d, true
}

// preparedEntries returns, by name, the entries of the directory at p that
// the capture can take from the tree PrepareLower made of its lower
// directory, unchanged since: those of its lower-only names, but for
// directories changed beneath. The rest (names in the upper, and all of
// them when it returns none) are walked. So a directory of many lower
// files that the upper added one to costs a listing, not a look at each.
func (c *capture) preparedEntries(p Path) (map[string]object.Entry, error) {
	n := p.node()
	if c.prep == nil || !n.upper || !n.hasLower {
		return nil, nil
	}
	d, ok := c.prep[n.lower]
	if !ok || d.Links && len(c.pending) > 0 {
		return nil, nil
	}
	b, err := c.store.Get(c.ctx, d.Tree)
	if err != nil {
		return nil, nil // walked instead
	}
	t, err := object.DecodeTree(b)
	if err != nil {
		return nil, nil
	}
	up, err := c.f.upperNames(p)
	if err != nil {
		return nil, fmt.Errorf("capture %q: %w", p.Rel(), err)
	}
	out := make(map[string]object.Entry, len(t.Entries))
	for _, e := range t.Entries {
		if up[e.Name] {
			continue
		}
		if _, ok := c.prep[names.Join(n.lower, e.Name)]; !ok && e.Mode&unix.S_IFMT == unix.S_IFDIR {
			continue
		}
		out[e.Name] = e
	}
	return out, nil
}

// takePrepared counts e, an entry taken from a prepared tree of the lower
// directory at lower, into the capture's stats.
func (c *capture) takePrepared(lower string, e *object.Entry) {
	switch e.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		d := c.prep[names.Join(lower, e.Name)]
		c.stats.Dirs += d.Dirs
		c.stats.Files += d.Files
		c.stats.DirsReused++
	case unix.S_IFREG:
		c.stats.Files++
	}
}

// upperNames returns the names in the upper directory of the merged
// directory at p.
func (f *FS) upperNames(p Path) (map[string]bool, error) {
	fd, err := fsio.OpenBeneath(f.up.root, p.Rel(), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open upper dir: %w", err)
	}
	defer unix.Close(fd)
	ents, err := fsio.ReadDir(fd)
	if err != nil {
		return nil, fmt.Errorf("read upper dir: %w", err)
	}
	names := make(map[string]bool, len(ents))
	for _, e := range ents {
		names[e.Name] = true
	}
	return names, nil
}
