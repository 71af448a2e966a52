package remote

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
)

// freshObjects keeps at most freshBytes, or the bound its cache set: the
// oldest of the objects taken go first, and one not taken yet only past
// twice the bound, oldest first.
func TestFreshObjects(t *testing.T) {
	for _, limit := range []int{0, freshBytes + 8<<20} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) { testFreshObjects(t, limit) })
	}
}

func testFreshObjects(t *testing.T, limit int) {
	f := freshObjects{max: limit}
	bound := freshBytes
	if limit > 0 {
		bound = limit
	}
	n := bound / (1 << 20)
	obj := func(i int) (object.Digest, []byte) {
		b := bytes.Repeat([]byte{byte(i)}, 1<<20)
		return object.Sum(b), b
	}
	held := func(i int) bool {
		d, _ := obj(i)
		return f.holds(d)
	}
	// Twice the bound, none taken: all of it stays, for its readers.
	for i := range 2 * n {
		d, b := obj(i)
		f.put(d, b)
	}
	if f.size != 2*n<<20 {
		t.Fatalf("holds %d bytes of %d MiB put, none taken", f.size, 2*n)
	}
	// Taken, objects 3 and 5 go first, before older ones not taken.
	for _, i := range []int{5, 3} {
		if d, _ := obj(i); func() bool { _, ok := f.take(d, nil); return ok }() == false {
			t.Fatalf("object %d not held", i)
		}
	}
	d, b := obj(2 * n)
	f.put(d, b)
	if held(5) || held(3) || !held(0) || !held(4) {
		t.Errorf("one more put: held 5 %v, 3 %v, 0 %v, 4 %v; want the taken gone, the rest kept", held(5), held(3), held(0), held(4))
	}
	d, b = obj(2*n + 1)
	f.put(d, b)
	if !held(0) || f.size != 2*n<<20 {
		t.Errorf("two more put: held 0 %v, %d bytes; want all of %d MiB not taken kept", held(0), f.size, 2*n)
	}
	// None taken left: past twice the bound the oldest go.
	for i := 2*n + 2; i < 2*n+4; i++ {
		d, b := obj(i)
		f.put(d, b)
	}
	if held(0) || held(1) || !held(2) || f.size > 2*bound {
		t.Errorf("past twice the bound: held 0 %v, 1 %v, 2 %v, %d bytes; want the oldest two gone", held(0), held(1), held(2), f.size)
	}
	d, want := obj(2*n + 3)
	if b, ok := f.get(d); !ok || !bytes.Equal(b, want) {
		t.Fatalf("newest: %v", ok)
	}
	size := f.size
	f.put(object.Sum(nil), make([]byte, bound+1))
	if f.size != size {
		t.Fatal("an object bigger than the bound was kept")
	}
}

// An object let go and put again is as new as its second put: the place
// its first put had in the order is not its own.
func TestFreshObjectsPutAgain(t *testing.T) {
	var f freshObjects
	n := freshBytes / (1 << 20)
	obj := func(i int) (object.Digest, []byte) {
		b := bytes.Repeat([]byte{byte(i)}, 1<<20)
		return object.Sum(b), b
	}
	d0, b0 := obj(0)
	f.putOnce(d0, b0)
	for i := 1; i < 2*n; i++ {
		d, b := obj(i)
		f.put(d, b)
	}
	// Taken and stored, object 0 goes, then comes again: the newest.
	if _, ok := f.take(d0, nil); !ok {
		t.Fatal("object 0 not held")
	}
	f.stored(d0)
	if f.holds(d0) {
		t.Fatal("object 0 held once taken and stored")
	}
	f.put(d0, b0)
	// Past twice the bound, the oldest not taken goes: object 1.
	d, b := obj(2 * n)
	f.put(d, b)
	d1, _ := obj(1)
	if !f.holds(d0) || f.holds(d1) {
		t.Errorf("held 0 %v, 1 %v; want the object put again kept and the oldest gone", f.holds(d0), f.holds(d1))
	}
}

// An object read once is read again from memory while it is among the
// newest: the kernel asks for the end of a chunk after the start of the
// next one when it reads ahead, and each such read went back to the store
// and hashed the chunk a second time.
func TestFreshObjectsReadAgain(t *testing.T) {
	var f freshObjects
	b := bytes.Repeat([]byte{7}, 1<<20)
	d := object.Sum(b)
	f.put(d, b)
	for i := range 3 {
		if got, ok := f.get(d); !ok || !bytes.Equal(got, b) {
			t.Fatalf("read %d: held %v", i, ok)
		}
	}
}

