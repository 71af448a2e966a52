package cow

import (
	"runtime"
	"sync/atomic"

	"github.com/cowfs/cowfs/cow/lower"
)

// A directory only the upper has keeps its listing on its Node once listed
// through ReadDirKnown, or from birth when made through Mkdir, and every
// change FS makes to the directory changes
// the kept listing with it, so that the next listing reads no directory and
// no identity. Nothing else changes the upper, and such a directory has no
// lower beneath it, so the kept listing is the directory's. It is kept only
// for a caller that makes every change through the same Node it lists
// (package fs, whose kernel inodes each hold one); walks over Nodes of
// their own (capture, rmdir's emptiness check) read a kept listing but
// keep none. Changes hold f.mu exclusively and listings hold it shared: a
// listing is kept and read whole, never while it changes.
const (
	// keptPerDir is the most entries one directory keeps: larger ones
	// are read each time.
	keptPerDir = 1 << 16
	// keptMax bounds the entries all directories of an FS keep, about
	// a hundred bytes each.
	keptMax = 1 << 20
)

// dirList is a directory's kept listing.
type dirList struct {
	ents []lower.DirEntry
	held []bool         // see ReadDirKnown; nil when not known
	at   map[string]int // index of each name in ents
	// counted is this listing's share of FS.kept; atomic because a
	// cleanup reads it once the directory's node is gone.
	counted atomic.Int64
}

// keepList keeps ents as the listing of the upper-only directory d, unless
// it already has one or the bounds say no. It holds f.mu, shared or not.
func (f *FS) keepList(d *Node, ents []lower.DirEntry, held []bool) {
	n := int64(len(ents))
	if n > keptPerDir || d.list.Load() != nil {
		return
	}
	if f.kept.Add(n) > keptMax {
		f.kept.Add(-n)
		return
	}
	if held == nil {
		held = make([]bool, len(ents))
	}
	l := &dirList{ents: append([]lower.DirEntry(nil), ents...), held: append([]bool(nil), held...), at: make(map[string]int, len(ents))}
	for i, e := range l.ents {
		l.at[e.Name] = i
	}
	l.counted.Store(n)
	if !d.list.CompareAndSwap(nil, l) {
		f.kept.Add(-n)
		return
	}
	// A directory's node goes when the kernel forgets it; its listing's
	// share of keptMax comes back then (none, if dropped before).
	kept := f.kept
	runtime.AddCleanup(d, func(l *dirList) { kept.Add(-l.counted.Swap(0)) }, l)
}

// keptList returns a copy of d's kept listing, or nil.
func (f *FS) keptList(d *Node) ([]lower.DirEntry, []bool) {
	l := d.list.Load()
	if l == nil {
		return nil, nil
	}
	return append(make([]lower.DirEntry, 0, len(l.ents)), l.ents...), append([]bool(nil), l.held...)
}

// editList applies a change FS made to directory d to its kept listing:
// edit, when the change succeeded (err nil); a change that failed may have
// changed the upper part way, so its directory's listing is dropped. It
// holds f.mu exclusively.
func (f *FS) editList(d *Node, err error, edit func(l *dirList)) {
	l := d.list.Load()
	if l == nil {
		return
	}
	if err != nil {
		f.dropList(d)
		return
	}
	before := len(l.ents)
	edit(l)
	delta := int64(len(l.ents) - before)
	l.counted.Add(delta)
	f.kept.Add(delta)
}

// dropList forgets d's kept listing. It holds f.mu exclusively.
func (f *FS) dropList(d *Node) {
	l := d.list.Swap(nil)
	if l == nil {
		return
	}
	f.kept.Add(-l.counted.Swap(0))
}

// add records a new name of node n, which the caller holds: it made the
// change with it, or was handed it.
func (l *dirList) add(name string, n *Node) {
	if i, ok := l.at[name]; ok {
		l.ents[i] = lower.DirEntry{Name: name, Ino: n.Ino, Mode: n.Type}
		l.held[i] = true
		return
	}
	l.at[name] = len(l.ents)
	l.ents = append(l.ents, lower.DirEntry{Name: name, Ino: n.Ino, Mode: n.Type})
	l.held = append(l.held, true)
}

// remove forgets name; the last entry takes its place.
func (l *dirList) remove(name string) {
	i, ok := l.at[name]
	if !ok {
		return
	}
	last := len(l.ents) - 1
	if i != last {
		l.ents[i], l.held[i] = l.ents[last], l.held[last]
		l.at[l.ents[i].Name] = i
	}
	l.ents, l.held = l.ents[:last], l.held[:last]
	delete(l.at, name)
}
