package fs

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
)

// A gc stopped half-way can remove a lower file's chunks and not yet its
// file object. The next snapshot must not take the mount's scan cache's
// word that the file is stored: it would reference chunks that are gone,
// and so would every snapshot after it.
func TestSnapshotAfterHalfGC(t *testing.T) {
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	data := randBytes(3 << 20)
	writeT(t, filepath.Join(lower, "big"), data)
	writeT(t, filepath.Join(lower, "small"), []byte("small file\n"))
	m := mountState(t, filepath.Join(base, "mnt"), Options{Lower: lower, State: state})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := m.Snapshot(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	rd, err := refs.Open(RefsDir(state))
	if err != nil {
		t.Fatal(err)
	}
	if err := rd.Remove("a"); err != nil {
		t.Fatal(err)
	}
	// What the interrupted gc did: every blob gone, the rest still there.
	store, _ := object.OpenDirStore(ObjectsDir(state))
	var blobs []object.Digest
	store.Each(func(o object.StoredObject) error {
		if k, err := store.Kind(o.Digest); err == nil && k == object.KindBlob {
			blobs = append(blobs, o.Digest)
		}
		return nil
	})
	if len(blobs) == 0 {
		t.Fatal("snapshot a stored no blobs")
	}
	for _, d := range blobs {
		if err := store.Remove(d); err != nil {
			t.Fatal(err)
		}
	}
	res, err := m.Snapshot(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	root, _ := object.ParseDigest(res.Root)
	if probs, err := object.Verify(ctx, store, root); err != nil || len(probs) != 0 {
		t.Fatalf("snapshot b after a half gc: %d problems (%v), %v", len(probs), probs, err)
	}
}
