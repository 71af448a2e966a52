package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"google.golang.org/grpc/mem"

	"github.com/cowfs/cowfs/cow/lower"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// keysUnder lists the bucket's keys under the prefix's dir (objects/,
// packs/, ...), behind the store's back.
func keysUnder(t *testing.T, srv *s3test.Server, bucket, dir string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(srv.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("spiders/one/" + dir)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctxT(t, time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// recording is a Getter that notes every object read through it, in
// order.
type recording struct {
	g    object.Getter
	seen map[object.Digest]bool
	list []object.Digest
}

func (r *recording) Get(ctx context.Context, d object.Digest) ([]byte, error) {
	if !r.seen[d] {
		r.seen[d] = true
		r.list = append(r.list, d)
	}
	return r.g.Get(ctx, d)
}

// objectsOf lists every object version v reaches but v, from g.
func objectsOf(t *testing.T, g object.Getter, v object.Digest) []object.Digest {
	t.Helper()
	r := &recording{g: g, seen: map[object.Digest]bool{v: true}}
	readVersion(t, r, v)
	return r.list
}

// rootOf returns the root tree of version v, read from g.
func rootOf(t *testing.T, g object.Getter, v object.Digest) object.Digest {
	t.Helper()
	b, err := g.Get(ctxT(t, time.Minute), v)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := object.DecodeTree(b)
	if err != nil || len(tr.Entries) != 1 {
		t.Fatalf("version object %s: %d entries, %v", v.Short(), len(tr.Entries), err)
	}
	return tr.Entries[0].Object
}

// published is a tree published to a fresh bucket of the shared server.
type published struct {
	dst    *s3store.Store // the bucket's store
	bucket string
	local  *object.DirStore // the store the publish went through
	dir    string           // the tree
	files  map[string][]byte
	res    s3store.PublishResult
}

// publishedSmall publishes smallTree(n).
func publishedSmall(t *testing.T, n int) published {
	t.Helper()
	p := published{dir: t.TempDir(), local: localStore(t)}
	p.dst, p.bucket = open(t, s3test.Shared(t))
	p.files = smallTree(t, p.dir, n)
	var err error
	if p.res, err = s3store.Publish(ctxT(t, 2*time.Minute), p.dst, p.local, p.dir, s3store.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	return p
}

// smallTree writes n small files in four directories, and one file of
// two whole chunks, and returns them by path.
func smallTree(t *testing.T, dir string, n int) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	for i := range n {
		p := fmt.Sprintf("d%d/page%03d.html", i%4, i)
		files[p] = append([]byte(p+"\n"), randBytes(3000+i)...)
	}
	files["big"] = randBytes(2 * object.ChunkSize)
	for p, b := range files {
		writeFile(t, filepath.Join(dir, p), b)
	}
	return files
}

func sameFiles(t *testing.T, what string, got, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d files, want %d", what, len(got), len(want))
	}
	for p, b := range want {
		if !bytes.Equal(got[p], b) {
			t.Fatalf("%s: %s differs", what, p)
		}
	}
}

// A publish writes its objects into packs, with an index, and only the
// version object and its root tree loose, a file's later chunks in a pack
// of their own; a worker with its own store reads everything whole, and a GetMany of every object (what the
// directory prefetch and warmup ask for) makes a GET per run of a pack,
// not one per object. Before packs it made one per object.
func TestPublishPacksSmallObjects(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	p := publishedSmall(t, 200)
	bucket, want, local, res := p.bucket, p.files, p.local, p.res
	ctx := ctxT(t, 2*time.Minute)
	loose, packs, indexes := keysUnder(t, srv, bucket, "objects/"), keysUnder(t, srv, bucket, "packs/"), keysUnder(t, srv, bucket, "indexes/")
	// The version object and its root tree; the trees', the files' and
	// the chunk groups' packs (big's second chunk).
	if len(loose) != 2 || len(packs) != 3 || len(indexes) != 1 {
		t.Fatalf("after a publish of %d objects: %d loose, %d packs, %d indexes; want 2 loose, the rest in 3 packs under one index", res.Objects, len(loose), len(packs), len(indexes))
	}
	if root := rootOf(t, local, res.Version); !slices.Contains(loose, rawKey(root)) {
		t.Fatalf("the root tree %s is not loose: %q", root.Short(), loose)
	}
	if k := chunkGroupPack(t, srv, bucket, packs); k == "" {
		t.Fatalf("no pack holds big's second chunk alone: %q", packs)
	}

	all := objectsOf(t, local, res.Version)
	worker := openAgain(t, srv, bucket)
	got := 0
	err := s3store.Fetcher{S: worker}.GetMany(ctx, all, func(i int, b []byte, err error) {
		if err != nil || object.Sum(b) != all[i] {
			t.Errorf("GetMany: object %s: %d bytes, %v", all[i].Short(), len(b), err)
			return
		}
		got++
	})
	if err != nil || got != len(all) {
		t.Fatalf("GetMany: %d of %d objects, %v", got, len(all), err)
	}
	gets := worker.Stats().Gets
	t.Logf("GetMany of %d objects (%d packs): %d GETs", len(all), len(packs), gets)
	if gets > int64(len(packs))*2+int64(len(indexes))+int64(len(loose)) {
		t.Errorf("GetMany of %d objects made %d GETs; want one per pack and index, and one per loose object", len(all), gets)
	}
	cache, err := remote.NewCache(localStore(t), s3store.Fetcher{S: worker}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	sameFiles(t, "a worker's cache", readVersion(t, cache, res.Version), want)
}

// A GetMany into the pool's buffers hands the same bytes as one into new
// memory, packed or loose. A lent object is good while got runs; a given
// one stays good after the call, while later calls read into the pool's
// buffers, and once given back its buffer serves a later call: an object
// of a pack is read into a buffer of its own as its run comes.
func TestGetManyIntoThePool(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	local := localStore(t)
	// Two versions of different bytes: the later calls read the second's
	// into the buffers the first's went through.
	var vs [2][]object.Digest
	for k := range vs {
		dir := t.TempDir()
		smallTree(t, dir, 120)
		res, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vs[k] = objectsOf(t, local, res.Version)
	}
	worker := openAgain(t, srv, bucket)
	f := s3store.Fetcher{S: worker}
	// check runs one GetMany of ds; keep says what got does with a good
	// object's bytes once checked.
	check := func(what string, ds []object.Digest, getMany func(context.Context, []object.Digest, func(int, []byte, error)) error, keep func(i int, b []byte)) {
		t.Helper()
		n := 0
		err := getMany(ctx, ds, func(i int, b []byte, err error) {
			if err != nil || object.Sum(b) != ds[i] {
				t.Errorf("%s: object %s: %d bytes, %v", what, ds[i].Short(), len(b), err)
				return
			}
			n++
			if keep != nil {
				keep(i, b)
			}
		})
		if err != nil || n != len(ds) {
			t.Fatalf("%s: %d of %d objects, %v", what, n, len(ds), err)
		}
	}
	all := vs[0]
	check("GetMany", all, f.GetMany, nil)
	check("GetManyLent", all, f.GetManyLent, nil)
	// An object asked for twice in a call comes twice, whole, though a
	// run of a pack reads each of its objects once.
	twice := append(slices.Clone(all), all[len(all)/2], all[len(all)/3])
	check("GetMany, objects twice", twice, f.GetMany, nil)
	check("GetManyLent, objects twice", twice, f.GetManyLent, nil)
	check("GetManyGiven, objects twice", twice, f.GetManyGiven, nil)
	given := make([][]byte, len(all))
	check("GetManyGiven", all, f.GetManyGiven, func(i int, b []byte) { given[i] = b })
	for range 3 {
		check("GetManyLent of other objects", vs[1], f.GetManyLent, nil)
		check("GetManyGiven of other objects", vs[1], f.GetManyGiven, func(i int, b []byte) { giveBack(b) })
	}
	for i, b := range given {
		if object.Sum(b) != all[i] {
			t.Fatalf("a given object (%s, %d bytes) changed once later calls read into the pool", all[i].Short(), len(b))
		}
	}
	for _, b := range given {
		giveBack(b)
	}
	check("GetManyGiven once given back", vs[1], f.GetManyGiven, nil)
	check("GetManyGiven once given back", all, f.GetManyGiven, nil)
}

// A bucket, as a mount hands it to remote.Cache, fetches into the pool
// as a master's client does (the cache's poolFetcher and lentFollower).
var _ interface {
	GetManyLent(context.Context, []object.Digest, func(int, []byte, error)) error
	GetManyGiven(context.Context, []object.Digest, func(int, []byte, error)) error
	GetManyFollowLent(context.Context, []object.Digest, int64, func(int, []byte, error), func(object.Digest, []byte)) error
} = s3store.Source{}

// giveBack returns b to the process's buffer pool, as remote.Cache does
// with what it was given.
func giveBack(b []byte) {
	b = b[:cap(b)]
	mem.DefaultBufferPool().Put(&b)
}

// A byte damaged inside a pack is found (the object it falls in does not
// hash to its digest) and never served, by the store or through a
// worker's cache, and the error names the pack; the pack's other objects
// still read. A truncated pack is found too.
func TestPackDamaged(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	p := publishedSmall(t, 40)
	bucket, local, res := p.bucket, p.local, p.res
	ctx := ctxT(t, 2*time.Minute)
	packs := keysUnder(t, srv, bucket, "packs/")
	if len(packs) != 3 {
		t.Fatalf("%d packs, want 3: the trees', the files' and the chunk groups'", len(packs))
	}
	all := objectsOf(t, local, res.Version)
	// The files' pack, the larger of the two that are not the chunk
	// groups'.
	packs = slices.DeleteFunc(packs, func(k string) bool { return k == chunkGroupPack(t, srv, bucket, packs) })
	key, pack := packs[0], read(t, srv, bucket, packs[0])
	if other := read(t, srv, bucket, packs[1]); len(other) > len(pack) {
		key, pack = packs[1], other
	}
	damaged := append([]byte(nil), pack...)
	damaged[len(damaged)/2] ^= 0x20
	overwrite(t, srv, bucket, key, damaged)

	worker := openAgain(t, srv, bucket)
	var bad object.Digest
	for _, d := range all {
		_, err := worker.Get(ctx, d)
		switch {
		case err == nil:
		case errors.Is(err, object.ErrCorrupt) && strings.Contains(err.Error(), key):
			if !bad.IsZero() {
				t.Errorf("a second object damaged by one byte: %v", err)
			}
			bad = d
		default:
			t.Errorf("get %s: %v; want it whole, or ErrCorrupt naming %s", d.Short(), err, key)
		}
	}
	if bad.IsZero() {
		t.Fatal("a byte damaged in the middle of a pack: every object read")
	}
	cache, err := remote.NewCache(localStore(t), s3store.Fetcher{S: worker}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	cache.Prefetch(all)
	if b, err := cache.Get(ctx, bad); !errors.Is(err, object.ErrCorrupt) {
		t.Errorf("cache get of the damaged object: %d bytes, %v; want ErrCorrupt", len(b), err)
	}

	overwrite(t, srv, bucket, key, pack[:len(pack)/2])
	truncated := 0
	worker2 := openAgain(t, srv, bucket)
	for _, d := range all {
		b, err := worker2.Get(ctx, d)
		switch {
		case err == nil && object.Sum(b) == d:
		case errors.Is(err, object.ErrCorrupt) && strings.Contains(err.Error(), key):
			truncated++
		default:
			t.Errorf("get %s of a truncated pack: %d bytes, %v", d.Short(), len(b), err)
		}
	}
	if truncated == 0 {
		t.Error("a pack cut in half: every object read")
	}
}

// A bucket of loose objects only (as written before packs) reads as it
// did, and a publish into it packs only what it adds.
func TestLooseBucketStillWorks(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	want := smallTree(t, dir, 20)
	res1, err := s3store.Publish(ctx, dst, localStore(t), dir, s3store.PublishOptions{PackMax: -1})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(keysUnder(t, srv, bucket, "packs/")); n != 0 || len(keysUnder(t, srv, bucket, "objects/")) != int(res1.Objects) {
		t.Fatalf("a publish with no packs wrote %d packs", n)
	}
	worker := openAgain(t, srv, bucket)
	cache, err := remote.NewCache(localStore(t), s3store.Fetcher{S: worker}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cache.Close)
	local := localStore(t)
	sameFiles(t, "the loose bucket", readVersion(t, cache, res1.Version), want)

	writeFile(t, filepath.Join(dir, "d1", "new.html"), []byte("new page"))
	want["d1/new.html"] = []byte("new page")
	res2, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The new blob and file object, trees d1 and root, the version.
	if res2.Uploaded != 5 {
		t.Errorf("publish into a loose bucket uploaded %d objects, want 5", res2.Uploaded)
	}
	// One of the trees, one of the file object.
	if n := len(keysUnder(t, srv, bucket, "packs/")); n != 2 {
		t.Errorf("publish into a loose bucket: %d packs, want 2", n)
	}
	worker2 := openAgain(t, srv, bucket)
	sameFiles(t, "the version published into a loose bucket", readVersion(t, worker2, res2.Version), want)
	delete(want, "d1/new.html")
	sameFiles(t, "the loose version", readVersion(t, worker2, res1.Version), want)
}

// gc keeps a pack while any object in it is reached and no more of it is
// dead than live (TestGCRepacks: more), and removes one nothing reaches, with its index, once it is
// older than the grace period; a publish afterwards sends again what it
// held.
func TestGCPacks(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	// v1: a, b, c in pack P1.
	d1 := t.TempDir()
	shared, shared2 := randBytes(3000), randBytes(3001)
	writeFile(t, filepath.Join(d1, "a"), shared)
	writeFile(t, filepath.Join(d1, "b"), shared2)
	writeFile(t, filepath.Join(d1, "c"), randBytes(3002))
	v1, err := s3store.Publish(ctx, dst, localStore(t), d1, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// v2 reuses a's and b's objects, two thirds of P1.
	d2 := t.TempDir()
	writeFile(t, filepath.Join(d2, "a2"), shared)
	writeFile(t, filepath.Join(d2, "b2"), shared2)
	writeFile(t, filepath.Join(d2, "d"), randBytes(3003))
	v2, err := s3store.Publish(ctx, dst, localStore(t), d2, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// v3: its own pack, which dies with v3's key.
	d3 := t.TempDir()
	d3files := map[string][]byte{"x": randBytes(3004), "y": randBytes(3005)}
	for p, b := range d3files {
		writeFile(t, filepath.Join(d3, p), b)
	}
	v3, err := s3store.Publish(ctx, dst, localStore(t), d3, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(keysUnder(t, srv, bucket, "packs/")); n != 3 {
		t.Fatalf("%d packs, want 3", n)
	}
	removeVersion(t, srv, bucket, v1)
	removeVersion(t, srv, bucket, v3)

	st, err := dst.GC(ctx, s3store.GCOptions{Grace: time.Hour})
	if err != nil || st.PacksRemoved != 0 || st.Packs != 2 {
		t.Errorf("gc --grace 1h: %+v, %v; want the dead pack kept as young", st, err)
	}
	st, err = dst.GC(ctx, s3store.GCOptions{DryRun: true})
	if err != nil || st.PacksRemoved != 1 || len(keysUnder(t, srv, bucket, "packs/")) != 3 {
		t.Errorf("gc --dry-run: %+v, %v; want 1 pack counted, none removed", st, err)
	}
	st, err = dst.GC(ctx, s3store.GCOptions{})
	if err != nil || st.PacksRemoved != 1 || st.Packs != 2 {
		t.Errorf("gc: %+v, %v; want P1 (partly live) and P2 kept, P3 removed", st, err)
	}
	if p, i := keysUnder(t, srv, bucket, "packs/"), keysUnder(t, srv, bucket, "indexes/"); len(p) != 2 || len(i) != 2 {
		t.Errorf("after gc: packs %v, indexes %v; want 2 of each", p, i)
	}
	worker := openAgain(t, srv, bucket)
	if files := readVersion(t, worker, v2.Version); !bytes.Equal(files["a2"], shared) || !bytes.Equal(files["b2"], shared2) || len(files) != 3 {
		t.Errorf("v2 after gc: %d files", len(files))
	}
	// What P3 held is sent again, by this store (which saw it go) and
	// read whole by a new one.
	v3again, err := s3store.Publish(ctx, dst, localStore(t), d3, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v3again.Uploaded != v3again.Objects {
		t.Errorf("republish of what gc removed: %d of %d objects sent", v3again.Uploaded, v3again.Objects)
	}
	worker2 := openAgain(t, srv, bucket)
	sameFiles(t, "v3 published again", readVersion(t, worker2, v3again.Version), d3files)
}

// Packs deleted by hand (as the message for a damaged one says to) leave
// their index behind: a publish sends their objects again rather than
// count on them, readers find them in the new packs, never in the gone
// ones, and gc removes the index left alone (once the version that was
// broken with them is gone too).
func TestPackDeletedByHand(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	want := smallTree(t, dir, 10)
	if _, err := s3store.Publish(ctx, dst, localStore(t), dir, s3store.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	packs := keysUnder(t, srv, bucket, "packs/")
	if len(packs) != 3 {
		t.Fatalf("%d packs, want 3: the trees', the files' and the chunk groups'", len(packs))
	}
	oldIndex := keysUnder(t, srv, bucket, "indexes/")
	for _, k := range packs {
		removeKey(t, srv, bucket, k)
	}
	// The version that reached them is broken now: gc would stop on it.
	removeKey(t, srv, bucket, keysUnder(t, srv, bucket, "versions/")[0])
	// Another machine publishes the tree again, with a file more (so
	// that its pack is another).
	writeFile(t, filepath.Join(dir, "d0", "extra.html"), []byte("extra"))
	want["d0/extra.html"] = []byte("extra")
	other := openAgain(t, srv, bucket)
	res, err := s3store.Publish(ctx, other, localStore(t), dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Everything: what is not loose was in the packs deleted.
	if res.Uploaded != res.Objects {
		t.Errorf("republish after the packs were deleted: %d of %d objects sent, want all", res.Uploaded, res.Objects)
	}
	worker := openAgain(t, srv, bucket)
	sameFiles(t, "after the republish", readVersion(t, worker, res.Version), want)
	st, err := worker.GC(ctx, s3store.GCOptions{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// The chunk groups' pack came back with the same bytes, so the same
	// name: the old index is written anew naming it alone.
	idx, now := keysUnder(t, srv, bucket, "indexes/"), keysUnder(t, srv, bucket, "packs/")
	if len(idx) != 2 || st.IndexesRewritten != 1 || len(now) != 3 || slices.Contains(idx, oldIndex[0]) {
		t.Errorf("after gc: indexes %v (%d written anew), packs %v; want the new packs, their index and the old one written anew, not %v", idx, st.IndexesRewritten, now, oldIndex)
	}
}

// A mount that knows its version loads the pack indexes ahead
// (LoadIndexes), and what it reads before it serves, the version object
// and the root tree, which a publish leaves loose, does not wait for
// them: here the load is held up and both still come, the version object
// asked for as a mount asks (GetManyFollow, with what follows it), the
// root tree with Get. A tree beneath the root, packed, comes once the
// load ends.
func TestVersionBesideTheIndexes(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	p := publishedSmall(t, 40)
	bucket, res := p.bucket, p.res
	ctx := ctxT(t, 2*time.Minute)
	worker := openAgain(t, srv, bucket)
	f := s3store.Fetcher{S: worker}
	v, err := s3store.Source{Fetcher: f}.Resolve(ctx, "")
	if err != nil || v != res.Version {
		t.Fatalf("Resolve: %s, %v; want %s", v.Short(), err, res.Version.Short())
	}
	release := s3store.HoldPacks(worker)
	held := true
	defer func() {
		if held {
			release()
		}
	}()
	worker.LoadIndexes(ctx)

	type got struct {
		b   []byte
		err error
	}
	get := func(d object.Digest) <-chan got {
		c := make(chan got, 1)
		go func() {
			b, err := f.Get(ctx, d)
			c <- got{b, err}
		}()
		return c
	}
	getFollow := func(d object.Digest) <-chan got {
		c := make(chan got, 1)
		go func() {
			var g got
			err := f.GetManyFollow(ctx, []object.Digest{d}, object.ChunkSize, func(_ int, b []byte, err error) {
				g = got{b, err}
			}, func(object.Digest, []byte) {})
			if err != nil {
				g.err = err
			}
			c <- g
		}()
		return c
	}
	// first reads d with read while the load is held, and returns it.
	first := func(what string, d object.Digest, read func(object.Digest) <-chan got) []byte {
		t.Helper()
		select {
		case g := <-read(d):
			if g.err != nil || object.Sum(g.b) != d {
				t.Fatalf("%s while the indexes load: %d bytes, %v", what, len(g.b), g.err)
			}
			return g.b
		case <-time.After(20 * time.Second):
			t.Fatalf("%s waited for the indexes' load", what)
		}
		return nil
	}
	tr, err := object.DecodeTree(first("the version object", v, getFollow))
	if err != nil || len(tr.Entries) != 1 {
		t.Fatalf("version object: %v", err)
	}
	rt, err := object.DecodeTree(first("the root tree", tr.Entries[0].Object, get))
	if err != nil {
		t.Fatalf("root tree: %v", err)
	}
	var sub object.Digest
	for _, e := range rt.Entries {
		if e.Name == "d0" {
			sub = e.Object
		}
	}
	if sub.IsZero() {
		t.Fatal("no d0 in the root tree")
	}
	subc := get(sub)
	select {
	case g := <-subc:
		t.Fatalf("the packed tree of d0 came before the indexes were loaded: %d bytes, %v", len(g.b), g.err)
	case <-time.After(200 * time.Millisecond):
	}
	release()
	held = false
	select {
	case g := <-subc:
		if g.err != nil || object.Sum(g.b) != sub {
			t.Fatalf("the tree of d0 after the load: %d bytes, %v", len(g.b), g.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the tree of d0 did not come within 30 s of the indexes' load")
	}
	if lists := worker.Stats().Lists; lists != 3 {
		t.Errorf("%d LISTs; want 3: Open's check, the newest version, indexes/ once (a reader lists no packs/)", lists)
	}
}

// A publish whose root tree a pack holds already (here: a directory
// published before as part of a larger tree) still uploads it loose, for
// a mount of the new version to read beside the indexes' load.
func TestRootLooseWherePacked(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	p := publishedSmall(t, 40)
	dst, bucket, dir, want, local := p.dst, p.bucket, p.dir, p.files, p.local
	ctx := ctxT(t, 2*time.Minute)
	before := keysUnder(t, srv, bucket, "objects/")
	res, err := s3store.Publish(ctx, dst, local, filepath.Join(dir, "d1"), s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The new version object and its root, d1's tree, packed before.
	root := rootOf(t, local, res.Version)
	after := keysUnder(t, srv, bucket, "objects/")
	if slices.Contains(before, rawKey(root)) || !slices.Contains(after, rawKey(root)) || len(after) != len(before)+2 || res.Uploaded != 2 {
		t.Fatalf("d1's tree %s loose before: %v, after: %v; %d loose keys before, %d after, %d objects uploaded; want it loose after only, 2 uploaded",
			root.Short(), slices.Contains(before, rawKey(root)), slices.Contains(after, rawKey(root)), len(before), len(after), res.Uploaded)
	}
	worker := openAgain(t, srv, bucket)
	d1 := map[string][]byte{}
	for p, b := range want {
		if rel, ok := strings.CutPrefix(p, "d1/"); ok {
			d1[rel] = b
		}
	}
	sameFiles(t, "the version of d1", readVersion(t, s3store.Fetcher{S: worker}, res.Version), d1)
}

// entryIn returns the entry name of the tree d, read from g.
func entryIn(t *testing.T, g object.Getter, d object.Digest, name string) object.Entry {
	t.Helper()
	b, err := g.Get(ctxT(t, time.Minute), d)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := object.DecodeTree(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range tr.Entries {
		if e.Name == name {
			return e
		}
	}
	t.Fatalf("no %s in tree %s", name, d.Short())
	return object.Entry{}
}

// A file opened or prefetched from a bucket (GetManyFollow) brings the
// first chunk a publish packed right after its file object in the same
// ranged GET: a file's open and first read are one request, not two,
// whatever the chunk's size. Lent (GetManyFollowLent), the chunk comes
// the same, read in the pool's memory, again and again.
func TestFollowPackedChunk(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	p := publishedSmall(t, 40)
	bucket, local, res := p.bucket, p.local, p.res
	ctx := ctxT(t, 2*time.Minute)
	root := rootOf(t, local, res.Version)
	small := entryIn(t, local, entryIn(t, local, root, "d2").Object, "page002.html").Object
	big := entryIn(t, local, root, "big").Object

	worker := openAgain(t, srv, bucket)
	f := s3store.Fetcher{S: worker}
	if _, err := f.Get(ctx, root); err != nil { // the indexes load
		t.Fatal(err)
	}
	type followFunc = func(context.Context, []object.Digest, int64, func(int, []byte, error), func(object.Digest, []byte)) error
	for _, c := range []struct {
		name   string
		file   object.Digest
		want   int // chunks followed
		follow followFunc
	}{
		{"small", small, 1, f.GetManyFollow},
		{"big", big, 1, f.GetManyFollow},
		{"small, lent", small, 1, f.GetManyFollowLent},
		{"big, lent", big, 1, f.GetManyFollowLent},
		{"small, lent again", small, 1, f.GetManyFollowLent},
		{"big, lent again", big, 1, f.GetManyFollowLent},
	} {
		b, err := local.Get(ctx, c.file)
		if err != nil {
			t.Fatal(err)
		}
		chunks := remote.FirstChunks(b, object.ChunkSize)
		gets := worker.Stats().Gets
		var gotFile bool
		var followed []object.Digest
		err = c.follow(ctx, []object.Digest{c.file}, object.ChunkSize, func(i int, b []byte, err error) {
			gotFile = err == nil && object.Sum(b) == c.file
		}, func(d object.Digest, b []byte) {
			if !gotFile {
				t.Errorf("%s: chunk %s handed before its file object", c.name, d.Short())
			}
			if object.Sum(b) != d || !slices.Contains(chunks, d) {
				t.Errorf("%s: followed %s, %d bytes: not a first chunk of the file, or damaged", c.name, d.Short(), len(b))
			}
			followed = append(followed, d)
		})
		if err != nil || !gotFile {
			t.Fatalf("%s: GetManyFollow: file object whole: %v, %v", c.name, gotFile, err)
		}
		if n := worker.Stats().Gets - gets; len(followed) != c.want || n != 1 {
			t.Errorf("%s: %d chunks followed in %d GETs; want %d in 1", c.name, len(followed), n, c.want)
		}
	}
}

// Has asks for an object loose before loading the indexes: a remount's
// question about its version object (never packed) is one HEAD, and a
// packed object is still found, in the indexes loaded then.
func TestHasLooseFirst(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	p := publishedSmall(t, 40)
	bucket, local, res := p.bucket, p.local, p.res
	ctx := ctxT(t, 2*time.Minute)
	worker := func() *s3store.Store {
		t.Helper()
		w, err := s3store.Open(ctx, s3store.Config{Bucket: bucket, Prefix: "spiders/one", Endpoint: srv.Endpoint, NoCheck: true})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	w := worker()
	if ok, err := w.Has(ctx, res.Version); err != nil || !ok {
		t.Fatalf("Has(version): %v, %v", ok, err)
	}
	if st := w.Stats(); st.Heads != 1 || st.Lists != 0 || st.Gets != 0 {
		t.Errorf("Has(version) made %d HEADs, %d LISTs, %d GETs; want one HEAD", st.Heads, st.Lists, st.Gets)
	}
	sub := entryIn(t, local, rootOf(t, local, res.Version), "d1").Object // packed
	w = worker()
	if ok, err := w.Has(ctx, sub); err != nil || !ok {
		t.Fatalf("Has(a packed tree): %v, %v", ok, err)
	}
	if ok, err := w.Has(ctx, object.Sum([]byte("not there"))); err != nil || ok {
		t.Fatalf("Has(an object nowhere): %v, %v", ok, err)
	}
}

// chunkGroupPack returns the one of packs that holds nothing but
// smallTree's big file's second chunk, a chunk group of one: "" if none
// does.
func chunkGroupPack(t *testing.T, srv *s3test.Server, bucket string, packs []string) string {
	t.Helper()
	for _, k := range packs {
		b := read(t, srv, bucket, k)
		if _, err := object.Check(b); len(b) == object.ChunkSize+2 && err == nil {
			return k
		}
	}
	return ""
}

// A publish packs a file's later chunks by chunk groups
// (object.ChunkGroup): a group's chunks lie side by side, in order, in one
// pack of about groupPackTarget at most, never split between two, so that
// a reader's read-ahead of a group is one GET; a batch of groups as a
// sequential reader asks for them (BatchChunks from chunk 1) lies in one
// pack too, one GET. A republish of a file with one chunk changed packs
// only that chunk; the file still reads whole.
func TestPublishPacksChunkGroups(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	files := map[string][]byte{}
	for i, chunks := range []float64{1.5, 2, 5, 9.01, 6, 3.3, 13, 2*s3store.BatchChunks + 3.5} {
		name := fmt.Sprintf("data/f%d.db", i)
		files[name] = randBytes(int(chunks * object.ChunkSize))
		writeFile(t, filepath.Join(dir, name), files[name])
	}
	local := localStore(t)
	res, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	worker := openAgain(t, srv, bucket)
	groupPacks := map[string]bool{}
	checkGroups := func(g object.Getter, v object.Digest) {
		t.Helper()
		for name := range files {
			f := fileObject(t, g, v, name)
			type place struct {
				pack   string
				off, n int64
			}
			var prev place
			for i, c := range f.Chunks {
				pack, off, n, ok, err := s3store.PackPlace(ctx, worker, c)
				if err != nil || !ok {
					t.Fatalf("%s chunk %d: packed %v, %v", name, i, ok, err)
				}
				cur := place{pack, off, n}
				if i > 1 && object.ChunkGroupOf(int64(i)) == object.ChunkGroupOf(int64(i-1)) &&
					(cur.pack != prev.pack || cur.off != prev.off+prev.n) {
					t.Errorf("%s chunk %d at %v, chunk %d at %v: a chunk group split", name, i, cur, i-1, prev)
				}
				if i > 0 {
					groupPacks[pack] = true
				}
				prev = cur
			}
		}
	}
	checkGroups(local, res.Version)
	for p := range groupPacks {
		if n := len(read(t, srv, bucket, "spiders/one/packs/"+p)); n > s3store.GroupPackTarget {
			t.Errorf("pack %s of chunk groups: %d bytes, over %d", p[:12], n, s3store.GroupPackTarget)
		}
	}
	// Each of f7's batches in one pack, one GET.
	f7 := fileObject(t, local, res.Version, "data/f7.db")
	for from := 1; from+s3store.BatchChunks <= len(f7.Chunks); from += s3store.BatchChunks {
		batch := f7.Chunks[from : from+s3store.BatchChunks]
		gets := worker.Stats().Gets
		if err := (s3store.Fetcher{S: worker}).GetMany(ctx, batch, func(i int, b []byte, err error) {
			if err != nil || object.Sum(b) != batch[i] {
				t.Errorf("GetMany: f7 chunk %d: %v", from+i, err)
			}
		}); err != nil {
			t.Fatal(err)
		}
		if n := worker.Stats().Gets - gets; n != 1 {
			t.Errorf("a GetMany of f7's chunks %d-%d made %d GETs; want 1", from, from+len(batch)-1, n)
		}
	}
	// One group, one GET.
	f := fileObject(t, local, res.Version, "data/f6.db")
	gets := worker.Stats().Gets
	if err := (s3store.Fetcher{S: worker}).GetMany(ctx, f.Chunks[5:9], func(i int, b []byte, err error) {
		if err != nil || object.Sum(b) != f.Chunks[5+i] {
			t.Errorf("GetMany: chunk %d: %v", 5+i, err)
		}
	}); err != nil {
		t.Fatal(err)
	}
	if n := worker.Stats().Gets - gets; n != 1 {
		t.Errorf("a GetMany of chunk group 2 made %d GETs; want 1", n)
	}
	sameFiles(t, "a worker", readVersion(t, worker, res.Version), files)

	// One chunk changed: it alone is sent, besides the objects above it.
	files["data/f3.db"][6*object.ChunkSize] ^= 1
	writeFile(t, filepath.Join(dir, "data/f3.db"), files["data/f3.db"])
	res2, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The chunk, f3's file object, data's tree, the root and the version.
	if res2.Uploaded != 5 {
		t.Errorf("a republish with one chunk changed sent %d objects, want 5", res2.Uploaded)
	}
	sameFiles(t, "a worker, after the republish", readVersion(t, openAgain(t, srv, bucket), res2.Version), files)
}

// fileObject returns the file object of path in version v, read from g.
func fileObject(t *testing.T, g object.Getter, v object.Digest, path string) *object.File {
	t.Helper()
	ctx := ctxT(t, time.Minute)
	_, root, err := remote.OpenVersion(ctx, g, v)
	if err != nil {
		t.Fatal(err)
	}
	f, _, err := lower.NewObjects(g, root.Object, root).FileObject(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// gc decides chunk groups' packs as it does every pack: one a version
// still reaches a chunk of is kept whole; one whose chunks no version
// reaches any more (a file removed, a group's chunk changed) is removed,
// and what is left reads whole.
func TestGCChunkGroups(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	files := map[string][]byte{"log": randBytes((s3store.BatchChunks + 2) * object.ChunkSize), "old.db": randBytes(3 * object.ChunkSize)}
	for p, b := range files {
		writeFile(t, filepath.Join(dir, p), b)
	}
	local := localStore(t)
	v1, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	packOf := func(path string, chunk int) string {
		t.Helper()
		f := fileObject(t, local, v1.Version, path)
		pack, _, _, ok, err := s3store.PackPlace(ctx, dst, f.Chunks[chunk])
		if err != nil || !ok {
			t.Fatalf("%s chunk %d: packed %v, %v", path, chunk, ok, err)
		}
		return pack
	}
	// log's first batch of groups fills a pack; the group after and
	// old.db's share one.
	last := s3store.BatchChunks + 1
	kept, dead := packOf("log", 1), packOf("log", last)
	if kept == dead || packOf("old.db", 1) != dead {
		t.Fatalf("log's groups in %s and %s, old.db's in %s; want log's apart, old.db's beside log's last", kept[:12], dead[:12], packOf("old.db", 1)[:12])
	}

	// v2: old.db removed, log's last chunk changed.
	if err := os.Remove(filepath.Join(dir, "old.db")); err != nil {
		t.Fatal(err)
	}
	delete(files, "old.db")
	files["log"][last*object.ChunkSize] ^= 1
	writeFile(t, filepath.Join(dir, "log"), files["log"])
	v2, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	removeVersion(t, srv, bucket, v1)
	if _, err := dst.GC(ctx, s3store.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	packs := keysUnder(t, srv, bucket, "packs/")
	if !slices.Contains(packs, "spiders/one/packs/"+kept) || slices.Contains(packs, "spiders/one/packs/"+dead) {
		t.Errorf("after gc: packs %q; want %s kept (log's first groups), %s removed", packs, kept[:12], dead[:12])
	}
	sameFiles(t, "v2 after gc", readVersion(t, openAgain(t, srv, bucket), v2.Version), files)
}
