package s3store_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// wideFiles writes n files of 60 KiB under dir/sub, each packed with its
// chunk (about 70 files a pack), and returns them by path under dir.
func wideFiles(t *testing.T, dir, sub string, n int, files map[string][]byte) {
	t.Helper()
	for i := range n {
		p := fmt.Sprintf("%s/f%03d", sub, i)
		files[p] = randBytes(60 << 10)
		writeFile(t, filepath.Join(dir, p), files[p])
	}
}

// openAgain opens the bucket anew, as a worker that has read nothing of
// it.
func openAgain(t *testing.T, srv *s3test.Server, bucket string) *s3store.Store {
	t.Helper()
	w, err := s3store.Open(ctxT(t, time.Minute), s3store.Config{Bucket: bucket, Prefix: "spiders/one", Endpoint: srv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// A publish that fills several packs writes one index for them all, so a
// reader's first packed object costs the GET of that index and its own,
// not a GET for every pack's index.
func TestPublishOneIndex(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir, files := t.TempDir(), map[string][]byte{}
	wideFiles(t, dir, "d", 200, files)
	local := localStore(t)
	res, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	packs, indexes := keysUnder(t, srv, bucket, "packs/"), keysUnder(t, srv, bucket, "indexes/")
	if len(packs) < 3 || len(indexes) != 1 {
		t.Fatalf("a publish of %d objects: %d packs, %d indexes; want 3 or more packs and one index", res.Objects, len(packs), len(indexes))
	}
	sub := entryIn(t, local, rootOf(t, local, res.Version), "d").Object
	w := openAgain(t, srv, bucket)
	before := w.Stats().Gets
	if _, err := w.Get(ctx, sub); err != nil {
		t.Fatal(err)
	}
	if gets := w.Stats().Gets - before; gets != 2 {
		t.Errorf("a packed object read first: %d GETs; want 2, the index's and its own", gets)
	}
	sameFiles(t, "a worker", readVersion(t, w, res.Version), files)
}

// gc that removes some of the packs one index names writes that index
// anew without them before it removes the old one; a gc that stopped in
// between (the old index back) leaves nothing a reader misses, and the
// next gc finishes the job.
func TestGCRewritesIndex(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	// v1: a's files and b's, in packs under one index.
	d1, files := t.TempDir(), map[string][]byte{}
	wideFiles(t, d1, "a", 150, files)
	wideFiles(t, d1, "b", 150, files)
	v1, err := s3store.Publish(ctx, dst, localStore(t), d1, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	old := keysUnder(t, srv, bucket, "indexes/")
	packs := keysUnder(t, srv, bucket, "packs/")
	if len(old) != 1 || len(packs) < 4 {
		t.Fatalf("v1: %d indexes, %d packs; want 1 index of 4 or more packs", len(old), len(packs))
	}
	oldIndex := read(t, srv, bucket, old[0])
	// v2: b alone, nothing new packed; then v1 goes, and a's packs die.
	d2, bFiles := t.TempDir(), map[string][]byte{}
	for p, b := range files {
		if strings.HasPrefix(p, "b/") {
			bFiles[p] = b
			writeFile(t, filepath.Join(d2, p), b)
		}
	}
	v2, err := s3store.Publish(ctx, dst, localStore(t), d2, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keysUnder(t, srv, bucket, "versions/") {
		if strings.HasSuffix(k, strings.TrimPrefix(v1.VersionString, "sha256-")) {
			removeKey(t, srv, bucket, k)
		}
	}
	// v2's own pack and index hold its tree of b, whose time differs
	// from v1's.
	both, packs := keysUnder(t, srv, bucket, "indexes/"), keysUnder(t, srv, bucket, "packs/")

	st, err := dst.GC(ctx, s3store.GCOptions{DryRun: true})
	if err != nil || st.PacksRemoved == 0 || st.IndexesRewritten != 0 || !slices.Equal(keysUnder(t, srv, bucket, "indexes/"), both) {
		t.Fatalf("gc --dry-run: %+v, %v; want packs counted, nothing written or removed", st, err)
	}
	st, err = dst.GC(ctx, s3store.GCOptions{})
	if err != nil || st.PacksRemoved == 0 || st.Packs == 0 || st.IndexesRewritten != 1 {
		t.Fatalf("gc: %+v, %v; want a's packs removed, b's kept, the index written anew", st, err)
	}
	now := keysUnder(t, srv, bucket, "indexes/")
	if len(now) != len(both) || slices.Contains(now, old[0]) {
		t.Fatalf("indexes after gc: %q; want %d, not %s", now, len(both), old[0])
	}
	if n := len(keysUnder(t, srv, bucket, "packs/")); n != len(packs)-st.PacksRemoved {
		t.Errorf("%d packs after gc; want %d", n, len(packs)-st.PacksRemoved)
	}
	sameFiles(t, "v2 after gc", readVersion(t, openAgain(t, srv, bucket), v2.Version), bFiles)

	// A gc that stopped after writing the new index: the old one, which
	// names packs that are gone, is still there.
	overwrite(t, srv, bucket, old[0], oldIndex)
	sameFiles(t, "v2 beside an index of packs gone", readVersion(t, openAgain(t, srv, bucket), v2.Version), bFiles)
	st, err = dst.GC(ctx, s3store.GCOptions{})
	if err != nil || st.PacksRemoved != 0 || st.IndexesRewritten != 1 {
		t.Fatalf("gc again: %+v, %v; want the old index written anew (as it is) and removed", st, err)
	}
	if got := keysUnder(t, srv, bucket, "indexes/"); !slices.Equal(got, now) {
		t.Errorf("indexes after the second gc: %q; want %q", got, now)
	}
	sameFiles(t, "v2 after the second gc", readVersion(t, openAgain(t, srv, bucket), v2.Version), bFiles)
}

// A bucket whose indexes name a pack each, as publishes wrote them
// before set indexes, reads as it did; a publish into it reuses what its
// packs hold, and gc removes the index of a dead pack with the pack.
func TestIndexesOfOnePackStillRead(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir, files := t.TempDir(), map[string][]byte{}
	wideFiles(t, dir, "a", 150, files)
	v1, err := s3store.Publish(ctx, dst, localStore(t), dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s3store.SplitIndexes(ctx, dst); err != nil {
		t.Fatal(err)
	}
	packs, indexes := keysUnder(t, srv, bucket, "packs/"), keysUnder(t, srv, bucket, "indexes/")
	if len(packs) < 2 || len(indexes) != len(packs) {
		t.Fatalf("split: %d packs, %d indexes; want an index a pack", len(packs), len(indexes))
	}
	sameFiles(t, "a bucket of an index a pack", readVersion(t, openAgain(t, srv, bucket), v1.Version), files)

	wideFiles(t, dir, "b", 10, files)
	v2, err := s3store.Publish(ctx, openAgain(t, srv, bucket), localStore(t), dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if v2.Uploaded > 24 {
		t.Errorf("a publish of 10 files more: %d objects uploaded; want what the 10 files add", v2.Uploaded)
	}
	sameFiles(t, "the version published on top", readVersion(t, openAgain(t, srv, bucket), v2.Version), files)
	if st, err := dst.GC(ctx, s3store.GCOptions{}); err != nil || st.PacksRemoved != 0 || st.IndexesRewritten != 0 {
		t.Errorf("gc with everything reached: %+v, %v", st, err)
	}
	if n := len(keysUnder(t, srv, bucket, "indexes/")); n != len(indexes)+1 {
		t.Errorf("%d indexes; want the %d of a pack each and the new publish's", n, len(indexes))
	}
}

// A publish whose packs name more than indexObjectsMax objects writes an
// index as they fill, each naming whole packs, every pack in one: a
// reader finds everything.
func TestIndexesAsPacksFill(t *testing.T) {
	old := s3store.SetIndexObjectsMax(100)
	t.Cleanup(func() { s3store.SetIndexObjectsMax(old) })
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir, files := t.TempDir(), map[string][]byte{}
	wideFiles(t, dir, "a", 300, files)
	res, err := s3store.Publish(ctx, dst, localStore(t), dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	packs, indexes := keysUnder(t, srv, bucket, "packs/"), keysUnder(t, srv, bucket, "indexes/")
	if len(indexes) < 2 || len(indexes) > len(packs) {
		t.Fatalf("%d packs, %d indexes; want an index for every pack or two", len(packs), len(indexes))
	}
	sameFiles(t, "a worker", readVersion(t, openAgain(t, srv, bucket), res.Version), files)
}

// An index in a format a later cowfs writes stops a reader with a
// message that says to upgrade: it is not damage, whose objects would be
// left out, and must not be deleted.
func TestNewerIndexSaysUpgrade(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	p := publishedSmall(t, 10)
	overwrite(t, srv, p.bucket, "spiders/one/indexes/"+strings.Repeat("ab", 32), []byte("cowfsix3 and what a later format holds"))
	sub := entryIn(t, p.local, rootOf(t, p.local, p.res.Version), "d0").Object
	_, err := openAgain(t, srv, p.bucket).Get(ctxT(t, time.Minute), sub)
	if err == nil || !strings.Contains(err.Error(), "upgrade cowfs") || strings.Contains(err.Error(), "delete it") {
		t.Errorf("a packed object beside an index of a newer format: %v; want an error that says to upgrade", err)
	}
}

// A publish packs trees apart from the files' objects and chunks, so a
// reader that asks for several directories at once (a mount's lookups, a
// warmup's listing, a trace's batch) reads them with one GET, not one a
// directory with its files' bytes between them.
func TestTreesPackedTogether(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir, files := t.TempDir(), map[string][]byte{}
	for _, sub := range []string{"a", "b", "c"} {
		wideFiles(t, dir, sub, 30, files)
	}
	local := localStore(t)
	res, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	root := rootOf(t, local, res.Version)
	var trees []object.Digest
	for _, sub := range []string{"a", "b", "c"} {
		trees = append(trees, entryIn(t, local, root, sub).Object)
	}
	w := openAgain(t, srv, bucket)
	if _, err := w.Get(ctx, root); err != nil { // the indexes load
		t.Fatal(err)
	}
	gets := w.Stats().Gets
	err = s3store.Fetcher{S: w}.GetMany(ctx, trees, func(i int, b []byte, err error) {
		if err != nil || object.Sum(b) != trees[i] {
			t.Errorf("tree %s: %v", trees[i].Short(), err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if n := w.Stats().Gets - gets; n != 1 {
		t.Errorf("a GetMany of three directories' trees: %d GETs; want 1", n)
	}
}

// A reader that lists an index gc then removes, having written its
// objects into one anew (here: SplitIndexes, the same steps), lists the
// indexes again and finds them there: its load neither fails nor leaves
// them out. Runs alone: the hook is the package's.
func TestIndexRemovedAfterListing(t *testing.T) {
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir, files := t.TempDir(), map[string][]byte{}
	wideFiles(t, dir, "a", 150, files)
	res, err := s3store.Publish(ctx, dst, localStore(t), dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	before := keysUnder(t, srv, bucket, "indexes/")
	reader := openAgain(t, srv, bucket)
	var split error
	ran := false
	restore := s3store.SetAfterPackListing(func(s *s3store.Store) {
		if s != reader || ran {
			return
		}
		ran = true
		split = s3store.SplitIndexes(ctx, openAgain(t, srv, bucket))
	})
	defer restore()
	sameFiles(t, "a version whose index was removed after the reader listed it", readVersion(t, reader, res.Version), files)
	if !ran || split != nil {
		t.Fatalf("the indexes were not rewritten beneath the reader: ran %v, %v", ran, split)
	}
	if after := keysUnder(t, srv, bucket, "indexes/"); slices.Contains(after, before[0]) || len(after) < 2 {
		t.Fatalf("indexes %v after the split of %v", after, before)
	}
}

// A reader lists indexes/, not packs/: an index that names a pack gone
// (a damaged pack removed by hand, then published again, as
// docs/deploy.md says to repair one) costs it the GET that finds the pack
// gone, and then a listing of packs/ and indexes/, which finds the
// objects where the publish put them again. Here the pack goes after the
// reader loaded its indexes, so that the reader surely looks there.
func TestReaderFindsPackGone(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir, files := t.TempDir(), map[string][]byte{}
	wideFiles(t, dir, "a", 150, files)
	local := localStore(t)
	res, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reader := openAgain(t, srv, bucket)
	before := reader.Stats().Lists
	// A file object of a, in a pack of file objects and first chunks.
	a := entryIn(t, local, rootOf(t, local, res.Version), "a").Object
	packed := entryIn(t, local, a, "f070").Object
	pack, _, _, ok, err := s3store.PackPlace(ctx, reader, packed)
	if err != nil || !ok {
		t.Fatalf("the file object is in no pack: %v", err)
	}
	if n := reader.Stats().Lists - before; n != 1 {
		t.Errorf("a reader's load of the indexes made %d LISTs; want 1, of indexes/", n)
	}
	removeKey(t, srv, bucket, "spiders/one/packs/"+pack)
	// Published again with a new file beside each: the objects of the
	// pack gone go into packs of other bytes, so of other names.
	more := map[string][]byte{}
	for name := range files {
		more[name+"x"] = randBytes(1000)
		writeFile(t, filepath.Join(dir, name+"x"), more[name+"x"])
	}
	if _, err := s3store.Publish(ctx, openAgain(t, srv, bucket), localStore(t), dir, s3store.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	lists := reader.Stats().Lists
	sameFiles(t, "the version after its pack was removed and published again", readVersion(t, reader, res.Version), files)
	if p, _, _, ok, err := s3store.PackPlace(ctx, reader, packed); err != nil || !ok || p == pack {
		t.Errorf("the reader places %s in pack %s (%v, %v); want a pack other than the one gone", packed.Short(), p, ok, err)
	}
	if n := reader.Stats().Lists - lists; n < 2 {
		t.Errorf("the reader made %d LISTs after it found a pack gone; want indexes/ and packs/", n)
	}
}

// A Store with an index cache keeps the indexes it reads, and a later
// Store of the prefix with the same cache reads them from there, with no
// GET; one damaged on disk is read from the bucket again; once gc merged
// them away, a load removes them from the cache.
func TestIndexCache(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir, files := t.TempDir(), map[string][]byte{}
	local := localStore(t)
	var v object.Digest
	for i := range 10 {
		wideFiles(t, dir, fmt.Sprintf("p%d", i), 5, files)
		res, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		v = res.Version
	}
	cache := t.TempDir()
	reader := func() *s3store.Store {
		t.Helper()
		s, err := s3store.Open(ctx, s3store.Config{Bucket: bucket, Prefix: "spiders/one", Endpoint: srv.Endpoint, IndexCache: cache})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	kept := func() []string {
		t.Helper()
		var names []string
		err := filepath.WalkDir(cache, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				names = append(names, p)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	// Beside them, the kept indexes of two other prefixes, one read by
	// no load for longer than the cache keeps them, and a directory
	// that is not a prefix's.
	idle, recent, other := filepath.Join(cache, strings.Repeat("ab", 16)), filepath.Join(cache, strings.Repeat("cd", 16)), filepath.Join(cache, "notes")
	for _, d := range []string{idle, recent, other} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, strings.Repeat("0", 64)), []byte("cowfsix2"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	long := time.Now().Add(-31 * 24 * time.Hour)
	for _, d := range []string{idle, other} {
		if err := os.Chtimes(d, long, long); err != nil {
			t.Fatal(err)
		}
	}
	first := reader()
	sameFiles(t, "a reader that keeps indexes", readVersion(t, first, v), files)
	if _, err := os.Stat(idle); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the indexes of a prefix read by no load for 31 days: %v; want them removed", err)
	}
	for _, d := range []string{recent, other} {
		if err := os.Remove(filepath.Join(d, strings.Repeat("0", 64))); err != nil {
			t.Errorf("%s: %v; want it left", d, err)
		}
		os.Remove(d)
	}
	onDisk := kept()
	if len(onDisk) != 10 || first.Stats().IndexesKept != 0 {
		t.Fatalf("after a first load: %d indexes kept, %d read from the cache; want the 10, none", len(onDisk), first.Stats().IndexesKept)
	}
	second := reader()
	sameFiles(t, "a reader of the kept indexes", readVersion(t, second, v), files)
	if n := second.Stats().IndexesKept; n != 10 {
		t.Errorf("a second reader read %d indexes from the cache; want 10", n)
	}
	if err := os.WriteFile(onDisk[0], []byte("cowfsix2 torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	third := reader()
	sameFiles(t, "a reader beside a damaged kept index", readVersion(t, third, v), files)
	if n := third.Stats().IndexesKept; n != 9 {
		t.Errorf("beside a damaged kept index, %d read from the cache; want 9", n)
	}
	if b, err := os.ReadFile(onDisk[0]); err != nil || string(b[:8]) != "cowfsix2" || len(b) < 100 {
		t.Errorf("the damaged kept index was not kept again whole: %d bytes, %v", len(b), err)
	}
	if st, err := dst.GC(ctx, s3store.GCOptions{}); err != nil || st.IndexesMerged != 10 {
		t.Fatalf("gc: %+v, %v; want the 10 indexes merged", st, err)
	}
	fourth := reader()
	sameFiles(t, "a reader after the merge", readVersion(t, fourth, v), files)
	if now := kept(); len(now) != 1 || slices.Contains(onDisk, now[0]) {
		t.Errorf("kept after the merge: %v; want the merged index alone", now)
	}
}
