package s3store_test

import (
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// gc removes what no version or checkpoint reaches, once it is older than
// the grace period; --dry-run only counts; every version and checkpoint
// still reads whole after it.
func TestGC(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, _ := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), randBytes(object.ChunkSize+5))
	if _, err := s3store.Publish(ctx, dst, localStore(t), dir, s3store.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	local := localStore(t)
	writeFile(t, filepath.Join(dir, "g"), []byte("checkpointed"))
	if _, err := dst.Push(ctx, local, snapshotOf(t, local, dir, "ckpt")); err != nil {
		t.Fatal(err)
	}
	// Orphans: what a publish that died before its key left.
	var orphans []object.Digest
	for i := range 3 {
		b, _ := object.EncodeBlob([]byte(fmt.Sprintf("orphan %d", i)))
		d, err := dst.Put(ctx, b)
		if err != nil {
			t.Fatal(err)
		}
		orphans = append(orphans, d)
	}
	st, err := dst.GC(ctx, s3store.GCOptions{Grace: time.Hour})
	if err != nil || st.Removed != 0 || st.Young != 3 || st.Versions != 1 || st.Checkpoints != 1 {
		t.Errorf("gc --grace 1h: %+v, %v; want the 3 orphans kept as young", st, err)
	}
	st, err = dst.GC(ctx, s3store.GCOptions{DryRun: true})
	if err != nil || st.Removed != 3 {
		t.Errorf("gc --dry-run: %+v, %v; want 3 counted", st, err)
	}
	if has, _ := dst.Has(ctx, orphans[0]); !has {
		t.Error("gc --dry-run removed an orphan")
	}
	st, err = dst.GC(ctx, s3store.GCOptions{})
	if err != nil || st.Removed != 3 || st.Live == 0 {
		t.Errorf("gc: %+v, %v; want 3 removed", st, err)
	}
	for _, d := range orphans {
		if has, _ := dst.Has(ctx, d); has {
			t.Errorf("orphan %s still there after gc", d.Short())
		}
	}
	newest, err := dst.Newest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	readVersion(t, dst, newest.Digest)
	v, err := dst.Checkpoint(ctx, "ckpt")
	if err != nil {
		t.Fatal(err)
	}
	if files := readVersion(t, dst, v); string(files["g"]) != "checkpointed" {
		t.Errorf("the checkpoint after gc: %d files", len(files))
	}
}