// A reader of an object fetched ahead is let go once it is held, or once
// the fetch gave up on it; an object no fetch expects has no waiter.
func TestFreshObjectsWaiter(t *testing.T) {
	var f freshObjects
	b := []byte("held")
	d, gone := object.Sum(b), object.Sum([]byte("given up"))
	if f.waiter(d) != nil {
		t.Fatal("a waiter for an object no fetch expects")
	}
	f.expect([]object.Digest{d, gone})
	held, given := f.waiter(d), f.waiter(gone)
	if held == nil || given == nil {
		t.Fatal("no waiter for an object expected")
	}
	f.put(d, b)
	f.drop([]object.Digest{d, gone})
	for name, ch := range map[string]<-chan struct{}{"held": held, "given up": given} {
		select {
		case <-ch:
		default:
			t.Errorf("a reader of the object %s still waits", name)
		}
	}
	if f.waiter(d) != nil || f.waiter(gone) != nil {
		t.Error("waiters kept after the fetch")
	}
}

// What came after a file object is held for its one reader: it goes once
// taken and stored, in either order, and not before both, so that a
// second reader that comes before the store has it finds it in memory.
func TestFreshObjectsOnce(t *testing.T) {
	var f freshObjects
	b := []byte("chunk")
	d := object.Sum(b)
	held := func() bool { _, ok := f.get(d); return ok }

	f.putOnce(d, b)
	if got, ok := f.take(d, nil); !ok || !bytes.Equal(got, b) || !held() {
		t.Fatalf("taken before it is stored: %v, held %v", ok, held())
	}
	if _, ok := f.take(d, nil); !ok {
		t.Fatal("a second reader before the store has it found nothing")
	}
	f.stored(d)
	if held() || f.size != 0 {
		t.Fatalf("taken and stored, still held (%d bytes)", f.size)
	}

	f.putOnce(d, b)
	f.stored(d)
	if !held() {
		t.Fatal("stored, not yet taken: let go")
	}
	if _, ok := f.take(d, nil); !ok || held() {
		t.Fatalf("stored, then taken: %v, held %v", ok, held())
	}

	// Read-ahead's objects stay for every reader, also one held for a
	// reader first and then fetched ahead.
	f.put(d, b)
	f.take(d, nil)
	f.stored(d)
	if !held() {
		t.Fatal("an object fetched ahead went at its first take")
	}
	f.remove(d)
	f.putOnce(d, b)
	f.put(d, b)
	f.take(d, nil)
	f.stored(d)
	if !held() {
		t.Fatal("an object held once and then fetched ahead went at its first take")
	}

	// Many taken: the order list keeps about what is held.
	for i := range 10000 {
		b := []byte{byte(i), byte(i >> 8)}
		d := object.Sum(b)
		f.putOnce(d, b)
		f.take(d, nil)
		f.stored(d)
	}
	if len(f.order) > 2*len(f.m)+65 {
		t.Fatalf("%d in order for %d held", len(f.order), len(f.m))
	}
}

