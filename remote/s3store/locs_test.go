package s3store

import (
	"fmt"
	"math/rand"
	"runtime"
	"testing"

	"github.com/cowfs/cowfs/cow/object"
)

// clashing returns n digests whose first 8 bytes are the same, each
// otherwise its own.
func clashing(r *rand.Rand, n int) []object.Digest {
	var head [8]byte
	r.Read(head[:])
	ds := make([]object.Digest, n)
	for i := range ds {
		r.Read(ds[i][:])
		copy(ds[i][:], head[:])
	}
	return ds
}

func somePack(name string, ds ...object.Digest) packObjects {
	po := packObjects{pack: name}
	for i, d := range ds {
		po.es = append(po.es, indexEntryT{d: d, off: uint32(i * 100), n: 100})
	}
	return po
}

func wantLoc(t *testing.T, l *objectLocs, d object.Digest, pack string, off uint32) {
	t.Helper()
	got, ok := l.get(d)
	if pack == "" {
		if ok {
			t.Errorf("%s placed in %s; want it not placed", d.Short(), got.pack)
		}
		return
	}
	if !ok || got.pack != pack || got.off != off || got.n != 100 {
		t.Errorf("%s: %+v, %v; want pack %s at %d", d.Short(), got, ok, pack, off)
	}
}

// Objects whose digests begin alike are each placed where their own
// entry says, however they are added, placed again and removed.
func TestObjectLocsClash(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	c := clashing(r, 3)
	var other object.Digest
	r.Read(other[:])
	l := newObjectLocs(0)
	l.add(somePack("p1", c[0], other, c[1]))
	wantLoc(t, l, c[0], "p1", 0)
	wantLoc(t, l, other, "p1", 100)
	wantLoc(t, l, c[1], "p1", 200)
	wantLoc(t, l, c[2], "", 0)
	if n := l.len(); n != 3 {
		t.Errorf("%d placed; want 3", n)
	}

	// Placed again, in another pack: the last placing counts.
	l.add(somePack("p2", c[1], c[2]))
	wantLoc(t, l, c[1], "p2", 0)
	wantLoc(t, l, c[2], "p2", 100)
	wantLoc(t, l, c[0], "p1", 0)

	// The one that holds the key removed, the others stay.
	l.remove(c[0], "p2") // not in p2: stays
	wantLoc(t, l, c[0], "p1", 0)
	l.remove(c[0], "p1")
	wantLoc(t, l, c[0], "", 0)
	wantLoc(t, l, c[1], "p2", 0)
	wantLoc(t, l, c[2], "p2", 100)

	// One placed before while another held its key, placed again now
	// that the key is free, then removed: not found by its old placing.
	l.add(somePack("p3", c[1]))
	wantLoc(t, l, c[1], "p3", 0)
	l.remove(c[1], "p3")
	wantLoc(t, l, c[1], "", 0)
	wantLoc(t, l, c[2], "p2", 100)

	// Before any index is loaded there is no objectLocs: it places
	// nothing.
	var none *objectLocs
	none.remove(c[2], "p2")
	none.each(func(object.Digest) { t.Error("a nil objectLocs listed an object") })
	if _, ok := none.get(c[2]); ok || none.has(c[2]) || none.len() != 0 {
		t.Error("a nil objectLocs placed an object")
	}

	seen := map[object.Digest]int{}
	l.each(func(d object.Digest) { seen[d]++ })
	if len(seen) != 2 || seen[c[2]] != 1 || seen[other] != 1 || l.len() != 2 {
		t.Errorf("each: %v (len %d); want %s and %s once", seen, l.len(), c[2].Short(), other.Short())
	}
}

// What placing a prefix's objects costs in memory beyond the indexes'
// own entries, an object, beside the map by digest it replaced.
func BenchmarkObjectLocs(b *testing.B) {
	const objects, perPack = 1 << 20, 1024
	r := rand.New(rand.NewSource(1))
	var ps []packObjects
	for p := 0; p < objects/perPack; p++ {
		ds := make([]object.Digest, perPack)
		for i := range ds {
			r.Read(ds[i][:])
		}
		ps = append(ps, somePack(fmt.Sprintf("pack%d", p), ds...))
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	b.Run("objectLocs", func(b *testing.B) {
		var l *objectLocs
		for b.Loop() {
			b.StopTimer()
			l = nil
			before := heap()
			b.StartTimer()
			l = newObjectLocs(0)
			for _, po := range ps {
				l.add(po)
			}
			b.StopTimer()
			b.ReportMetric(float64(heap()-before)/objects, "B/object")
			b.StartTimer()
		}
		runtime.KeepAlive(l)
	})
	b.Run("map-by-digest", func(b *testing.B) {
		var m map[object.Digest]packLoc
		for b.Loop() {
			b.StopTimer()
			m = nil
			before := heap()
			b.StartTimer()
			m = map[object.Digest]packLoc{}
			for _, po := range ps {
				for _, e := range po.es {
					m[e.d] = packLoc{pack: po.pack, off: e.off, n: e.n}
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(heap()-before)/objects, "B/object")
			b.StartTimer()
		}
		runtime.KeepAlive(m)
	})
}

// A lookup of each object placed, in random order, beside the map by
// digest it replaced: a bucket mount's every fetch asks it once.
func BenchmarkObjectLocsGet(b *testing.B) {
	const objects, perPack = 1 << 20, 1024
	r := rand.New(rand.NewSource(1))
	var ds []object.Digest
	l := newObjectLocs(0)
	m := map[object.Digest]packLoc{}
	for p := 0; p < objects/perPack; p++ {
		pds := make([]object.Digest, perPack)
		for i := range pds {
			r.Read(pds[i][:])
		}
		po := somePack(fmt.Sprintf("pack%d", p), pds...)
		l.add(po)
		for _, e := range po.es {
			m[e.d] = packLoc{pack: po.pack, off: e.off, n: e.n}
		}
		ds = append(ds, pds...)
	}
	r.Shuffle(len(ds), func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
	b.Run("objectLocs", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, ok := l.get(ds[i%len(ds)]); !ok {
				b.Fatal("not placed")
			}
			i++
		}
	})
	b.Run("map-by-digest", func(b *testing.B) {
		i := 0
		for b.Loop() {
			if _, ok := m[ds[i%len(ds)]]; !ok {
				b.Fatal("not placed")
			}
			i++
		}
	})
}
