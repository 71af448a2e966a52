package remote_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// A chunk read ahead reaches its reader once verified, before its pack
// write and whatever becomes of it. Here no pack can be written, as if the
// process died before the write: the reader still gets the right bytes,
// the store holds nothing, and a later cache over it fetches the chunk
// again. What came damaged never reaches memory (TestFaultInjection).
func TestReadAheadBeforePackWrite(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ms := remotetest.StartMaster(t, t.TempDir(), remote.ServerConfig{})
	master, err := object.OpenDirStore(ms.Config.Objects)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := object.EncodeBlob(bytes.Repeat([]byte("read ahead "), 50000))
	d, err := master.Put(ctx, enc)
	if err != nil {
		t.Fatal(err)
	}
	client, err := remote.Dial(remote.ClientConfig{Addr: ms.Addr, Timeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	dir := filepath.Join(t.TempDir(), "objects")
	store, err := object.OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	// A file where the packs go: every pack write fails.
	if err := os.WriteFile(filepath.Join(dir, "packs"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := remote.NewCache(store, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Prefetch([]object.Digest{d})
	within(t, 20*time.Second, "the chunk fetched ahead, held for its reader", func() error {
		for !remote.FreshHolds(c, d) {
			time.Sleep(5 * time.Millisecond)
		}
		return nil
	})
	b, err := c.Get(ctx, d)
	if err != nil || !bytes.Equal(b, enc) {
		t.Fatalf("read of the chunk fetched ahead: %d bytes, %v", len(b), err)
	}
	if ok, _ := store.Has(ctx, d); ok {
		t.Fatal("the store holds a chunk whose pack write failed")
	}

	// The next process: packs can be written again; it fetches the chunk.
	if err := os.Remove(filepath.Join(dir, "packs")); err != nil {
		t.Fatal(err)
	}
	store2, err := object.OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := remote.NewCache(store2, client, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if b, err := c2.Get(ctx, d); err != nil || !bytes.Equal(b, enc) {
		t.Fatalf("a later cache: %d bytes, %v", len(b), err)
	}
	if st := c2.Stats(); st.BytesFetched != int64(len(enc)) {
		t.Fatalf("a later cache fetched %d bytes, want %d", st.BytesFetched, len(enc))
	}
}

// Chunks read ahead come in the pool's memory and go back to it once
// pushed out: readers of several big files at once each read every byte
// right, and so does a later cache reading what the store kept of them,
// though the memory each chunk came in held other chunks since.
func TestReadAheadGivesBack(t *testing.T) {
	exp := t.TempDir()
	files := map[string][]byte{}
	for _, name := range []string{"a", "b", "c"} {
		files[name] = remotetest.RandBytes(12<<20 + 777)
		remotetest.WriteFile(t, filepath.Join(exp, name), files[name], 0o644)
	}
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	w := remotetest.NewWorker(t)
	v := w.View(ms.Addr, remotetest.ViewOptions{})
	given := remote.CountGivenBack(v.Cache)

	errs := make(chan error, len(files))
	for name, want := range files {
		go func() {
			errs <- remotetest.Within(t, time.Minute, "read "+name, func() error {
				got, err := readLower(v.Lower, name)
				if err == nil && !bytes.Equal(got, want) {
					err = fmt.Errorf("%s: read %d bytes unlike the file's %d", name, len(got), len(want))
				}
				return err
			})
		}()
	}
	for range files {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if given() == 0 {
		t.Fatal("no chunk read ahead went back to the pool")
	}

	// What the store kept, read by another mount of the worker.
	again := w.View(ms.Addr, remotetest.ViewOptions{})
	for name, want := range files {
		if got, err := readAll(t, again.Lower, name, time.Minute); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s from the store: %d bytes, %v", name, len(got), err)
		}
	}
}

// A chunk read ahead is read in place (GetPinned) and pinned there for
// its reader: pushed out by another file's read-ahead while the reader
// is halfway through it, its memory does not go back to the pool (where
// the next fetch would overwrite it) until the reader moves on.
func TestPinnedChunkOutlivesPushOut(t *testing.T) {
	exp := t.TempDir()
	slow := remotetest.RandBytes(4 << 20)
	fast := remotetest.RandBytes(40 << 20)
	remotetest.WriteFile(t, filepath.Join(exp, "slow"), slow, 0o644)
	remotetest.WriteFile(t, filepath.Join(exp, "fast"), fast, 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	w := remotetest.NewWorker(t)
	v := w.View(ms.Addr, remotetest.ViewOptions{})
	given := remote.CountGivenBack(v.Cache)

	f, err := v.Lower.Open("slow")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	readAt := func(p []byte, off int64) {
		t.Helper()
		err := remotetest.Within(t, time.Minute, "read slow", func() error {
			_, err := f.ReadAt(p, off)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := slow[off : off+int64(len(p))]; !bytes.Equal(p, want) {
			t.Fatalf("slow at %d: %d bytes unlike the file's", off, len(p))
		}
	}
	// In order, so that read-ahead brings chunk 2, held, then read in
	// place: its first bytes only.
	readAt(make([]byte, 1<<20), 0)
	readAt(make([]byte, 4096), 1<<20)
	enc, err := object.EncodeBlob(slow[2<<20 : 3<<20])
	if err != nil {
		t.Fatal(err)
	}
	ch2 := object.Sum(enc)
	deadline := time.Now().Add(time.Minute)
	for !remote.FreshHolds(v.Cache, ch2) {
		if time.Now().After(deadline) {
			t.Fatal("chunk 2 was not read ahead")
		}
		time.Sleep(time.Millisecond)
	}
	readAt(make([]byte, 4096), 2<<20)

	// Another file's read-ahead pushes every chunk held out.
	err = remotetest.Within(t, time.Minute, "read fast", func() error {
		got, err := readLower(v.Lower, "fast")
		if err == nil && !bytes.Equal(got, fast) {
			err = fmt.Errorf("fast: %d bytes unlike the file's", len(got))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if remote.FreshHolds(v.Cache, ch2) {
		t.Fatal("chunk 2 still held after 40 MiB read ahead")
	}
	// The rest of chunk 2, from the memory it was pinned in.
	readAt(make([]byte, 1<<20-4096), 2<<20+4096)
	before := given()
	readAt(make([]byte, 4096), 3<<20)
	if given() == before {
		t.Fatal("chunk 2 did not go back to the pool once its reader moved on")
	}
}
