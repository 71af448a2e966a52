package cowfs_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/remotetest"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// A crawl of a mount --remote: listing a directory of small files brings
// their file objects and chunks in a few batched calls, where reading
// them one by one made two calls a file; --no-dir-prefetch
// (Remote.NoDirPrefetch) keeps the old way.
func TestRemoteMountDirPrefetch(t *testing.T) {
	const n = 100
	exp := t.TempDir()
	files := map[string][]byte{}
	var total int64
	for i := range n {
		b := append([]byte(fmt.Sprintf("file %d\n", i)), randBytes(4000+i)...)
		name := fmt.Sprintf("m%03d.py", i)
		writeFile(t, filepath.Join(exp, "spider", name), b, 0o644)
		files[name] = b
		total += int64(len(b))
	}
	var get, many atomic.Int64
	count := grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		switch {
		case strings.HasSuffix(info.FullMethod, "/GetMany"):
			many.Add(1)
		case strings.HasSuffix(info.FullMethod, "/Get"):
			get.Add(1)
		}
		return h(srv, ss)
	})
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{ServerOptions: []grpc.ServerOption{count}})
	open := func(off bool) (*cowfs.Workspace, string) {
		mnt := newMountpoint(t)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt, State: t.TempDir(),
			Lower: cowfs.Lower{Remote: &cowfs.Remote{Addr: ms.Addr, NoDirPrefetch: off, IOTimeout: 10 * time.Second}}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		return ws, mnt
	}
	crawl := func(mnt string) {
		t.Helper()
		crawlFiles(t, mnt, files, len(files))
	}

	ws, mnt := open(false)
	get0, many0 := get.Load(), many.Load()
	listAndRead2(t, ws, files)
	for deadline := time.Now().Add(30 * time.Second); ws.Status().Remote.BytesFetched < total; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("listing fetched %d bytes in 30 s; want the %d of its files, in the background", ws.Status().Remote.BytesFetched, total)
		}
	}
	crawl(mnt)
	gets, manys := get.Load()-get0, many.Load()-many0
	t.Logf("listing and reading %d files: %d Get, %d GetMany calls", n, gets, manys)
	if gets > 8 || manys > 8 {
		t.Errorf("listing and reading %d small files made %d Get and %d GetMany calls; want a few batches", n, gets, manys)
	}

	_, mnt = open(true)
	get0, many0 = get.Load(), many.Load()
	if _, err := os.ReadDir(filepath.Join(mnt, "spider")); err != nil {
		t.Fatal(err)
	}
	crawl(mnt)
	// One call a file: its file object, and its chunk along.
	if gets, manys := get.Load()-get0, many.Load()-many0; gets+manys < n {
		t.Errorf("with NoDirPrefetch, reading %d files made %d Get and %d GetMany calls; want them one by one", n, gets, manys)
	}
}

// The same from a bucket (real SeaweedFS): listing a directory brings its
// small files in the background, verified, and the crawl reads them from
// the cache.
func TestBucketMountDirPrefetch(t *testing.T) {
	if testing.Short() {
		t.Skip("starts SeaweedFS")
	}
	srv := s3test.Run(t)
	srv.Env(t)
	url := "s3://" + srv.Bucket(t) + "/spiders"
	exp := t.TempDir()
	files := map[string][]byte{}
	var total int64
	for i := range 60 {
		b := append([]byte(fmt.Sprintf("file %d\n", i)), randBytes(4000+i)...)
		name := fmt.Sprintf("m%03d.py", i)
		writeFile(t, filepath.Join(exp, "spider", name), b, 0o644)
		files[name] = b
		total += int64(len(b))
	}
	publishTo(t, srv, url, exp)
	ws, err := mountBucket(t, srv, url, "", "", "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	listAndRead2(t, ws, files)
	// The count passes total a little before the last chunks are in
	// (it counts file objects too, and a pack's objects arrive in one
	// GET and are stored one after another): wait for it to settle.
	last, since := int64(-1), time.Now()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n := ws.Status().Remote.BytesFetched
		if n != last {
			last, since = n, time.Now()
		}
		if n >= total && time.Since(since) > 500*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("listing fetched %d bytes in 30 s; want the %d of its files, in the background", n, total)
		}
	}
	misses := ws.Status().Remote.Misses
	crawlFiles(t, ws.Dir(), files, len(files))
	if n := ws.Status().Remote.Misses - misses; n != 0 {
		t.Errorf("reading %d files listed before made %d more GETs; want none", len(files), n)
	}
	// The file objects and chunks lie in one pack: ranged GETs of the
	// pack bring a batch each, not one GET an object (over 120 before
	// packs); the version, its trees, the index and the two files read
	// before the listing's fetch are a GET each.
	gets := ws.Status().Remote.Bucket.Gets
	t.Logf("a crawl of %d small files: %d GETs", len(files), gets)
	if gets == 0 || gets > 25 {
		t.Errorf("a crawl of %d small files made %d GETs of the bucket; want a few", len(files), gets)
	}
}

