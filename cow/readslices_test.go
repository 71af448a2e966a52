package cow

import (
	"bytes"
	"context"
	"math/rand"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs/cow/internal/cowtest"
	"github.com/cowfs/cowfs/cow/object"
)

// A file read from an object lower is handed out as views of the lower's
// memory (ReadSlices) while every byte of it is the lower's: the views
// are the file's bytes, and stay the bytes that were read though the
// file is written (copied up) before they are released; a written file,
// and any file of a directory lower, is read into the caller's buffer.
func TestReadSlicesFollowsTheLayers(t *testing.T) {
	t.Parallel()
	big := make([]byte, 3*ChunkSize+100)
	rand.New(rand.NewSource(9)).Read(big)
	src := newTestFS(t, map[string][]byte{"big": big})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	store, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	root, rootE, _, err := src.Capture(ctx, cowtest.PutCached{DirStore: store})
	if err != nil {
		t.Fatal(err)
	}
	f := newObjectsFS(t, store, root, rootE)

	p := lookupT(t, f, "big")
	h, err := f.Open(p, unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	off := int64(ChunkSize - 4096)
	dest := make([]byte, 128<<10)
	vecs, _, release, err := h.ReadSlices(ctx, dest, off)
	if err != nil || vecs == nil {
		t.Fatalf("a file all in the object lower: read into the buffer %v, %v", vecs == nil, err)
	}
	if got := bytes.Join(vecs, nil); !bytes.Equal(got, big[off:off+128<<10]) {
		t.Fatal("the views are not the file's bytes")
	}

	// Written while the views are held: they stay what was read.
	w, err := f.Open(p, unix.O_WRONLY)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteAt(bytes.Repeat([]byte{'w'}, 8192), off); err != nil {
		t.Fatal(err)
	}
	w.Release()
	if got := bytes.Join(vecs, nil); !bytes.Equal(got, big[off:off+128<<10]) {
		t.Fatal("views held across a write changed")
	}
	if release != nil {
		release()
	}
	want := bytes.Clone(big[off : off+16384])
	copy(want, bytes.Repeat([]byte{'w'}, 8192))
	got := make([]byte, len(want))
	vecs, n, release, err := h.ReadSlices(ctx, got, off)
	if err != nil || release != nil || vecs != nil || !bytes.Equal(got[:n], want) {
		t.Fatalf("read after the write: %v, into the buffer %v, released by the caller %v, written bytes there %v",
			err, vecs == nil, release != nil, bytes.Equal(got[:n], want))
	}

	// A directory lower copies.
	dh, err := src.Open(lookupT(t, src, "big"), unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	defer dh.Release()
	dest = make([]byte, 4096)
	if vecs, n, release, err := dh.ReadSlices(ctx, dest, 0); err != nil || release != nil || vecs != nil || !bytes.Equal(dest[:n], big[:4096]) {
		t.Fatalf("a directory lower's file: %v, into the buffer %v", err, vecs == nil)
	}
}
