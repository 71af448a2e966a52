package cow

import (
	"context"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/cowtest"
	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
)

// fetchInto reads objects from to, and fetches those it lacks from from,
// storing them in to: a remote's cache, with from standing for the master.
type fetchInto struct {
	from, to *object.DirStore
	fetches  atomic.Int64
}

func (g *fetchInto) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	if b, err := g.to.Get(ctx, d); err == nil {
		return b, nil
	}
	g.fetches.Add(1)
	b, err := g.from.Get(ctx, d)
	if err != nil {
		return nil, err
	}
	return b, g.to.PutCachedAs(d, b)
}

// newObjectsFS returns an engine over the object lower of root, read
// through g, with an upper and work of its own.
func newObjectsFS(t *testing.T, g object.Getter, root object.Digest, rootE object.Entry) *FS {
	t.Helper()
	d := t.TempDir()
	for _, s := range []string{"upper", "work", "meta"} {
		if err := os.Mkdir(filepath.Join(d, s), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	f, err := New(Options{Lower: lower.NewObjects(g, root, rootE),
		UpperDir: filepath.Join(d, "upper"), WorkDir: filepath.Join(d, "work"), MetaDir: filepath.Join(d, "meta")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// A capture over an object lower that reads from the local store alone
// fails on what the store lacks instead of fetching it, and lets go;
// after PrepareCapture it fetches nothing and makes the snapshot a plain
// capture makes. The append leaves the lower file's last, partial chunk
// in the lower, never read, so the capture reads it from there.
func TestCaptureLocalAfterPrepare(t *testing.T) {
	t.Parallel()
	big := make([]byte, 3*ChunkSize+100)
	rand.New(rand.NewSource(7)).Read(big)
	src := newTestFS(t, map[string][]byte{"big": big, "small": []byte("small\n")})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	far, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root, rootE, _, err := src.Capture(ctx, cowtest.PutCached{DirStore: far})
	if err != nil {
		t.Fatal(err)
	}
	local, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	g := &fetchInto{from: far, to: local}
	f := newObjectsFS(t, g, root, rootE)

	p := lookupT(t, f, "big")
	h, err := f.Open(p, unix.O_WRONLY|unix.O_APPEND)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt([]byte("appended\n"), int64(len(big))); err != nil {
		t.Fatal(err)
	}
	h.Release()

	before := g.fetches.Load()
	if _, _, _, err := f.CaptureLocal(ctx, cowtest.PutCached{DirStore: local}, local); !errors.Is(err, lower.ErrNotLocal) {
		t.Fatalf("capture without the lower's last chunk of big: %v, want lower.ErrNotLocal", err)
	}
	if n := g.fetches.Load() - before; n != 0 {
		t.Fatalf("the capture fetched %d objects while it held every change", n)
	}
	// Let go: a write goes through.
	h, err = f.Open(p, unix.O_WRONLY|unix.O_APPEND)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt([]byte("more\n"), int64(len(big))+9); err != nil {
		t.Fatal(err)
	}
	h.Release()

	if err := f.PrepareCapture(ctx); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	before = g.fetches.Load()
	got, _, _, err := f.CaptureLocal(ctx, cowtest.PutCached{DirStore: local}, local)
	if err != nil {
		t.Fatalf("capture after prepare: %v", err)
	}
	if n := g.fetches.Load() - before; n != 0 {
		t.Errorf("the capture after prepare fetched %d objects", n)
	}
	want, _, _, err := f.Capture(ctx, cowtest.PutCached{DirStore: local})
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("capture from the local store: %s, a plain capture: %s", got.Short(), want.Short())
	}
}
