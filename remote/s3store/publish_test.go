package s3store_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// readVersion reads every regular file of version v from g, by path.
func readVersion(t *testing.T, g object.Getter, v object.Digest) map[string][]byte {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	_, root, err := remote.OpenVersion(ctx, g, v)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	err = object.Walk(ctx, g, root.Object, func(p string, e *object.Entry, f *object.File) error {
		if f == nil {
			return nil
		}
		var data []byte
		for _, c := range f.Chunks {
			if c.IsZero() {
				// A hole, or a chunk of zeros (a random last chunk of
				// one byte is one in 256 times).
				data = append(data, make([]byte, min(object.ChunkSize, f.Size-int64(len(data))))...)
				continue
			}
			b, err := g.Get(ctx, c)
			if err != nil {
				return err
			}
			chunk, err := object.DecodeBlob(b)
			if err != nil {
				return err
			}
			data = append(data, chunk...)
		}
		files[p] = data
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func localStore(t *testing.T) *object.DirStore {
	t.Helper()
	st, err := object.OpenDirStore(filepath.Join(t.TempDir(), "objects"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// A publish makes a version that a reader of the bucket alone finds as
// the newest and reads whole; publishing again after a change uploads the
// changed chunk and the objects above it, and nothing else.
func TestPublishUploadsOnlyChanges(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, _ := open(t, srv)
	dir := t.TempDir()
	big := randBytes(3*object.ChunkSize + 100)
	small := randBytes(5000)
	writeFile(t, filepath.Join(dir, "a", "big"), big)
	writeFile(t, filepath.Join(dir, "b", "small"), small)
	writeFile(t, filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\n"))
	local := localStore(t)
	ctx := ctxT(t, 2*time.Minute)

	var phases []string
	res1, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{Progress: func(p s3store.PublishProgress) {
		if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
			phases = append(phases, p.Phase)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"scanning", "listing", "uploading", "done"}; len(phases) != len(want) {
		t.Errorf("progress phases %v, want %v", phases, want)
	}
	// version, 3 trees (root, a, b), 3 file objects, 4+1+1 blobs.
	if res1.Objects != 13 || res1.Uploaded != 13 {
		t.Errorf("first publish: %+v; want 13 objects, all uploaded", res1)
	}
	newest, err := dst.Newest(ctx)
	if err != nil || newest.Digest != res1.Version {
		t.Fatalf("newest: %v, %v; want %s", newest.Digest.Short(), err, res1.Version.Short())
	}

	// Change the second chunk of big, and publish with a fresh local
	// store (another machine): what the bucket has is not sent again.
	big[object.ChunkSize+10] ^= 1
	writeFile(t, filepath.Join(dir, "a", "big"), big)
	before := dst.Stats()
	res2, err := s3store.Publish(ctx, dst, localStore(t), dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	puts := dst.Stats().Puts - before.Puts
	// one blob (loose: a whole chunk), two packs (big's file object;
	// tree a) and their index, the root tree and the version object
	// (loose, for a mount to read first), the version's key, and the
	// writer's lock against gc.
	if puts != 8 || res2.Uploaded != 5 {
		t.Errorf("second publish: %d PUTs, %d objects uploaded; want 8 and 5", puts, res2.Uploaded)
	}
	if sent := dst.Stats().BytesOut - before.BytesOut; sent > object.ChunkSize+4096 {
		t.Errorf("second publish sent %d bytes, more than the changed chunk", sent)
	}
	newest, err = dst.Newest(ctx)
	if err != nil || newest.Digest != res2.Version {
		t.Fatalf("newest after the second publish: %v, %v; want %s", newest.Digest.Short(), err, res2.Version.Short())
	}
	files := readVersion(t, dst, newest.Digest)
	if !bytes.Equal(files["a/big"], big) || !bytes.Equal(files["b/small"], small) || len(files) != 3 {
		t.Fatalf("the bucket's newest version differs from the directory")
	}
	if vs, err := dst.Versions(ctx); err != nil || len(vs) != 2 || vs[0].Digest != res2.Version {
		t.Fatalf("versions: %v, %v", vs, err)
	}
}

// Two publishers racing each leave a whole version, never a broken one.
func TestPublishRacing(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, _ := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	var wg sync.WaitGroup
	dirs := []string{t.TempDir(), t.TempDir()}
	results := make([]s3store.PublishResult, len(dirs))
	errs := make([]error, len(dirs))
	for i, dir := range dirs {
		writeFile(t, filepath.Join(dir, "shared"), bytes.Repeat([]byte("x"), 3*object.ChunkSize))
		writeFile(t, filepath.Join(dir, "own"), randBytes(2*object.ChunkSize))
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = s3store.Publish(ctx, dst, localStore(t), dir, s3store.PublishOptions{})
		}()
	}
	wg.Wait()
	for i := range dirs {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
	}
	vs, err := dst.Versions(ctx)
	if err != nil || len(vs) != 2 {
		t.Fatalf("versions: %v, %v", vs, err)
	}
	for _, v := range vs {
		files := readVersion(t, dst, v.Digest)
		if len(files) != 2 || len(files["own"]) != 2*object.ChunkSize {
			t.Fatalf("version %s is not whole", v.Digest.Short())
		}
	}
}

// An empty prefix has no newest version, and says so.
func TestNewestNone(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, _ := open(t, srv)
	if _, err := dst.Newest(context.Background()); err == nil {
		t.Fatal("newest of an empty prefix: no error")
	}
}

// Workers with separate state directories read a published version
// through their caches over the bucket alone, with no master: every file
// whole, each object fetched from the bucket once per worker, and read
// again from the worker's own store.
func TestWorkersReadThroughCache(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	dir := t.TempDir()
	want := map[string][]byte{
		"spiders/quotes.py": []byte("import scrapy\n"),
		"data/big":          randBytes(2*object.ChunkSize + 7),
		"run.sh":            []byte("#!/bin/sh\n"),
	}
	for p, b := range want {
		writeFile(t, filepath.Join(dir, p), b)
	}
	res, err := s3store.Publish(ctxT(t, 2*time.Minute), dst, localStore(t), dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for w := range 2 {
		// A worker knows the bucket, not the version: it finds the newest.
		st, err := s3store.Open(ctxT(t, time.Minute), s3store.Config{Bucket: bucket, Prefix: "spiders/one", Endpoint: srv.Endpoint})
		if err != nil {
			t.Fatal(err)
		}
		newest, err := st.Newest(ctxT(t, time.Minute))
		if err != nil || newest.Digest != res.Version {
			t.Fatalf("worker %d: newest %s, %v; want %s", w, newest.Digest.Short(), err, res.Version.Short())
		}
		cache, err := remote.NewCache(localStore(t), s3store.Fetcher{S: st}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cache.Close)
		for round := range 2 {
			got := readVersion(t, cache, newest.Digest)
			if len(got) != len(want) {
				t.Fatalf("worker %d: %d files, want %d", w, len(got), len(want))
			}
			for p, b := range want {
				if !bytes.Equal(got[p], b) {
					t.Fatalf("worker %d: %s differs", w, p)
				}
			}
			// One GET per object read one by one, and one of the
			// index of the one pack, on the first round only (Open and
			// Newest made list requests, not GETs).
			if gets := st.Stats().Gets; gets != res.Objects+1 {
				t.Fatalf("worker %d, round %d: %d GETs from the bucket for %d objects in one pack", w, round+1, gets, res.Objects)
			}
		}
	}
}
