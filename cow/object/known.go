package object

import "sync"

// KnownSet remembers digests whose objects a process found in a store
// (and, by its caller's rule, what they reach: a file object's chunks, a
// tree's whole subtree), for as long as nothing has left the store since
// (DirStore.Removals): then they are still there, and need no look. A
// user calls Begin holding the store (DirStore.Hold), so no sweep runs
// while it trusts the set. Safe for concurrent use.
type KnownSet struct {
	mu       sync.Mutex
	store    string // the store's directory
	removals uint64
	valid    bool
	set      map[Digest]struct{}
}

// Begin starts a use of the set against store: the set is emptied if
// objects may have left the store since it was filled, if it was filled
// from another store, or if the store cannot tell (it is no
// RemovalCounter: not a DirStore, and does not wrap one).
func (k *KnownSet) Begin(store any) {
	k.mu.Lock()
	defer k.mu.Unlock()
	r, ok := store.(RemovalCounter)
	var n uint64
	var err error
	dir := ""
	if ok {
		n, err = r.Removals()
		dir = r.Dir()
	}
	if !ok || err != nil || !k.valid || n != k.removals || dir != k.store {
		clear(k.set)
		k.store, k.removals, k.valid = dir, n, ok && err == nil
	}
}

// Has reports whether d is known to be in the store.
func (k *KnownSet) Has(d Digest) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	_, ok := k.set[d]
	return ok && k.valid
}

// Add records that d was found in the store, with what it reaches.
func (k *KnownSet) Add(d Digest) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.valid {
		return
	}
	if k.set == nil {
		k.set = map[Digest]struct{}{}
	}
	k.set[d] = struct{}{}
}
