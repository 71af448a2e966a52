package cow

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/names"
	"github.com/cowfs/cowfs/cow/object"
)

// PrepareCapture brings into the object lower's store (for a remote, its
// cache) what a capture would read from the lower now, holding nothing up
// while it fetches: the trees of the directories the upper changed, and
// for each file the upper holds in part, its origin's file object and the
// origin chunks the capture reads instead of referencing. A CaptureLocal
// after it then finds them locally, unless the workspace changed
// meanwhile. Over any other lower it does nothing.
//
// It walks the changes as the capture does, through the same lookups,
// but without the namespace lock, so that no create or open waits for a
// fetch. A change it races with makes it look at a name that is gone (it
// skips it) or miss what the capture will need (CaptureLocal says so).
// A fetch that fails fails it, naming what the snapshot needed.
func (f *FS) PrepareCapture(ctx context.Context) error {
	ol, ok := f.lo.(*lower.Objects)
	if !ok {
		return nil
	}
	f.mu.RLock()
	r := f.root
	root := &Node{Type: r.Type, Ino: r.Ino, Gen: r.Gen, lower: r.lower, hasLower: r.hasLower, upper: r.upper, id: r.id}
	pending, err := f.meta.pendingLinks()
	f.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("prepare capture: %w", err)
	}
	p := &preparer{f: f, ol: ol, ctx: ctx, pending: pending}
	return p.dir(Path{Nodes: []*Node{root}})
}

type preparer struct {
	f       *FS
	ol      *lower.Objects
	ctx     context.Context
	pending map[uint64]bool
}

// gone reports whether err says that a name went while the walk looked.
func gone(err error) bool {
	return isNotExist(err) || errors.Is(err, syscall.ENOTDIR)
}

func needed(what string, err error) error {
	return fmt.Errorf("cannot fetch %s, needed by the snapshot: %w", what, err)
}

func (p *preparer) dir(dp Path) error {
	if err := p.ctx.Err(); err != nil {
		return err
	}
	n := dp.node()
	if n.hasLower {
		e, err := p.ol.EntryFrom(p.ol.Store(), n.lower)
		if gone(err) {
			return nil
		}
		if err != nil {
			return needed(fmt.Sprintf("the lower directory of %q", "/"+dp.Rel()), err)
		}
		if !n.upper {
			// The capture takes it whole, by digest, unless it holds
			// a name of a pending link (capture.holdsPending).
			if len(p.pending) == 0 {
				return nil
			}
			return p.subtrees(e.Object, dp.Rel())
		}
		if e.Mode&unix.S_IFMT == unix.S_IFDIR {
			if _, err := p.ol.TreeFrom(p.ol.Store(), e.Object); err != nil {
				return needed(fmt.Sprintf("the lower directory of %q", "/"+dp.Rel()), err)
			}
		}
	}
	if !n.upper {
		return nil
	}
	ents, err := p.f.readDir(dp)
	if gone(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("prepare capture: %w", err)
	}
	for _, de := range ents {
		child, st, err := p.f.lookup(dp, de.Name)
		if gone(err) || errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("prepare capture: lookup %q: %w", names.Join(dp.Rel(), de.Name), err)
		}
		cp := dp.child(de.Name, child)
		switch child.Type {
		case unix.S_IFDIR:
			err = p.dir(cp)
		case unix.S_IFREG:
			if child.upper {
				err = p.file(cp, st.Size)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// file fetches what the capture reads from the origin of the upper file
// at fp, of size size.
func (p *preparer) file(fp Path, size int64) error {
	n := fp.node()
	if n.id == 0 {
		return nil
	}
	m, err := p.f.meta.file(n.id)
	if errors.Is(err, errNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("prepare capture: %q: %w", fp.Rel(), err)
	}
	// As loadData reads it.
	m.LowerLimit = min(m.LowerLimit, size)
	if m.Complete() {
		return nil
	}
	origin, _, err := p.ol.FileObjectFrom(p.ol.Store(), m.Origin)
	if gone(err) {
		return nil
	}
	what := fmt.Sprintf("%q in the lower", "/"+m.Origin)
	if m.Origin != fp.Rel() {
		what += fmt.Sprintf(" (the origin of %q)", "/"+fp.Rel())
	}
	if err != nil {
		return needed(what, err)
	}
	for i := int64(0); i*ChunkSize < size; i++ {
		cs := i * ChunkSize
		ce := min(cs+ChunkSize, size)
		if !fromOrigin(m, origin, i, cs, ce) || origin.Chunks[i].IsZero() {
			continue
		}
		if _, err := p.ol.Store().Get(p.ctx, origin.Chunks[i]); err != nil {
			return needed(fmt.Sprintf("chunk %d of %s", i, what), err)
		}
	}
	return nil
}

// subtrees fetches every tree below tree d, as holdsPending reads them.
func (p *preparer) subtrees(d object.Digest, rel string) error {
	if err := p.ctx.Err(); err != nil {
		return err
	}
	t, err := p.ol.TreeFrom(p.ol.Store(), d)
	if err != nil {
		return needed(fmt.Sprintf("a lower directory under %q", "/"+rel), err)
	}
	for i := range t.Entries {
		if e := &t.Entries[i]; e.Mode&unix.S_IFMT == unix.S_IFDIR {
			if err := p.subtrees(e.Object, names.Join(rel, e.Name)); err != nil {
				return err
			}
		}
	}
	return nil
}