// crawlFiles reads n of files in spider beneath mnt and checks their bytes.
func crawlFiles(t *testing.T, mnt string, files map[string][]byte, n int) {
	t.Helper()
	for name, want := range files {
		if n == 0 {
			return
		}
		n--
		b, err := os.ReadFile(filepath.Join(mnt, "spider", name))
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s: %d bytes, %v; want its %d bytes", name, len(b), err, len(want))
		}
	}
}

// listAndRead2 lists spider and reads two of its files: what starts the
// background fetch of its files.
func listAndRead2(t *testing.T, ws *cowfs.Workspace, files map[string][]byte) {
	t.Helper()
	if _, err := os.ReadDir(filepath.Join(ws.Dir(), "spider")); err != nil {
		t.Fatal(err)
	}
	crawlFiles(t, ws.Dir(), files, 2)
}

// bucketMountNoDirFetch publishes exp to a fresh bucket of srv and
// mounts it without directory prefetch, so that a file is fetched when
// it is read, or as the test asks; it returns the workspace and its
// mountpoint, once its pack indexes have loaded. Learned prefetch is off
// too: a first mount asks the bucket for another worker's trace in the
// background, a GET that may land inside the count a test takes after
// the mount.
func bucketMountNoDirFetch(t *testing.T, srv *s3test.Server, exp string) (ws *cowfs.Workspace, mnt, bucket string) {
	t.Helper()
	bucket = srv.Bucket(t)
	url := "s3://" + bucket + "/spiders"
	publishTo(t, srv, url, exp)
	mnt = newMountpoint(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt, State: t.TempDir(),
		Lower: cowfs.Lower{Remote: &cowfs.Remote{Addr: url, S3Endpoint: srv.Endpoint, NoDirPrefetch: true, NoLearnedPrefetch: true, IOTimeout: 10 * time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	// The mount serves before its pack indexes load (decision 0081):
	// their GET, in the background, must not land inside a count the
	// test takes.
	for deadline := time.Now().Add(30 * time.Second); ws.Status().Remote.Bucket.Indexes == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the mount's pack indexes did not load within 30 s")
		}
	}
	return ws, mnt, bucket
}

// A cold file of a bucket mount, of one chunk, is one GET: its open asks
// for the file object (GetManyFollow), and the ranged GET of it reaches
// the chunk the publish packed right after it, which the first read then
// finds. Small files and files of a chunk over the size of small objects
// alike. Directory prefetch is off, so that each file is read on its own.
func TestBucketColdFileOneGet(t *testing.T) {
	srv := s3test.Shared(t)
	exp := t.TempDir()
	files := map[string][]byte{}
	for i := range 8 {
		n := 3000 + i
		if i%2 == 1 {
			n = 300<<10 + i
		}
		b := append([]byte(fmt.Sprintf("file %d\n", i)), randBytes(n)...)
		name := fmt.Sprintf("m%03d.py", i)
		writeFile(t, filepath.Join(exp, "spider", name), b, 0o644)
		files[name] = b
	}
	ws, mnt, _ := bucketMountNoDirFetch(t, srv, exp)
	if _, err := os.ReadDir(filepath.Join(mnt, "spider")); err != nil {
		t.Fatal(err)
	}
	for name, want := range files {
		gets := ws.Status().Remote.Bucket.Gets
		var b []byte
		err := within(t, time.Minute, "read "+name, func() (err error) {
			b, err = os.ReadFile(filepath.Join(mnt, "spider", name))
			return err
		})
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%s: %d bytes, %v; want its %d bytes", name, len(b), err, len(want))
		}
		if n := ws.Status().Remote.Bucket.Gets - gets; n != 1 {
			t.Errorf("reading %s cold made %d GETs of the bucket; want 1", name, n)
		}
	}
}

