package refs

import (
	"context"
	"fmt"
	"strings"

	"github.com/cowfs/cowfs/cow/object"
)

// Live is what a sweep of the object store (gc, cache eviction) must keep:
// what the snapshots and pins reach. A sweep marks once before it lists
// what to remove, and again under each batch's lock
// (object.DirStore.LockSweep), where no writer is between its first
// object and its ref: each Mark reads only the refs and pins it has not
// read before, so the second is cheap, and a snapshot or restore that
// finished meanwhile keeps what it reaches without freshening any of it.
type Live struct {
	// Keep is what the snapshots and pins reach (but see Remote).
	Keep map[object.Digest]bool
	// Remote is what pins of remote versions reach, when kept apart
	// (NewLive's remoteApart): a cache may evict it while the master has
	// it. Otherwise it is Keep.
	Remote map[object.Digest]bool

	// SkipStale leaves out pins whose process is gone (a mount killed
	// with SIGKILL cannot unpin), and UnpinStale removes them as well.
	SkipStale, UnpinStale bool

	store *object.DirStore
	d     *Dir
	snaps map[string]object.Digest
	pins  map[Pin]bool
}

// NewLive returns an empty Live for the refs in d over store.
func NewLive(store *object.DirStore, d *Dir, remoteApart bool) *Live {
	l := &Live{Keep: map[object.Digest]bool{}, store: store, d: d,
		snaps: map[string]object.Digest{}, pins: map[Pin]bool{}}
	l.Remote = l.Keep
	if remoteApart {
		l.Remote = map[object.Digest]bool{}
	}
	return l
}

// Mark adds what each snapshot and pin not marked before reaches.
func (l *Live) Mark(ctx context.Context) error {
	snaps, err := l.d.List()
	if err != nil {
		return err
	}
	pushed, err := l.d.pushed.List()
	if err != nil {
		return err
	}
	for i := range pushed {
		pushed[i].Name = PushedPrefix + pushed[i].Name
	}
	for _, s := range append(snaps, pushed...) {
		if r, ok := l.snaps[s.Name]; ok && r == s.Root.Object {
			continue
		}
		if err := object.Reachable(ctx, l.store, s.Root.Object, l.Keep); err != nil {
			// Never sweep on a partial view of what is live.
			return fmt.Errorf("reading snapshot %s: %w", s.Name, err)
		}
		l.snaps[s.Name] = s.Root.Object
	}
	pins, err := l.d.Pins()
	if err != nil {
		return err
	}
	for _, p := range pins {
		if l.pins[p] {
			continue
		}
		if l.SkipStale && p.stale() {
			// Its mount was killed; nothing uses the root now.
			if l.UnpinStale {
				l.d.Unpin(p.Key)
			}
			continue
		}
		set, reach := l.Keep, object.Reachable
		if strings.HasPrefix(p.Key, RemotePinPrefix) {
			set, reach = l.Remote, object.ReachablePresent
		}
		if err := reach(ctx, l.store, p.Root, set); err != nil {
			return fmt.Errorf("reading root %s of pin %s: %w", p.Root.Short(), p.Key, err)
		}
		l.pins[p] = true
	}
	return nil
}

// Has reports whether d is to be kept.
func (l *Live) Has(d object.Digest) bool { return l.Keep[d] || l.Remote[d] }
