package s3store_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// Verify reads every object the versions and checkpoints reach, each
// once, and names every missing or damaged one with its root and path,
// without reading beneath a damaged tree; it changes nothing.
func TestVerify(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	st, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	big := randBytes(2*object.ChunkSize + 5)
	writeFile(t, filepath.Join(dir, "a"), big)
	writeFile(t, filepath.Join(dir, "sub", "b"), []byte("one"))
	writeFile(t, filepath.Join(dir, "sub", "c"), big) // the chunks of a, again
	writeFile(t, filepath.Join(dir, "empty"), nil)
	if err := os.Symlink("a", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	local := localStore(t)
	v1, err := s3store.Publish(ctx, st, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "sub", "b"), []byte("two"))
	v2, err := s3store.Publish(ctx, st, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	roots := []s3store.VerifyRoot{{Name: "version 2", Version: v2.Version}, {Name: "version 1", Version: v1.Version}}

	probs, stats, err := st.Verify(ctx, roots, nil)
	if err != nil || len(probs) != 0 {
		t.Fatalf("verify of a whole bucket: %v, %v", probs, err)
	}
	// Trees: each version's root and sub (4); files: a and c share
	// their file object, b twice; chunks: a's 3, b's 2.
	if stats.Trees != 4 || stats.Files != 3 || stats.Chunks != 5 {
		t.Errorf("verify read %+v; want 4 trees, 3 file objects, 5 chunks, each once", stats)
	}

	// A chunk's bytes damaged in its pack: one problem, at the first
	// path that reaches it.
	a := fileObject(t, local, v2.Version, "a")
	damage := func(d object.Digest) (undo func()) {
		pack, off, n, ok, err := s3store.PackPlace(ctx, st, d)
		if err != nil || !ok {
			t.Fatalf("object %s packed: %v, %v", d.Short(), ok, err)
		}
		key := "spiders/one/packs/" + pack
		was := read(t, srv, bucket, key)
		b := append([]byte(nil), was...)
		b[off+n/2] ^= 0x40
		overwrite(t, srv, bucket, key, b)
		return func() { overwrite(t, srv, bucket, key, was) }
	}
	undo := damage(a.Chunks[1])
	probs, _, err = st.Verify(ctx, roots, nil)
	if err != nil || len(probs) != 1 {
		t.Fatalf("verify with a chunk damaged: %v, %v; want one problem", probs, err)
	}
	pack, _, _, _, _ := s3store.PackPlace(ctx, st, a.Chunks[1])
	if p := probs[0]; p.Root != "version 2" || p.Path != "/a" || p.Kind != "chunk" || p.Object != a.Chunks[1] ||
		!errors.Is(p.Err, object.ErrCorrupt) || !strings.Contains(p.Err.Error(), "chunk 1") || !strings.Contains(p.Err.Error(), "spiders/one/packs/"+pack) {
		t.Errorf("the problem: %+v (%v); want chunk 1 of /a in version 2, corrupt, its pack named", p, p.Err)
	}
	undo()

	// A tree damaged: one problem; what is beneath it is not read.
	_, root, err := remote.OpenVersion(ctx, local, v2.Version)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := lower.NewObjects(local, root.Object, root).Entry("sub")
	if err != nil {
		t.Fatal(err)
	}
	undo = damage(sub.Object)
	probs, stats, err = st.Verify(ctx, roots[:1], nil)
	if err != nil || len(probs) != 1 || probs[0].Kind != "tree" || probs[0].Path != "/sub" || !errors.Is(probs[0].Err, object.ErrCorrupt) {
		t.Fatalf("verify with a tree damaged: %+v, %v; want one problem, the tree /sub", probs, err)
	}
	if stats.Files != 1 {
		t.Errorf("verify read %d file objects; want 1, none beneath the damaged tree", stats.Files)
	}
	undo()

	// A pack gone: each chunk in it is missing.
	pack, _, _, _, err = s3store.PackPlace(ctx, st, a.Chunks[0])
	if err != nil {
		t.Fatal(err)
	}
	key := "spiders/one/packs/" + pack
	was := read(t, srv, bucket, key)
	if _, err := srv.Client().DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); err != nil {
		t.Fatal(err)
	}
	probs, _, err = st.Verify(ctx, roots, nil)
	if err != nil || len(probs) == 0 {
		t.Fatalf("verify with a pack gone: %v, %v; want problems", probs, err)
	}
	for _, p := range probs {
		if !errors.Is(p.Err, object.ErrNotFound) {
			t.Errorf("with a pack gone: %+v (%v); want missing", p, p.Err)
		}
	}
	// The repair docs/deploy.md gives: a publish of the tree again
	// uploads what is missing.
	again := openAgain(t, srv, bucket)
	if _, err := s3store.Publish(ctx, again, local, dir, s3store.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	if probs, _, err := again.Verify(ctx, roots[:1], nil); err != nil || len(probs) != 0 {
		t.Errorf("verify of version 2 after it was published again: %v, %v", probs, err)
	}
	overwrite(t, srv, bucket, key, was)

	// A version object that is not there, and a chunk that hashes
	// right but is shorter than its file's size says.
	short, _ := object.EncodeBlob([]byte("ten bytes!"))
	chunk, err := st.Put(ctx, short)
	if err != nil {
		t.Fatal(err)
	}
	fenc, err := object.EncodeFile(&object.File{Size: 20, Chunks: []object.Digest{chunk}})
	if err != nil {
		t.Fatal(err)
	}
	fd, err := st.Put(ctx, fenc)
	if err != nil {
		t.Fatal(err)
	}
	tenc, err := object.EncodeTree(&object.Tree{Entries: []object.Entry{{Name: "f", Mode: 0o100644, Size: 20, Object: fd}}})
	if err != nil {
		t.Fatal(err)
	}
	td, err := st.Put(ctx, tenc)
	if err != nil {
		t.Fatal(err)
	}
	venc, err := object.EncodeTree(&object.Tree{Entries: []object.Entry{{Name: "root", Mode: 0o40755, Object: td}}})
	if err != nil {
		t.Fatal(err)
	}
	vd, err := st.Put(ctx, venc)
	if err != nil {
		t.Fatal(err)
	}
	absent := object.Sum([]byte("no such version"))
	probs, _, err = st.Verify(ctx, []s3store.VerifyRoot{{Name: "absent", Version: absent}, {Name: "short", Version: vd}}, nil)
	if err != nil || len(probs) != 2 {
		t.Fatalf("verify of an absent version and a short chunk: %v, %v; want two problems", probs, err)
	}
	if p := probs[0]; p.Root != "absent" || p.Kind != "version" || p.Path != "" || !errors.Is(p.Err, object.ErrNotFound) {
		t.Errorf("the absent version: %+v (%v)", p, p.Err)
	}
	if p := probs[1]; p.Root != "short" || p.Kind != "chunk" || p.Path != "/f" || !errors.Is(p.Err, object.ErrCorrupt) || !strings.Contains(p.Err.Error(), "holds 10 bytes") {
		t.Errorf("the short chunk: %+v (%v)", p, p.Err)
	}

	// Verify changed nothing: the damage put back, all reads whole (to
	// a store that has not seen the pack go).
	probs, _, err = openAgain(t, srv, bucket).Verify(ctx, roots, nil)
	if err != nil || len(probs) != 0 {
		t.Errorf("verify after: %v, %v", probs, err)
	}
}

// Versions a verify holds stay through a gc that would drop them, until
// it lets go.
func TestHoldVersions(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	st, _ := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	vs := publishEach(t, st, "one", "two")
	release, err := st.HoldVersions(ctx, []object.Digest{vs[0].Version}, "verify")
	if err != nil {
		t.Fatal(err)
	}
	gc, err := st.GC(ctx, s3store.GCOptions{KeepVersions: 1})
	if err != nil || gc.VersionsLeased != 1 || gc.VersionsRemoved != 0 {
		t.Fatalf("gc --keep-versions 1 beside a hold: %+v, %v; want the old version kept for its lease", gc, err)
	}
	release()
	release()
	ps, err := st.Published(ctx)
	if err != nil || len(ps) != 2 || ps[1].Leases != 0 {
		t.Fatalf("after release: %+v, %v; want no lease left", ps, err)
	}
	gc, err = st.GC(ctx, s3store.GCOptions{KeepVersions: 1})
	if err != nil || gc.VersionsRemoved != 1 {
		t.Errorf("gc --keep-versions 1 after release: %+v, %v; want the old version removed", gc, err)
	}
}

// HoldVersions puts its leases again while it holds: past the leases'
// age, gc still keeps what it holds. Runs alone: it sets how long a
// lease holds for every test.
func TestHoldVersionsRenews(t *testing.T) {
	srv := s3test.Shared(t)
	st, _ := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	vs := publishEach(t, st, "one", "two")
	defer s3store.SetLeaseTTL(s3store.SetLeaseTTL(2 * time.Second))
	defer s3store.SetHoldRenew(s3store.SetHoldRenew(200 * time.Millisecond))
	release, err := st.HoldVersions(ctx, []object.Digest{vs[0].Version}, "verify")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	time.Sleep(3 * time.Second)
	gc, err := st.GC(ctx, s3store.GCOptions{KeepVersions: 1})
	if err != nil || gc.VersionsLeased != 1 || gc.VersionsRemoved != 0 {
		t.Fatalf("gc --keep-versions 1 past the leases' age: %+v, %v; want the old version kept, its lease renewed", gc, err)
	}
}

// Verify reads small files a batch at a time, each file's chunk in the
// GET of its file object: a few GETs for a version of many files, not
// one a file, nor one a file and one a chunk, and each byte once.
func TestVerifyReadsInBatches(t *testing.T) {
	t.Parallel()
	const n = 400
	p := publishedSmall(t, n)
	ctx := ctxT(t, 2*time.Minute)
	st := openAgain(t, s3test.Shared(t), p.bucket)
	v, err := st.Newest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before, in := st.Stats().Gets, st.Stats().BytesIn
	probs, stats, err := st.Verify(ctx, []s3store.VerifyRoot{{Name: "newest", Version: v.Digest}}, nil)
	// The n files, and one of two chunks.
	if err != nil || len(probs) != 0 || stats.Files != n+1 || stats.Chunks != n+2 {
		t.Fatalf("verify: %v, %+v, %v; want %d file objects and %d chunks", probs, stats, err, n+1, n+2)
	}
	if gets := st.Stats().Gets - before; gets > n/20 {
		t.Errorf("verify of a version of %d files made %d GETs; want them batched, at most %d", n, gets, n/20)
	} else {
		t.Logf("verify of a version of %d files: %d GETs", n, gets)
	}
	// What came is what was checked: a chunk is not read twice, once
	// between file objects and once on its own.
	if got := st.Stats().BytesIn - in; got > stats.Bytes*11/10 {
		t.Errorf("verify read %d bytes from the bucket to check %d", got, stats.Bytes)
	}
}

// publishEach publishes a version of one file for each of contents, in
// order, and returns them.
func publishEach(t *testing.T, st *s3store.Store, contents ...string) []s3store.PublishResult {
	t.Helper()
	dir, local := t.TempDir(), localStore(t)
	var vs []s3store.PublishResult
	for _, s := range contents {
		writeFile(t, filepath.Join(dir, "spider.py"), []byte(s))
		r, err := s3store.Publish(ctxT(t, time.Minute), st, local, dir, s3store.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, r)
	}
	return vs
}
