package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkCreate creates empty files in a directory of the mount, as a
// crawler writing one file per page does: one create and one close each.
func BenchmarkCreate(b *testing.B) {
	tm := mountT(b, "", Options{})
	dir := filepath.Join(tm.Dir, "d")
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	createLoop(b, dir)
}

// createLoop creates b.N empty files in dir, one create and one close each.
func createLoop(b *testing.B, dir string) {
	b.ResetTimer()
	for i := range b.N {
		fd, err := unix.Open(filepath.Join(dir, fmt.Sprintf("f%07d", i)), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		unix.Close(fd)
	}
}
