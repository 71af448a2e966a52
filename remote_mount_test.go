package cowfs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cowfs/cowfs"
	"github.com/cowfs/cowfs/cow/object"
	"github.com/cowfs/cowfs/cow/refs"
	"github.com/cowfs/cowfs/remote"
	"github.com/cowfs/cowfs/remote/pb"
	"github.com/cowfs/cowfs/remote/remotetest"
)

// The crawler's failure: nested paths, exec bits. Everything must come
// through exactly.
func TestNestedProject(t *testing.T) {
	exp := t.TempDir()
	files := map[string]string{
		"scrapy.cfg":                                "[settings]\ndefault = crawlab_project.settings\n",
		"crawlab_project/__init__.py":               "",
		"crawlab_project/settings.py":               "BOT_NAME = 'crawlab_project'\n",
		"crawlab_project/spiders/__init__.py":       "",
		"crawlab_project/spiders/quotes.py":         "import scrapy\nclass QuotesSpider(scrapy.Spider):\n    name = 'quotes'\n",
		"crawlab_project/spiders/deep/er/still.txt": "deep\n",
	}
	for p, c := range files {
		writeFile(t, filepath.Join(exp, p), []byte(c), 0o644)
	}
	writeFile(t, filepath.Join(exp, "run.sh"), []byte("#!/bin/sh\necho ran \"$(cat crawlab_project/spiders/deep/er/still.txt)\"\n"), 0o755)
	writeFile(t, filepath.Join(exp, "secret"), []byte("x"), 0o600)
	os.Mkdir(filepath.Join(exp, "empty"), 0o750)
	os.Symlink("crawlab_project/spiders/quotes.py", filepath.Join(exp, "link"))
	os.Chown(filepath.Join(exp, "scrapy.cfg"), 1234, 5678)
	old := time.Date(2020, 1, 2, 3, 4, 5, 6, time.UTC)
	os.Chtimes(filepath.Join(exp, "settings.py"), old, old)
	os.Chtimes(filepath.Join(exp, "crawlab_project/settings.py"), old, old)
	xattrs := unix.Setxattr(filepath.Join(exp, "run.sh"), "user.cowfs.test", []byte("v1"), 0) == nil

	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	rm := mountRemote(remotetest.NewWorker(t), ms.Addr, remotetest.ViewOptions{})

	for p, c := range files {
		b, err := os.ReadFile(filepath.Join(rm.dir, p))
		if err != nil || string(b) != c {
			t.Errorf("%s: %q, %v; want %q", p, b, err, c)
		}
	}
	// Every entry's type, mode, owner, size and mtime as on the master.
	filepath.Walk(exp, func(p string, fi os.FileInfo, err error) error {
		rel, _ := filepath.Rel(exp, p)
		var a, b unix.Stat_t
		unix.Lstat(p, &a)
		if err := unix.Lstat(filepath.Join(rm.dir, rel), &b); err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		if a.Mode != b.Mode || a.Uid != b.Uid || a.Gid != b.Gid || a.Mtim != b.Mtim || (a.Mode&unix.S_IFMT != unix.S_IFDIR && a.Size != b.Size) {
			t.Errorf("%s: mount has mode %o uid %d gid %d mtime %v size %d; master %o %d %d %v %d",
				rel, b.Mode, b.Uid, b.Gid, b.Mtim, b.Size, a.Mode, a.Uid, a.Gid, a.Mtim, a.Size)
		}
		return nil
	})
	// Once a directory's tree is here, lookups and stats in it cost no
	// remote call: walk again, with the kernel's entries dropped.
	walk := func() { filepath.Walk(rm.dir, func(string, os.FileInfo, error) error { return nil }) }
	walk()
	sent := ms.Server.BytesSent()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0)
	walk()
	if n := ms.Server.BytesSent() - sent; n != 0 {
		t.Errorf("a second walk fetched %d bytes from the master", n)
	}
	if target, err := os.Readlink(filepath.Join(rm.dir, "link")); err != nil || target != "crawlab_project/spiders/quotes.py" {
		t.Errorf("link: %q, %v", target, err)
	}
	if ents, err := os.ReadDir(filepath.Join(rm.dir, "empty")); err != nil || len(ents) != 0 {
		t.Errorf("empty dir: %v, %v", ents, err)
	}
	if xattrs {
		buf := make([]byte, 16)
		n, err := unix.Getxattr(filepath.Join(rm.dir, "run.sh"), "user.cowfs.test", buf)
		if err != nil || string(buf[:n]) != "v1" {
			t.Errorf("xattr: %q, %v", buf[:n], err)
		}
	} else {
		t.Log("the test directory's filesystem has no user xattrs; xattrs not checked")
	}
	// SEEK_DATA and SEEK_HOLE (cp uses them) on a file with no local
	// descriptor: all data.
	if f, err := os.Open(filepath.Join(rm.dir, "scrapy.cfg")); err == nil {
		d, derr := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA)
		h, herr := unix.Seek(int(f.Fd()), 0, unix.SEEK_HOLE)
		if fi, err := f.Stat(); err != nil || d != 0 || h != fi.Size() || derr != nil || herr != nil {
			t.Errorf("scrapy.cfg: SEEK_DATA %d %v, SEEK_HOLE %d %v, fstat %v", d, derr, h, herr, err)
		}
		f.Close()
	}
	// A shell outside the mount goes into it and runs the script: the
	// mount is served by this process, and Go starts a command with
	// vfork, which stops the calling thread, holding its P, until the
	// child has exec'd. A child that chdirs into the mount or execs a
	// file on it needs this process to answer FUSE requests meanwhile,
	// and a garbage collection that starts then waits for that P for
	// ever: the whole process hung (seen once in go test -race
	// -count=3). A separate mount process, as in production, has no
	// such loop.
	cmd := exec.Command("/bin/sh", "-c", `cd "$1" && exec ./run.sh`, "sh", rm.dir)
	out, err := runWithin(t, cmd)
	if err != nil || string(out) != "ran deep\n" {
		t.Errorf("run.sh: %q, %v", out, err)
	}
	// Writes go to the upper; the master's files are untouched.
	if err := os.WriteFile(filepath.Join(rm.dir, "crawlab_project/settings.py"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(exp, "crawlab_project/settings.py")); string(b) != files["crawlab_project/settings.py"] {
		t.Errorf("master's file changed: %q", b)
	}
}

