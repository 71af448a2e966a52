package fs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
)

// A gc stopped half-way can remove a lower file's chunks and not yet its
// file object. The next snapshot must not take the mount's scan cache's
// word that the file is stored: it would reference chunks that are gone,
// and so would every snapshot after it.
func TestSnapshotAfterHalfGC(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	data := randBytes(3 << 20)
	writeT(t, filepath.Join(lower, "big"), data)
	writeT(t, filepath.Join(lower, "small"), []byte("small file\n"))
	m := mountState(t, filepath.Join(base, "mnt"), testSpec{Lower: lower, State: state})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := m.Snapshot(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	rd, err := refs.Open(statedir.RefsDir(state))
	if err != nil {
		t.Fatal(err)
	}
	if err := rd.Remove("a"); err != nil {
		t.Fatal(err)
	}
	// What the interrupted gc did: every blob gone, the rest still there.
	store, _ := object.OpenDirStore(statedir.ObjectsDir(state))
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

// Snapshots taken while gc runs again and again, with no grace period,
// each whole: gc waits for a snapshot between its first object and its
// ref, and keeps what one freshened after gc began (object.DirStore.Hold
// and Quiesce). Each snapshot adds a file and drops the oldest ref, so
// every gc has objects to remove, some of which the next snapshot takes
// again (the lower's, through the scan cache).
func TestSnapshotsUnderGC(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	state := filepath.Join(base, "state")
	lower := filepath.Join(base, "lower")
	for i := range 20 {
		writeT(t, filepath.Join(lower, fmt.Sprintf("f%02d", i)), randBytes(64<<10))
	}
	m := mountState(t, filepath.Join(base, "mnt"), testSpec{Lower: lower, State: state})
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	store, err := object.OpenDirStore(statedir.ObjectsDir(state))
	if err != nil {
		t.Fatal(err)
	}
	rd, err := refs.Open(statedir.RefsDir(state))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	gcDone := make(chan error, 1)
	var gcs atomic.Int32
	go func() {
		for {
			select {
			case <-stop:
				gcDone <- nil
				return
			default:
			}
			if _, err := refs.GC(ctx, store, rd, 0, false); err != nil {
				gcDone <- err
				return
			}
			gcs.Add(1)
		}
	}()
	var roots []object.Digest
	for i := range 15 {
		if err := os.WriteFile(filepath.Join(m.Dir, fmt.Sprintf("new%02d", i)), randBytes(32<<10), 0o644); err != nil {
			t.Fatal(err)
		}
		res, err := m.Snapshot(ctx, fmt.Sprintf("s%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		root, _ := object.ParseDigest(res.Root)
		roots = append(roots, root)
		if i >= 2 {
			if err := rd.Remove(fmt.Sprintf("s%02d", i-2)); err != nil {
				t.Fatal(err)
			}
		}
		// A gap for gc, which waits while a snapshot holds the store
		// and would otherwise run only now and then.
		time.Sleep(30 * time.Millisecond)
	}
	close(stop)
	if err := <-gcDone; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d gc runs during 15 snapshots", gcs.Load())
	for i, root := range roots[len(roots)-2:] {
		if probs, err := object.Verify(ctx, store, root); err != nil || len(probs) != 0 {
			t.Fatalf("snapshot %d of the last two: %d problems (%v), %v", i, len(probs), probs, err)
		}
	}
}
