package fs

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkReaddirNew lists a directory of 5,000 files just written
// through the mount, names only, as ls(1) does: what a crawler pays to
// look at its own output. A file made and removed before each listing
// drops the kernel's copy of the listing, so that every one reaches cowfs.
func BenchmarkReaddirNew(b *testing.B) {
	tm := mountT(b, "", Options{})
	readdirNewLoop(b, tm.Dir)
}

// BenchmarkReaddirNewFuseOverlayfs is BenchmarkReaddirNew on
// fuse-overlayfs, the contender issue 20 names, in the same harness: its
// listings past the first batch are plain READDIR (libfuse's
// READDIRPLUS_AUTO), which BenchmarkReaddirFloor/plain bounds.
func BenchmarkReaddirNewFuseOverlayfs(b *testing.B) {
	bin, err := exec.LookPath("fuse-overlayfs")
	if err != nil {
		b.Skip("fuse-overlayfs is not installed (apt-get install fuse-overlayfs)")
	}
	base := b.TempDir()
	lower, upper, work, mnt := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "mnt")
	for _, d := range []string{lower, upper, work, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "-o", "lowerdir="+lower+",upperdir="+upper+",workdir="+work, mnt).CombinedOutput(); err != nil {
		b.Fatalf("fuse-overlayfs: %v: %s", err, out)
	}
	b.Cleanup(func() {
		// fuse-overlayfs exits once unmounted; a detach cannot hang.
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			b.Errorf("unmount %s: %v", mnt, err)
		}
	})
	readdirNewLoop(b, mnt)
}

// readdirNewLoop makes 5,000 files in a new directory of root and lists
// it b.N times, each time after a file made and removed.
func readdirNewLoop(b *testing.B, root string) {
	dir := filepath.Join(root, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	const n = 5000
	for i := range n {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("n%05d", i)), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		tmp := filepath.Join(dir, "tmp")
		if err := os.WriteFile(tmp, nil, 0o644); err != nil {
			b.Fatal(err)
		}
		if err := os.Remove(tmp); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		listN(b, dir, n)
	}
	b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "entries/s")
}

// listN reads the names in dir and fails unless there are n.
func listN(b *testing.B, dir string, n int) {
	f, err := os.Open(dir)
	if err != nil {
		b.Fatal(err)
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		b.Fatal(err)
	}
	if len(names) != n {
		b.Fatalf("%s: %d entries, want %d", dir, len(names), n)
	}
}
