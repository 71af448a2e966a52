package remote_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// GetInto reads what the store holds into the caller's buffer, fetches
// what it lacks into memory of its own, and keeps nothing of the buffer:
// the caller may write over it at once.
func TestCacheGetInto(t *testing.T) {
	files, ms, w, v := servedSmallFiles(t, "d", 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var chunks []object.Digest
	var blobs [][]byte
	for name, data := range files {
		f, _, err := v.Lower.FileObjectFrom(v.Cache, "d/"+name)
		if err != nil {
			t.Fatal(err)
		}
		enc, _ := object.EncodeBlob(data)
		chunks, blobs = append(chunks, f.Chunks[0]), append(blobs, enc)
	}
	buf := make([]byte, 64<<10)
	clobber := func() {
		for i := range buf {
			buf[i] = 0xee
		}
	}

	got, err := v.Cache.GetInto(ctx, chunks[0], buf)
	if err != nil || !bytes.Equal(got, blobs[0]) {
		t.Fatalf("fetched: %d bytes, %v", len(got), err)
	}
	if &got[0] == &buf[0] {
		t.Fatal("a fetched object came back in the caller's buffer")
	}
	clobber()
	for i, d := range chunks {
		if got, err := v.Cache.Get(ctx, d); err != nil || !bytes.Equal(got, blobs[i]) {
			t.Fatalf("fetched %d, read again after the buffer changed: %d bytes, %v", i, len(got), err)
		}
	}

	// Another mount of the worker: the chunk comes from the store.
	warm := w.View(ms.Addr, remotetest.ViewOptions{})
	for i, d := range chunks {
		got, err := warm.Cache.GetInto(ctx, d, buf)
		if err != nil || !bytes.Equal(got, blobs[i]) {
			t.Fatalf("stored %d: %d bytes, %v", i, len(got), err)
		}
		if &got[0] != &buf[0] {
			t.Errorf("stored %d: not read into the caller's buffer", i)
		}
		clobber()
		if got, err := warm.Cache.Get(ctx, d); err != nil || !bytes.Equal(got, blobs[i]) {
			t.Fatalf("stored %d, read again after the buffer changed: %d bytes, %v", i, len(got), err)
		}
	}
}
