package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkReaddirNew lists a directory of 5,000 files just written
// through the mount, names only, as ls(1) does: what a crawler pays to
// look at its own output. A file made and removed before each listing
// drops the kernel's copy of the listing, so that every one reaches cowfs.
func BenchmarkReaddirNew(b *testing.B) {
	tm := mountT(b, "", Options{})
	dir := filepath.Join(tm.Dir, "d")
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
