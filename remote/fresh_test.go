package remote

import (
	"bytes"
	"testing"

	"github.com/cowfs/cowfs/cow/object"
)

// freshObjects keeps at most freshBytes, lets the oldest go first, and
// gives each object once.
func TestFreshObjects(t *testing.T) {
	var f freshObjects
	const n = freshBytes / (1 << 20)
	obj := func(i int) (object.Digest, []byte) {
		b := bytes.Repeat([]byte{byte(i)}, 1<<20)
		return object.Sum(b), b
	}
	for i := range n + 2 {
		d, b := obj(i)
		f.put(d, b)
	}
	if f.size > freshBytes {
		t.Fatalf("holds %d bytes, more than %d", f.size, freshBytes)
	}
	for i := range 2 {
		if d, _ := obj(i); func() bool { _, ok := f.take(d); return ok }() {
			t.Errorf("object %d kept: the oldest go first", i)
		}
	}
	d, want := obj(n + 1)
	if b, ok := f.take(d); !ok || !bytes.Equal(b, want) {
		t.Fatalf("newest: %v", ok)
	}
	if _, ok := f.take(d); ok {
		t.Fatal("an object given twice")
	}
	if f.size != (n-1)<<20 || len(f.m) != n-1 || len(f.order) != n-1 {
		t.Fatalf("after taking one: size %d, %d held, %d in order", f.size, len(f.m), len(f.order))
	}
	f.put(object.Sum(nil), make([]byte, freshBytes+1))
	if f.size != (n-1)<<20 {
		t.Fatal("an object bigger than the bound was kept")
	}
}
