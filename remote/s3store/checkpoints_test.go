package s3store_test

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/scan"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// snapshotOf scans dir into local as a snapshot called name would hold it.
func snapshotOf(t *testing.T, local *object.DirStore, dir, name string) refs.Snapshot {
	t.Helper()
	lo, err := lower.OpenDirStrict(dir)
	if err != nil {
		t.Fatal(err)
	}
	root, _, err := scan.Tree(ctxT(t, time.Minute), lo, "", local, nil)
	if err != nil {
		t.Fatal(err)
	}
	return refs.Snapshot{Name: name, Root: root, Created: time.Now()}
}

// A push sends what the bucket lacks, then the checkpoint's key, which a
// reader of the bucket alone resolves to the snapshot, whole. The same
// snapshot pushed again sends nothing; another under the name is refused
// with nothing sent; a missing name is refs.ErrNotFound.
func TestPushCheckpoint(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, _ := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	big := randBytes(2*object.ChunkSize + 9)
	writeFile(t, filepath.Join(dir, "data", "big"), big)
	writeFile(t, filepath.Join(dir, "crawl.db"), []byte("records 1-100"))
	// The bucket has a published version that shares big's chunks: the
	// push sends only what is new.
	pub := t.TempDir()
	writeFile(t, filepath.Join(pub, "data", "big"), big)
	if _, err := s3store.Publish(ctx, dst, localStore(t), pub, s3store.PublishOptions{}); err != nil {
		t.Fatal(err)
	}

	local := localStore(t)
	snap := snapshotOf(t, local, dir, "ckpt")
	before := dst.Stats()
	sent, err := dst.Push(ctx, local, snap)
	if err != nil {
		t.Fatal(err)
	}
	// The version, the trees (big's mtime differs from the published
	// one's), crawl.db's file object and blob; big's file object and
	// chunks are the published version's.
	if sent == 0 || sent > 5 {
		t.Errorf("push sent %d objects, want at most 5", sent)
	}
	if b := dst.Stats().BytesOut - before.BytesOut; b > 64<<10 {
		t.Errorf("push sent %d bytes: more than what the bucket lacked", b)
	}
	v, err := dst.Checkpoint(ctx, "ckpt")
	if err != nil {
		t.Fatal(err)
	}
	files := readVersion(t, dst, v)
	if len(files) != 2 || !bytes.Equal(files["data/big"], big) || string(files["crawl.db"]) != "records 1-100" {
		t.Fatalf("the checkpoint read from the bucket differs from the snapshot: %d files", len(files))
	}

	// Again (a push whose reply was lost): nothing sent, no error.
	before = dst.Stats()
	if sent, err := dst.Push(ctx, local, snap); err != nil || sent != 0 {
		t.Errorf("the same push again: %d sent, %v; want 0, nil", sent, err)
	}
	if puts := dst.Stats().Puts - before.Puts; puts != 0 {
		t.Errorf("the same push again made %d PUTs", puts)
	}

	// Another snapshot under the taken name: refused, nothing sent, the
	// checkpoint unchanged.
	writeFile(t, filepath.Join(dir, "crawl.db"), []byte("records 1-200"))
	other := snapshotOf(t, local, dir, "ckpt")
	before = dst.Stats()
	if _, err := dst.Push(ctx, local, other); !errors.Is(err, s3store.ErrCheckpointExists) {
		t.Errorf("another snapshot under a taken name: %v, want ErrCheckpointExists", err)
	}
	if puts := dst.Stats().Puts - before.Puts; puts != 0 {
		t.Errorf("a refused push made %d PUTs", puts)
	}
	if again, err := dst.Checkpoint(ctx, "ckpt"); err != nil || again != v {
		t.Errorf("checkpoint after a refused push: %s, %v; want %s", again.Short(), err, v.Short())
	}
	if names, err := dst.Checkpoints(ctx); err != nil || len(names) != 1 || names[0] != "ckpt" {
		t.Errorf("checkpoints: %v, %v", names, err)
	}

	if _, err := dst.Checkpoint(ctx, "missing"); !errors.Is(err, refs.ErrNotFound) {
		t.Errorf("a missing checkpoint: %v, want refs.ErrNotFound", err)
	}
	for _, bad := range []string{"", "a/b", ".hidden", ".."} {
		other.Name = bad
		if _, err := dst.Push(ctx, local, other); err == nil {
			t.Errorf("push named %q: no error", bad)
		}
	}
}

