package cow

import (
	"context"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/internal/cowtest"
	"github.com/cowfs/cowfs/cow/object"
)

// A repeated capture trusts the objects its scan cache found whole only
// while nothing has left the store: after a sweep removed a chunk of a
// lower file, the next capture hashes the file again, and its snapshot is
// whole.
func TestCaptureAfterSweep(t *testing.T) {
	t.Parallel()
	f := newTestFS(t, map[string][]byte{"a": []byte("alpha\n"), "b": []byte("bravo\n")})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	capture := func() (object.Digest, CaptureStats) {
		t.Helper()
		root, _, st, err := f.Capture(ctx, cowtest.PutCached{DirStore: store})
		if err != nil {
			t.Fatal(err)
		}
		if probs, err := object.Verify(ctx, store, root); err != nil || len(probs) > 0 {
			t.Fatalf("snapshot damaged: %v %v", probs, err)
		}
		return root, st
	}
	root, _ := capture()
	if _, st := capture(); st.BytesRead != 0 {
		t.Fatalf("second capture read %d bytes", st.BytesRead)
	}
	blob, _ := object.EncodeBlob([]byte("alpha\n"))
	w, err := store.LockSweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	removed, _, err := w.RemoveIfOlder(object.Sum(blob), time.Now().Add(time.Hour))
	w.Unlock()
	if err != nil || !removed {
		t.Fatalf("remove the chunk of a: %v %v", removed, err)
	}
	again, st := capture()
	if again != root || st.BytesRead != int64(len("alpha\n")) {
		t.Fatalf("capture after the sweep: root %s (was %s), read %d bytes", again.Short(), root.Short(), st.BytesRead)
	}
}
