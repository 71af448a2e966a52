package remote

import (
	"testing"

	"github.com/cowfs/cowfs/cow/object"
)

// A warmup's queue hands trees and objects of no known pack first, the
// last queued first; then one pack's file objects a batch, the pack that
// came first, at most n of them, and never two packs' together.
func TestWarmQueueByPack(t *testing.T) {
	d := func(b byte) object.Digest { return object.Digest{b} }
	pack := map[object.Digest]string{d(1): "A", d(2): "B", d(3): "A", d(4): "B", d(5): "A", d(6): "C"}
	q := warmQueue{packOf: func(x object.Digest) (string, bool) { p, ok := pack[x]; return p, ok }}
	for _, j := range []warmJob{{d(1), false}, {d(2), false}, {d(9), true}, {d(3), false}, {d(8), false}, {d(4), false}, {d(5), false}, {d(7), true}, {d(6), false}} {
		q.push(j)
	}
	var got [][]byte
	for !q.empty() {
		var batch []byte
		for _, j := range q.take(2) {
			batch = append(batch, j.d[0])
		}
		got = append(got, batch)
	}
	want := [][]byte{{8, 7}, {9}, {1, 3}, {5}, {2, 4}, {6}}
	if len(got) != len(want) {
		t.Fatalf("batches %v, want %v", got, want)
	}
	for i := range want {
		if string(got[i]) != string(want[i]) {
			t.Fatalf("batches %v, want %v", got, want)
		}
	}
}
