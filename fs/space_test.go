package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFullDisk fills the upper's filesystem through the mount. Writes
// must get ENOSPC and leave the files they failed on as they were; what
// only records metadata (here 8000 whiteouts) must still work; the mount
// process must live through it (badger's logs are written through memory
// mappings, and a mapped page that finds the filesystem full is SIGBUS);
// and after space is freed everything works again, across a remount.
// The mount is served by a child process, so that a crash of it shows as
// a failed test rather than a dead test binary.
func TestFullDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("slow: fills a small filesystem up to the reserve (runs without -short)")
	}
	const reserve = 16 << 20
	base := t.TempDir()
	// Unmounted after the child stops: its cleanup is registered later.
	small := smallFS(t, filepath.Join(base, "small"))

	lower := filepath.Join(base, "lower")
	if err := os.MkdirAll(filepath.Join(lower, "many"), 0o755); err != nil {
		t.Fatal(err)
	}
	const nfiles = 8000
	for i := range nfiles {
		if err := os.WriteFile(filepath.Join(lower, "many", fmt.Sprintf("file-with-a-longish-name-%05d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	big := make([]byte, 3<<20+5)
	rand.New(rand.NewSource(1)).Read(big)
	writeT(t, filepath.Join(lower, "big"), big)
	lowerBefore := readTree(t, lower)

	c := mountChildCfg(t, childConfig{
		Dir: filepath.Join(base, "mnt"), Lower: lower,
		Upper: filepath.Join(small, "upper"), Work: filepath.Join(small, "work"),
		Reserve: reserve,
	})
	mnt := c.cfg.Dir

	fillSize := fill(t, filepath.Join(mnt, "fill"))
	checkReserve(t, small, reserve)
	var sfs unix.Statfs_t
	if err := unix.Statfs(mnt, &sfs); err != nil {
		t.Fatal(err)
	}
	if avail := int64(sfs.Bavail) * sfs.Bsize; avail > 1<<20 {
		t.Errorf("statfs of the full mount shows %d bytes available", avail)
	}
	t.Logf("filled with %d MiB", fillSize>>20)

	// A write into a lower file (a copy-up) fails and changes nothing.
	g, err := os.OpenFile(filepath.Join(mnt, "big"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.WriteAt(bytes.Repeat([]byte{'w'}, 4096), 1<<20+100); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write into a lower file on a full disk: %v, want ENOSPC", err)
	}
	g.Close()
	if b, err := os.ReadFile(filepath.Join(mnt, "big")); err != nil || !bytes.Equal(b, big) {
		t.Errorf("big after the failed write: %d bytes, equal %v, %v", len(b), bytes.Equal(b, big), err)
	}

	// Removing lower files only records whiteouts: all must work.
	ents, err := os.ReadDir(filepath.Join(mnt, "many"))
	if err != nil || len(ents) != nfiles {
		t.Fatalf("readdir many: %d entries, %v", len(ents), err)
	}
	for _, e := range ents {
		if err := os.Remove(filepath.Join(mnt, "many", e.Name())); err != nil {
			t.Fatalf("remove %s on a full disk: %v", e.Name(), err)
		}
	}

	// Space freed, everything works again.
	if err := os.Remove(filepath.Join(mnt, "fill")); err != nil {
		t.Fatal(err)
	}
	g, err = os.OpenFile(filepath.Join(mnt, "big"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.WriteAt(bytes.Repeat([]byte{'w'}, 4096), 1<<20+100); err != nil {
		t.Fatalf("write after space was freed: %v", err)
	}
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	g.Close()
	copy(big[1<<20+100:], bytes.Repeat([]byte{'w'}, 4096))

	c.remount(t)
	if ents, err := os.ReadDir(filepath.Join(mnt, "many")); err != nil || len(ents) != 0 {
		t.Errorf("after the remount many has %d entries (%v), want none", len(ents), err)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "big")); err != nil || !bytes.Equal(b, big) {
		t.Errorf("big after the remount: %d bytes, equal %v, %v", len(b), bytes.Equal(b, big), err)
	}
	if d := diffTrees(lowerBefore, readTree(t, lower)); d != "" {
		t.Errorf("the lower changed: %s", d)
	}
}

// TestFullDiskOutside fills the upper's filesystem from outside the mount,
// past cowfs's reserve, as any process sharing the disk can. What needs
// the metadata database (removing a lower file records a whiteout) must
// get ENOSPC and change nothing rather than write into a full disk, which
// is a SIGBUS for the mount process; removing a file born in the upper
// still works; a mount of the full upper is refused with a message; and
// once space is freed everything works again, across a remount.
func TestFullDiskOutside(t *testing.T) {
	const reserve = 16 << 20
	base := t.TempDir()
	small := smallFS(t, filepath.Join(base, "small"))
	lower := filepath.Join(base, "lower")
	if err := os.MkdirAll(filepath.Join(lower, "many"), 0o755); err != nil {
		t.Fatal(err)
	}
	const nfiles = 300
	for i := range nfiles {
		writeT(t, filepath.Join(lower, "many", fmt.Sprintf("f%03d", i)), []byte("x"))
	}
	if err := os.Mkdir(filepath.Join(lower, "gone"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range nfiles {
		writeT(t, filepath.Join(lower, "gone", fmt.Sprintf("f%03d", i)), []byte("x"))
	}
	lowerBefore := readTree(t, lower)
	cfg := childConfig{
		Dir: filepath.Join(base, "mnt"), Lower: lower,
		Upper: filepath.Join(small, "upper"), Work: filepath.Join(small, "work"),
		Reserve: reserve,
	}
	c := mountChildCfg(t, cfg)
	mnt := cfg.Dir
	writeT(t, filepath.Join(mnt, "new"), []byte("born in the upper"))
	// Records the database holds in memory when the disk fills: the
	// unmount must not flush them into the full disk.
	if err := os.RemoveAll(filepath.Join(mnt, "gone")); err != nil {
		t.Fatal(err)
	}

	outside := filepath.Join(small, "outside")
	fill(t, outside)
	alive := func() {
		t.Helper()
		select {
		case err := <-c.exited:
			c.exited <- err
			t.Fatalf("the mount process died: %v\nstderr:\n%s", err, c.stderr)
		default:
		}
	}
	for i := range nfiles {
		p := filepath.Join(mnt, "many", fmt.Sprintf("f%03d", i))
		if err := os.Remove(p); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("remove of a lower file on a disk filled from outside: %v, want ENOSPC", err)
		}
		if _, err := os.Lstat(p); err != nil {
			t.Fatalf("the failed remove changed the file: %v", err)
		}
	}
	from, to := filepath.Join(mnt, "many", "f000"), filepath.Join(mnt, "g")
	if err := os.Rename(from, to); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("rename of a lower file on a full disk: %v, want ENOSPC", err)
	}
	if _, err := os.Lstat(from); err != nil {
		t.Errorf("the failed rename removed its source: %v", err)
	}
	if _, err := os.Lstat(to); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the failed rename made its target: %v", err)
	}
	alive()
	// A file born in the upper goes without a record: freeing space works.
	if err := os.Remove(filepath.Join(mnt, "new")); err != nil {
		t.Errorf("remove of an upper file on a full disk: %v", err)
	}
	alive()

	// The unmount leaves the database to its log (c.stop fails the test
	// if the child does not exit cleanly); a full upper is not mounted,
	// and says why.
	c.stop(t)
	if m, err := newT(t, mnt, testSpec{Lower: lower, Upper: cfg.Upper, Work: cfg.Work, Options: Options{Reserve: reserve}}); err == nil {
		m.Unmount()
		t.Fatal("a full upper was mounted")
	} else if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "free some space") {
		t.Errorf("mount of a full upper: %v, want ENOSPC saying to free space", err)
	}

	if err := os.Remove(outside); err != nil {
		t.Fatal(err)
	}
	c.start(t)
	for i := range nfiles {
		if err := os.Remove(filepath.Join(mnt, "many", fmt.Sprintf("f%03d", i))); err != nil {
			t.Fatalf("remove after space was freed: %v", err)
		}
	}
	c.remount(t)
	if ents, err := os.ReadDir(filepath.Join(mnt, "many")); err != nil || len(ents) != 0 {
		t.Errorf("after the remount many has %d entries (%v), want none", len(ents), err)
	}
	for _, name := range []string{"new", "gone"} {
		if _, err := os.Lstat(filepath.Join(mnt, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after the remount: %v, want it gone", name, err)
		}
	}
	if d := diffTrees(lowerBefore, readTree(t, lower)); d != "" {
		t.Errorf("the lower changed: %s", d)
	}
}

// smallFS mounts a 64 MiB tmpfs at dir, unmounted in cleanup.
func smallFS(t *testing.T, dir string) string {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64m"); err != nil {
		t.Fatalf("a small tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// fill writes a new file of random bytes at path, 1 MiB at a time and
// then 4 KiB at a time, until ENOSPC, fsyncs it and returns its size.
func fill(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Random bytes: a snapshot of the file cannot share its chunks.
	rnd := rand.New(rand.NewSource(2))
	for _, size := range []int{1 << 20, 4 << 10} {
		buf := make([]byte, size)
		for {
			rnd.Read(buf)
			_, err := f.Write(buf)
			if err == nil {
				continue
			}
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling: %v, want ENOSPC", err)
			}
			break
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync of what was written: %v", err)
	}
	size, _ := f.Seek(0, 2)
	return size
}

// checkReserve fails the test unless the filesystem at dir has about the
// reserve free.
func checkReserve(t *testing.T, dir string, reserve int64) {
	t.Helper()
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		t.Fatal(err)
	}
	if free := int64(sfs.Bfree) * sfs.Bsize; free < reserve/2 {
		t.Errorf("the upper's filesystem has %d bytes free; cowfs keeps %d", free, reserve)
	}
}

// A snapshot stores its objects beside the upper, under the state
// directory: it must fail with ENOSPC rather than take the reserve, and
// work once space is freed.
func TestSnapshotKeepsReserve(t *testing.T) {
	const reserve = 16 << 20
	base := t.TempDir()
	small := smallFS(t, filepath.Join(base, "small"))
	lower := filepath.Join(base, "lower")
	if err := os.Mkdir(lower, 0o755); err != nil {
		t.Fatal(err)
	}
	m := mountState(t, filepath.Join(base, "mnt"), testSpec{Lower: lower, State: filepath.Join(small, "state"), Options: Options{Reserve: reserve}})
	fill(t, filepath.Join(m.Dir, "fill"))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := m.Snapshot(ctx, "full"); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("snapshot of a full upper: %v, want ENOSPC", err)
	}
	checkReserve(t, small, reserve)
	// The mount still records metadata.
	if err := os.Mkdir(filepath.Join(m.Dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(m.Dir, "fill"), 1<<20); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Snapshot(ctx, "full"); err != nil {
		t.Fatalf("snapshot after space was freed: %v", err)
	}
}