// A big file of a bucket mount is read a pack of chunk groups at a time:
// a publish packs a file's later chunks by their groups (object.ChunkGroup),
// a batch of them (s3store.Fetcher.AheadBatch) to a pack, and a
// sequential reader's read-ahead asks for whole batches, so the cold read
// makes about a GET a batch, as a warmup of another such file does. With
// each later chunk loose it made a GET a chunk; with a pack and a batch a
// group, a GET a group.
func TestBucketBigFileByGroups(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	exp := t.TempDir()
	const chunks = 43 // the first, and groups 1 to 11, the last of two
	files := map[string][]byte{}
	for _, name := range []string{"read.db", "warm.db"} {
		files[name] = randBytes((chunks-1)*object.ChunkSize + 1000)
		writeFile(t, filepath.Join(exp, "spider", name), files[name], 0o644)
	}
	ws, mnt, _ := bucketMountNoDirFetch(t, srv, exp)
	if _, err := os.ReadDir(filepath.Join(mnt, "spider")); err != nil {
		t.Fatal(err)
	}
	groups := object.ChunkGroupOf(chunks - 1)
	batch := int64(s3store.Fetcher{}.AheadBatch())
	batches := (groups + batch - 1) / batch

	gets := ws.Status().Remote.Bucket.Gets
	var b []byte
	err := within(t, time.Minute, "read read.db", func() (err error) {
		b, err = os.ReadFile(filepath.Join(mnt, "spider", "read.db"))
		return err
	})
	if err != nil || !bytes.Equal(b, files["read.db"]) {
		t.Fatalf("read.db: %d bytes, %v; want its %d bytes", len(b), err, len(files["read.db"]))
	}
	// The file object with the first chunk; the second, read before the
	// read-ahead starts; the rest of its batch, then a GET a batch.
	got := ws.Status().Remote.Bucket.Gets - gets
	t.Logf("a cold read of %d chunks (%d groups, %d batches): %d GETs", chunks, groups, batches, got)
	if got > batches+3 {
		t.Errorf("a cold read of %d chunks in %d batches made %d GETs of the bucket; want about one a batch", chunks, batches, got)
	}

	gets = ws.Status().Remote.Bucket.Gets
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := ws.Warmup(ctx, []string{"spider/warm.db"}, nil); err != nil {
		t.Fatal(err)
	}
	got = ws.Status().Remote.Bucket.Gets - gets
	t.Logf("a warmup of %d chunks (%d batches): %d GETs", chunks, batches, got)
	if got > batches+1 {
		t.Errorf("a warmup of %d chunks in %d batches made %d GETs of the bucket; want one a batch and one for the file object", chunks, batches, got)
	}
	crawlFiles(t, mnt, map[string][]byte{"warm.db": files["warm.db"]}, 1)
	if n := ws.Status().Remote.Bucket.Gets - gets - got; n != 0 {
		t.Errorf("reading warm.db after its warmup made %d GETs; want none", n)
	}
}

// A warmup of a bucket mount reads a directory's files, each a file
// object with its first chunk packed right after it, in long ranged GETs
// of their packs: its listing asks for the file objects with follow
// (packFollower), and the chunks come with them. Without, it made a GET
// a chunk.
func TestBucketWarmupFollows(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	exp := t.TempDir()
	files := map[string][]byte{}
	const n = 240
	for i := range n {
		name := fmt.Sprintf("d%d/f%03d", i%3, i)
		files[name] = randBytes(100<<10 + i)
		writeFile(t, filepath.Join(exp, "spider", name), files[name], 0o644)
	}
	ws, mnt, bucket := bucketMountNoDirFetch(t, srv, exp)
	gets := ws.Status().Remote.Bucket.Gets
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := ws.Warmup(ctx, nil, nil)
	if err != nil || p.Files != n {
		t.Fatalf("warmup: %+v, %v", p, err)
	}
	// 24 MiB of files in 4 MiB packs of fewer files than a listing's
	// batch: the listing batches file objects by pack (packLocator), so
	// a GET a pack, and the index. Batches cut without regard to packs
	// read most packs in two GETs.
	got := ws.Status().Remote.Bucket.Gets - gets
	packs := len(keysUnder(t, srv, bucket, "spiders/packs/"))
	t.Logf("a warmup of %d files in %d packs: %d GETs", n, packs, got)
	if got > int64(packs)+1 {
		t.Errorf("a warmup of %d files in %d packs (the trees' among them) made %d GETs of the bucket; want one a pack and the index", n, packs, got)
	}
	gets = ws.Status().Remote.Bucket.Gets
	crawlFiles(t, mnt, files, len(files))
	if got := ws.Status().Remote.Bucket.Gets - gets; got != 0 {
		t.Errorf("reading everything after the warmup made %d GETs", got)
	}
}
