package fs

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	cowlower "github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
)

// farGetter reads objects from a mount's own store and fetches what it
// lacks from another state's store, as a remote's cache fetches from the
// master; on fetching an object of onFetch it runs that function first.
type farGetter struct {
	from, to *object.DirStore
	mu       sync.Mutex
	onFetch  map[object.Digest]func()
}

func (g *farGetter) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	if b, err := g.to.Get(ctx, d); err == nil {
		return b, nil
	}
	g.mu.Lock()
	fn := g.onFetch[d]
	delete(g.onFetch, d)
	g.mu.Unlock()
	if fn != nil {
		fn()
	}
	b, err := g.from.Get(ctx, d)
	if err != nil {
		return nil, err
	}
	return b, g.to.PutCachedAs(d, b)
}

// A snapshot of a mount over a fetched lower whose capture finds missing
// what it fetched before holding writes (here a file object, quarantined
// in between) lets go, fetches it and captures again, and its snapshot is
// whole.
func TestSnapshotFetchesWhatGoesMissing(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	lower := filepath.Join(base, "lower")
	data := randBytes(2<<20 + 100)
	writeT(t, filepath.Join(lower, "log"), data)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The lower version, in a state of its own: the master's.
	far := filepath.Join(base, "far")
	src := mountState(t, filepath.Join(base, "src"), testSpec{Lower: lower, State: far})
	if _, err := src.Snapshot(ctx, "v"); err != nil {
		t.Fatal(err)
	}
	rd, err := refs.Open(statedir.RefsDir(far))
	if err != nil {
		t.Fatal(err)
	}
	v, err := rd.Get("v")
	if err != nil {
		t.Fatal(err)
	}
	farStore, err := object.OpenDirStore(statedir.ObjectsDir(far))
	if err != nil {
		t.Fatal(err)
	}
	vt, err := farStore.Get(ctx, v.Root.Object)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := object.DecodeTree(vt)
	if err != nil {
		t.Fatal(err)
	}
	logEntry, ok := tree.Lookup("log")
	if !ok {
		t.Fatal("no log in the version")
	}
	fb, err := farStore.Get(ctx, logEntry.Object)
	if err != nil {
		t.Fatal(err)
	}
	fo, err := object.DecodeFile(fb)
	if err != nil {
		t.Fatal(err)
	}

	state := filepath.Join(base, "state")
	if err := os.MkdirAll(statedir.ObjectsDir(state), 0o700); err != nil {
		t.Fatal(err)
	}
	local, err := object.OpenDirStore(statedir.ObjectsDir(state))
	if err != nil {
		t.Fatal(err)
	}
	g := &farGetter{from: farStore, to: local, onFetch: map[object.Digest]func(){}}
	m := mountState(t, filepath.Join(base, "mnt"), testSpec{State: state, Options: Options{
		Lower: cowlower.NewObjects(g, v.Root.Object, v.Root), Fetch: g}})
	f, err := os.OpenFile(filepath.Join(m.Dir, "log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("appended\n")
	f.Close()

	// The capture reads the log's last chunk from the lower: the
	// snapshot fetches it before holding writes, and just then the
	// log's file object, fetched when the log was opened, leaves the
	// store.
	quarantined := false
	g.mu.Lock()
	g.onFetch[fo.Chunks[len(fo.Chunks)-1]] = func() {
		quarantined = local.Quarantine(logEntry.Object) == nil
	}
	g.mu.Unlock()
	res, err := m.Snapshot(ctx, "s")
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if !quarantined {
		t.Fatal("the snapshot did not fetch the log's last chunk")
	}
	root, err := object.ParseDigest(res.Root)
	if err != nil {
		t.Fatal(err)
	}
	if probs, err := object.Verify(ctx, local, root); err != nil || len(probs) != 0 {
		t.Fatalf("snapshot not whole in the mount's store: %v %v", probs, err)
	}
	st, err := local.Get(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := object.DecodeTree(st); err != nil {
		t.Fatal(err)
	} else if e, ok := st.Lookup("log"); !ok || e.Size != int64(len(data)+len("appended\n")) {
		t.Fatalf("log in the snapshot: %+v", e)
	}
}
