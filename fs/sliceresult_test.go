package fs

import (
	"bytes"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// A reply sent from views (sliceResult) is their bytes, whole or in one
// slice, and lets go of them once, when go-fuse says it is sent.
func TestSliceResult(t *testing.T) {
	released := 0
	r := &sliceResult{vecs: [][]byte{[]byte("abc"), make([]byte, 5), []byte("de")}, release: func() { released++ }}
	if r.Size() != 10 {
		t.Fatalf("size %d, want 10", r.Size())
	}
	want := []byte("abc\x00\x00\x00\x00\x00de")
	if b, st := r.Bytes(make([]byte, 0, 4)); !st.Ok() || !bytes.Equal(b, want) {
		t.Fatalf("bytes %q, %v", b, st)
	}
	if vecs, st := r.Slices(); !st.Ok() || !bytes.Equal(bytes.Join(vecs, nil), want) {
		t.Fatalf("slices %q, %v", vecs, st)
	}
	if released != 0 {
		t.Fatal("released before it was sent")
	}
	var res fuse.ReadResult = r
	res.Done()
	res.Done()
	if released != 1 {
		t.Fatalf("released %d times, want once", released)
	}
}
