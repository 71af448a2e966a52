package remote_test

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// fileChunks returns the file object of the export's file at path, as a
// view of it has it, and its chunks.
func fileChunks(t *testing.T, v *remotetest.View, path string) []object.Digest {
	t.Helper()
	f, _, err := v.Lower.FileObject(path)
	if err != nil {
		t.Fatal(err)
	}
	return f.Chunks
}

// A file opened cold is one call before its first read is served: the
// master sends the file's first chunk right after its file object, and
// the read finds it; the chunks after it are not sent along.
func TestFollowFirstChunk(t *testing.T) {
	exp := t.TempDir()
	data := randBytes(2<<20 + 7)
	writeFile(t, filepath.Join(exp, "spider", "data.bin"), data, 0o644)
	var cc callCounter
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{ServerOptions: []grpc.ServerOption{cc.option()}})
	v := remotetest.NewWorker(t).View(ms.Addr, remotetest.ViewOptions{})
	if _, err := v.Lower.Lstat("spider/data.bin"); err != nil {
		t.Fatal(err)
	}
	get0, many0 := cc.get.Load(), cc.getMany.Load()
	miss0 := v.Cache.Stats().Misses

	f, err := v.Lower.Open("spider/data.bin")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	if err := remotetest.Within(t, 10*time.Second, "read", func() error {
		_, err := f.ReadAt(buf, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, data[:len(buf)]) {
		t.Fatal("the first read returned other bytes")
	}
	calls := cc.get.Load() - get0 + cc.getMany.Load() - many0
	misses := v.Cache.Stats().Misses - miss0
	if calls != 1 || misses != 1 {
		t.Errorf("open and first read of a cold file: %d calls, %d cache misses; want 1 and 1 (the file object, its first chunk along)", calls, misses)
	}
	chunks := fileChunks(t, v, "spider/data.bin")
	if len(chunks) != 3 {
		t.Fatalf("%d chunks, want 3", len(chunks))
	}
	if g := ms.Server.Gets(chunks[0]); g != 1 {
		t.Errorf("first chunk sent %d times, want 1", g)
	}
	// Its reader had it from memory; the store has it once the call
	// that brought it has written it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if ok, _ := v.Store.Has(t.Context(), chunks[0]); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Error("the first chunk, sent along, was not stored")
			break
		}
	}
	for _, c := range chunks[1:] {
		if g := ms.Server.Gets(c); g != 0 {
			t.Errorf("chunk %s sent %d times before it was read; only the first comes along", c.Short(), g)
		}
	}
}

// A first chunk damaged in the master's store comes along damaged: the
// worker does not keep it, and the reader's own fetch gets it whole (the
// master repairs its copy from the export when asked to verify).
func TestFollowDamagedChunk(t *testing.T) {
	exp := t.TempDir()
	data := randBytes(300 << 10)
	writeFile(t, filepath.Join(exp, "f"), data, 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	openView(remotetest.NewWorker(t), ms.Addr, 10*time.Second, nil) // the master scans the export
	d := damageBlob(t, ms.Config.Objects)

	var wlog remotetest.LogBuffer
	v := remotetest.NewWorker(t).View(ms.Addr, remotetest.ViewOptions{Log: wlog.Logger()})
	b, err := readAll(t, v.Lower, "f", 10*time.Second)
	if err != nil || !bytes.Equal(b, data) {
		t.Fatalf("read: %d bytes, %v; want the file's %d bytes", len(b), err, len(data))
	}
	if wlog.ErrorLine("does not match its digest", d.String()) == "" {
		t.Errorf("the damaged chunk that came along was not reported; log:\n%s", wlog.String())
	}
	if got, err := v.Store.Get(t.Context(), d); err != nil || !bytes.Equal(got, mustEncodeBlob(t, data)) {
		t.Errorf("the worker's copy of the chunk: %v", err)
	}
}

func mustEncodeBlob(t *testing.T, data []byte) []byte {
	t.Helper()
	b, err := object.EncodeBlob(data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// heldTrees returns how many trees beneath root (root too) store holds,
// and whether it holds all of them.
func heldTrees(t *testing.T, store *object.DirStore, root object.Digest) (int, bool) {
	t.Helper()
	n, queue := 0, []object.Digest{root}
	for len(queue) > 0 {
		d := queue[0]
		queue = queue[1:]
		b, err := store.Get(t.Context(), d)
		if err != nil {
			return n, false
		}
		n++
		tr, err := object.DecodeTree(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range tr.Entries {
			if e.Mode&unix.S_IFMT == unix.S_IFDIR {
				queue = append(queue, e.Object)
			}
		}
	}
	return n, true
}

// A cold mount's version root brings the trees beneath it: the lookups of
// a task that reads a file here and there need no round trip for a
// directory, and the master sends each tree once.
func TestFollowTrees(t *testing.T) {
	exp := t.TempDir()
	for i := range 30 {
		writeFile(t, filepath.Join(exp, fmt.Sprintf("d%02d/sub/f", i)), []byte{byte(i)}, 0o644)
	}
	var cc callCounter
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{ServerOptions: []grpc.ServerOption{cc.option()}})
	v := remotetest.NewWorker(t).View(ms.Addr, remotetest.ViewOptions{})
	n := 0
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		var all bool
		if n, all = heldTrees(t, v.Store, v.Lower.Root()); all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d trees held 10 s after the mount; want all 61", n)
		}
	}
	if n != 61 {
		t.Fatalf("%d trees, want 61", n)
	}
	calls := cc.get.Load() + cc.getMany.Load()
	for i := range 30 {
		if _, err := v.Lower.ReadDir(fmt.Sprintf("d%02d/sub", i)); err != nil {
			t.Fatal(err)
		}
	}
	if more := cc.get.Load() + cc.getMany.Load() - calls; more != 0 {
		t.Errorf("looking into every directory after a mount made %d calls; want none", more)
	}
	if calls != 1 {
		t.Errorf("a mount's version root and its trees took %d calls, want 1", calls)
	}
	for i := range 30 {
		e, err := v.Lower.Entry(fmt.Sprintf("d%02d/sub", i))
		if err != nil {
			t.Fatal(err)
		}
		if g := ms.Server.Gets(e.Object); g != 1 {
			t.Errorf("tree of d%02d/sub sent %d times, want 1", i, g)
		}
	}
}
