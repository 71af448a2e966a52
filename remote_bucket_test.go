package cowfs_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/cow/statedir"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/s3store"
	"github.com/cowfs/cowfs/remote/s3store/s3test"
)

// bucketExport writes a small spider tree: a multi-chunk file, nested
// directories, an empty file.
func bucketExport(t *testing.T) string {
	t.Helper()
	exp := t.TempDir()
	for p, n := range map[string]int{
		"top": 5000, "big": 3<<20 + 17, "spider/run.py": 100, "spider/pkg/__init__.py": 0,
		"spider/pkg/deep/mod.py": 3000, "other/x": 10,
	} {
		writeFile(t, filepath.Join(exp, p), randBytes(n), 0o644)
	}
	return exp
}

// keysUnder lists the bucket's keys that start with prefix, behind the
// mount's back.
func keysUnder(t *testing.T, srv *s3test.Server, bucket, prefix string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var keys []string
	p := s3.NewListObjectsV2Paginator(srv.Client(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		out, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range out.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys
}

// publishTo publishes dir to url at srv, as cowfs publish does, and
// returns the new version.
func publishTo(t *testing.T, srv *s3test.Server, url, dir string) object.Digest {
	t.Helper()
	local, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return publishFrom(t, srv, url, dir, local)
}

// publishFrom is publishTo through the local store local, which keeps
// the version's objects.
func publishFrom(t *testing.T, srv *s3test.Server, url, dir string, local *object.DirStore) object.Digest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bucket, prefix, err := s3store.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s3store.Open(ctx, s3store.Config{Bucket: bucket, Prefix: prefix, Endpoint: srv.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	res, err := s3store.Publish(ctx, st, local, dir, s3store.PublishOptions{})
	if err != nil {
		t.Fatalf("publish %s: %v", dir, err)
	}
	return res.Version
}

// mountBucket mounts url (Path sub) at a new mountpoint with its own
// state directory unless state is given; the workspace is closed on
// cleanup.
func mountBucket(t *testing.T, srv *s3test.Server, url, sub, state, mnt string, ioTimeout time.Duration) (*cowfs.Workspace, error) {
	t.Helper()
	if state == "" {
		state = t.TempDir()
	}
	if mnt == "" {
		mnt = newMountpoint(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt, State: state,
		Lower: cowfs.Lower{Remote: &cowfs.Remote{Addr: url, Path: sub, S3Endpoint: srv.Endpoint, IOTimeout: ioTimeout}}})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { ws.Close() })
	return ws, nil
}

// sums returns the checksum of every regular file under dir, by path.
func sums(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := within(t, 2*time.Minute, "read "+dir, func() error {
		return filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if fi.Mode().IsRegular() {
				rel, _ := filepath.Rel(dir, p)
				out[rel] = sha(t, p)
			}
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSums(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d files, want %d", what, len(got), len(want))
	}
	for p, s := range want {
		if got[p] != s {
			t.Errorf("%s: %s has checksum %.12s, want %.12s", what, p, got[p], s)
		}
	}
}

// A published version mounts from the bucket with no master: three
// workers, each with its own state directory, read the same bytes; a
// worker keeps the version it mounted while a new one is published, and
// a remount of its mountpoint too, while a new mount gets the new one;
// --path mounts a subtree; bad input is refused with nothing mounted.
func TestBucketMount(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	url := "s3://" + srv.Bucket(t) + "/spiders"
	exp := bucketExport(t)
	v1 := publishTo(t, srv, url, exp)
	want := sums(t, exp)

	var first *cowfs.Workspace
	var firstState string
	for i := range 3 {
		state := t.TempDir()
		ws, err := mountBucket(t, srv, url, "", state, "", 10*time.Second)
		if err != nil {
			t.Fatalf("worker %d: mount: %v", i, err)
		}
		if got := ws.Status().Version; got != v1.String() {
			t.Errorf("worker %d mounted version %s, want %s", i, got, v1)
		}
		sameSums(t, "worker "+string(rune('0'+i)), sums(t, ws.Dir()), want)
		if st := ws.Status(); st.Remote == nil || st.Remote.BytesFetched < 3<<20 {
			t.Errorf("worker %d status: %+v, want the bytes fetched counted", i, st.Remote)
		}
		if i == 0 {
			first, firstState = ws, state
		}
	}

	t.Run("new version", func(t *testing.T) {
		v1top := want["top"]
		writeFile(t, filepath.Join(exp, "top"), randBytes(6000), 0o644)
		v2 := publishTo(t, srv, url, exp)
		if got := sha(t, filepath.Join(first.Dir(), "top")); got != v1top || first.Status().Version != v1.String() {
			t.Errorf("a mount of v1 shows top %.12s at version %s after v2 was published; want v1's", got, first.Status().Version)
		}
		ws, err := mountBucket(t, srv, url, "", "", "", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ws.Status().Version != v2.String() || sha(t, filepath.Join(ws.Dir(), "top")) != sha(t, filepath.Join(exp, "top")) {
			t.Errorf("a new mount: version %s, want v2 %s with its top", ws.Status().Version, v2)
		}
		// The upper of the first mount was made over v1: mounting its
		// mountpoint again keeps v1.
		mnt := first.Dir()
		if err := first.Close(); err != nil {
			t.Fatal(err)
		}
		again, err := mountBucket(t, srv, url, "", firstState, mnt, 10*time.Second)
		if err != nil {
			t.Fatalf("remount: %v", err)
		}
		if again.Status().Version != v1.String() || sha(t, filepath.Join(mnt, "top")) != v1top {
			t.Errorf("remount: version %s, want v1 %s", again.Status().Version, v1)
		}
	})

	t.Run("path", func(t *testing.T) {
		ws, err := mountBucket(t, srv, url, "spider", "", "", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		got := sums(t, ws.Dir())
		if len(got) != 3 || got["pkg/deep/mod.py"] != want["spider/pkg/deep/mod.py"] || got["run.py"] != want["spider/run.py"] {
			t.Errorf("--path spider shows %v", got)
		}
		if st := ws.Status(); !strings.Contains(st.Source, "path spider") {
			t.Errorf("status source %q, want the path named", st.Source)
		}
		// A refused path changes nothing: the same mountpoint then
		// mounts another path.
		state, mnt := t.TempDir(), newMountpoint(t)
		for _, bad := range []string{"nope", "top", "spider/run.py"} {
			if _, err := mountBucket(t, srv, url, bad, state, mnt, 10*time.Second); err == nil {
				t.Errorf("--path %s mounted", bad)
			} else {
				t.Logf("--path %s: %v", bad, err)
			}
		}
		if _, err := mountBucket(t, srv, url, "other", state, mnt, 10*time.Second); err != nil {
			t.Errorf("--path other after refused paths: %v", err)
		}
	})

	t.Run("damaged", func(t *testing.T) { bucketChunkDamaged(t, srv, url+"-damaged") })

	t.Run("refused", func(t *testing.T) { bucketMountRefused(t, srv) })
}

// restoreBucket restores checkpoint name of the bucket at url at a new
// mountpoint with a state directory of its own; the workspace is closed
// on cleanup.
func restoreBucket(t *testing.T, srv *s3test.Server, url, name string) (*cowfs.Workspace, error) {
	t.Helper()
	mnt := newMountpoint(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ws, err := cowfs.Open(ctx, cowfs.Spec{Mountpoint: mnt, State: t.TempDir(),
		Lower: cowfs.Lower{Snapshot: name, Remote: &cowfs.Remote{Addr: url, S3Endpoint: srv.Endpoint, IOTimeout: 10 * time.Second}}})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { ws.Close() })
	return ws, nil
}

// Checkpoints in the bucket, with no master: worker A mounts the
// published version, writes, snapshots and pushes; worker B, with a state
// directory of its own, restores the checkpoint and sees A's writes over
// the published files; B's writes go to B's upper only, so a third
// restore sees the checkpoint as pushed. The same snapshot pushed again
// sends nothing; another under the name is refused; a missing name is
// not found.
func TestBucketCheckpoint(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	url := "s3://" + srv.Bucket(t) + "/spiders"
	exp := bucketExport(t)
	publishTo(t, srv, url, exp)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	a, err := mountBucket(t, srv, url, "", "", "", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(a.Dir(), "crawl.db"), []byte("records 1-100"), 0o644)
	writeFile(t, filepath.Join(a.Dir(), "spider", "run.py"), []byte("changed"), 0o644)
	if err := os.Remove(filepath.Join(a.Dir(), "other", "x")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Snapshot(ctx, "ckpt"); err != nil {
		t.Fatal(err)
	}
	sent, err := a.Push(ctx, "ckpt")
	if err != nil {
		t.Fatalf("push to the bucket: %v", err)
	}
	// The published chunks are in the bucket: what is sent is what
	// changed and the directories above it.
	if sent == 0 || sent > 10 {
		t.Errorf("push sent %d objects, want what changed only", sent)
	}
	if again, err := a.Push(ctx, "ckpt"); err != nil || again != 0 {
		t.Errorf("the same push again: %d sent, %v; want 0, nil", again, err)
	}
	writeFile(t, filepath.Join(a.Dir(), "crawl.db"), []byte("records 1-200"), 0o644)
	want := sums(t, exp)
	delete(want, "other/x")
	want["crawl.db"], want["spider/run.py"] = sha256hex("records 1-100"), sha256hex("changed")

	b, err := restoreBucket(t, srv, url, "ckpt")
	if err != nil {
		t.Fatalf("restore from the bucket: %v", err)
	}
	sameSums(t, "restore B", sums(t, b.Dir()), want)
	if st := b.Status(); !strings.Contains(st.Source, "snapshot ckpt of "+url) {
		t.Errorf("restore status source %q", st.Source)
	}
	writeFile(t, filepath.Join(b.Dir(), "crawl.db"), []byte("B's records"), 0o644)
	writeFile(t, filepath.Join(b.Dir(), "new"), []byte("B's file"), 0o644)
	if err := os.Remove(filepath.Join(b.Dir(), "top")); err != nil {
		t.Fatal(err)
	}
	c, err := restoreBucket(t, srv, url, "ckpt")
	if err != nil {
		t.Fatal(err)
	}
	sameSums(t, "restore C after B wrote", sums(t, c.Dir()), want)

	// A snapshot of the restore pushes to the bucket too, naming its
	// parent.
	if _, err := b.Snapshot(ctx, "from-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Push(ctx, "from-b"); err != nil {
		t.Fatalf("push of a snapshot of a restore: %v", err)
	}

	// A's snapshot now is another one: under B's name it is refused.
	if _, err := a.Snapshot(ctx, "from-b"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Push(ctx, "from-b"); !errors.Is(err, s3store.ErrCheckpointExists) {
		t.Errorf("another snapshot under a taken name: %v, want ErrCheckpointExists", err)
	}
	d, err := restoreBucket(t, srv, url, "from-b")
	if err != nil {
		t.Fatal(err)
	}
	if got := sums(t, d.Dir()); got["new"] != sha256hex("B's file") || got["top"] != "" {
		t.Errorf("restore of B's checkpoint: new %.12s, top %.12s; want B's", got["new"], got["top"])
	}

	if _, err := restoreBucket(t, srv, url, "missing"); err == nil || !errors.Is(err, refs.ErrNotFound) {
		t.Errorf("restore of a missing checkpoint: %v, want not found", err)
	}
}

func sha256hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// bucketChunkDamaged: a chunk damaged in the bucket at durl is never
// served through a mount, and the damage is counted. The damaged chunk
// is the file's second, in a pack of chunk groups (the first is packed
// after the file object).
func bucketChunkDamaged(t *testing.T, srv *s3test.Server, durl string) {
	dir := t.TempDir()
	content := randBytes(object.ChunkSize + 100<<10)
	writeFile(t, filepath.Join(dir, "f"), content, 0o644)
	publishTo(t, srv, durl, dir)
	blob, err := object.EncodeBlob(content[object.ChunkSize:])
	if err != nil {
		t.Fatal(err)
	}
	bucket, prefix, _ := s3store.ParseURL(durl)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var key string
	var damaged []byte
	for _, k := range keysUnder(t, srv, bucket, prefix+"/packs/") {
		out, err := srv.Client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(k)})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(out.Body)
		out.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if at := bytes.Index(b, blob); at >= 0 {
			key, damaged = k, b
			damaged[at+len(blob)-1] ^= 1
		}
	}
	if key == "" {
		t.Fatal("no pack holds the file's second chunk")
	}
	if _, err := srv.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key),
		Body: bytes.NewReader(damaged)}); err != nil {
		t.Fatal(err)
	}
	ws, err := mountBucket(t, srv, durl, "", "", "", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = within(t, time.Minute, "read f", func() error {
		_, err := os.ReadFile(filepath.Join(ws.Dir(), "f"))
		return err
	})
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("read of a file whose chunk is damaged in the bucket: %v, want EIO", err)
	}
	// On a loaded machine the read may give up (--io-timeout) while
	// the fetch that finds the damage still runs: it is counted when
	// that fetch ends.
	deadline := time.Now().Add(time.Minute)
	for {
		st := ws.Status().Remote
		if st != nil && st.Corrupt > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("status: %+v, want the damage counted", st)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// bucketMountRefused: a bad URL or a missing bucket is refused with its
// message, and nothing is mounted.
func bucketMountRefused(t *testing.T, srv *s3test.Server) {
	for _, c := range []struct{ url, want string }{
		{"s3://", "names no bucket"},
		{"s3://b/../x", "empty, . or .. part"},
		{"s3://no-such-bucket-cowfs/p", "does not exist"},
	} {
		mnt := newMountpoint(t)
		state := t.TempDir()
		_, err := mountBucket(t, srv, c.url, "", state, mnt, 5*time.Second)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("mount of %s: %v, want %q", c.url, err, c.want)
		}
		if b, _ := os.ReadFile("/proc/mounts"); strings.Contains(string(b), mnt) {
			t.Errorf("mount of %s failed but left %s mounted", c.url, mnt)
		}
	}
}

// With the bucket's storage stopped, what this machine cached still
// reads; what it did not fails with EIO within --io-timeout, never
// hangs; once the storage is back, it reads again.
func TestBucketStorageStopped(t *testing.T) {
	t.Parallel()
	srv := s3test.Run(t) // its own: the test stops it
	url := "s3://" + srv.Bucket(t) + "/p"
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "cached"), randBytes(2<<20), 0o644)
	writeFile(t, filepath.Join(exp, "uncached"), randBytes(2<<20), 0o644)
	publishTo(t, srv, url, exp)
	const ioTimeout = 10 * time.Second
	// Slack for a loaded machine, short of the 2x a second wait would take.
	bound := ioTimeout*3/2 + time.Second
	ws, err := mountBucket(t, srv, url, "", "", "", ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	want := sha(t, filepath.Join(exp, "cached"))
	if got := warmSha(t, filepath.Join(ws.Dir(), "cached")); got != want {
		t.Fatalf("cached: checksum %.12s, want %.12s", got, want)
	}
	// Stat the other file now: its file object is fetched with it.
	if _, err := os.Stat(filepath.Join(ws.Dir(), "uncached")); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	dropCaches(t, ws.Dir())
	if got := sha(t, filepath.Join(ws.Dir(), "cached")); got != want {
		t.Errorf("cached, with the storage stopped: checksum %.12s, want %.12s", got, want)
	}
	// Past the cache's memory of a failure (read-ahead may have asked
	// already): the read asks the bucket itself.
	time.Sleep(2500 * time.Millisecond)
	start := time.Now()
	err = within(t, time.Minute, "read uncached", func() error {
		_, err := os.ReadFile(filepath.Join(ws.Dir(), "uncached"))
		return err
	})
	took := time.Since(start)
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("uncached, with the storage stopped: %v, want EIO", err)
	}
	if took > bound {
		t.Errorf("uncached read failed after %v; --io-timeout %v allows %v", took.Round(time.Millisecond), ioTimeout, bound)
	}
	t.Logf("uncached: %v after %v", err, took.Round(time.Millisecond))

	if testing.Short() {
		// Restarting SeaweedFS takes most of the test's time.
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := srv.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		var b []byte
		err := within(t, time.Minute, "read uncached again", func() (err error) {
			b, err = os.ReadFile(filepath.Join(ws.Dir(), "uncached"))
			return err
		})
		if err == nil {
			if object.Sum(b) != object.Sum(mustRead(t, filepath.Join(exp, "uncached"))) {
				t.Fatal("uncached, once the storage is back: wrong bytes")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("uncached, once the storage is back: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A bucket sends no trees with the version, as a master does: a mount of
// one fetches them in the background, a level at a time in batched
// ranged GETs, before any lookup asks (FetchTrees), and reads as ever.
func TestBucketMountFetchesTrees(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	url := "s3://" + srv.Bucket(t) + "/spiders"
	exp := t.TempDir()
	for d := range 30 {
		for f := range 3 {
			writeFile(t, filepath.Join(exp, fmt.Sprintf("d%02d/sub/f%d", d, f)), randBytes(100+f), 0o644)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	local, err := object.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	v := publishFrom(t, srv, url, exp, local)
	// The version's trees, from the publisher's own store.
	_, root, err := remote.OpenVersion(ctx, local, v)
	if err != nil {
		t.Fatal(err)
	}
	trees := []object.Digest{root.Object}
	err = object.WalkEntries(ctx, local, root.Object, func(e *object.Entry, _ *object.File) error {
		if e.Mode&unix.S_IFMT == unix.S_IFDIR {
			trees = append(trees, e.Object)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(trees) != 1+30+30 {
		t.Fatalf("%d trees in the version; want 61", len(trees))
	}

	state := t.TempDir()
	ws, err := mountBucket(t, srv, url, "", state, "", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	store, err := object.OpenDirStore(statedir.ObjectsDir(state))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		n := 0
		for _, d := range trees {
			if ok, _ := store.Has(ctx, d); ok {
				n++
			}
		}
		if n == len(trees) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a bucket mount holds %d of the version's %d trees 30 s after mounting, with nothing looked up; want all", n, len(trees))
		}
	}
	if gets := ws.Status().Remote.Bucket.Gets; gets > 10 {
		t.Errorf("a bucket mount made %d GETs to fetch 61 trees in a few packs; want them batched", gets)
	}
	sameSums(t, "the mount", sums(t, ws.Dir()), sums(t, exp))
}

// A bucket mount serves before its pack indexes have loaded, and their
// load, in the background, outlives the context Open was given: here,
// over a prefix published to 40 times (an index each), Open's context
// ends as it returns (mountBucket), and the files read after it still
// come from one load, indexes/ listed once. The worker keeps the 40
// indexes under its state, for its next mount (decision 0081).
func TestBucketIndexLoadOutlivesOpen(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	url := "s3://" + srv.Bucket(t) + "/spiders"
	exp := t.TempDir()
	const n = 40
	files := map[string][]byte{}
	for i := range n {
		name := fmt.Sprintf("f%02d.py", i)
		files[name] = randBytes(3000 + i)
		writeFile(t, filepath.Join(exp, "spider", name), files[name], 0o644)
		publishTo(t, srv, url, exp)
	}
	state := t.TempDir()
	ws, err := mountBucket(t, srv, url, "", state, "", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	lists := ws.Status().Remote.Bucket.Lists
	crawlFiles(t, ws.Dir(), files, len(files))
	st := ws.Status().Remote.Bucket
	t.Logf("%d LISTs at Open's return, %d after reading %d files", lists, st.Lists, n)
	// The newest version; indexes/ once (a reader lists no packs/).
	if st.Lists > 2 {
		t.Errorf("a mount made %d LISTs of the bucket (%d by Open's return); want 2: the pack indexes loaded again after Open's context ended", st.Lists, lists)
	}
	kept, err := filepath.Glob(filepath.Join(statedir.BucketIndexesDir(state), "*", "*"))
	if err != nil || len(kept) != n {
		t.Errorf("the worker keeps %d indexes (%v); want the %d it read", len(kept), err, n)
	}
	if st.Indexes != n || st.IndexesKept != 0 {
		t.Errorf("status: %d indexes loaded, %d of them kept on the worker; want %d, none", st.Indexes, st.IndexesKept, n)
	}
	// A second mount on the worker, of a version new to it, reads them
	// from its disk.
	writeFile(t, filepath.Join(exp, "spider", "new.py"), []byte("print('new')\n"), 0o644)
	publishTo(t, srv, url, exp)
	ws2, err := mountBucket(t, srv, url, "", state, "", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(ws2.Dir(), "spider", "new.py")); err != nil || string(b) != "print('new')\n" {
		t.Fatalf("new.py: %q, %v", b, err)
	}
	if st := ws2.Status().Remote.Bucket; st.Indexes != n+1 || st.IndexesKept != n {
		t.Errorf("a second mount's status: %d indexes loaded, %d of them kept on the worker; want %d, %d", st.Indexes, st.IndexesKept, n+1, n)
	}
}