// gc with no grace at all, racing publishes and pushes, loses nothing:
// every version and checkpoint reads whole afterwards. Without the
// locks, the objects a publish uploaded before its key would be removed.
func TestGCRacingPublish(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, _ := open(t, srv)
	ctx := ctxT(t, 4*time.Minute)
	dir := t.TempDir()
	rounds := 6
	if testing.Short() {
		rounds = 3
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var gcs, refused int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, err := dst.GC(ctx, s3store.GCOptions{})
			switch {
			case errors.Is(err, s3store.ErrWriterRunning):
				refused++
			case err != nil:
				t.Errorf("gc: %v", err)
				return
			default:
				gcs++
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	local := localStore(t)
	for i := range rounds {
		writeFile(t, filepath.Join(dir, fmt.Sprintf("f%d", i)), randBytes(object.ChunkSize/2+i))
		if _, err := s3store.Publish(ctx, dst, localStore(t), dir, s3store.PublishOptions{}); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, "state"), randBytes(1000+i))
		if _, err := dst.Push(ctx, local, snapshotOf(t, local, dir, fmt.Sprintf("c%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d gc runs, %d refused for a writer", gcs, refused)
	if _, err := dst.GC(ctx, s3store.GCOptions{}); err != nil {
		t.Fatal(err)
	}
	vs, err := dst.Versions(ctx)
	if err != nil || len(vs) != rounds {
		t.Fatalf("versions: %d, %v", len(vs), err)
	}
	for _, v := range vs {
		readVersion(t, dst, v.Digest)
	}
	for i := range rounds {
		v, err := dst.Checkpoint(ctx, fmt.Sprintf("c%d", i))
		if err != nil {
			t.Fatal(err)
		}
		readVersion(t, dst, v)
	}
}

// The locks, deterministically: a gc finds a writer's lock and removes
// nothing; a publish waits while a gc's lock is there and goes on once it
// is gone.
func TestGCLocks(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	b, _ := object.EncodeBlob([]byte("orphan"))
	orphan, err := dst.Put(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	overwrite(t, srv, bucket, "spiders/one/locks/write-test", []byte("{}"))
	if _, err := dst.GC(ctx, s3store.GCOptions{}); !errors.Is(err, s3store.ErrWriterRunning) {
		t.Errorf("gc with a writer's lock: %v, want ErrWriterRunning", err)
	}
	if has, _ := dst.Has(ctx, orphan); !has {
		t.Error("gc with a writer's lock removed an object")
	}
	removeKey(t, srv, bucket, "spiders/one/locks/write-test")

	overwrite(t, srv, bucket, "spiders/one/locks/gc-test", []byte("{}"))
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), []byte("x"))
	done := make(chan error, 1)
	go func() {
		_, err := s3store.Publish(ctx, dst, localStore(t), dir, s3store.PublishOptions{})
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("publish ended while a gc's lock was there: %v", err)
	case <-time.After(time.Second):
	}
	removeKey(t, srv, bucket, "spiders/one/locks/gc-test")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("publish still waiting a minute after the gc's lock went")
	}
	if st, err := dst.GC(ctx, s3store.GCOptions{}); err != nil || st.Removed != 1 {
		t.Errorf("gc once no lock is left: %+v, %v; want the orphan removed", st, err)
	}
}

// removeVersion removes the key that publishes version v, behind the
// store's back, as a version dropped by hand.
func removeVersion(t *testing.T, srv *s3test.Server, bucket string, v s3store.PublishResult) {
	t.Helper()
	for _, k := range keysUnder(t, srv, bucket, "versions/") {
		if strings.HasSuffix(k, strings.TrimPrefix(v.VersionString, "sha256-")) {
			removeKey(t, srv, bucket, k)
		}
	}
}

func removeKey(t *testing.T, srv *s3test.Server, bucket, key string) {
	t.Helper()
	if _, err := srv.Client().DeleteObject(ctxT(t, time.Minute), &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); err != nil {
		t.Fatal(err)
	}
}

// gc repacks a pack more dead than live: its live objects go into a new
// pack with an index of its own, and it is removed, as are its indexes'
// entries for it. A reader that loaded the indexes before finds the
// pack gone and looks again (Get and GetMany alike). A gc that stopped
// after writing the new pack, before its removals (the old pack and
// index put back), leaves everything readable, and the next gc finishes:
// the packs and indexes are then those the first left.
func TestGCRepacks(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	db := randBytes(5 * object.ChunkSize)
	writeFile(t, filepath.Join(dir, "db"), db)
	local := localStore(t)
	v1, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f1 := fileObject(t, local, v1.Version, "db")
	oldPack, _, _, ok, err := s3store.PackPlace(ctx, dst, f1.Chunks[1])
	if err != nil || !ok {
		t.Fatalf("chunk 1 packed: %v, %v", ok, err)
	}
	oldPackKey := "spiders/one/packs/" + oldPack
	oldPackBytes := read(t, srv, bucket, oldPackKey)
	oldIndexes := keysUnder(t, srv, bucket, "indexes/")
	oldIndexBytes := map[string][]byte{}
	for _, k := range oldIndexes {
		oldIndexBytes[k] = read(t, srv, bucket, k)
	}
	// v2 changes three of the four chunks of group 1: its pack is then
	// three quarters dead once v1 is gone.
	for _, c := range []int{2, 3, 4} {
		db[c*object.ChunkSize] ^= 1
	}
	writeFile(t, filepath.Join(dir, "db"), db)
	v2, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	removeVersion(t, srv, bucket, v1)
	// Two readers that place chunk 1 in the old pack.
	stale, staleMany := openAgain(t, srv, bucket), openAgain(t, srv, bucket)
	for _, w := range []*s3store.Store{stale, staleMany} {
		if p, _, _, _, err := s3store.PackPlace(ctx, w, f1.Chunks[1]); err != nil || p != oldPack {
			t.Fatalf("a reader places chunk 1 in %q, %v; want %s", p, err, oldPack[:12])
		}
	}

	st, err := dst.GC(ctx, s3store.GCOptions{DryRun: true})
	if err != nil || st.PacksRepacked != 1 || st.DeadBytes != 3*(object.ChunkSize+2) || !slices.Contains(keysUnder(t, srv, bucket, "packs/"), oldPackKey) {
		t.Fatalf("gc --dry-run: %+v, %v; want one pack counted to repack, nothing changed", st, err)
	}
	st, err = dst.GC(ctx, s3store.GCOptions{Grace: time.Hour})
	if err != nil || st.PacksRepacked != 0 {
		t.Fatalf("gc --grace 1h: %+v, %v; want the young pack kept as it is", st, err)
	}
	st, err = dst.GC(ctx, s3store.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gc: %+v", st)
	packs, indexes := keysUnder(t, srv, bucket, "packs/"), keysUnder(t, srv, bucket, "indexes/")
	if st.PacksRepacked != 1 || st.RepackedBytes != object.ChunkSize+2 || st.DeadBytes != 3*(object.ChunkSize+2) || slices.Contains(packs, oldPackKey) {
		t.Fatalf("gc: %+v, packs %q; want %s repacked, one chunk kept of four, and removed", st, packs, oldPack[:12])
	}
	fresh := openAgain(t, srv, bucket)
	if p, _, _, ok, err := s3store.PackPlace(ctx, fresh, f1.Chunks[1]); err != nil || !ok || p == oldPack {
		t.Fatalf("after gc, chunk 1 in %q (%v), %v; want a new pack", p, ok, err)
	}
	sameFiles(t, "v2 after the repack", readVersion(t, fresh, v2.Version), map[string][]byte{"db": db})

	// The readers that knew the old pack.
	if b, err := stale.Get(ctx, f1.Chunks[1]); err != nil || object.Sum(b) != f1.Chunks[1] {
		t.Errorf("a reader that placed chunk 1 in the removed pack: Get: %v", err)
	}
	var got int
	if err := (s3store.Fetcher{S: staleMany}).GetMany(ctx, f1.Chunks[:2], func(i int, b []byte, err error) {
		if err != nil || object.Sum(b) != f1.Chunks[i] {
			t.Errorf("a reader that placed chunk 1 in the removed pack: GetMany: chunk %d: %v", i, err)
			return
		}
		got++
	}); err != nil || got != 2 {
		t.Errorf("GetMany after the repack: %d of 2, %v", got, err)
	}

	// As a gc that stopped before its removals would leave the bucket.
	overwrite(t, srv, bucket, oldPackKey, oldPackBytes)
	for k, b := range oldIndexBytes {
		overwrite(t, srv, bucket, k, b)
	}
	sameFiles(t, "v2 with the old pack back", readVersion(t, openAgain(t, srv, bucket), v2.Version), map[string][]byte{"db": db})
	// The old pack goes again: repacked into the same pack, or taken for
	// a copy of what the new pack holds (an object in two packs is live
	// in one).
	st, err = openAgain(t, srv, bucket).GC(ctx, s3store.GCOptions{})
	if err != nil || st.PacksRemoved != 1 {
		t.Fatalf("gc again: %+v, %v; want the old pack removed again", st, err)
	}
	if p, i := keysUnder(t, srv, bucket, "packs/"), keysUnder(t, srv, bucket, "indexes/"); !slices.Equal(p, packs) || !slices.Equal(i, indexes) {
		t.Errorf("after gc again: packs %q, indexes %q; want %q and %q, as the first gc left them", p, i, packs, indexes)
	}
	sameFiles(t, "v2 after gc again", readVersion(t, openAgain(t, srv, bucket), v2.Version), map[string][]byte{"db": db})
}

// An object packed twice (racing publishers) is live in one pack only:
// gc removes the other pack, once nothing else in it is live, and a
// reader that placed the objects there reads them from the one kept.
func TestGCOneCopy(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	files := map[string][]byte{}
	for i := range 6 {
		name := fmt.Sprintf("f%d", i)
		files[name] = randBytes(3000 + i)
		writeFile(t, filepath.Join(dir, name), files[name])
	}
	local := localStore(t)
	res, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Every packed object again, in the opposite order: another pack.
	var ds []object.Digest
	for _, d := range objectsOf(t, local, res.Version) {
		if _, _, _, ok, err := s3store.PackPlace(ctx, dst, d); err != nil {
			t.Fatal(err)
		} else if ok {
			ds = append(ds, d)
		}
	}
	slices.Reverse(ds)
	before := keysUnder(t, srv, bucket, "packs/")
	if err := s3store.PackAgain(ctx, dst, local, ds); err != nil {
		t.Fatal(err)
	}
	twice := keysUnder(t, srv, bucket, "packs/")
	if len(twice) != len(before)+1 {
		t.Fatalf("packs %q after packing again, %q before; want one more", twice, before)
	}
	reader := openAgain(t, srv, bucket)
	sameFiles(t, "with every object packed twice", readVersion(t, reader, res.Version), files)

	st, err := dst.GC(ctx, s3store.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	after := keysUnder(t, srv, bucket, "packs/")
	if len(after) != len(before) || st.PacksRemoved != 1 {
		t.Errorf("gc: %+v; packs %q; want one of the two copies' packs removed", st, after)
	}
	sameFiles(t, "a reader that knew both packs", readVersion(t, reader, res.Version), files)
	sameFiles(t, "a new reader", readVersion(t, openAgain(t, srv, bucket), res.Version), files)
}

// gc reads what a version reaches a level of trees at a time, with the
// file objects beneath each in a few ranged GETs: not a request a file.
func TestGCReadsInBatches(t *testing.T) {
	t.Parallel()
	const n = 400
	p := publishedSmall(t, n)
	ctx := ctxT(t, 2*time.Minute)
	dst := openAgain(t, s3test.Shared(t), p.bucket)
	before := dst.Stats().Gets
	st, err := dst.GC(ctx, s3store.GCOptions{DryRun: true})
	if err != nil || st.Versions != 1 || st.Removed != 0 {
		t.Fatalf("gc --dry-run: %+v, %v", st, err)
	}
	if gets := dst.Stats().Gets - before; gets > n/10 {
		t.Errorf("gc of a version of %d files made %d GETs; want them batched, at most %d", n, gets, n/10)
	} else {
		t.Logf("gc of a version of %d files: %d GETs", n, gets)
	}
}

// A repack keeps what a pack held together and the trees apart, as a
// publish wrote them: after it, no pack holds both a tree and another
// object, and a file's chunk group lies in one pack.
func TestGCRepackKeepsTogether(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	files := map[string][]byte{}
	write := func(from, to int) {
		for d := from; d < to; d++ {
			for f := range 20 {
				p := fmt.Sprintf("d%d/f%02d", d, f)
				files[p] = randBytes(2000 + f)
				writeFile(t, filepath.Join(dir, p), files[p])
			}
		}
	}
	write(0, 10)
	// Files whose one chunk group is 1.3 MiB (chunks 1 and 2): three
	// groups a pack, which a repack into packs filled to the brim
	// would split.
	const tails = 24
	for i := range tails {
		p := fmt.Sprintf("tails/t%02d", i)
		files[p] = randBytes(2*object.ChunkSize + 300<<10)
		writeFile(t, filepath.Join(dir, p), files[p])
	}
	local := localStore(t)
	v1, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Nine of ten directories change, and chunk 1 of two tails in
	// three: the packs of v1's trees, file objects and groups are then
	// more dead than live. A group left whole is one a repack could
	// split.
	write(1, 10)
	whole := map[string]bool{}
	for i := range tails {
		p := fmt.Sprintf("tails/t%02d", i)
		if i%3 == 0 {
			whole[p] = true
			continue
		}
		files[p][object.ChunkSize] ^= 1
		writeFile(t, filepath.Join(dir, p), files[p])
	}
	v2, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	removeVersion(t, srv, bucket, v1)
	st, err := dst.GC(ctx, s3store.GCOptions{})
	if err != nil || st.PacksRepacked == 0 {
		t.Fatalf("gc: %+v, %v; want packs repacked", st, err)
	}
	t.Logf("gc: %+v", st)
	fresh := openAgain(t, srv, bucket)
	sameFiles(t, "v2 after the repack", readVersion(t, fresh, v2.Version), files)
	packOf := func(d object.Digest) string {
		p, _, _, ok, err := s3store.PackPlace(ctx, fresh, d)
		if err != nil || !ok {
			t.Fatalf("object %s packed: %v, %v", d.Short(), ok, err)
		}
		return p
	}
	treePacks, otherPacks := map[string]bool{}, map[string]bool{}
	checked := 0
	_, root, err := remote.OpenVersion(ctx, local, v2.Version)
	if err != nil {
		t.Fatal(err)
	}
	if err := object.Walk(ctx, local, root.Object, func(p string, e *object.Entry, f *object.File) error {
		switch {
		case e.Mode&syscall.S_IFMT == syscall.S_IFDIR:
			treePacks[packOf(e.Object)] = true
		case f != nil:
			otherPacks[packOf(e.Object)] = true
			for _, c := range f.Chunks {
				otherPacks[packOf(c)] = true
			}
			if whole[p] {
				checked++
				if packOf(f.Chunks[1]) != packOf(f.Chunks[2]) {
					t.Errorf("%s: the chunks of its group lie in two packs", p)
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if checked != len(whole) {
		t.Fatalf("%d groups checked; want %d", checked, len(whole))
	}
	for p := range treePacks {
		if otherPacks[p] {
			t.Errorf("pack %s holds trees and other objects", p[:12])
		}
	}
}

// A bucket published to many times holds an index a publish; gc writes
// those of few objects anew as one, so that a reader reads one index, not
// one a publish. Here 12 publishes, the first of them removed and its
// pack repacked by the same gc (a repack's index, whose pack gc listed
// before it wrote it, is merged too): afterwards one index, and every
// version kept reads whole from a reader that knows nothing. A dry run
// counts what it would merge and changes nothing; a gc after it has
// nothing to merge.
func TestGCMergesIndexes(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir := t.TempDir()
	files := map[string][]byte{}
	write := func(sub string, n int) {
		for f := range n {
			p := fmt.Sprintf("%s/f%02d", sub, f)
			files[p] = randBytes(2000 + f)
			writeFile(t, filepath.Join(dir, p), files[p])
		}
	}
	local := localStore(t)
	publish := func() s3store.PublishResult {
		t.Helper()
		res, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	write("base", 30)
	v0 := publish()
	type kept struct {
		v     object.Digest
		files map[string][]byte
	}
	var vs []kept
	for i := 1; i < 12; i++ {
		if i == 1 {
			write("base", 25) // v0's pack is then more dead than live
		}
		write(fmt.Sprintf("p%02d", i), 5)
		vs = append(vs, kept{publish().Version, maps.Clone(files)})
	}
	removeVersion(t, srv, bucket, v0)
	before := keysUnder(t, srv, bucket, "indexes/")
	if len(before) != 12 {
		t.Fatalf("%d indexes after 12 publishes; want one each", len(before))
	}
	dry, err := dst.GC(ctx, s3store.GCOptions{DryRun: true})
	if err != nil || dry.IndexesMerged < 9 {
		t.Fatalf("gc --dry-run: %+v, %v; want the indexes it would merge counted", dry, err)
	}
	if now := keysUnder(t, srv, bucket, "indexes/"); !slices.Equal(now, before) {
		t.Fatalf("a dry run changed the indexes: %v, were %v", now, before)
	}
	st, err := dst.GC(ctx, s3store.GCOptions{})
	if err != nil || st.PacksRepacked == 0 || st.IndexesMerged < 9 {
		t.Fatalf("gc: %+v, %v; want v0's pack repacked and the indexes merged", st, err)
	}
	t.Logf("gc: %+v", st)
	after := keysUnder(t, srv, bucket, "indexes/")
	if len(after) != 1 {
		t.Errorf("%d indexes after gc (%d merged); want one", len(after), st.IndexesMerged)
	}
	for i, k := range vs {
		sameFiles(t, fmt.Sprintf("version %d after the merge", i+1), readVersion(t, openAgain(t, srv, bucket), k.v), k.files)
	}
	again, err := dst.GC(ctx, s3store.GCOptions{})
	if err != nil || again.IndexesMerged != 0 || !slices.Equal(keysUnder(t, srv, bucket, "indexes/"), after) {
		t.Errorf("a second gc: %+v, %v; want nothing merged", again, err)
	}
}

// Merged indexes name whole packs, up to indexObjectsMax objects each,
// as a publish's do. Runs alone: it sets indexObjectsMax.
func TestGCMergesIndexesAsTheyFill(t *testing.T) {
	const max = 20
	old := s3store.SetIndexObjectsMax(max)
	t.Cleanup(func() { s3store.SetIndexObjectsMax(old) })
	srv := s3test.Shared(t)
	dst, bucket := open(t, srv)
	ctx := ctxT(t, 2*time.Minute)
	dir, files := t.TempDir(), map[string][]byte{}
	local := localStore(t)
	var vs []object.Digest
	for i := range 20 {
		wideFiles(t, dir, fmt.Sprintf("p%02d", i), 4, files)
		res, err := s3store.Publish(ctx, dst, local, dir, s3store.PublishOptions{})
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, res.Version)
	}
	objs, err := s3store.IndexObjects(ctx, openAgain(t, srv, bucket))
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range objs {
		total += n
	}
	st, err := dst.GC(ctx, s3store.GCOptions{})
	if err != nil || st.IndexesMerged == 0 {
		t.Fatalf("gc: %+v, %v; want indexes merged", st, err)
	}
	merged, err := s3store.IndexObjects(ctx, openAgain(t, srv, bucket))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d indexes of %d objects before gc, %d after: %v", len(objs), total, len(merged), merged)
	after := 0
	for name, n := range merged {
		after += n
		if n > max {
			t.Errorf("index %s names %d objects; want at most %d", name, n, max)
		}
	}
	if after != total || len(merged) >= len(objs) || len(merged) > total/(max/2)+1 {
		t.Errorf("%d indexes of %d objects after gc, from %d of %d; want fewer, naming the same", len(merged), after, len(objs), total)
	}
	sameFiles(t, "the newest version after the merge", readVersion(t, openAgain(t, srv, bucket), vs[len(vs)-1]), files)

	// What a merge wrote full is not merged again: a gc that found the
	// same bucket would otherwise rewrite every index, every night, and
	// every worker would read them all again.
	puts := dst.Stats().Puts
	again, err := dst.GC(ctx, s3store.GCOptions{})
	if err != nil || again.IndexesMerged != 0 {
		t.Errorf("a second gc: %+v, %v; want nothing merged", again, err)
	}
	if n := dst.Stats().Puts - puts; n != 1 {
		t.Errorf("a second gc made %d PUTs; want its lock's alone, no index written again", n)
	}
}
