package s3store

import (
	"encoding/binary"

	"github.com/cowfs/cowfs/cow/object"
)

// objectLocs says where in the prefix's packs each object lies, for
// every object the loaded indexes name: a mount holds one entry an
// object of the whole prefix, so the entry is small. The indexes'
// entries (indexEntryT, kept in any case for a pack's runs) hold the
// digest and the place; what this adds an object is a map slot of 16
// bytes keyed by the digest's first 8 bytes, where a map by digest to a
// packLoc took 56. Two objects whose first 8 bytes are the same (one in
// about 2^32 objects apart) are told apart by the whole digest, kept in
// a map of their own. A nil *objectLocs places nothing (no index loaded
// yet).
type objectLocs struct {
	packs []packObjects // by id, an entryRef's pack
	at    map[uint64]entryRef
	clash map[object.Digest]entryRef
}

// An entryRef is an object's entry: packs[pack].es[i].
type entryRef struct {
	pack, i uint32
}

func digestKey(d object.Digest) uint64 { return binary.LittleEndian.Uint64(d[:8]) }

func newObjectLocs(n int) *objectLocs {
	return &objectLocs{at: make(map[uint64]entryRef, n)}
}

func (l *objectLocs) entry(r entryRef) *indexEntryT { return &l.packs[r.pack].es[r.i] }

// add places the objects of po in po.pack; an object placed already is
// placed there instead.
func (l *objectLocs) add(po packObjects) {
	id := uint32(len(l.packs))
	l.packs = append(l.packs, po)
	for i, e := range po.es {
		l.set(e.d, entryRef{pack: id, i: uint32(i)})
	}
}

func (l *objectLocs) set(d object.Digest, r entryRef) {
	k := digestKey(d)
	if cur, ok := l.at[k]; ok && l.entry(cur).d != d {
		if l.clash == nil {
			l.clash = map[object.Digest]entryRef{}
		}
		l.clash[d] = r
		return
	}
	l.at[k] = r
	if l.clash != nil {
		// Placed before while another held its key, since removed.
		delete(l.clash, d)
	}
}

// ref returns d's entry.
func (l *objectLocs) ref(d object.Digest) (entryRef, bool) {
	if l == nil {
		return entryRef{}, false
	}
	if r, ok := l.at[digestKey(d)]; ok && l.entry(r).d == d {
		return r, true
	}
	r, ok := l.clash[d]
	return r, ok
}

// has says whether d is placed.
func (l *objectLocs) has(d object.Digest) bool {
	_, ok := l.ref(d)
	return ok
}

// get says where d lies.
func (l *objectLocs) get(d object.Digest) (packLoc, bool) {
	r, ok := l.ref(d)
	if !ok {
		return packLoc{}, false
	}
	e := l.entry(r)
	return packLoc{pack: l.packs[r.pack].pack, off: e.off, n: e.n}, true
}

// remove forgets d if it is placed in pack.
func (l *objectLocs) remove(d object.Digest, pack string) {
	if l == nil {
		return
	}
	k := digestKey(d)
	if r, ok := l.at[k]; ok && l.entry(r).d == d {
		if l.packs[r.pack].pack == pack {
			delete(l.at, k)
		}
		return
	}
	if r, ok := l.clash[d]; ok && l.packs[r.pack].pack == pack {
		delete(l.clash, d)
	}
}

// each calls fn with every object placed, in no order.
func (l *objectLocs) each(fn func(object.Digest)) {
	if l == nil {
		return
	}
	for _, r := range l.at {
		fn(l.entry(r).d)
	}
	for d := range l.clash {
		fn(d)
	}
}

// len is how many objects are placed.
func (l *objectLocs) len() int {
	if l == nil {
		return 0
	}
	return len(l.at) + len(l.clash)
}
