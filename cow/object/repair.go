package object

import (
	"context"
	"fmt"
	"log/slog"
)

// Place is where a snapshot uses an object: what a Source needs to find
// its bytes again.
type Place struct {
	// Path is the entry's path in the snapshot, "" for the root tree.
	Path string
	Kind Kind
	// Chunk is, for a blob, its index in the file at Path.
	Chunk int
	// Entry is the entry at Path; nil for the root tree.
	Entry *Entry
}

// Source offers bytes that may be an object a store lacks or holds
// damaged: the tree a snapshot was taken of, a master. What it returns is
// checked against the digest before anything is stored, so a source may
// be wrong (a file changed since) but can never make a store wrong.
type Source interface {
	// Object returns what should be the encoded object d, used at p.
	Object(ctx context.Context, d Digest, p Place) ([]byte, error)
	// String names the source in reports.
	String() string
}

// Damage is one object a snapshot reaches that was damaged or missing.
type Damage struct {
	Object Digest
	Kind   Kind
	// Paths are where the snapshot uses the object, as far as the
	// repair saw: an object under a tree that could not be read is not
	// reached.
	Paths []string
	// Err is what was wrong with it.
	Err error
	// From names the source it was repaired from; "" if it was not.
	From string
}

// Repaired reports whether the object is whole in the store again.
func (d *Damage) Repaired() bool { return d.From != "" }

// maxPaths bounds the paths a Damage lists: an object of a snapshot of
// many identical files is used by all of them.
const maxPaths = 20

// Repair re-reads every object the tree root reaches, as Verify does, and
// stores again each damaged or missing one from the first of sources that
// has bytes hashing to its digest. It returns every damaged or missing
// object, repaired or not, in the order found. An object that hashes right
// but does not decode, or does not fit its place (a chunk of the wrong
// length), cannot be repaired: its digest names those bytes.
//
// Unlike Verify it goes on past a tree or file object it cannot read, to
// the rest of the snapshot, and reads an object used in several places
// once.
func Repair(ctx context.Context, s GetPutter, root Digest, sources []Source) ([]*Damage, error) {
	r := &repairer{ctx: ctx, s: s, sources: sources, whole: map[Digest]int64{}, damage: map[Digest]*Damage{}}
	r.tree(root, Place{Kind: KindTree})
	if err := ctx.Err(); err != nil {
		return r.found, err
	}
	return r.found, nil
}

type repairer struct {
	ctx     context.Context
	s       GetPutter
	sources []Source
	// whole holds objects found whole with everything they reach, and
	// for a blob its content's length.
	whole  map[Digest]int64
	damage map[Digest]*Damage
	found  []*Damage
}

// note records that d, used at p, is wrong (err).
func (r *repairer) note(d Digest, p Place, err error) *Damage {
	dm := r.damage[d]
	if dm == nil {
		dm = &Damage{Object: d, Kind: p.Kind, Err: err}
		r.damage[d] = dm
		r.found = append(r.found, dm)
	}
	if len(dm.Paths) < maxPaths {
		dm.Paths = append(dm.Paths, p.Path)
	}
	return dm
}

// get returns object d, used at p, verified: from the store, or repaired
// from a source.
func (r *repairer) get(d Digest, p Place) ([]byte, bool) {
	if r.ctx.Err() != nil {
		return nil, false
	}
	b, err := r.s.Get(r.ctx, d)
	if err == nil {
		return b, true
	}
	if r.ctx.Err() != nil {
		return nil, false
	}
	dm := r.note(d, p, err)
	for _, src := range r.sources {
		b, err := src.Object(r.ctx, d, p)
		if err != nil {
			slog.Debug("repair: source has no bytes for the object", "object", d.Short(), "path", p.Path, "source", src.String(), "err", err)
			continue
		}
		if got := Sum(b); got != d {
			slog.Debug("repair: source has other bytes", "object", d.Short(), "path", p.Path, "source", src.String(), "hashes_to", got.Short())
			continue
		}
		if _, err := r.s.Put(r.ctx, b); err != nil {
			dm.Err = fmt.Errorf("%w; storing it from %s: %v", dm.Err, src, err)
			return nil, false
		}
		dm.From = src.String()
		return b, true
	}
	return nil, false
}

// tree checks tree d, used at p, and everything under it, and reports
// whether all of it is whole.
func (r *repairer) tree(d Digest, p Place) bool {
	if _, ok := r.whole[d]; ok {
		return true
	}
	b, ok := r.get(d, p)
	if !ok {
		return false
	}
	t, err := DecodeTree(b)
	if err != nil {
		r.note(d, p, err)
		return false
	}
	whole := true
	for i := range t.Entries {
		e := &t.Entries[i]
		cp := Place{Path: e.Name, Entry: e}
		if p.Path != "" {
			cp.Path = p.Path + "/" + e.Name
		}
		switch {
		case isDir(e.Mode):
			cp.Kind = KindTree
			whole = r.tree(e.Object, cp) && whole
		case isReg(e.Mode) && e.Size > 0:
			cp.Kind = KindFile
			whole = r.file(e.Object, cp) && whole
		}
	}
	if whole {
		r.whole[d] = 0
	}
	return whole
}

// file checks file object d, used at p, and its chunks.
func (r *repairer) file(d Digest, p Place) bool {
	if _, ok := r.whole[d]; ok {
		return true
	}
	b, ok := r.get(d, p)
	if !ok {
		return false
	}
	f, err := DecodeFile(b)
	if err == nil && f.Size != p.Entry.Size {
		err = fmt.Errorf("object of %d bytes for an entry of %d: %w", f.Size, p.Entry.Size, ErrCorrupt)
	}
	if err != nil {
		r.note(d, p, err)
		return false
	}
	whole := true
	for i, c := range f.Chunks {
		if c.IsZero() {
			continue
		}
		want := min(int64(ChunkSize), f.Size-int64(i)*ChunkSize)
		n, ok := r.whole[c]
		if !ok {
			cp := Place{Path: p.Path, Kind: KindBlob, Chunk: i, Entry: p.Entry}
			b, ok := r.get(c, cp)
			if !ok {
				whole = false
				continue
			}
			data, err := DecodeBlob(b)
			if err != nil {
				r.note(c, cp, err)
				whole = false
				continue
			}
			n = int64(len(data))
			r.whole[c] = n
		}
		if n != want {
			err := fmt.Errorf("chunk %d holds %d bytes, want %d: %w", i, n, want, ErrCorrupt)
			r.note(c, Place{Path: p.Path, Kind: KindBlob, Chunk: i, Entry: p.Entry}, err)
			whole = false
		}
	}
	if whole {
		r.whole[d] = 0
	}
	return whole
}