// Two workers pushing different snapshots under one name at once: one
// wins, the other is refused, and the key names a whole snapshot.
func TestPushCheckpointRacing(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, _ := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	type result struct {
		sent int
		err  error
		snap refs.Snapshot
	}
	results := make(chan result, 2)
	for i := range 2 {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "own"), randBytes(object.ChunkSize+i))
		local := localStore(t)
		snap := snapshotOf(t, local, dir, "race")
		go func() {
			n, err := dst.Push(ctx, local, snap)
			results <- result{n, err, snap}
		}()
	}
	won := 0
	for range 2 {
		r := <-results
		switch {
		case r.err == nil:
			won++
		case !errors.Is(r.err, s3store.ErrCheckpointExists):
			t.Errorf("the losing push: %v, want ErrCheckpointExists", r.err)
		}
	}
	if won != 1 {
		t.Fatalf("%d pushes of one name won, want 1", won)
	}
	v, err := dst.Checkpoint(ctx, "race")
	if err != nil {
		t.Fatal(err)
	}
	if files := readVersion(t, dst, v); len(files) != 1 || len(files["own"]) < object.ChunkSize {
		t.Fatalf("the checkpoint that won is not whole: %d files", len(files))
	}
}

// Checkpoints list oldest first with the leases that hold them; one
// removed is gone from the list, its objects go at the next gc unless a
// lease holds its version, and a name the bucket lacks is
// refs.ErrNotFound, with nothing removed.
func TestRemoveCheckpoint(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	local := localStore(t)
	var vs []object.Digest
	for i, name := range []string{"crawl-1", "crawl-2"} {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "crawl.db"), randBytes(100<<10+i))
		snap := snapshotOf(t, local, dir, name)
		snap.Created = time.Now().Add(time.Duration(i-2) * time.Hour)
		if _, err := dst.Push(ctx, local, snap); err != nil {
			t.Fatal(err)
		}
		v, err := dst.Checkpoint(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	lease, err := dst.TakeLease(ctx, vs[0], "/mnt/resume")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := dst.ListCheckpoints(ctx)
	if err != nil || len(cs) != 2 || cs[0].Name != "crawl-1" || cs[0].Leases != 1 || cs[1].Leases != 0 || cs[1].Version != vs[1].String() {
		t.Fatalf("checkpoints: %+v, %v; want crawl-1 (held by a lease) then crawl-2", cs, err)
	}
	if err := dst.RemoveCheckpoint(ctx, "no-such"); !errors.Is(err, refs.ErrNotFound) {
		t.Errorf("remove a checkpoint the bucket lacks: %v, want refs.ErrNotFound", err)
	}
	for _, name := range []string{"crawl-1", "crawl-2"} {
		if err := dst.RemoveCheckpoint(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	if cs, err := dst.ListCheckpoints(ctx); err != nil || len(cs) != 0 {
		t.Fatalf("checkpoints after both were removed: %+v, %v", cs, err)
	}
	if _, err := dst.GC(ctx, s3store.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	has := func(v object.Digest) bool {
		h, err := openAgain(t, srv, bucket).Has(ctx, v)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if !has(vs[0]) || has(vs[1]) {
		t.Errorf("after gc: crawl-1 (leased) held %v, crawl-2 held %v; want the leased one only", has(vs[0]), has(vs[1]))
	}
	readVersion(t, openAgain(t, srv, bucket), vs[0])
	if err := lease.Release(); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.GC(ctx, s3store.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if has(vs[0]) {
		t.Error("a removed checkpoint's version still there after its lease went and gc ran")
	}
}