// Held objects go once none was put or taken for freshIdle: a mount that
// went quiet gives its memory back. Taking one keeps them.
func TestFreshObjectsIdle(t *testing.T) {
	f := freshObjects{idleAfter: 100 * time.Millisecond}
	a, b := []byte("a"), []byte("b")
	da, db := object.Sum(a), object.Sum(b)
	f.put(da, a)
	f.putOnce(db, b)
	for range 6 {
		time.Sleep(f.idleAfter / 2)
		if _, ok := f.take(da, nil); !ok {
			t.Fatal("let go while read")
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		f.mu.Lock()
		n, size := len(f.m), f.size
		f.mu.Unlock()
		if n == 0 && size == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d objects, %d bytes held after %s idle", n, size, 10*time.Second)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// And held again after.
	f.put(da, a)
	if _, ok := f.get(da); !ok {
		t.Fatal("not held after an idle spell")
	}
}

// An object fetched into the pool's memory goes back to the pool once
// pushed out, and only if nobody can still read it: not while the fetch
// that put it stores it, never once a reader was handed it rather than a
// copy, and not when the mount goes idle (that memory goes to the
// system). A reader with a buffer gets a copy in it.
func TestFreshObjectsGiveBack(t *testing.T) {
	var freed []*byte
	f := freshObjects{idleAfter: time.Hour}
	f.free = func(b []byte) { freed = append(freed, &b[0]) }
	wasFreed := func(b []byte) bool { return slices.Contains(freed, &b[0]) }
	obj := func(i int) (object.Digest, []byte) {
		b := bytes.Repeat([]byte{byte(i)}, 1<<20)
		return object.Sum(b), b
	}
	// pushOut fills the memory with objects put by reference, none
	// taken: twice the bound pushes out everything held before.
	pushOut := func(from int) {
		for i := range 2 * freshBytes >> 20 {
			d, b := obj(from + i)
			f.put(d, b)
		}
	}

	d1, b1 := obj(1)
	h := f.hold(d1, b1)
	if h == nil {
		t.Fatal("an object from the pool was not held")
	}
	if again := f.hold(d1, bytes.Clone(b1)); again != nil {
		t.Fatal("a second copy of a held object was held")
	}
	buf := make([]byte, 1<<20+2)
	got, ok := f.take(d1, buf)
	if !ok || !bytes.Equal(got, b1) || &got[0] != &buf[0] {
		t.Fatalf("a reader with a buffer: held %v, equal %v, in its buffer %v", ok, bytes.Equal(got, b1), ok && &got[0] == &buf[0])
	}
	f.unpin(h)
	if len(freed) != 0 {
		t.Fatal("given back while held")
	}

	// Handed to a reader without a buffer, or with one too small: the
	// reader may keep it.
	d2, b2 := obj(2)
	h2 := f.hold(d2, b2)
	f.unpin(h2)
	if got, _ := f.take(d2, nil); &got[0] != &b2[0] {
		t.Fatal("a reader without a buffer was not handed the object")
	}
	d3, b3 := obj(3)
	h3 := f.hold(d3, b3)
	f.unpin(h3)
	if got, _ := f.take(d3, make([]byte, 10)); &got[0] != &b3[0] {
		t.Fatal("a reader with too small a buffer was not handed the object")
	}
	pushOut(100)
	if !wasFreed(b1) || wasFreed(b2) || wasFreed(b3) || len(freed) != 1 {
		t.Fatalf("pushed out: %d given back, the copied one %v, the two handed out %v %v", len(freed), wasFreed(b1), wasFreed(b2), wasFreed(b3))
	}

	// Pushed out while its fetch still stores it: given back once that
	// is done.
	d4, b4 := obj(4)
	h4 := f.hold(d4, b4)
	pushOut(200)
	if f.holds(d4) || wasFreed(b4) {
		t.Fatalf("pushed out while pinned: held %v, given back %v", f.holds(d4), wasFreed(b4))
	}
	f.unpin(h4)
	if !wasFreed(b4) {
		t.Fatal("not given back at the last unpin")
	}

	// Taken pinned, where it is held: not copied, and given back only
	// once both pushed out and let go by its reader, whichever is last.
	for _, readerLast := range []bool{true, false} {
		d6, b6 := obj(6)
		f.unpin(f.hold(d6, b6))
		got, e, ok := f.takePinned(d6)
		if !ok || e == nil || &got[0] != &b6[0] {
			t.Fatalf("taken pinned: held %v, pinned %v, in place %v", ok, e != nil, ok && &got[0] == &b6[0])
		}
		if !readerLast {
			f.unpin(e)
			if wasFreed(b6) {
				t.Fatal("given back by its reader while still held")
			}
		}
		pushOut(300)
		if wasFreed(b6) != !readerLast {
			t.Fatalf("pushed out, its reader done %v: given back %v", !readerLast, wasFreed(b6))
		}
		if readerLast {
			f.unpin(e)
			if !wasFreed(b6) {
				t.Fatal("not given back once its reader let go")
			}
		}
		freed = slices.DeleteFunc(freed, func(p *byte) bool { return p == &b6[0] })
	}
	// Handed out before (get): a pinned take pins nothing.
	d7, b7 := obj(7)
	f.unpin(f.hold(d7, b7))
	f.get(d7)
	if got, e, _ := f.takePinned(d7); e != nil || &got[0] != &b7[0] {
		t.Fatalf("an object handed out before was pinned (%v) or not handed", e != nil)
	}

	// Idle: to the collector, not to the pool.
	f.idleAfter = time.Millisecond
	d5, b5 := obj(5)
	f.unpin(f.hold(d5, b5))
	time.Sleep(2 * time.Millisecond)
	f.idle.Stop()
	f.expire()
	if f.holds(d5) || wasFreed(b5) {
		t.Fatalf("idle: held %v, given back %v", f.holds(d5), wasFreed(b5))
	}
}