// Two workers, four mounts at once: all complete and identical, and the
// master sends each chunk at most once per worker.
func TestTwoWorkersFourMounts(t *testing.T) {
	t.Parallel()
	exp := t.TempDir()
	want := map[string][]byte{}
	for i := range 12 {
		p := fmt.Sprintf("d%d/f%02d", i%3, i)
		want[p] = randBytes(300<<10 + i*200<<10) // 0.3 to 2.5 MiB: one to three chunks
		writeFile(t, filepath.Join(exp, p), want[p], 0o644)
	}
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	var mounts []*remoteMount
	for range 2 {
		w := remotetest.NewWorker(t)
		mounts = append(mounts, mountRemote(w, ms.Addr, remotetest.ViewOptions{Timeout: 60 * time.Second}), mountRemote(w, ms.Addr, remotetest.ViewOptions{Timeout: 60 * time.Second}))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for _, rm := range mounts {
		for p, c := range want {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b, err := os.ReadFile(filepath.Join(rm.dir, p))
				if err != nil || !bytes.Equal(b, c) {
					errs <- fmt.Errorf("%s/%s: %d bytes, %v", rm.dir, p, len(b), err)
				}
			}()
		}
	}
	within(t, 5*time.Minute, "reading", func() error { wg.Wait(); return nil })
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	total, most := blobGets(t, ms)
	if most > 2 {
		t.Errorf("a chunk was sent %d times to two workers", most)
	}
	t.Logf("%d chunk transfers for 4 mounts on 2 workers", total)
}

// A 64 MiB+ file reads back whole; a small read at a random place fetches
// about one chunk.
func TestBigFileSmallRead(t *testing.T) {
	t.Parallel()
	exp := t.TempDir()
	big := randBytes(65<<20 + 12345)
	writeFile(t, filepath.Join(exp, "big"), big, 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})

	rm := mountRemote(remotetest.NewWorker(t), ms.Addr, remotetest.ViewOptions{})
	f, err := os.Open(filepath.Join(rm.dir, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	off := int64(40<<20 + 100<<10)
	if err := within(t, 20*time.Second, "pread", func() error { _, err := f.ReadAt(buf, off); return err }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf, big[off:off+4096]) {
		t.Fatal("wrong bytes at 40 MiB")
	}
	if total, _ := blobGets(t, ms); total > 2 {
		t.Errorf("a 4 KiB read fetched %d chunks", total)
	}
	if got, want := sha(t, filepath.Join(rm.dir, "big")), sha(t, filepath.Join(exp, "big")); got != want {
		t.Errorf("sha256 through the mount %s, on the master %s", got, want)
	}
	if st := rm.cache.Stats(); st.BytesFetched < int64(len(big)) || st.BytesFetched > int64(len(big))+1<<20 {
		t.Errorf("fetched %d bytes for a file of %d", st.BytesFetched, len(big))
	}
}

// A mount keeps its version; a new mount sees the new one.
func TestVersionPinned(t *testing.T) {
	exp := t.TempDir()
	v1 := randBytes(3<<20 + 7)
	writeFile(t, filepath.Join(exp, "data"), v1, 0o644)
	writeFile(t, filepath.Join(exp, "old-only"), []byte("old"), 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	w := remotetest.NewWorker(t)
	old := mountRemote(w, ms.Addr, remotetest.ViewOptions{})
	f, err := os.Open(filepath.Join(old.dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 1000)
	if _, err := f.ReadAt(head, 0); err != nil {
		t.Fatal(err)
	}

	// The master's files change in place: same inode, new bytes.
	v2 := randBytes(2<<20 + 99)
	writeFile(t, filepath.Join(exp, "data"), v2, 0o644)
	os.Remove(filepath.Join(exp, "old-only"))
	writeFile(t, filepath.Join(exp, "new-only"), []byte("new"), 0o644)

	nw := mountRemote(w, ms.Addr, remotetest.ViewOptions{})
	if b, err := os.ReadFile(filepath.Join(nw.dir, "data")); err != nil || !bytes.Equal(b, v2) {
		t.Errorf("new mount: %d bytes, %v; want version 2", len(b), err)
	}
	if _, err := os.Stat(filepath.Join(nw.dir, "new-only")); err != nil {
		t.Errorf("new mount: %v", err)
	}
	// The old mount, through the file it had open and by name.
	rest := make([]byte, len(v1))
	n, _ := f.ReadAt(rest, 0)
	if !bytes.Equal(rest[:n], v1) {
		t.Errorf("old mount's open file: %d bytes, not version 1", n)
	}
	if b, err := os.ReadFile(filepath.Join(old.dir, "data")); err != nil || !bytes.Equal(b, v1) {
		t.Errorf("old mount: %d bytes, %v; want version 1", len(b), err)
	}
	if _, err := os.Stat(filepath.Join(old.dir, "new-only")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("old mount sees a file of version 2: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(old.dir, "old-only")); err != nil || string(b) != "old" {
		t.Errorf("old mount: old-only %q, %v", b, err)
	}
}

// A master that dies mid-transfer and comes back: the read completes.
func TestMasterRestartMidRead(t *testing.T) {
	exp := t.TempDir()
	data := randBytes(24 << 20)
	writeFile(t, filepath.Join(exp, "f"), data, 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	rm := mountRemote(remotetest.NewWorker(t), ms.Addr, remotetest.ViewOptions{Timeout: 20 * time.Second})
	f, err := os.Open(filepath.Join(rm.dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got[:2<<20], 0); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := f.ReadAt(got[2<<20:], 2<<20)
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	ms.Stop()
	time.Sleep(500 * time.Millisecond)
	ms.Start(ms.Addr)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("read across a master restart: %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("read across a master restart: still blocked after 40s")
	}
	if !bytes.Equal(got, data) {
		t.Error("wrong bytes after a master restart")
	}
	t.Logf("retries: %d", rm.client.Retries())
}

// With the master gone, a read of what is not cached fails with EIO within
// the timeout; what is cached keeps working.
func TestMasterGone(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "cached"), randBytes(2<<20), 0o644)
	writeFile(t, filepath.Join(exp, "sub/uncached"), randBytes(2<<20), 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	rm := mountRemote(remotetest.NewWorker(t), ms.Addr, remotetest.ViewOptions{Timeout: 5 * time.Second})
	want := warmSha(t, filepath.Join(rm.dir, "cached"))
	if _, err := os.Stat(filepath.Join(rm.dir, "sub/uncached")); err != nil {
		t.Fatal(err)
	}
	ms.Stop()
	// Drop the kernel's copy, so the read reaches cowfs.
	if f, err := os.Open(filepath.Join(rm.dir, "cached")); err == nil {
		unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()
	}
	err := within(t, 30*time.Second, "read with the master gone", func() error {
		_, err := os.ReadFile(filepath.Join(rm.dir, "sub/uncached"))
		return err
	})
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("uncached read with the master gone: %v, want EIO", err)
	}
	if got := sha(t, filepath.Join(rm.dir, "cached")); got != want {
		t.Error("cached file changed")
	}
	if rm.cache.Stats().Errors == 0 {
		t.Error("the failed read was not counted")
	}
}

// proxiedExport starts a master of an export holding f (data, 3 MiB and
// some) and d/small ("small"), and a proxy in front of it.
func proxiedExport(t *testing.T) (data []byte, ms *remotetest.Master, px *proxy) {
	exp := t.TempDir()
	data = randBytes(3<<20 + 5)
	writeFile(t, filepath.Join(exp, "f"), data, 0o644)
	writeFile(t, filepath.Join(exp, "d/small"), []byte("small"), 0o644)
	ms = remotetest.StartMaster(t, exp, remote.ServerConfig{})
	return data, ms, startProxy(t, ms.Addr)
}

// Damaged bytes on the wire are caught, fetched again and never served.
func TestCorruptObjectRefetched(t *testing.T) {
	data, ms, px := proxiedExport(t)
	rm := mountRemote(remotetest.NewWorker(t), px.addr, remotetest.ViewOptions{})
	if b, err := os.ReadFile(filepath.Join(rm.dir, "f")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("read through a damaging link: %d bytes, %v", len(b), err)
	}
	if b, err := os.ReadFile(filepath.Join(rm.dir, "d/small")); err != nil || string(b) != "small" {
		t.Fatalf("read through a damaging link: %q, %v", b, err)
	}
	if c := rm.cache.Stats().Corrupt; c < 4 {
		t.Errorf("%d damaged objects caught; every object was damaged once", c)
	}

	// The same through a prefetch, which fetches many objects per call.
	px2 := startProxy(t, ms.Addr)
	pm := mountRemote(remotetest.NewWorker(t), px2.addr, remotetest.ViewOptions{})
	pm.cache.PrefetchVersion(pm.root.Object)
	for deadline := time.Now().Add(30 * time.Second); pm.cache.Progress().State != "done"; time.Sleep(10 * time.Millisecond) {
		if p := pm.cache.Progress(); p.State == "failed" || time.Now().After(deadline) {
			t.Fatalf("prefetch through a damaging link: %+v", p)
		}
	}
	if b, err := os.ReadFile(filepath.Join(pm.dir, "f")); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("read after a prefetch through a damaging link: %d bytes, %v", len(b), err)
	}
	if c := pm.cache.Stats().Corrupt; c < 3 {
		t.Errorf("prefetch caught %d damaged objects", c)
	}
}

// A master whose framing lies (a negative size on every piece) fails the
// reads that need it with EIO, within the I/O timeout, and never the
// worker: the mount serves on, and once the master answers honestly
// again the same reads return the right bytes.
func TestHostileMasterFailsReads(t *testing.T) {
	data, _, px := proxiedExport(t)
	rm := mountRemote(remotetest.NewWorker(t), px.addr, remotetest.ViewOptions{Timeout: 3 * time.Second})
	px.lie.Store(true)
	for _, name := range []string{"f", "d/small"} {
		err := within(t, 20*time.Second, "read "+name, func() error {
			_, err := os.ReadFile(filepath.Join(rm.dir, name))
			return err
		})
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("read %s from a lying master: %v, want EIO", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(rm.dir, "d")); err != nil {
		t.Fatalf("the mount after a lying master: %v", err)
	}
	px.lie.Store(false)
	// Past the failure memory (2 s), the next read asks again.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var b []byte
		err := within(t, 20*time.Second, "read f", func() (err error) {
			b, err = os.ReadFile(filepath.Join(rm.dir, "f"))
			return err
		})
		if err == nil {
			if !bytes.Equal(b, data) {
				t.Fatalf("read once the master is honest: %d bytes, not the file's", len(b))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("read once the master is honest: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if b, err := os.ReadFile(filepath.Join(rm.dir, "d/small")); err != nil || string(b) != "small" {
		t.Fatalf("read d/small once the master is honest: %q, %v", b, err)
	}
}

// No request reaches outside the export, and no tree from a master leads
// outside the mount.
func TestNoEscape(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "sub/f"), []byte("x"), 0o644)
	os.Symlink("/etc", filepath.Join(exp, "etc"))
	os.Symlink("../../../../..", filepath.Join(exp, "sub/up"))
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	c, err := remote.Dial(remote.ClientConfig{Addr: ms.Addr, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	raw := remote.ExportClientOf(c)
	for _, p := range []string{"..", "../x", "sub/../..", "/etc", "etc", "etc/ssl", "sub/up", "sub/up/etc"} {
		_, err := raw.Resolve(ctx, &pb.ResolveRequest{Path: p})
		if code := status.Code(err); code != codes.InvalidArgument && code != codes.NotFound {
			t.Errorf("resolve %q: %v, want refused", p, err)
		}
	}
	rm := mountRemote(remotetest.NewWorker(t), ms.Addr, remotetest.ViewOptions{})
	for name, want := range map[string]string{"etc": "/etc", "sub/up": "../../../../.."} {
		got, err := os.Readlink(filepath.Join(rm.dir, name))
		if err != nil || got != want {
			t.Errorf("%s: %q, %v; want the symlink %q", name, got, err, want)
		}
	}

	// A master that sends a tree with a ".." entry: the tree is refused.
	evil := t.TempDir()
	store, _ := object.OpenDirStore(filepath.Join(evil, "objects"))
	blob, _ := object.EncodeBlob([]byte("pwned"))
	bd, _ := store.Put(ctx, blob)
	fo, _ := object.EncodeFile(&object.File{Size: 5, Chunks: []object.Digest{bd}})
	fd, _ := store.Put(ctx, fo)
	// EncodeTree refuses such a name; a hostile master would not.
	tree, err := object.EncodeTree(&object.Tree{Entries: []object.Entry{{Name: "zz", Mode: unix.S_IFREG | 0o644, Size: 5, Object: fd}}})
	if err != nil {
		t.Fatal(err)
	}
	tree = bytes.Replace(tree, []byte("zz"), []byte(".."), 1)
	// The store refuses to keep such a tree; a hostile master's disk
	// holds it all the same.
	td := object.Sum(tree)
	h := strings.TrimPrefix(td.String(), "sha256-")
	os.MkdirAll(filepath.Join(evil, "objects", h[:2]), 0o755)
	if err := os.WriteFile(filepath.Join(evil, "objects", h[:2], h[2:]), tree, 0o444); err != nil {
		t.Fatal(err)
	}
	// Beneath the root: a worker refuses to cache a root tree that does
	// not decode, and so to mount the version at all.
	top, _ := object.EncodeTree(&object.Tree{Entries: []object.Entry{{Name: "d", Mode: unix.S_IFDIR | 0o755, Object: td}}})
	topd, _ := store.Put(ctx, top)
	ver, _ := object.EncodeTree(&object.Tree{Entries: []object.Entry{{Name: "root", Mode: unix.S_IFDIR | 0o755, Object: topd}}})
	vd, _ := store.Put(ctx, ver)
	evilMaster := remotetest.StartMaster(t, t.TempDir(), remote.ServerConfig{})
	evilMaster.Stop()
	evilMaster.Config.Objects = filepath.Join(evil, "objects")
	evilMaster.Start("127.0.0.1:0")
	em := mountRemote(remotetest.NewWorker(t), evilMaster.Addr, remotetest.ViewOptions{Version: vd})
	if _, err := os.ReadDir(filepath.Join(em.dir, "d")); !errors.Is(err, syscall.EIO) {
		t.Errorf("readdir of a tree with a \"..\" entry: %v, want EIO", err)
	}
}

// The cache stays near its limit, and never evicts what the master can no
// longer give.
func TestEviction(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out --io-timeout with the master down; the full suite runs it")
	}
	exp := t.TempDir()
	want := map[string][]byte{}
	for i := range 16 {
		p := fmt.Sprintf("f%d", i)
		want[p] = randBytes(1 << 20)
		writeFile(t, filepath.Join(exp, p), want[p], 0o644)
	}
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	w := remotetest.NewWorker(t)
	rm := mountRemote(w, ms.Addr, remotetest.ViewOptions{Timeout: 10 * time.Second})
	rd, err := refs.Open(filepath.Join(w.State, "refs"))
	if err != nil {
		t.Fatal(err)
	}
	const limit = 6 << 20
	rm.cache.SetLimit(limit, rd)
	readAll := func() {
		t.Helper()
		for p, c := range want {
			if b, err := os.ReadFile(filepath.Join(rm.dir, p)); err != nil || !bytes.Equal(b, c) {
				t.Fatalf("%s: %d bytes, %v", p, len(b), err)
			}
		}
	}
	readAll()
	// Each file's chunk came with its file object and reached its reader
	// before the store: every one is stored once the call that brought
	// it counted it.
	for deadline := time.Now().Add(10 * time.Second); rm.cache.Stats().BytesFetched < int64(len(want))<<20; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes fetched 10 s after the reads; want the %d of the chunks", rm.cache.Stats().BytesFetched, len(want)<<20)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Each file object is stored after the chunk that came with it:
	// until it is, eviction cannot tell the chunk is the version's, and
	// keeps it as young and local.
	waitFileObjects(ctx, t, ms.Config.Objects, filepath.Join(w.State, "objects"))
	if _, err := rm.cache.Evict(ctx); err != nil {
		t.Fatal(err)
	}
	if size := storeSize(t, w.State); size > limit {
		t.Errorf("store holds %d bytes; limit %d", size, limit)
	}
	// What eviction removed from the cache's packs left the disk too.
	packs, _ := filepath.Glob(filepath.Join(w.State, "objects", "packs", "*.pack"))
	var onDisk int64
	for _, p := range packs {
		if fi, err := os.Stat(p); err == nil {
			onDisk += fi.Size()
		}
	}
	if onDisk > limit {
		t.Errorf("the cache's packs take %d bytes on disk; limit %d", onDisk, limit)
	}
	// Evicted chunks come back from the master.
	dropCaches(t, rm.dir)
	readAll()

	// With the master gone, nothing the pinned version needs is evicted.
	// Evict first waits for any pass the reads started in the background,
	// so nothing removes objects while the store is measured.
	if _, err := rm.cache.Evict(ctx); err != nil {
		t.Fatal(err)
	}
	ms.Stop()
	before := storeSize(t, w.State)
	const lower = 1 << 20
	if before <= lower {
		t.Fatalf("store holds %d bytes; the test needs more than %d", before, lower)
	}
	rm.cache.SetLimit(lower, rd)
	if _, err := rm.cache.Evict(ctx); err != nil {
		t.Fatal(err)
	}
	if after := storeSize(t, w.State); after != before {
		t.Errorf("evicted %d bytes the master could not give again", before-after)
	}
}

// A snapshot of a remote-backed mount holds everything it needs: it
// restores and verifies with the master gone.
func TestSnapshotOfRemoteMount(t *testing.T) {
	exp := t.TempDir()
	data := randBytes(3 << 20)
	writeFile(t, filepath.Join(exp, "never-read"), data, 0o644)
	writeFile(t, filepath.Join(exp, "dir/untouched"), []byte("u"), 0o644)
	writeFile(t, filepath.Join(exp, "log"), []byte("line 1\n"), 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	w := remotetest.NewWorker(t)
	rm := mountRemote(w, ms.Addr, remotetest.ViewOptions{Timeout: 10 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res := appendAndSnapshot(t, ctx, rm)
	ms.Stop()
	verifyAlone(t, ctx, w.State, res.Root)
}

// appendAndSnapshot appends a line to the mount's "log" (a lower file,
// so a copy-up) and takes snapshot s1.
func appendAndSnapshot(t *testing.T, ctx context.Context, rm *remoteMount) *cowfs.SnapshotResult {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(rm.dir, "log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("line 2\n")
	f.Close()
	res, err := rm.m.Snapshot(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// verifyAlone checks, with the master gone, that the worker's store holds
// every byte of the snapshot with root root.
func verifyAlone(t *testing.T, ctx context.Context, state, root string) {
	t.Helper()
	store, err := object.OpenDirStore(filepath.Join(state, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := object.ParseDigest(root)
	if err != nil {
		t.Fatalf("root %q: %v", root, err)
	}
	probs, err := object.Verify(ctx, store, d)
	if err != nil || len(probs) != 0 {
		t.Fatalf("verify with the master gone: %d problems (%v), %v", len(probs), probs, err)
	}
}

// A snapshot pushed from one worker restores on another, from the master.
func TestPushAndRestoreElsewhere(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "spider.py"), []byte("code"), 0o644)
	writeFile(t, filepath.Join(exp, "data/log-1"), randBytes(2<<20+3), 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	a := mountRemote(remotetest.NewWorker(t), ms.Addr, remotetest.ViewOptions{})
	f, err := os.OpenFile(filepath.Join(a.dir, "data/log-1"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("appended on worker a"))
	f.Close()
	writeFile(t, filepath.Join(a.dir, "data/log-2"), randBytes(1<<20), 0o644)
	want := map[string]string{}
	for _, p := range []string{"spider.py", "data/log-1", "data/log-2"} {
		want[p] = sha(t, filepath.Join(a.dir, p))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := a.m.Snapshot(ctx, "ckpt"); err != nil {
		t.Fatal(err)
	}
	n, err := a.push(ctx, "ckpt")
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Errorf("push sent %d objects; the new log and the changed one need more", n)
	}
	// Pushed again (cowfs push after a reply was lost): nothing to send,
	// and the name the master holds for the same snapshot is no error.
	if n, err := a.push(ctx, "ckpt"); err != nil || n != 0 {
		t.Errorf("second push of the same snapshot: %d objects, %v; want 0, no error", n, err)
	}
	if _, err := a.push(ctx, "no-such"); err == nil {
		t.Error("push of a missing snapshot worked")
	}

	b := remotetest.NewWorker(t)
	v, err := a.client.GetRef(ctx, "ckpt")
	if err != nil {
		t.Fatal(err)
	}
	rb := mountRemote(b, ms.Addr, remotetest.ViewOptions{Version: v})
	for p, sum := range want {
		if got := sha(t, filepath.Join(rb.dir, p)); got != sum {
			t.Errorf("%s on worker b differs from the snapshot", p)
		}
	}
	if _, err := a.client.GetRef(ctx, "nope"); err == nil {
		t.Error("GetRef of a missing snapshot worked")
	}

	// The master names nothing it cannot give whole.
	raw := remote.ExportClientOf(a.client)
	store, _ := object.OpenDirStore(filepath.Join(t.TempDir(), "o"))
	missing, _ := object.EncodeTree(&object.Tree{Entries: []object.Entry{{Name: "x", Mode: unix.S_IFDIR | 0o755, Object: object.Sum([]byte("nothing"))}}})
	td, _ := store.Put(ctx, missing)
	ver, _ := object.EncodeTree(&object.Tree{Entries: []object.Entry{{Name: "root", Mode: unix.S_IFDIR | 0o755, Object: td}}})
	put, err := raw.Put(ctx)
	if err != nil {
		t.Fatal(err)
	}
	put.Send(&pb.PutRequest{Object: missing})
	put.Send(&pb.PutRequest{Object: ver})
	if _, err := put.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	vd := object.Sum(ver)
	if _, err := raw.PutRef(ctx, &pb.PutRefRequest{Name: "broken", Version: vd[:]}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("PutRef of an incomplete snapshot: %v", err)
	}
}

// Names of one file on the master are one file on a worker, as through a
// local lower: one inode, its link count, and a write through one name
// seen through the other, after copy-up too. An unchanged tree scanned
// again is the same version.
func TestRemoteHardLinks(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "a"), []byte("hl"), 0o644)
	if err := os.MkdirAll(filepath.Join(exp, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(exp, "a"), filepath.Join(exp, "d", "b")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(exp, "single"), []byte("one"), 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	w := remotetest.NewWorker(t)
	rm := mountRemote(w, ms.Addr, remotetest.ViewOptions{})
	var sa, sb, ss unix.Stat_t
	if err := unix.Lstat(filepath.Join(rm.dir, "a"), &sa); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(rm.dir, "d", "b"), &sb); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lstat(filepath.Join(rm.dir, "single"), &ss); err != nil {
		t.Fatal(err)
	}
	if sa.Ino != sb.Ino || sa.Nlink != 2 || sb.Nlink != 2 || ss.Nlink != 1 {
		t.Fatalf("a: ino %d nlink %d; d/b: ino %d nlink %d; single: nlink %d; want one inode with 2 links",
			sa.Ino, sa.Nlink, sb.Ino, sb.Nlink, ss.Nlink)
	}
	f, err := os.OpenFile(filepath.Join(rm.dir, "a"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(" more"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if b, err := os.ReadFile(filepath.Join(rm.dir, "d", "b")); err != nil || string(b) != "hl more" {
		t.Errorf("d/b after a write through a: %q, %v", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(exp, "a")); string(b) != "hl" {
		t.Errorf("master's file changed: %q", b)
	}
	v1 := rm.version
	rm2 := mountRemote(w, ms.Addr, remotetest.ViewOptions{})
	if rm2.version != v1 {
		t.Errorf("a second scan of the same tree gave version %s, the first %s", rm2.version.Short(), v1.Short())
	}
}

// A chunk the master could not be reached for is answered with that
// error for a moment, without asking again: the kernel reads a page
// again right after its read-ahead failed, and each ask waited out the
// timeout. Once the moment is over, a master that is back is asked.
func TestUnreachableRemembered(t *testing.T) {
	if testing.Short() {
		t.Skip("waits out --io-timeout with the master down; the full suite runs it")
	}
	exp := t.TempDir()
	data := randBytes(2 << 20)
	writeFile(t, filepath.Join(exp, "f"), data, 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	rm := mountRemote(remotetest.NewWorker(t), ms.Addr, remotetest.ViewOptions{Timeout: 5 * time.Second})
	f, err := os.Open(filepath.Join(rm.dir, "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ms.Stop()
	// The second chunk: the first may have come with the open's file
	// object (decision 0065), before the master stopped.
	read := func() error {
		return within(t, 30*time.Second, "read", func() error {
			_, err := f.ReadAt(make([]byte, 4096), 1<<20)
			return err
		})
	}
	if err := read(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("read with the master gone: %v, want EIO", err)
	}
	failures := rm.client.Failures()
	if err := read(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("second read with the master gone: %v, want EIO", err)
	}
	if n := rm.client.Failures() - failures; n != 0 {
		t.Errorf("a read right after a failed one asked the master again (%d failed calls)", n)
	}
	ms.Start(ms.Addr)
	time.Sleep(3 * time.Second) // past the memory of the failure
	got := make([]byte, len(data))
	if err := within(t, 30*time.Second, "read", func() error {
		_, err := f.ReadAt(got, 0)
		return err
	}); err != nil {
		t.Fatalf("read with the master back: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Error("wrong bytes with the master back")
	}
}

// A snapshot of a mount whose cache is far smaller than what the snapshot
// references still holds all of it: eviction, which may remove any blob
// the master has, must not take what the snapshot just fetched before
// its ref reaches it.
func TestSnapshotUnderEviction(t *testing.T) {
	exp := t.TempDir()
	for i := range 3 {
		writeFile(t, filepath.Join(exp, fmt.Sprintf("data%d", i)), randBytes(6<<20), 0o644)
	}
	writeFile(t, filepath.Join(exp, "log"), []byte("line 1\n"), 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	w := remotetest.NewWorker(t)
	rm := mountRemote(w, ms.Addr, remotetest.ViewOptions{Timeout: 30 * time.Second})
	rd, err := refs.Open(filepath.Join(w.State, "refs"))
	if err != nil {
		t.Fatal(err)
	}
	rm.cache.SetLimit(2<<20, rd)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res := appendAndSnapshot(t, ctx, rm)
	// Whatever eviction passes the snapshot's fetches started are done.
	if _, err := rm.cache.Evict(ctx); err != nil {
		t.Fatal(err)
	}
	ms.Stop()
	verifyAlone(t, ctx, w.State, res.Root)
}

// A chunk found damaged in the worker's cache is fetched again, never
// served, and counted.
func TestCacheDamageRefetched(t *testing.T) {
	exp := t.TempDir()
	writeFile(t, filepath.Join(exp, "f"), randBytes(3<<20), 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	w := remotetest.NewWorker(t)
	rm := mountRemote(w, ms.Addr, remotetest.ViewOptions{})
	want := sha(t, filepath.Join(exp, "f"))
	if got := sha(t, filepath.Join(rm.dir, "f")); got != want {
		t.Fatal("first read: wrong bytes")
	}
	store, _ := object.OpenDirStore(filepath.Join(w.State, "objects"))
	damaged := 0
	store.Each(func(o object.StoredObject) error {
		if k, err := store.Kind(o.Digest); err == nil && k == object.KindBlob {
			// Cut short, as a crash can leave it: all but its first
			// 100 bytes zeroed, in the pack that holds it.
			p, off, size, err := store.Locate(o.Digest)
			if err != nil {
				t.Fatal(err)
			}
			os.Chmod(p, 0o600)
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.WriteAt(make([]byte, size-100), off+100)
			f.Close()
			if err == nil {
				damaged++
			}
		}
		return nil
	})
	if damaged == 0 {
		t.Fatal("no cached chunk to damage")
	}
	// A second mount of the same state: the first still holds the
	// chunks it read ahead in memory, verified, and would rightly serve
	// those without looking at the store.
	rm2 := mountRemote(w, ms.Addr, remotetest.ViewOptions{})
	if got := sha(t, filepath.Join(rm2.dir, "f")); got != want {
		t.Fatal("read after the cache was damaged: wrong bytes")
	}
	if c := rm2.cache.Stats().Corrupt; c < int64(damaged) {
		t.Errorf("corrupt counter %d after %d damaged chunks were fetched again", c, damaged)
	}
}

// A later snapshot of a remote mount skips the trees an earlier one found
// whole in the store, but not once something left the store: a chunk of
// an untouched directory, removed by a gc after the first snapshot was
// dropped, is fetched again, and the second snapshot stands alone.
func TestSnapshotAfterRemoval(t *testing.T) {
	exp := t.TempDir()
	chunk := randBytes(1 << 20)
	writeFile(t, filepath.Join(exp, "data", "f"), chunk, 0o644)
	writeFile(t, filepath.Join(exp, "log"), []byte("line 1\n"), 0o644)
	ms := remotetest.StartMaster(t, exp, remote.ServerConfig{})
	w := remotetest.NewWorker(t)
	rm := mountRemote(w, ms.Addr, remotetest.ViewOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	appendAndSnapshot(t, ctx, rm)
	rd, err := refs.Open(filepath.Join(w.State, "refs"))
	if err != nil {
		t.Fatal(err)
	}
	if err := rd.Remove("s1"); err != nil {
		t.Fatal(err)
	}
	store, err := object.OpenDirStore(filepath.Join(w.State, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	blob, _ := object.EncodeBlob(chunk)
	sw, err := store.LockSweep(ctx)
	if err != nil {
		t.Fatal(err)
	}
	removed, _, err := sw.RemoveIfOlder(object.Sum(blob), time.Now().Add(time.Hour))
	sw.Unlock()
	if err != nil || !removed {
		t.Fatalf("remove the chunk of data/f: %v %v", removed, err)
	}
	res, err := rm.m.Snapshot(ctx, "s2")
	if err != nil {
		t.Fatal(err)
	}
	ms.Stop()
	verifyAlone(t, ctx, w.State, res.Root)
}

// waitFileObjects waits until the store in dir holds every file object
// the master's store in masterDir holds.
func waitFileObjects(ctx context.Context, t *testing.T, masterDir, dir string) {
	t.Helper()
	master, err := object.OpenDirStore(masterDir)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	var files []object.Digest
	master.Each(func(o object.StoredObject) error {
		if k, err := master.Kind(o.Digest); err == nil && k == object.KindFile {
			files = append(files, o.Digest)
		}
		return nil
	})
	store, err := object.OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, d := range files {
		for {
			if ok, _ := store.Has(ctx, d); ok {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("file object %s not stored: %v", d.Short(), ctx.Err())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}
